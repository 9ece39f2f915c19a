"""A build's plan, as the reader of a release makes it: the clips of every stored split with their frames.

Plain Python (no TFDS): a reader (`tfds_dfew.release`, `mafw_release`, `ferv39k_release`, a plug-in's)
turns a release folder into a `Plan`; `tfds_dfew.clip_builder.ClipBuilder` stores it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence

from tfds_dfew import description as description_lib


@dataclasses.dataclass(frozen=True)
class ClipEntry:
    """One clip to store: id, label index (-1: unlabelled), test fold (0: none), frame folder, per-clip fields."""

    clip_id: str
    label: int
    fold: int
    frame_dir: str | None
    source: str | None = None  # which of the release's frame folders holds it
    split: str = ""  # the stored split; '' -> fold<k> (or 'unlabelled' for label -1)
    fields: Mapping = dataclasses.field(default_factory=dict)  # the dataset's own per-clip features
    audio_path: str | None = None  # the clip's video with sound, when the plan knows it

    @property
    def stored_split(self) -> str:
        if self.split:
            return self.split
        return description_lib.UNLABELLED_SPLIT if self.label < 0 else f"fold{self.fold}"


@dataclasses.dataclass
class Plan:
    """What a build stores: clips per split (in order) and what the reading of the release found."""

    splits: dict[str, list[ClipEntry]]
    metadata: dict = dataclasses.field(default_factory=dict)  # recorded as the dataset's metadata
    missing: list[str] = dataclasses.field(default_factory=list)  # listed clips without frames (left out)


def describe_ids(ids: Sequence[str], limit: int = 10) -> str:
    """'3 (00004, 00009, 00012)' style text for a list of clip ids."""
    ids = list(ids)
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return f"{len(ids)} ({', '.join(ids[:limit])}{more})"


def ids_digest(ids: Sequence[str]) -> str:
    """A short digest of a set of clip ids (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
