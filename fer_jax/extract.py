"""Extraction: run feature generators over every clip of `dfew` once, into a cached-features dataset.

    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer
    python -m fer_jax.extract --config configs/extract.py:resnet18 \\
        --config.generators.face_resnet18.weights=~/weights/resnet18-f37072fd.pth

Writes the TFDS dataset `dfew_features/<config.output.name>` (every split of the source) whose
records hold one float32[16, F] array per generator entry, keyed by the entry's name, next to the
source's own arrays (keypoints; or the features of a features source). Generators:
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
import numpy as np
import tensorflow_datasets as tfds
from absl import app
from flax import nnx

import tfds_dfew.dfew  # noqa: F401  (registers the `dfew` builder with TFDS)
from fer_jax import cli, input_pipeline, runs, workdir as workdir_lib, xla_defaults
from fer_jax.data import audio as audio_lib
from fer_jax.data import embeddings
from fer_jax.errors import ConfigError, DatasetNotFoundError
from fer_jax.models import generators
from tfds_dfew import features as features_lib

log = logging.getLogger(__name__)


FRAME_FREE = ("omnivec", "npy")  # generators that do not read frames


def build_generators(config, modality: str = "face") -> dict[str, tuple[nnx.Module, dict]]:
    """{feature key: (module, setup record)} for the generators of config.generators that read `modality`."""
    out = {}
    for key, spec in config.generators.items():
        name = spec.generator
        if name in FRAME_FREE or generators.get(name).modality != modality:  # get: a clear error for unknown names
            continue
        weights = runs.weights_record(spec)
        options = {k: spec.get(k) for k in generators.get(name).options if spec.get(k) is not None}
        module, report = runs.generator_module(name, weights, modality=spec.get("modality") or None, **options)
        log.info("%s: %s", key, str(report).splitlines()[0])
        out[key] = (module, {"generator": name, "weights": weights,
                             "feature_dim": generators.get(name).feature_dim, **options})
        if modality == "audio":
            out[key][1]["max_seconds"] = float(config.get("max_audio_seconds", 30.0))
    return out


def _pad_rows(x: np.ndarray, batch: int) -> np.ndarray:
    """Pads axis 0 to `batch` rows (repeating the last) so a jitted function keeps one shape."""
    return x if len(x) >= batch else np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])


def frame_runner(gens, batch: int):
    """records -> {key: float32[n, T, F]} for frame generators, all in one jitted call."""
    modules = {k: m for k, (m, _) in gens.items()}
    graphdef, state = nnx.split(modules)

    @jax.jit
    def compute(state, frames):
        mods = nnx.merge(graphdef, state)
        return {k: generators.clip_features(m, frames) for k, m in mods.items()}  # CPU: 32 frames a step

    def run(records):
        if "frames" not in records[0]:
            raise ConfigError(f"generators {sorted(gens)} read face frames, but the source dataset has none "
                             f"(it has {sorted(records[0])}); extract them from a dfew/<frames config> build.")
        frames = np.stack([np.stack(r["frames"]) for r in records])
        step = generators.inference_rows_per_step(frames.shape[1])
        if len(frames) == batch or not step:
            out = jax.device_get(compute(state, _pad_rows(frames, batch)))
        else:  # a split's last, partial batch: `step` clips per call (one more shape) rather than padding to `batch`
            parts = [jax.device_get(compute(state, _pad_rows(frames[i : i + step], step)))
                     for i in range(0, len(frames), step)]
            out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return {k: v[: len(records)] for k, v in out.items()}

    return run


def audio_runner(gens, batch: int):
    """records -> {key: float32[n, 16, F], 'audio_mask': float32[n, 16]} for audio generators, in one jitted call."""
    modules = {k: m for k, (m, _) in gens.items()}
    max_seconds = min(float(spec["max_seconds"]) for _, spec in gens.values())
    graphdef, state = nnx.split(modules)

    @jax.jit
    def compute(state, waveform, lengths):
        mods = nnx.merge(graphdef, state)
        outs = {k: m(waveform, lengths, train=False) for k, m in mods.items()}
        mask = next(iter(outs.values()))[1]
        return {**{k: f for k, (f, _) in outs.items()}, "audio_mask": mask.astype(np.float32)}

    def run(records):
        if "audio" not in records[0]:
            raise ConfigError(f"generators {sorted(gens)} read the clips' sound, but the source dataset has none (it "
                              f"has {sorted(records[0])}); build an _audio config (python -m tfds_dfew.build ... "
                              "--config frames112_pose_audio) and extract from it (source=frames112_pose_audio).")
        waveform, lengths = audio_lib.fit_batch([r["audio"] for r in records], [r["audio_length"] for r in records],
                                        max_seconds)
        out = jax.device_get(compute(state, _pad_rows(waveform, batch), _pad_rows(lengths, batch)))
        return {k: v[: len(records)] for k, v in out.items()}

    return run


def omnivec_runner(key: str, spec, batch: int):
    """(records -> {key: float32[n, T, D]}, setup record, feature_dim) for a pretrained OmniVec."""
    if not spec.get("checkpoint"):
        raise ConfigError(f"config.generators.{key}.checkpoint must be the workdir of a `python -m fer_jax.pretrain` "
                         "run (configs/extract.py:omnivec,run=<workdir>).")
    run_dir = os.path.abspath(os.path.expanduser(spec.checkpoint))
    module, report = runs.omnivec_encoder(run_dir)
    log.info("%s: %s", key, report)
    pre = input_pipeline.Preprocessor(workdir_lib.load_config(run_dir), train=False)
    graphdef, state = nnx.split(module)

    @jax.jit
    def compute(state, inputs, masks):
        return nnx.merge(graphdef, state)(inputs, masks, train=False)

    def run(records):
        try:
            examples = [pre(r) for r in records]
        except Exception as e:
            raise ConfigError(f"the OmniVec of {run_dir} cannot read this source dataset: {e}") from None
        batch_ = {k: _pad_rows(np.stack([ex[k] for ex in examples]), batch) for k in examples[0]}
        masks = {m: batch_[f"mask/{m}"] for m in module.modalities if f"mask/{m}" in batch_}
        out = jax.device_get(compute(state, {m: batch_[m] for m in module.modalities}, masks))
        return {key: out[: len(records)]}

    return run, {"generator": "omnivec", "weights": f"checkpoint:{run_dir}", "feature_dim": int(module.width)}


def extract(config) -> str:
    """Builds dfew_features/<config.output.name>; returns its directory."""
    source_dir = os.path.expanduser(config.source.data_dir)
    if not os.path.isdir(source_dir):
        raise DatasetNotFoundError(f"config.source.data_dir={config.source.data_dir!r} does not exist; point it at "
                                   "the folder that holds the built dfew dataset (e.g. "
                                   "--config.source.data_dir=data/tfds).")
    name = config.source.name
    if name.startswith(features_lib.NAME + "/"):
        source = features_lib.open_builder(source_dir, name.split("/", 1)[1])
        if source is None:
            raise DatasetNotFoundError(
                f"source features {name!r} are not in {source_dir}. Extract them first: "
                f"{input_pipeline.extract_hint(name.split('/', 1)[1], source_dir)}")
    else:
        source = tfds.builder(name, data_dir=source_dir)
        if not source.is_prepared():
            raise DatasetNotFoundError(
                f"source dataset {name!r} is not built in {source_dir}. Build it first: "
                f"python -m tfds_dfew.build --manual_dir <DFEW release> --data_dir {source_dir}")
    batch = int(config.batch_size)
    num_frames = 16
    runners, specs = [], {}
    gens = build_generators(config)
    if gens:
        runners.append(frame_runner(gens, batch))
        specs.update({k: spec for k, (_, spec) in gens.items()})
    sound = build_generators(config, "audio")
    if sound:
        runners.append(audio_runner(sound, batch))
        specs.update({k: spec for k, (_, spec) in sound.items()})
    for key, spec in config.generators.items():
        if spec.generator == "omnivec":
            run_fn, specs[key] = omnivec_runner(key, spec, batch)
            runners.append(run_fn)
        elif spec.generator == "npy":
            loader = embeddings.NpyEmbeddings(os.path.expanduser(spec.path), num_frames=num_frames)
            runners.append(lambda records, key=key, loader=loader: {key: loader.batch(records)})
            specs[key] = {"generator": "npy", "weights": f"npy:{loader.directory}", "feature_dim": loader.dim}

    def run(records):
        out = {}
        for fn in runners:
            out.update(fn(records))
        return out

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
        name=config.output.name, version=features_lib.DfewFeatures.VERSION, feature_shapes=shapes, setup=setup,
        audio=features_lib.has_audio(source.info.features) and bool(config.output.get("keep_sound", True)),
        description=f"features {sorted(shapes)} of {name}")
    out_dir = os.path.expanduser(config.output.data_dir)
    builder = features_lib.DfewFeatures(config=builder_config, data_dir=out_dir, source=source, compute=run,
                                        batch_size=batch)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if config.get("overwrite", False)
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    # an existing dataset already records array_record; TFDS refuses to be told again when overwriting it
    builder.download_and_prepare(file_format=None if builder.is_prepared() else "array_record",
                                 download_config=tfds.download.DownloadConfig(download_mode=mode))
    existing = builder.info.metadata.get("setup")
    def core(d):  # what makes the numbers: where from and which generators
        return {k: dict(d).get(k) for k in ("source", "generators")}

    if existing is not None and core(existing) != core(setup):
        raise ConfigError(
            f"{builder.data_dir} already holds features of another setup ({existing}); choose another "
            "config.output.name or set config.overwrite=True.")
    return builder.data_dir


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = cli.FLAGS.config
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/extract.py:mini_xception_fer")
    path = extract(config)
    print(f"cached features written to {path}")
    print(f"train on them with: --config.dataset.name=dfew_features/{config.output.name} "
          f"--config.dataset.data_dir={config.output.data_dir}")


if __name__ == "__main__":
    xla_defaults.use_inference_defaults()  # inference only: the measured CPU flags, unless XLA_FLAGS is set
    cli.run(main, doc=__doc__, needs_workdir=False)
