"""Reading the official DFEW release: split CSVs, the vote annotation, frame folders and 16-frame sampling.

Everything here is plain Python + numpy + Pillow (+ openpyxl for the annotation workbook; no TFDS,
no JAX), so the same code plans a build, checks a user's copy of DFEW, and is tested on small
generated trees.

Layout of the official release (version 1.0)::

    <root>/Clip/clip_224x224_16f/<id>/*.jpg      16 frames per clip (preferred source)
    <root>/Clip/clip_224x224/<id>/*.jpg          variable length, sampled to 16 here
    <root>/EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv
    <root>/EmoLabel_DataSplit/test(single-labeled)/set_{1..5}.csv
    <root>/Annotation/annotation.xlsx            optional: 7 vote counts + single label per clip

The annotation workbook as released has one row per clip with the columns
`1happy, 2sad, 3neutral, 4angry, 5surprise, 6disgust, 7fear, order, label`: the votes of ten
annotators per class (official order = training order), the clip number (`order`, unpadded) and
the single label (1..7, or 0 for a clip without a single label: a multi-labelled clip).
`read_annotation` finds these columns by name, so reordered, renamed (`Happy`, `anger`,
`video_name`, ...) or extra columns are fine.

Clips without a single label (`ReleasePlan.unlabelled`, label -1, fold 0) come from the
annotation's label-0 rows that have a frame folder. A release without `Annotation/` still builds:
its votes are all zero and, as a fallback, every clip folder that no split CSV lists counts as
unlabelled. Where a split CSV and the annotation disagree on a clip's label, the CSV wins (the
folds are defined by the CSVs): the clip keeps its CSV label and the disagreement is logged and
kept in `ReleasePlan.label_conflicts`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections.abc import Sequence

import numpy as np

from tfds_dfew.annotation import annotation_path, read_annotation  # noqa: F401  (part of this module's API)
from tfds_dfew.frames import list_frames, load_frame, load_frames, sample_indices  # noqa: F401  (re-exported)
from tfds_dfew.plan import ClipEntry, describe_ids  # noqa: F401  (re-exported)
from tfds_dfew.layout import (  # noqa: F401  (re-exported: release.CLASS_NAMES etc.)
    NUM_FRAMES,
    NUM_FOLDS,
    CLASS_NAMES,
    FRAME_FOLDERS,
    SPLIT_DIR,
    TRAIN_DIR,
    TEST_DIR,
    IMAGE_SUFFIXES,
    ANNOTATION_DIR,
    ANNOTATION_FILE,
    ANNOTATION_COLUMNS,
    UNLABELLED,
    UNLABELLED_FOLD,
    ReleaseError,
    normalize_clip_id,
)

log = logging.getLogger(__name__)


def split_csv_path(root: str, part: str, fold: int) -> str:
    """Path of `train`/`test` CSV `set_<fold>.csv` under the release root."""
    sub = TRAIN_DIR if part == "train" else TEST_DIR
    return os.path.join(root, SPLIT_DIR, sub, f"set_{fold}.csv")


def read_split_csv(path: str) -> dict[str, int]:
    """Reads one split CSV into {clip_id (5 digits): label 0..6}.

    Accepts the official `video_name,label` header (any column order, extra columns ignored),
    ids with or without zero padding, and a UTF-8 byte-order mark. Raises ReleaseError naming
    the file and row for anything else.
    """
    if not os.path.isfile(path):
        raise ReleaseError(
            f"{path}: split file not found. Point --manual_dir at the unpacked DFEW release, the "
            f"folder that holds {SPLIT_DIR}/ and Clip/."
        )
    with open(path, "rb") as f:
        text = f.read().decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ReleaseError(f"{path}: file is empty; expected a header 'video_name,label' and one row per clip.")
    header = [c.strip().lower() for c in rows[0]]
    if "video_name" not in header or "label" not in header:
        raise ReleaseError(
            f"{path}: expected columns 'video_name,label', found {rows[0]!r}. "
            "Restore the original CSV from the DFEW release."
        )
    if len(rows) == 1:
        raise ReleaseError(f"{path}: has a header but no clips. Restore the original CSV from the DFEW release.")
    id_col, label_col = header.index("video_name"), header.index("label")
    out: dict[str, int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        where = f"{path}, line {line_no}"
        if len(row) <= max(id_col, label_col):
            raise ReleaseError(f"{where}: expected 'video_name,label', got {row!r}.")
        clip_id = normalize_clip_id(row[id_col], where=where)
        raw_label = row[label_col].strip()
        try:
            label = int(float(raw_label))
        except ValueError:
            raise ReleaseError(f"{where}: label {raw_label!r} for clip {clip_id} is not an integer 1..7.") from None
        if not 1 <= label <= 7 or float(raw_label) != label:
            raise ReleaseError(
                f"{where}: label {raw_label!r} for clip {clip_id} is outside 1..7 "
                "(DFEW labels: 1 Happy, 2 Sad, 3 Neutral, 4 Angry, 5 Surprise, 6 Disgust, 7 Fear)."
            )
        if clip_id in out:
            raise ReleaseError(f"{where}: clip {clip_id} is listed twice in this file.")
        out[clip_id] = label - 1
    return out


@dataclasses.dataclass
class ReleasePlan:
    """What a build will do: the labelled clips per fold, the unlabelled clips, votes, and what is left out."""

    root: str
    clips: list[ClipEntry]  # single-labelled (listed in the CSVs) with a frame folder
    missing: list[ClipEntry]  # listed in a CSV but no frame folder anywhere
    unlabelled: list[ClipEntry] = dataclasses.field(default_factory=list)  # label -1, fold 0, with frames
    unlabelled_missing: list[str] = dataclasses.field(default_factory=list)  # annotation label 0, no frames
    votes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # id -> int32[7], training order
    annotation_path: str | None = None  # the annotation workbook read; None: the release has none
    unlabelled_source: str = "none"  # 'annotation', 'clip folders' (no annotation) or 'none'
    label_conflicts: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    # ^ (clip id, CSV label 1..7, annotation label 0..7); the clip keeps its CSV label
    unannotated: list[str] = dataclasses.field(default_factory=list)  # listed clips without an annotation row
    left_out: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, reason): folders in no split

    @property
    def has_votes(self) -> bool:
        """Whether vote counts were read (the release has Annotation/annotation.xlsx)."""
        return self.annotation_path is not None

    def votes_of(self, clip_id: str) -> np.ndarray:
        """The clip's 7 vote counts int32[7] (training order); zeros without an annotation row."""
        votes = self.votes.get(clip_id)
        return np.zeros(len(CLASS_NAMES), np.int32) if votes is None else votes

    def by_fold(self, fold: int) -> list[ClipEntry]:
        return [c for c in self.clips if c.fold == fold]

    def counts(self) -> dict[str, list[int]]:
        """Per fold: class counts of the test set (clips with frames), keyed 'fold1'..'fold5'."""
        out = {}
        for k in range(1, NUM_FOLDS + 1):
            hist = [0] * len(CLASS_NAMES)
            for c in self.by_fold(k):
                hist[c.label] += 1
            out[f"fold{k}"] = hist
        return out


def check_root(root: str) -> None:
    """Raises ReleaseError unless `root` looks like the unpacked release."""
    if not root or not os.path.isdir(root):
        raise ReleaseError(
            f"DFEW folder {root!r} does not exist. Download DFEW (it needs a licence agreement), "
            "unpack it, and pass the folder that holds EmoLabel_DataSplit/ and Clip/ as --manual_dir."
        )
    if not os.path.isdir(os.path.join(root, SPLIT_DIR)):
        raise ReleaseError(
            f"{root}: no {SPLIT_DIR}/ folder. --manual_dir must be the unpacked DFEW release root "
            f"(it holds {SPLIT_DIR}/ and Clip/); found: {sorted(os.listdir(root))[:10]}."
        )
    if not any(os.path.isdir(os.path.join(root, "Clip", f)) for f in FRAME_FOLDERS):
        raise ReleaseError(
            f"{root}: neither Clip/{FRAME_FOLDERS[0]}/ nor Clip/{FRAME_FOLDERS[1]}/ exists. "
            "Unpack the face-frame archives of the release into Clip/."
        )


def plan_release(root: str, *, frame_source: str = "auto") -> ReleasePlan:
    """Reads the split CSVs and the vote annotation, checks them, and finds each clip's frames.

    Labelled clips are those the ten CSVs list (label and fold from the CSVs). Unlabelled clips
    (label -1, fold 0) are the annotation's label-0 clips that no CSV lists and that have a frame
    folder; without Annotation/annotation.xlsx, every clip folder no CSV lists. Votes come from
    the annotation (zeros for a clip without a row, all zeros without the file). Inconsistencies
    that do not stop a build are logged with counts and first ids, and kept in the plan:
    `label_conflicts` (CSV label != annotation label; the CSV wins), `unannotated` (listed clips
    without an annotation row), `left_out` (clip folders stored in no split: a single label in
    the annotation but in no CSV, or in neither the annotation nor a CSV).

    Args:
      root: the release root (holds EmoLabel_DataSplit/ and Clip/, optionally Annotation/).
      frame_source: 'auto' (16f folder when present, else the variable-length one),
        'clip_224x224_16f' or 'clip_224x224' (only that folder).
    Raises:
      ReleaseError: on inconsistent or unreadable CSVs or annotation (the message names the file and clip).
    """
    check_root(root)
    if frame_source not in ("auto",) + FRAME_FOLDERS:
        raise ReleaseError(f"frame_source={frame_source!r}; expected 'auto' or one of {FRAME_FOLDERS}.")
    tests = {k: read_split_csv(split_csv_path(root, "test", k)) for k in range(1, NUM_FOLDS + 1)}
    fold_of: dict[str, int] = {}
    label_of: dict[str, int] = {}
    for k, rows in tests.items():
        for clip_id, label in rows.items():
            if clip_id in fold_of:
                raise ReleaseError(
                    f"clip {clip_id} is in both {split_csv_path(root, 'test', fold_of[clip_id])} and "
                    f"{split_csv_path(root, 'test', k)}; DFEW's five test sets are disjoint. "
                    "Restore the original CSVs."
                )
            fold_of[clip_id], label_of[clip_id] = k, label
    for k in range(1, NUM_FOLDS + 1):
        path = split_csv_path(root, "train", k)
        if not os.path.exists(path):
            continue  # train_k is derived from the test sets; the file is only a cross-check
        train = read_split_csv(path)
        for clip_id, label in train.items():
            if fold_of.get(clip_id) == k:
                raise ReleaseError(
                    f"{path}: clip {clip_id} is also in test set_{k}.csv: a clip in both train and test of "
                    f"fold {k} would leak test data. Restore the original CSVs."
                )
            if clip_id not in fold_of:
                raise ReleaseError(
                    f"{path}: clip {clip_id} is in no test set; DFEW's train set k is the union of the "
                    "other four test sets. Restore the original CSVs."
                )
            if label_of[clip_id] != label:
                raise ReleaseError(
                    f"{path}: clip {clip_id} has label {label + 1} here but {label_of[clip_id] + 1} in test "
                    f"set_{fold_of[clip_id]}.csv."
                )
        expected = {c for c, f in fold_of.items() if f != k}
        if set(train) != expected:
            lost = sorted(expected - set(train))
            raise ReleaseError(
                f"{path}: train set {k} should hold every clip of the other four test sets; "
                f"{len(lost)} are missing (first: {lost[:5]}). Restore the original CSVs."
            )
    folders = [f for f in FRAME_FOLDERS if frame_source in ("auto", f)]
    listings = {}
    for f in folders:
        base = os.path.join(root, "Clip", f)
        listings[f] = set(os.listdir(base)) if os.path.isdir(base) else set()

    def find(clip_id):
        source = next((f for f in folders if clip_id in listings[f]), None)
        return (os.path.join(root, "Clip", source, clip_id) if source else None), source

    clips, missing = [], []
    for clip_id in sorted(fold_of):
        frame_dir, source = find(clip_id)
        entry = ClipEntry(clip_id, label_of[clip_id], fold_of[clip_id], frame_dir, source)
        (clips if source else missing).append(entry)
    plan = ReleasePlan(root=root, clips=clips, missing=missing)

    # Clip folders named like DFEW's (5 digits) that no CSV lists.
    unlisted = sorted({n for names in listings.values() for n in names if len(n) == 5 and n.isdigit()} - set(fold_of))
    path = annotation_path(root)
    if os.path.isfile(path):
        annotation = read_annotation(path)
        plan.annotation_path = path
        plan.unlabelled_source = "annotation"
        plan.votes = {clip_id: votes for clip_id, (votes, _) in annotation.items()}
        candidates = sorted(c for c, (_, label) in annotation.items() if label == 0 and c not in fold_of)
        plan.label_conflicts = [
            (c, label_of[c] + 1, annotation[c][1]) for c in sorted(fold_of)
            if c in annotation and annotation[c][1] != label_of[c] + 1
        ]
        plan.unannotated = [c for c in sorted(fold_of) if c not in annotation]
        for c in unlisted:
            if c not in annotation:
                plan.left_out.append((c, f"no row in {ANNOTATION_DIR}/{ANNOTATION_FILE} and in no split CSV"))
            elif annotation[c][1] != 0:
                plan.left_out.append((c, f"single label {annotation[c][1]} in {ANNOTATION_DIR}/{ANNOTATION_FILE} "
                                         "but in no split CSV"))
    else:
        candidates = unlisted
        plan.unlabelled_source = "clip folders" if unlisted else "none"
    for clip_id in candidates:
        frame_dir, source = find(clip_id)
        if source is None:
            plan.unlabelled_missing.append(clip_id)
        else:
            plan.unlabelled.append(ClipEntry(clip_id, UNLABELLED, UNLABELLED_FOLD, frame_dir, source))
    if plan.annotation_path and not plan.unlabelled and not plan.unlabelled_missing:
        plan.unlabelled_source = "none"
    _log_inconsistencies(plan)
    return plan


def _log_inconsistencies(plan: ReleasePlan) -> None:
    where = plan.annotation_path
    if plan.label_conflicts:
        first = ", ".join(f"{c} (CSV {a}, annotation {b})" for c, a, b in plan.label_conflicts[:5])
        log.warning(
            "%s: %d clips have another label in the split CSVs than in the annotation; the CSV label is kept "
            "(first: %s).", where, len(plan.label_conflicts), first)
    if plan.unannotated:
        log.warning("%s: %s listed clips have no row; their votes are stored as zeros.",
                    where, describe_ids(plan.unannotated))
    if plan.left_out:
        reasons = sorted({reason for _, reason in plan.left_out})
        log.warning("%s clip folders are stored in no split (%s).",
                    describe_ids([c for c, _ in plan.left_out]), "; ".join(reasons))


def load_clip(entry: ClipEntry, size: int, num_frames: int = NUM_FRAMES):
    """Reads a clip's frames: (uint8[num_frames, size, size, 3], frame indices, original frame count)."""
    assert entry.frame_dir is not None
    return load_frames(entry.frame_dir, size, num_frames, clip_id=entry.clip_id)


def original_frame_count(entry: ClipEntry, root: str) -> int:
    """Frames of the clip before 16-frame sampling: from clip_224x224/<id> when the release has it."""
    variable = os.path.join(root, "Clip", "clip_224x224", entry.clip_id)
    if entry.source != "clip_224x224" and os.path.isdir(variable):
        return sum(n.lower().endswith(IMAGE_SUFFIXES) for n in os.listdir(variable))
    return len(list_frames(entry.frame_dir, clip_id=entry.clip_id)) if entry.frame_dir else 0


def fold_splits(fold: int) -> tuple[str, str]:
    """TFDS split strings (train, test) for fold 1..5: train = the other four stored test sets."""
    if fold not in range(1, NUM_FOLDS + 1):
        raise ValueError(f"fold must be 1..{NUM_FOLDS}, got {fold!r}")
    train = "+".join(f"fold{k}" for k in range(1, NUM_FOLDS + 1) if k != fold)
    return train, f"fold{fold}"


def describe_missing(missing: Sequence[ClipEntry], limit: int = 10) -> str:
    ids = [c.clip_id for c in missing]
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return f"{len(ids)} listed clips have no frame folder: {', '.join(ids[:limit])}{more}"
