"""What loading a weights file into a network did: one report shape for every loader (torchvision, ViT, speech).

A report lists, by the file's key names, what was loaded, what the model needed but the file
lacks (missing), what the file holds that the model has no place for (unexpected), shape
mismatches, and entries that were deliberately left unused (another tower, heads, counters).
`str(report)` is a short readable summary; `report.ok` is True when nothing needed is lacking.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

SHOW = 5  # names listed per category in str(report)


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
