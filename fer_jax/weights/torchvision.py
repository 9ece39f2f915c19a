"""Load a torchvision ResNet state dict (.pth, .npz or a dict of arrays) into a Flax NNX ResNet, in place.

    report = load_torchvision(model, "~/weights/resnet18-f37072fd.pth")
    print(report)

Conversions: conv weight OIHW -> kernel HWIO; linear weight [out, in] -> kernel [in, out];
BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var; `num_batches_tracked`
is ignored. torch is imported only when a .pth file has to be read.

A checkpoint of another architecture (bottleneck blocks into a basic-block model, other block
counts, other widths, or not a ResNet at all) is refused with a ValueError before anything is
written. A classification head (`fc.*`) is optional on both sides: a headless model skips the
file's head, a model with a head keeps its initial head when the file has none or a different
number of classes (and the report says so).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fer_jax.models.resnet import ARCHITECTURES, ResNet
from fer_jax.weights import torch_file
from fer_jax.weights.report import SHOW as _SHOW, AbstractUnfilledError, LoadReport as _BaseReport, to_numpy as _to_numpy

_LEAF_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


@dataclasses.dataclass
class LoadReport(_BaseReport):
    """What load_torchvision did. Key names are the checkpoint's (torch) names."""

    skipped_head: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)

    kind = "torchvision checkpoint"

    def extra_counts(self) -> str:
        return f", {len(self.skipped_head)} head entries skipped, {len(self.ignored)} ignored (num_batches_tracked)"

    def extra_names(self):
        return [("skipped head", self.skipped_head)]



def _read(path_or_state_dict: Any) -> tuple[str, dict[str, np.ndarray], list[str]]:
    """-> (source description, {key: array}, notes)."""
    notes: list[str] = []
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(path_or_state_dict))
        source = path
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"torchvision checkpoint {path} does not exist; pass the path of a .pth state dict "
                "(e.g. one saved with torch.save(model.state_dict(), path))"
            )
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                raw: Any = {k: npz[k] for k in npz.files}
        else:
            raw = torch_file.load(path, hint="; save the weights with torch.save(model.state_dict(), path) rather "
                                             "than the whole model, or pass an .npz of the state dict's arrays")
    elif isinstance(path_or_state_dict, Mapping):
        source = "<state dict>"
        raw = path_or_state_dict
    else:
        raise TypeError(
            f"load_torchvision takes a path or a mapping of arrays, got {type(path_or_state_dict).__name__}"
        )

    if not isinstance(raw, Mapping):
        raise ValueError(f"{source} holds a {type(raw).__name__}, not a state dict (a mapping of name -> tensor)")
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if wrapper in raw and isinstance(raw[wrapper], Mapping) and "conv1.weight" not in raw:
            notes.append(f"weights taken from the checkpoint's {wrapper!r} entry")
            raw = raw[wrapper]
            break
    keys = [str(k) for k in raw]
    if keys and all(k.startswith("module.") for k in keys):
        notes.append("'module.' prefix (DataParallel) stripped from every key")
        raw = {k[len("module.") :]: v for k, v in raw.items()}
    state = {str(k): _to_numpy(v) for k, v in raw.items()}
    return source, state, notes


def _describe(source: str, state: Mapping[str, np.ndarray]) -> tuple[str, tuple[int, ...], str]:
    """-> (block type, blocks per stage, a name for it), or ValueError if not a ResNet."""
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        first = ", ".join(list(state)[:_SHOW]) or "none"
        raise ValueError(
            f"{source} does not look like a torchvision ResNet state dict (no 'conv1.weight' and "
            f"'layer1.0.conv1.weight'; first keys: {first}); pass a state dict of torchvision.models.resnet18/34/50"
        )
    block = "bottleneck" if any(re.fullmatch(r"layer\d\.\d+\.conv3\.weight", k) for k in state) else "basic"
    counts = []
    for stage in range(1, 5):
        idx = [int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))]
        counts.append(max(idx) + 1 if idx else 0)
    layers = tuple(counts)
    name = next((n for n, v in ARCHITECTURES.items() if v == (block, layers)), f"{block} blocks {layers}")
    return block, layers, name


def _torch_key(path: tuple[Any, ...]) -> str:
    """NNX state path -> torchvision key, e.g. ('layer2', 0, 'downsample', 'conv', 'kernel') -> 'layer2.0.downsample.0.weight'."""
    parts = [str(p) for p in path[:-1]]
    if "downsample" in parts:
        i = parts.index("downsample")
        parts[i + 1] = {"conv": "0", "bn": "1"}[parts[i + 1]]
    leaf = path[-1]
    parts.append("weight" if leaf == "kernel" else _LEAF_NAMES[leaf])
    return ".".join(parts)


def _to_torch_layout(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if leaf == "kernel" and len(shape) == 4:  # HWIO -> OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:  # [in, out] -> [out, in]
        return (shape[1], shape[0])
    return shape


def _from_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if leaf == "kernel" and array.ndim == 2:
        return array.T
    return array


def _variables(model: ResNet) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, Variable) for every parameter and BatchNorm statistic of the model."""
    out = []
    for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
        obj: Any = model
        for p in path[:-1]:
            obj = obj[p] if isinstance(p, int) else getattr(obj, p)
        out.append((tuple(path), getattr(obj, path[-1])))
    return out


def _is_abstract(var: Any) -> bool:
    return isinstance(var.get_value(), jax.ShapeDtypeStruct)


def load_torchvision(model: ResNet, path_or_state_dict: Any, *, strict: bool = False) -> LoadReport:
    """Copy a torchvision ResNet state dict into `model` (in place) and report what happened.

    path_or_state_dict: a .pth file (read without torch: fer_jax.weights.torch_file), an .npz file, or a mapping
        of torchvision key -> array (numpy arrays or torch tensors).
    strict: also raise (before writing anything) if any model parameter is missing from the
        file, any file entry is unused, or any shape differs. A headless model skipping the
        file's `fc.*` is never an error.

    The model may be abstract (built under `nnx.eval_shape`, no random initialisation) when
    the file fills every parameter, e.g. `nnx.eval_shape(lambda: resnet18(num_classes=None,
    rngs=nnx.Rngs(0)))` with an ImageNet checkpoint; this is the fast way to build one.

    Raises ValueError when the checkpoint is not a ResNet of the model's architecture.
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"load_torchvision loads into a fer_jax ResNet, got {type(model).__name__}")
    if model.fused:
        raise ValueError(
            "this ResNet has its BatchNorm folded (fold_batchnorm); load the checkpoint into the unfused model "
            "and fold it afterwards"
        )
    source, state, notes = _read(path_or_state_dict)
    block, layers, ckpt_arch = _describe(source, state)
    model_desc = f"{model.arch} ({model.block} blocks {model.layers})"
    if (block, layers) != (model.block, model.layers):
        looks = f"{block} blocks {layers}" + (f" ({ckpt_arch}-like)" if ckpt_arch in ARCHITECTURES else "")
        fix = (
            f"build the model with fer_jax.models.resnet.{ckpt_arch}(...)"
            if ckpt_arch in ARCHITECTURES
            else "build a ResNet with the checkpoint's block type and counts"
        )
        raise ValueError(f"{source} has {looks} but the model is {model_desc}; {fix} or pass a {model.arch} checkpoint")

    report = LoadReport(source=source, checkpoint_arch=ckpt_arch, model_arch=model.arch, notes=notes)
    report.ignored = [k for k in state if k.endswith("num_batches_tracked")]
    used = set(report.ignored)
    updates = []
    variables = _variables(model)
    for path, var in variables:
        key = _torch_key(path)
        expected = _to_torch_layout(path[-1], tuple(var.get_value().shape))
        if key not in state:
            report.missing.append(key)
            continue
        used.add(key)
        array = state[key]
        if tuple(array.shape) != expected:
            report.mismatched.append((key, tuple(array.shape), expected))
            continue
        updates.append((var, _from_torch_layout(path[-1], array)))
        report.loaded.append(key)
    loaded_keys = set(report.loaded)
    report.loaded = [k for k in state if k in loaded_keys]  # the file's order
    for key in state:
        if key in used:
            continue
        if model.fc is None and key.startswith("fc."):
            report.skipped_head.append(key)
        else:
            report.unexpected.append(key)

    trunk_mismatch = [m for m in report.mismatched if not m[0].startswith("fc.")]
    if trunk_mismatch:
        shown = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in trunk_mismatch[:_SHOW])
        raise ValueError(
            f"{source} has {layers} {block} blocks like {model.arch} but different layer shapes ({shown}); it is "
            "another variant (wide / grouped / other widths): pass a plain torchvision "
            f"{model.arch} checkpoint"
        )
    if model.fc is None:
        if report.skipped_head:
            report.notes.append(f"model has no head: the file's {', '.join(report.skipped_head)} were not used")
        else:
            report.notes.append("checkpoint has no fc.* head and the model is headless: feature extractor fully loaded")
    else:
        fc_missing = [k for k in report.missing if k.startswith("fc.")]
        if fc_missing:
            report.notes.append("checkpoint has no fc.* head: the model's head keeps its initialisation")
        fc_bad = [m for m in report.mismatched if m[0] == "fc.weight"]
        if fc_bad:
            report.notes.append(
                f"the file's head has {fc_bad[0][1][0]} classes, the model's {model.num_classes}: "
                "the model's head keeps its initialisation"
            )
    if strict and not report.ok:
        raise ValueError(f"strict load of {source} failed (nothing was written):\n{report}")
    unfilled = [_torch_key(p) for p, var in variables if _is_abstract(var) and _torch_key(p) not in loaded_keys]
    if unfilled:
        raise AbstractUnfilledError(
            f"the model was built abstract (nnx.eval_shape) but {source} does not fill {', '.join(unfilled[:_SHOW])}"
            f"{' ...' if len(unfilled) > _SHOW else ''} (nothing was written); build the model with concrete "
            "parameters (e.g. resnet18(rngs=nnx.Rngs(0))) so that those keep their initialisation"
        )

    for var, array in updates:
        # A private copy: a numpy view of a live torch tensor must not alias the model's buffers.
        var.set_value(jnp.asarray(np.array(array, dtype=var.get_value().dtype, copy=True)))
    return report
