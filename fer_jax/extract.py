"""Extraction: run feature generators over every clip of a dataset once, into a cached-features dataset.

    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer
    python -m fer_jax.extract --config configs/extract.py:resnet18 \\
        --config.generators.face_resnet18.weights=~/weights/resnet18-f37072fd.pth

Writes the TFDS dataset `<dataset>_features/<config.output.name>` (`dfew_features/...` from a DFEW
build, `mafw_features/...` from MAFW, ...; every split of the source) whose records hold one
float32[T, F] array per generator entry (T: the source's frames per clip), keyed by the entry's name,
next to the source's own arrays (pose; or the features of a features source) and per-clip fields.
A features dataset that exists is reused only when it was made by the same setup from the same
build of its source; when the source was rebuilt since, it is extracted again. Generators:
  - audio generators (wav2vec2_base, hubert_base, logmel) on the clips' sound, from a
    `dfew/<frames config>_audio` build (or features made from one): key `audio_<name>`
    float32[16, F] (one vector per time slice of the clip) plus `audio_mask` float32[16];
  - frame generators (mini_xception_fer, resnet18/34/50) on a `dfew/<frames config>` source,
    pretrained as shipped/supplied, or fine-tuned: `checkpoint=<workdir of a run>` takes the
    generator's weights from that run's newest checkpoint (the run trained a `generator` tokenizer);
  - `omnivec`: a pretrained OmniVec (`checkpoint=<workdir of python -m fer_jax.pretrain>`) on the
    features it was pretrained on (the source is that features dataset);
  - `npy`: embeddings a user computed with any external model, one `<clip id>.npy` per clip in
    `path` (fer_jax.data.embeddings).
"""

from __future__ import annotations

import logging
import os

import jax
import tensorflow_datasets as tfds
from absl import app
from flax import nnx

from fer_jax import cli, extract_hosts, hints, inference, input_pipeline, paths, runs, workdir as workdir_lib
from fer_jax import xla_defaults
from fer_jax.data import embeddings
from fer_jax.errors import ConfigError, DatasetNotFoundError
from fer_jax.models import generators
from tfds_dfew import datasets
from tfds_dfew import features as features_lib

log = logging.getLogger(__name__)


FRAME_FREE = ("omnivec", "npy")  # generators that do not read frames


def build_generators(config, modality: str = "face", num_slices: int | None = None) -> dict[str, tuple[nnx.Module, dict]]:
    """{feature key: (module, setup record)} for the generators of config.generators that read `modality`.

    num_slices: audio generators pool the sound into this many slices (the source's frames per clip).
    """
    out = {}
    for key, spec in config.generators.items():
        name = spec.generator
        if name in FRAME_FREE or generators.get(name).modality != modality:  # get: a clear error for unknown names
            continue
        weights = runs.weights_record(spec)
        options = {k: spec.get(k) for k in generators.get(name).options if spec.get(k) is not None}
        build_options = dict(options)
        if modality == "audio" and num_slices and "num_slices" in generators.get(name).options:
            build_options["num_slices"] = int(num_slices)
        module, report = runs.generator_module(name, weights, modality=spec.get("modality") or None, **build_options)
        log.info("%s: %s", key, str(report).splitlines()[0])
        out[key] = (module, {"generator": name, "weights": weights,
                             "feature_dim": generators.get(name).feature_dim, **options,
                             **(runs.run_identity(spec.checkpoint) if spec.get("checkpoint") else {})})
        if modality == "audio":
            out[key][1]["max_seconds"] = float(config.get("max_audio_seconds", 30.0))
    return out


def omnivec_part(key: str, spec) -> tuple[inference.OmniVecPart, dict]:
    """(the pretrained OmniVec of config.generators.<key>, its setup record)."""
    if not spec.get("checkpoint"):
        raise ConfigError(f"config.generators.{key}.checkpoint must be the workdir of a `python -m fer_jax.pretrain` "
                          "run (configs/extract.py:omnivec,run=<workdir>).")
    run_dir = paths.resolve(spec.checkpoint)
    module, report = runs.omnivec_encoder(run_dir)
    log.info("%s: %s", key, report)
    pre = input_pipeline.Preprocessor(workdir_lib.load_config(run_dir), train=False)
    run_config = workdir_lib.load_config(run_dir)
    record = {"generator": "omnivec", "weights": f"checkpoint:{run_dir}", "feature_dim": int(module.width),
              # the fold its pretraining left out (0: none): a classifier run checks it against its test fold
              "exclude_fold": int(run_config.pretrain.get("exclude_fold", 0) or 0),
              **runs.run_identity(run_dir)}
    return inference.OmniVecPart(module, pre, run_dir), record


def open_source(config):
    """The source dataset of an extraction (a clip build or a features dataset), checked to exist."""
    source_dir = paths.expand(config.source.data_dir)
    if not paths.isdir(source_dir):
        raise DatasetNotFoundError(f"config.source.data_dir={config.source.data_dir!r} does not exist; point it at "
                                   "the folder that holds the built dataset (e.g. --config.source.data_dir=data/tfds).")
    name = config.source.name
    source = datasets.open_built(source_dir, name)
    if source is not None:
        return source
    parsed = features_lib.parse_name(name)
    if parsed:
        raise DatasetNotFoundError(f"source features {name!r} are not in {source_dir}. Extract them first: "
                                   f"{hints.extract_command(parsed[1], source_dir, parsed[0])}")
    raise DatasetNotFoundError(f"source dataset {name!r} is not built in {source_dir}. Build it first: "
                               f"{hints.build_command(name, source_dir)}")


def extract(config) -> str:
    """Builds <dataset>_features/<config.output.name>; returns its directory."""
    source = open_source(config)
    name = config.source.name
    description = datasets.description_of(source)
    batch = int(config.batch_size)
    num_frames = int(description.num_frames)
    specs, omnivec, external = {}, {}, {}
    gens = build_generators(config)
    specs.update({k: spec for k, (_, spec) in gens.items()})
    sound = build_generators(config, "audio", num_slices=num_frames)
    specs.update({k: spec for k, (_, spec) in sound.items()})
    for key, spec in config.generators.items():
        if spec.generator == "omnivec":
            omnivec[key], specs[key] = omnivec_part(key, spec)
        elif spec.generator == "npy":
            external[key] = embeddings.NpyEmbeddings(os.path.expanduser(spec.path), num_frames=num_frames)
            specs[key] = {"generator": "npy", "weights": f"npy:{external[key].directory}",
                          "feature_dim": external[key].dim}
    run = inference.FeatureRunner(
        face={k: m for k, (m, _) in gens.items()}, audio={k: m for k, (m, _) in sound.items()}, omnivec=omnivec,
        external=external, batch=batch,
        max_seconds=min([float(spec["max_seconds"]) for _, spec in sound.values()] or [30.0]))

    shapes = features_lib.passed_through(source.info.features)  # e.g. keypoints, or a features source's arrays
    shapes.update({k: (num_frames, spec["feature_dim"]) for k, spec in specs.items()})
    if sound:
        shapes["audio_mask"] = (num_frames,)
    source_setup = dict((source.info.metadata or {}).get("setup", {}) or {})  # a features source's setup
    made = {k: v for k, v in dict(source_setup.get("generators", {}) or {}).items() if k in shapes}
    # the dfew frames build everything goes back to (predict needs its frame size)
    frames_source = source_setup.get("frames_source", source_setup.get("source", name)) if source_setup else name
    setup = {"source": name, "frames_source": frames_source, "generators": {**made, **specs}}
    builder_config = features_lib.FeaturesConfig(
        name=config.output.name, version=features_lib.FeaturesBuilder.VERSION, feature_shapes=shapes, setup=setup,
        audio=features_lib.has_audio(source.info.features) and bool(config.output.get("keep_sound", True)),
        description=f"features {sorted(shapes)} of {name}")
    out_dir = paths.expand(config.output.data_dir)
    cls = features_lib.builder_class(description.name)
    output = f"{cls.name}/{config.output.name}"
    overwrite = bool(config.get("overwrite", False))
    existing = datasets.open_built(out_dir, output)
    if existing is not None and not overwrite:
        overwrite = _stale(existing, setup, source, output)
    if existing is not None and not overwrite:
        return existing.data_dir

    def write(compute) -> str:
        """Builds the features dataset with `compute` (records -> features); returns its version folder.
        An object-store out_dir: written in a local staging folder and uploaded once complete (datasets.staged)."""
        with datasets.staged(out_dir) as target:
            builder = cls(config=builder_config, data_dir=target, source=source, compute=compute, batch_size=batch)
            mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
                    else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
            # an existing dataset already records array_record; TFDS refuses to be told again when overwriting it
            builder.download_and_prepare(file_format=None if builder.is_prepared() else "array_record",
                                         download_config=tfds.download.DownloadConfig(download_mode=mode))
            built = builder.data_dir
        return datasets.version_dir(out_dir, output) if paths.is_url(out_dir) else built

    if jax.process_count() > 1:  # each host computes its share; process 0 writes the dataset (fer_jax.extract_hosts)
        return extract_hosts.extract(source, run, batch=batch, out_dir=out_dir, output=output, setup=setup,
                                     write=write)
    return write(run)


def _core(setup, *, identity: bool = True) -> dict:
    """What makes a features dataset's numbers: where from and which generators (identity=False: without
    which checkpoint of a run made them, so a run trained further is the same setup, made again)."""
    core = {k: dict(setup or {}).get(k) for k in ("source", "generators")}
    if not identity:
        core["generators"] = {key: {k: v for k, v in dict(g).items() if k not in ("run_id", "step", "exclude_fold")}
                              for key, g in dict(core["generators"] or {}).items()}
    return core


def _stale(existing, setup: dict, source, output: str) -> bool:
    """Whether an existing features dataset must be made again: True when its source was rebuilt since.

    Another setup under the same name is refused (one line: choose another name or overwrite).
    """
    made = existing.info.metadata.get("setup")
    if made is not None and _core(made, identity=False) != _core(setup, identity=False):
        raise ConfigError(
            f"{existing.data_dir} already holds features of another setup ({dict(made)}); choose another "
            "config.output.name or set config.overwrite=True.")
    recorded = dict(existing.info.metadata.get("source_build", {}) or {})
    now = features_lib.source_build(source)
    if made is not None and _core(made) != _core(setup):
        print(f"extracting {output} again: the run that makes its features has trained since.", flush=True)
        return True
    if recorded and recorded == now:
        print(f"reusing {output} in {existing.data_dir}: made by this setup from the same build of {setup['source']}; "
              "add --config.overwrite=True to extract again.", flush=True)
        return False
    why = ("its source was rebuilt since" if recorded else "it does not record which build of its source it was "
           "made from")
    print(f"extracting {output} again: {why} ({setup['source']}).", flush=True)
    return True


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = cli.FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/extract.py:mini_xception_fer")
    path = extract(config)
    name = paths.basename(paths.dirname(paths.dirname(path)))  # <data_dir>/<dataset>_features/<setup>/<version>
    print(f"cached features in {path}")
    print("train on them with: " + hints.command(f"--config.dataset.name={name}/{config.output.name}",
                                                 f"--config.dataset.data_dir={config.output.data_dir}"))


if __name__ == "__main__":
    xla_defaults.use_inference_defaults()  # inference only: the measured CPU flags, unless XLA_FLAGS is set
    cli.run(main, doc=__doc__, needs_workdir=False)
