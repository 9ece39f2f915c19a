"""Loading a weights file into a network by a key map, and the report of what it did (ViT, speech, torchvision).

A report lists, by the file's key names, what was loaded, what the model needed but the file
lacks (missing), what the file holds that the model has no place for (unexpected), shape
mismatches, and entries that were deliberately left unused (another tower, heads, counters).
`str(report)` is a short readable summary; `report.ok` is True when nothing needed is lacking.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SHOW = 5  # names listed per category in str(report)


class AbstractUnfilledError(ValueError):
    """A model built abstract (nnx.eval_shape) that a weights file does not fill completely.

    Nothing was written; build the model with concrete (randomly initialised) parameters instead,
    so that those the file lacks keep their initialisation (generators.create does so by itself).
    """
# (parameter name, its variable, the file keys it is made of, how to turn their arrays into its value)
Entry = tuple[str, nnx.Variable, tuple[str, ...], Callable[[list[np.ndarray]], np.ndarray]]


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like -> numpy (bfloat16 tensors via float32, which numpy lacks)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return value.float().numpy()
    return np.asarray(value)


@dataclasses.dataclass
class LoadReport:
    """What a load did. Subclasses name what their `unused` entries are (`unused_label`) and may add lists."""

    source: str
    checkpoint_arch: str
    model_arch: str
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    kind = "checkpoint"  # the first word of str(report)
    unused_label = "unused"

    @property
    def ok(self) -> bool:
        """True when every model parameter was loaded and every entry of the file meant for it was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def extra_counts(self) -> str:
        return ""

    def extra_names(self) -> list[tuple[str, list[str]]]:
        return []

    def __str__(self) -> str:
        lines = [
            f"{self.kind} {self.source} ({self.checkpoint_arch}) -> {self.model_arch} model: "
            f"{len(self.loaded)} loaded, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape mismatches, {len(self.unused)} {self.unused_label}{self.extra_counts()}"
        ]
        shown = [("loaded", self.loaded), ("missing", self.missing), ("unexpected", self.unexpected),
                 ("mismatched", [f"{k} file{list(a)} vs model{list(b)}" for k, a, b in self.mismatched]),
                 ("unused", self.unused), *self.extra_names()]
        for label, items in shown:
            if items:
                more = f", ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
                lines.append(f"  {label}: {', '.join(items[:SHOW])}{more}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _is_abstract(var: nnx.Variable) -> bool:
    return isinstance(var.get_value(), jax.ShapeDtypeStruct)


def apply_entries(module: nnx.Module, entries: list[Entry], tower: dict[str, np.ndarray], report: LoadReport,
                  strict: bool) -> LoadReport:
    """Writes `tower`'s arrays into `module` by a key map, all or nothing; fills `report`.

    entries: (parameter name, its variable, the file keys it is made of, how to convert them). Raises
    ValueError (nothing written) on shape mismatches, on a strict load that is not ok, or when an
    abstract (nnx.eval_shape) model would keep unfilled parameters.
    """
    n_params = len(nnx.to_flat_state(nnx.state(module, nnx.Param)))
    if n_params != len(entries):  # a network with parameters the key map does not know: a bug here
        raise AssertionError(f"{report.model_arch}: {n_params} parameters but {len(entries)} key-map entries")
    used: set[str] = set()
    updates, unfilled = [], []
    for name, var, keys, convert in entries:
        absent = [k for k in keys if k not in tower]
        if absent:
            report.missing.extend(absent)
            unfilled.append(name)
            continue
        used.update(keys)
        array = convert([np.asarray(tower[k]) for k in keys])
        want = tuple(var.get_value().shape)
        if tuple(array.shape) != want:
            report.mismatched.append((keys[0], tuple(tower[keys[0]].shape), want))
            unfilled.append(name)
            continue
        updates.append((var, array))
        report.loaded.extend(k for k in keys if k not in report.loaded)
    report.unexpected = [k for k in tower if k not in used]
    report.missing = list(dict.fromkeys(report.missing))
    if report.mismatched:
        shown = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in report.mismatched[:SHOW])
        raise ValueError(f"{report.source} has layers of other shapes than the {report.model_arch} model ({shown}); "
                         "nothing was written")
    if strict and not report.ok:
        raise ValueError(f"strict load of {report.source} failed (nothing was written):\n{report}")
    abstract = [name for name, var, _, _ in entries if name in unfilled and _is_abstract(var)]
    if abstract:
        raise AbstractUnfilledError(
            f"the model was built abstract (nnx.eval_shape) but {report.source} does not fill "
            f"{', '.join(abstract[:SHOW])}{' ...' if len(abstract) > SHOW else ''} (nothing was written); build it "
            "with concrete parameters so that those keep their initialisation"
        )
    for var, array in updates:
        # A private copy: a numpy view of a live torch tensor must not alias the model's buffers.
        var.set_value(jnp.asarray(np.array(array, dtype=np.float32, copy=True)))
    return report
