"""Extraction: run feature generators over every clip of `dfew` once, into a cached-features dataset.

    python -m fer_jax.extract --config configs/extract.py:mini_xception_fer
    python -m fer_jax.extract --config configs/extract.py:resnet18 \\
        --config.generators.face_resnet18.weights=~/weights/resnet18-f37072fd.pth

Writes the TFDS dataset `dfew_features/<config.output.name>` (splits fold1..fold5) whose records
hold one float32[16, F] array per generator entry, keyed by the entry's name. A generator can be
pretrained as shipped/supplied, or fine-tuned: `checkpoint=<workdir of a run>` takes the
generator's weights from that run's newest checkpoint (the run trained a `generator` tokenizer).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from flax import nnx

from fer_jax.models import generators

log = logging.getLogger(__name__)


def generator_from_run(workdir: str, name: str, modality: str | None = None):
    """The fine-tuned generator `name` from the newest checkpoint of the run in `workdir`.

    Returns (module, report string). Raises ValueError if the run has no such generator.
    """
    from fer_jax import checkpoint as ckpt_lib, input_pipeline, parallel, train, workdir as workdir_lib

    config = workdir_lib.load_config(workdir)
    candidates = [m for m, spec in config.modalities.items()
                  if spec.tokenizer == "generator" and spec.get("generator") == name]
    if modality:
        candidates = [m for m in candidates if m == modality]
    if not candidates:
        raise ValueError(
            f"the run in {workdir} fine-tuned no generator {name!r}"
            + (f" for modality {modality!r}" if modality else "")
            + f"; its modalities: { {m: (s.tokenizer, s.get('generator')) for m, s in config.modalities.items()} }."
        )
    modality = candidates[0]
    checkpoints = ckpt_lib.RunCheckpoints(workdir, read_only=True)
    step = checkpoints.latest_step()
    if step is None:
        raise FileNotFoundError(f"{checkpoints.directory} holds no complete checkpoint.")
    # Build the run's model without loading pretrained weights (they are overwritten anyway).
    config.modalities[modality].pretrained = False
    graphdef, _, state = train.init_state(config, input_pipeline.example_shapes(config))
    abstract = ckpt_lib.abstract_like(state, parallel.replicated(parallel.make_mesh()))
    state, _ = checkpoints.restore(step, abstract)
    checkpoints.close()
    model = nnx.merge(graphdef, state["params"], state["model_state"])
    module = model.tokenizers[modality].generator
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module)))
    return module, f"fine-tuned {name} from {workdir} step {step} (modality {modality!r}): {n:,} values loaded"


def build_generators(config) -> dict[str, tuple[generators.FrameGenerator, dict]]:
    """{feature key: (module, setup record)} for config.generators."""
    out = {}
    for key, spec in config.generators.items():
        name = spec.generator
        generators.get(name)  # a clear error for unknown names
        if spec.get("checkpoint"):
            module, report = generator_from_run(os.path.expanduser(spec.checkpoint), name, spec.get("modality"))
            weights = f"checkpoint:{os.path.abspath(os.path.expanduser(spec.checkpoint))}"
        else:
            weights_file = os.path.expanduser(spec.weights) if spec.get("weights") else None
            module, report = generators.create(name, weights=weights_file)
            weights = weights_file or "packaged"
        log.info("%s: %s", key, str(report).splitlines()[0])
        out[key] = (module, {"generator": name, "weights": weights,
                             "feature_dim": generators.get(name).feature_dim})
    return out


def extract(config) -> str:
    """Builds dfew_features/<config.output.name>; returns its directory."""
    import tensorflow_datasets as tfds

    import tfds_dfew.dfew  # noqa: F401  (registers `dfew`)
    from fer_jax import input_pipeline
    from tfds_dfew import features as features_lib

    source_dir = os.path.expanduser(config.source.data_dir)
    if not tfds.builder(config.source.name, data_dir=source_dir).is_prepared():
        raise input_pipeline.DatasetNotFoundError(
            f"source dataset {config.source.name!r} is not built in {source_dir}. Build it first: "
            f"python -m tfds_dfew.build --manual_dir <DFEW release> --data_dir {source_dir}")
    gens = build_generators(config)
    modules = {k: m for k, (m, _) in gens.items()}
    graphdef, state = nnx.split(modules)

    @jax.jit
    def compute(state, frames):
        mods = nnx.merge(graphdef, state)
        return {k: m(frames, train=False) for k, m in mods.items()}

    num_frames = 16
    shapes = {k: (num_frames, spec["feature_dim"]) for k, (_, spec) in gens.items()}
    source_features = tfds.builder(config.source.name, data_dir=source_dir).info.features
    for key in features_lib.PASSED_THROUGH:  # e.g. OpenPose keypoints travel with the features
        if key in source_features:
            shapes[key] = tuple(source_features[key].shape)
    setup = {"source": config.source.name, "generators": {k: spec for k, (_, spec) in gens.items()}}
    batch = int(config.batch_size)

    def run(frames: np.ndarray):
        n = frames.shape[0]
        if n < batch:  # pad the last batch so the jitted function keeps one shape
            frames = np.concatenate([frames, np.repeat(frames[-1:], batch - n, axis=0)])
        out = jax.device_get(compute(state, frames))
        return {k: v[:n] for k, v in out.items()}

    builder_config = features_lib.FeaturesConfig(
        name=config.output.name, version=features_lib.DfewFeatures.VERSION, feature_shapes=shapes, setup=setup,
        description=f"features {sorted(shapes)} of {config.source.name}")
    out_dir = os.path.expanduser(config.output.data_dir)
    builder = features_lib.DfewFeatures(config=builder_config, data_dir=out_dir, source_name=config.source.name,
                                        source_data_dir=source_dir, compute=run, batch_size=batch)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if config.get("overwrite", False)
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(download_mode=mode))
    existing = builder.info.metadata.get("setup")
    if existing is not None and dict(existing) != setup:
        raise ValueError(
            f"{builder.data_dir} already holds features of another setup ({existing}); choose another "
            "config.output.name or set config.overwrite=True.")
    return builder.data_dir


def main(argv):
    from absl import app

    from fer_jax import cli

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = cli.FLAGS.config
    path = extract(config)
    print(f"cached features written to {path}")
    print(f"train on them with: --config.dataset.name=dfew_features/{config.output.name} "
          f"--config.dataset.data_dir={config.output.data_dir}")


if __name__ == "__main__":
    from fer_jax import cli

    cli.run(main)
