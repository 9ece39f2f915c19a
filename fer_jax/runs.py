"""A run's model from its config, and restoring a run from its workdir: written once, used everywhere.

A run's workdir holds `config.json` (fer_jax.workdir), `input_shapes.json` (each modality's
per-clip input shape, written when the run starts) and `checkpoints/<step>` (fer_jax.checkpoint).
`restore(workdir)` gives back its config, the model rebuilt from shapes (`jax.eval_shape`: no
throw-away initialisation) and the newest checkpoint's parameters. evaluate, extract (fine-tuned
generators, OmniVec), predict and cross_validate all restore through it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from fer_jax import checkpoint as ckpt_lib
from fer_jax import input_pipeline, paths, train_state, workdir as workdir_lib
from fer_jax.errors import ConfigError, MissingError
from fer_jax.models import generators, registry
from fer_jax.run_record import RECORD_FILE, RunRecord, read_record  # noqa: F401  (part of this module's API)
from tfds_dfew import datasets, description as description_lib, features as features_lib, plugins

log = logging.getLogger(__name__)

SHAPES_FILE = "input_shapes.json"
_OLD_SHAPES_FILE = "omnivec.json"  # pretraining runs made before every run wrote SHAPES_FILE


def is_pretraining(config) -> bool:
    """True for an OmniVec pretraining config (configs/omnivec.py: it has a `pretrain` block)."""
    return "pretrain" in config


# -- Input shapes -------------------------------------------------------------------------------


def _tuples(shape):
    return {k: _tuples(v) for k, v in shape.items()} if isinstance(shape, Mapping) else tuple(int(x) for x in shape)


def _lists(shape):
    return {k: _lists(v) for k, v in shape.items()} if isinstance(shape, Mapping) else [int(x) for x in shape]


def write_input_shapes(workdir: str, shapes: Mapping) -> None:
    paths.write_text(paths.join(workdir, SHAPES_FILE),
                     json.dumps({"input_shapes": {m: _lists(s) for m, s in shapes.items()}}, indent=2))


def read_input_shapes(workdir: str) -> dict | None:
    """{modality: per-clip shape} the run was built for, or None for a run made before runs recorded it."""
    for name in (SHAPES_FILE, _OLD_SHAPES_FILE):
        path = paths.join(workdir, name)
        if paths.exists(path):
            return {m: _tuples(s) for m, s in json.loads(paths.read_text(path))["input_shapes"].items()}
    return None


# -- The run's record ------------------------------------------------------------------------------


def write_record(workdir: str, config, data) -> RunRecord:
    """Writes <workdir>/run.json for a run starting on `data` (keeps the id of a run that resumes)."""
    old = read_record(workdir)
    metadata = dict(data.builder.info.metadata or {})
    source = metadata.get("source_build") or features_lib.source_build(data.builder)
    record = RunRecord(id=old.id if old else uuid.uuid4().hex, dataset=data.description.to_json(),
                       dataset_name=str(config.dataset.name), setup=dict(metadata.get("setup", {}) or {}),
                       source_build=dict(source), plugins=plugins.loaded(),
                       created=old.created if old else time.time())
    paths.write_text(paths.join(workdir, RECORD_FILE), json.dumps(dataclasses.asdict(record), indent=2, sort_keys=True))
    return record


def run_identity(workdir: str) -> dict:
    """What names a run wherever its folder moves: {'run_id': its record's id, 'step': its newest checkpoint}."""
    workdir = paths.expand(workdir)
    record = read_record(workdir)
    out = {"run_id": record.id} if record else {}
    try:
        out["step"] = checkpoint_step(workdir)
    except MissingError:
        pass
    return out


def load_plugins(workdir: str) -> list[str]:
    """Imports the plug-in modules the run in `workdir` was trained with (its record names them)."""
    record = read_record(workdir)
    return plugins.load(record.plugins if record else ())


def run_description(workdir: str, config=None) -> description_lib.DatasetDescription:
    """The description of the dataset a run trained on: from its record, else (an older run) from its
    dataset's build or the registered description of that dataset."""
    record = read_record(workdir)
    if record is not None:
        return record.description
    config = config or workdir_lib.load_config(workdir)
    try:
        return input_pipeline.dataset_description(config)
    except Exception:  # noqa: BLE001  (an older run whose data is gone: the registered description)
        return datasets.description(str(config.dataset.name))


# -- Building a run's model -----------------------------------------------------------------------


def omnivec_encoder(run_dir: str, *, load: bool = True, inputs: Mapping | None = None):
    """The OmniVec encoder of the pretraining run in `run_dir` (newest checkpoint) -> (module, report).

    inputs: the {modality: dataset key} the caller will feed; it must match the run's. The
    encoder is rebuilt with dropout 0 (a generator's features are deterministic). load=False
    gives its structure with random weights (a restore of a fine-tuned run overwrites them).
    """
    run_dir = paths.expand(run_dir)
    config = workdir_lib.load_config(run_dir)
    if not is_pretraining(config):
        raise ConfigError(f"{run_dir} is not an OmniVec pretraining run (its config has no `pretrain` block); "
                          "pass the --workdir of `python -m fer_jax.pretrain`.")
    def canonical(mapping):  # DFEW builds before 1.2.0 named the pose feature `keypoints`
        return {m: "pose" if key == "keypoints" else key for m, key in dict(mapping).items()}

    run_inputs = {m: spec.input for m, spec in config.modalities.items()}
    if inputs and canonical(inputs) != canonical(run_inputs):
        raise ConfigError(f"the OmniVec of {run_dir} reads {run_inputs}, but it is given {dict(inputs)}; "
                          "feed it the same dataset features it was pretrained on.")
    config.model.dropout = 0.0
    if not load:
        shapes = read_input_shapes(run_dir)
        if shapes is None:
            raise MissingError(f"{paths.join(run_dir, SHAPES_FILE)} not found: the pretraining run in {run_dir} "
                               "never started.")
        return registry.build_omnivec(config, shapes, seed=int(config.seed)).encoder, "random initialisation"
    run = restore(run_dir, kind="pretraining", config=config)
    return run.model().encoder, f"OmniVec from {run_dir} step {run.step}"


def pretraining_run_dir(path: str, *, workdir: str | None = None, name: str = "") -> str:
    """A pretraining run a model reads (an `omnivec` tokenizer's checkpoint): at its path, or, moved or deleted since,
    the copy of its config and input shapes in the bundle of the run in `workdir` (fer_jax.bundle)."""
    path = paths.expand(path)
    if paths.exists(paths.join(path, workdir_lib.CONFIG_FILE)) or workdir is None:
        return path
    copy = paths.join(workdir, "bundle", "omnivec", name)
    return copy if paths.exists(paths.join(copy, workdir_lib.CONFIG_FILE)) else path


def model_builder(config, input_shapes: Mapping, *, pretrained: bool = True, workdir: str | None = None):
    """() -> the config's model: the OmniVec pretrainer of a pretraining config, else the fusion model.

    pretrained=True loads what the config says is pretrained (generators' weights, the OmniVec of
    an `omnivec` tokenizer's pretraining run); False builds the same structure without reading any
    weights (for a restore, which overwrites them all). workdir: the run being restored (its bundle
    stands in for a pretraining run that is no longer at its path).
    """
    seed = int(config.seed)
    if is_pretraining(config):
        return lambda: registry.build_omnivec(config, input_shapes, seed=seed, pretrained=pretrained)

    num_classes = input_pipeline.num_classes(config)

    def build():
        encoders = {}
        for m, spec in config.modalities.items():
            if spec.tokenizer == "omnivec" and spec.get("checkpoint"):
                run_dir = pretraining_run_dir(spec.checkpoint, workdir=workdir, name=m)
                encoders[m], report = omnivec_encoder(run_dir, load=pretrained and spec.get("pretrained", True),
                                                      inputs=dict(spec.get("inputs", {}) or {}))
                log.info("%s: %s", m, report)
        return registry.build_model(config, input_shapes, seed=seed, pretrained=pretrained, encoders=encoders,
                                    num_classes=num_classes)

    return build


# -- Restoring a run ------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """A run restored from its workdir: config, checkpoint step, model halves, input shapes."""

    workdir: str
    config: Any
    step: int
    graphdef: Any
    params: Any
    model_state: Any
    input_shapes: dict

    def model(self) -> nnx.Module:
        return nnx.merge(self.graphdef, self.params, self.model_state)


def checkpoint_step(workdir: str, step: int | None = None) -> int:
    """The newest complete checkpoint step of the run in `workdir` (or `step`, checked to exist)."""
    checkpoints = ckpt_lib.RunCheckpoints(workdir, read_only=True)
    try:
        steps = checkpoints.all_steps()
    finally:
        checkpoints.close()
    if not steps:
        raise MissingError(f"{checkpoints.directory} holds no complete checkpoint; train the run first (rerunning "
                           "its command resumes an unfinished one).")
    if step is None:
        return steps[-1]
    if int(step) not in steps:
        raise MissingError(f"{checkpoints.directory} has no checkpoint at step {step}; it has {steps}.")
    return int(step)


def restore(workdir: str, *, kind: str = "classifier", config=None, step: int | None = None,
            input_shapes: Mapping | None = None, sharding=None, shapes_from_data=None) -> Run:
    """The run in `workdir` at `step` (default: its newest checkpoint).

    kind: 'classifier' (train/cross_validate runs; a pretraining run is refused), 'pretraining'
    or 'any'. config: the run's config, if the caller already loaded (and adjusted) it. The input
    shapes come from the run's input_shapes.json; runs made before it existed take `input_shapes`,
    or `shapes_from_data(config)` (e.g. reading one clip of the dataset). sharding: where the
    parameters go (default: replicated over all devices).
    """
    workdir = paths.expand(workdir)
    if config is None:
        config = workdir_lib.load_config(workdir)
    if kind == "classifier" and is_pretraining(config):
        workdir_lib.load_classifier_config(workdir)  # raises: a pretraining run has no classifier
    if kind == "pretraining" and not is_pretraining(config):
        raise ConfigError(f"{workdir} is not an OmniVec pretraining run (its config has no `pretrain` block).")
    shapes = read_input_shapes(workdir) or (dict(input_shapes) if input_shapes else None)
    if shapes is None and shapes_from_data is not None:
        shapes = shapes_from_data(config)
    if shapes is None:
        raise MissingError(f"{paths.join(workdir, SHAPES_FILE)} not found: the run in {workdir} never started.")
    step = checkpoint_step(workdir, step)
    load_plugins(workdir)
    graphdef, _, abstract = train_state.abstract(config, model_builder(config, shapes, pretrained=False,
                                                                       workdir=workdir))
    if sharding is None:
        sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(jax.devices(), ("data",)), jax.sharding.PartitionSpec())
    checkpoints = ckpt_lib.RunCheckpoints(workdir, read_only=True)
    try:
        state = checkpoints.restore(step, ckpt_lib.abstract_like(abstract, sharding))
    finally:
        checkpoints.close()
    return Run(workdir=workdir, config=config, step=step, graphdef=graphdef, params=state["params"],
               model_state=state["model_state"], input_shapes=shapes)


def restore_submodule(workdir: str, path: tuple[str, ...], **kwargs):
    """(module, run) of one part of a restored run's model, e.g. ('tokenizers', 'face', 'generator')."""
    run = restore(workdir, **kwargs)
    module = run.model()
    for name in path:
        module = module[name] if isinstance(module, Mapping) else getattr(module, name)
    return module, run


# -- Generators as a run or a features dataset recorded them ---------------------------------------


def generator_from_run(workdir: str, name: str, modality: str | None = None):
    """The fine-tuned generator `name` from the newest checkpoint of the run in `workdir`.

    Returns (module, report string). Raises ConfigError if the run has no such generator.
    """
    config = workdir_lib.load_config(workdir)
    candidates = [m for m, spec in config.modalities.items()
                  if spec.tokenizer == "generator" and spec.get("generator") == name]
    if modality:
        candidates = [m for m in candidates if m == modality]
    if not candidates:
        raise ConfigError(
            f"the run in {workdir} fine-tuned no generator {name!r}"
            + (f" for modality {modality!r}" if modality else "")
            + f"; its modalities: { {m: (s.tokenizer, s.get('generator')) for m, s in config.modalities.items()} }."
        )
    modality = candidates[0]
    inner = "audio" if generators.get(name).modality == "audio" else "generator"  # WaveformTokenizer.audio
    module, run = restore_submodule(workdir, ("tokenizers", modality, inner), config=config,
                                         shapes_from_data=input_pipeline.example_shapes)
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module)))
    return module, f"fine-tuned {name} from {workdir} step {run.step} (modality {modality!r}): {n:,} values loaded"


def weights_record(spec) -> str:
    """What made a feature, as the features' metadata records it: 'checkpoint:<run>', a file, a name or the default."""
    if spec.get("checkpoint"):
        return f"checkpoint:{paths.resolve(spec.checkpoint)}"
    weights = str(spec.get("weights", "") or "")
    if weights and paths.exists(weights):
        return paths.resolve(weights)
    return weights or "packaged"


def generator_module(name: str, weights: str, *, modality: str | None = None, **options):
    """(module, report) of generator `name` as a weights record says: a fine-tuned run, a file, a name, the default.

    options: the generator's build options (e.g. layer=8), for weights that are not a fine-tuned run.
    """
    if weights.startswith("checkpoint:"):
        options.pop("num_slices", None)  # a fine-tuned generator keeps its run's own slices
        if any(v is not None for v in options.values()):
            raise ConfigError(f"{name}: options {sorted(options)} apply to pretrained weights, not to a fine-tuned "
                              "run's generator, which keeps the run's own setup.")
        return generator_from_run(weights.split(":", 1)[1], name, modality)
    return generators.create(name, weights="" if weights == "packaged" else weights, **options)
