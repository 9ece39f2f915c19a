"""What a dataset is, as data: its classes, their basic emotions, its split scheme, clip ids, modalities.

Every builder declares one `DatasetDescription` and stores it (with what that build holds: frames
per clip, optional modalities) in its dataset's metadata under `dataset`; cached-features datasets
copy it from their source. Everything downstream (training, evaluation, tables, plots, predict)
reads class names, split names and counts from there, never from code:

    description = datasets.description_of(builder)      # tfds_dfew.datasets
    description.class_names          # ('happy', 'sad', ...) in the dataset's own order
    description.scheme.splits(2)     # ('fold1+fold3+fold4+fold5', 'fold2'), or ('train', 'test')

Two split schemes cover the field's benchmarks: `folds` (k official test sets stored once as splits
`fold1`..`foldk`; the training set of fold k is the other k-1) and `train_test` (one official
split, stored as `train` and `test`; its only "fold" is 1).

Basic emotions: each class names the basic emotion it stands for (or None), so a model trained on
one dataset can be scored on another by names (`shared_classes`). The names differ between
releases (happy / happiness / Happy); the mapping is declared by each description, never guessed.

A description is registered by its builder module (`register`), so a dataset added as a plug-in
is known by name as soon as its module is imported.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

# The vocabulary cross-dataset evaluation speaks: Ekman's six and neutral.
BASIC_EMOTIONS = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
UNLABELLED_SPLIT = "unlabelled"


@dataclasses.dataclass(frozen=True)
class SplitScheme:
    """How a dataset's official protocol is stored: k folds (`folds`) or one train/test split (`train_test`)."""

    kind: str  # 'folds' | 'train_test'
    num_folds: int = 1

    def __post_init__(self):
        if self.kind not in ("folds", "train_test"):
            raise ValueError(f"split scheme {self.kind!r}: expected 'folds' or 'train_test'")
        if self.kind == "folds" and self.num_folds < 2:
            raise ValueError(f"a folds scheme needs at least 2 folds, got {self.num_folds}")
        if self.kind == "train_test" and self.num_folds != 1:
            raise ValueError("a train_test scheme has exactly one fold")

    @classmethod
    def k_folds(cls, k: int) -> "SplitScheme":
        return cls("folds", int(k))

    @classmethod
    def train_test(cls) -> "SplitScheme":
        return cls("train_test", 1)

    @property
    def folds(self) -> tuple[int, ...]:
        """The evaluation units: 1..k, or (1,) for one train/test split."""
        return tuple(range(1, self.num_folds + 1))

    @property
    def stored_splits(self) -> tuple[str, ...]:
        """The labelled splits a build stores ('fold1'..'foldk', or 'train', 'test')."""
        if self.kind == "folds":
            return tuple(f"fold{k}" for k in self.folds)
        return ("train", "test")

    def describe(self) -> str:
        return f"{self.num_folds} folds" if self.kind == "folds" else "one train/test split"

    def check(self, fold) -> int:
        """fold as an int, or ValueError saying which folds exist."""
        try:
            value = int(fold)
        except (TypeError, ValueError):
            value = None
        if value not in self.folds:
            if self.kind == "folds":
                raise ValueError(f"fold must be 1..{self.num_folds}, got {fold!r}")
            raise ValueError(f"this dataset has one train/test split, so fold must be 1, got {fold!r}")
        return value

    def splits(self, fold) -> tuple[str, str]:
        """TFDS split strings (train, test) of `fold`: train = the other stored test sets, or 'train'."""
        k = self.check(fold)
        if self.kind == "train_test":
            return "train", "test"
        return "+".join(f"fold{j}" for j in self.folds if j != k), f"fold{k}"

    def name(self, fold) -> str:
        """How tables name `fold`: 'fold2', or 'test' for a train/test split."""
        return self.splits(fold)[1]

    def to_json(self) -> dict:
        return {"kind": self.kind, "num_folds": self.num_folds}

    @classmethod
    def from_json(cls, d: Mapping) -> "SplitScheme":
        return cls(str(d["kind"]), int(d.get("num_folds", 1)))


@dataclasses.dataclass(frozen=True)
class DatasetDescription:
    """One dataset's facts. A build stores it with `num_frames` and `modalities` set to what it holds."""

    name: str  # the TFDS name, e.g. 'dfew'
    title: str  # how people write it, e.g. 'DFEW'
    class_names: tuple[str, ...]  # index i = label i, in the dataset's own order
    basic_emotions: tuple[str | None, ...]  # per class: its BASIC_EMOTIONS name, or None
    scheme: SplitScheme
    clip_id: str = ""  # the clip id format, in words (e.g. '5-digit zero-padded number, 00001..16372')
    frame_sources: tuple[str, ...] = ()  # where a release keeps its frames
    modalities: tuple[str, ...] = ()  # optional modalities stored besides the frames: pose, audio, captions
    num_frames: int = 16  # frames stored per clip
    fields: tuple[str, ...] = ()  # per-clip fields besides frames/label/clip_id/num_frames/fold (votes, scene, ...)
    group_by: str = ""  # a per-clip ClassLabel field evaluation also reports by (e.g. 'scene')
    homepage: str = ""

    def __post_init__(self):
        if len(self.basic_emotions) != len(self.class_names):
            raise ValueError(f"{self.name}: {len(self.class_names)} classes but {len(self.basic_emotions)} basic "
                             "emotions; give one (or None) per class")
        bad = [b for b in self.basic_emotions if b is not None and b not in BASIC_EMOTIONS]
        if bad:
            raise ValueError(f"{self.name}: basic emotions {bad} are not among {BASIC_EMOTIONS}")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{self.name}: class names repeat: {self.class_names}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def replace(self, **changes) -> "DatasetDescription":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["scheme"] = self.scheme.to_json()
        d["basic_emotions"] = [b or "" for b in self.basic_emotions]
        for k in ("class_names", "frame_sources", "modalities", "fields"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: Mapping | str) -> "DatasetDescription":
        if isinstance(d, str):
            d = json.loads(d)
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in dict(d).items() if k in known}
        kw["scheme"] = SplitScheme.from_json(d["scheme"])
        kw["basic_emotions"] = tuple(b or None for b in d["basic_emotions"])
        for k in ("class_names", "frame_sources", "modalities", "fields"):
            kw[k] = tuple(kw.get(k, ()))
        kw["num_frames"] = int(kw.get("num_frames", 16))
        return cls(**kw)


def shared_classes(trained: DatasetDescription, target: DatasetDescription):
    """How a model trained on `trained` scores `target`'s clips, through the basic emotions.

    Returns (pairs, left_out_target, left_out_trained): pairs [(target class index, trained class
    index)] for every target class whose basic emotion the trained dataset also has; the target's
    classes without a counterpart (their clips are not scored) and the trained classes no target
    class maps to (their logits are dropped), as class names.
    """
    by_basic = {b: i for i, b in enumerate(trained.basic_emotions) if b is not None}
    pairs, left_target = [], []
    for j, b in enumerate(target.basic_emotions):
        if b is not None and b in by_basic:
            pairs.append((j, by_basic[b]))
        else:
            left_target.append(target.class_names[j])
    used = {i for _, i in pairs}
    left_trained = [n for i, n in enumerate(trained.class_names) if i not in used]
    return pairs, left_target, left_trained


# -- The registry: builder modules register their description ---------------------------------------

_REGISTERED: dict[str, DatasetDescription] = {}


def register(description: DatasetDescription) -> DatasetDescription:
    _REGISTERED[description.name] = description
    return description


def registered(name: str) -> DatasetDescription | None:
    """The description a builder module registered for dataset `name` ('dfew', 'mafw', ...), or None."""
    return _REGISTERED.get(name)


def names() -> list[str]:
    return sorted(_REGISTERED)


def base_name(dataset: str) -> str:
    """'dfew/frames112' -> 'dfew'; 'mafw_features/x' -> 'mafw' (a features dataset's source dataset)."""
    base = str(dataset).split("/", 1)[0].split(":", 1)[0]
    return base[: -len("_features")] if base.endswith("_features") else base


def stored_splits(description: DatasetDescription, available: Sequence[str]) -> list[str]:
    """The description's labelled splits that a build holds, in order (plus `unlabelled` when present)."""
    out = [s for s in description.scheme.stored_splits if s in available]
    return out + ([UNLABELLED_SPLIT] if UNLABELLED_SPLIT in available else [])
