"""Reading the official DFEW release: split CSVs, frame folders and 16-frame sampling.

Everything here is plain Python + numpy + Pillow (no TFDS, no JAX), so the same code plans a
build, checks a user's copy of DFEW, and is tested on small generated trees.

Layout (see DFEW.md)::

    <root>/Clip/clip_224x224_16f/<id>/*.jpg      16 frames per clip (preferred source)
    <root>/Clip/clip_224x224/<id>/*.jpg          variable length, sampled to 16 here
    <root>/EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv
    <root>/EmoLabel_DataSplit/test(single-labeled)/set_{1..5}.csv
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from collections.abc import Sequence

import numpy as np

NUM_FRAMES = 16
NUM_FOLDS = 5
# Training order (index = official label - 1).
CLASS_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
FRAME_FOLDERS = ("clip_224x224_16f", "clip_224x224")
SPLIT_DIR = "EmoLabel_DataSplit"
TRAIN_DIR = "train(single-labeled)"
TEST_DIR = "test(single-labeled)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class ReleaseError(ValueError):
    """The DFEW release on disk is not usable as it is; the message says where and what to do."""


def normalize_clip_id(raw: str | int, *, where: str = "") -> str:
    """Returns the 5-digit zero-padded clip id for `raw` ('17', '00017', 17, '00017.mp4')."""
    text = str(raw).strip()
    stem = os.path.splitext(text)[0] if text.lower().endswith((".mp4", ".avi")) else text
    if not stem.isdigit():
        raise ReleaseError(
            f"{where}: clip id {text!r} is not a number; DFEW clip ids are integers like 00017 or 17."
        )
    value = int(stem)
    if not 1 <= value <= 99999:
        raise ReleaseError(f"{where}: clip id {text!r} is outside 1..99999.")
    return f"{value:05d}"


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


@dataclasses.dataclass(frozen=True)
class ClipEntry:
    """One single-labelled clip: its id, label 0..6, test fold 1..5 and its frame folder (or None)."""

    clip_id: str
    label: int
    fold: int
    frame_dir: str | None
    source: str | None  # which of FRAME_FOLDERS holds it


@dataclasses.dataclass
class ReleasePlan:
    """What a build will do: the clips per fold, and the listed clips without frames."""

    root: str
    clips: list[ClipEntry]
    missing: list[ClipEntry]  # listed in a CSV but no frame folder anywhere

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
    """Reads the ten split CSVs, checks them against each other, and finds each clip's frames.

    Args:
      root: the release root (holds EmoLabel_DataSplit/ and Clip/).
      frame_source: 'auto' (16f folder when present, else the variable-length one),
        'clip_224x224_16f' or 'clip_224x224' (only that folder).
    Raises:
      ReleaseError: on inconsistent or unreadable CSVs (the message names the file and clip).
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
    clips, missing = [], []
    for clip_id in sorted(fold_of):
        source = next((f for f in folders if clip_id in listings[f]), None)
        frame_dir = os.path.join(root, "Clip", source, clip_id) if source else None
        entry = ClipEntry(clip_id, label_of[clip_id], fold_of[clip_id], frame_dir, source)
        (clips if source else missing).append(entry)
    return ReleasePlan(root=root, clips=clips, missing=missing)


_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def list_frames(frame_dir: str, *, clip_id: str = "") -> list[str]:
    """Image files of a clip folder, sorted numerically by the last integer in the name.

    Raises ReleaseError when the folder is empty or a name has no number.
    """
    names = [n for n in os.listdir(frame_dir) if n.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
        raise ReleaseError(
            f"{frame_dir}: clip {clip_id} has no frame images. Re-extract this clip's frames from the "
            "release archive, or delete the folder to have the clip reported as missing."
        )
    keyed = []
    for n in names:
        m = _LAST_INT.search(os.path.splitext(n)[0])
        if m is None:
            raise ReleaseError(
                f"{os.path.join(frame_dir, n)}: frame file name has no frame number; expected names like "
                f"{clip_id}_00001.jpg or 1.jpg."
            )
        keyed.append((int(m.group(1)), n))
    keyed.sort()
    numbers = [k for k, _ in keyed]
    if len(set(numbers)) != len(numbers):
        dup = next(k for k in numbers if numbers.count(k) > 1)
        raise ReleaseError(f"{frame_dir}: two frame files carry frame number {dup}; keep one of them.")
    return [os.path.join(frame_dir, n) for _, n in keyed]


def sample_indices(num_available: int, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Uniformly spaced frame indices: int[num_frames] in [0, num_available).

    Clips shorter than `num_frames` repeat frames (each index appears in order, some twice).
    """
    if num_available <= 0:
        raise ValueError("num_available must be positive")
    if num_available == num_frames:
        return np.arange(num_frames)
    # First and last frame included, evenly spaced in between (numpy.linspace, rounded).
    positions = np.linspace(0.0, num_available - 1, num_frames)
    return np.clip(np.round(positions), 0, num_available - 1).astype(np.int64)


def load_frame(path: str, size: int, *, clip_id: str = ""):
    """Decodes one frame with Pillow, converts to RGB and resizes to size x size (area filter).

    Returns uint8[size, size, 3]. Raises ReleaseError naming the file for unreadable images.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:  # Pillow raises several types for damaged files
        raise ReleaseError(
            f"{path}: frame of clip {clip_id} cannot be decoded ({type(e).__name__}: {e}). Re-extract the "
            "clip from the release archive, or rebuild with --skip_bad_clips to leave it out (it is reported)."
        ) from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BOX if rgb.size[0] > size else Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_clip(entry: ClipEntry, size: int, num_frames: int = NUM_FRAMES):
    """Reads a clip's frames: (uint8[num_frames, size, size, 3], frame indices, original frame count)."""
    assert entry.frame_dir is not None
    paths = list_frames(entry.frame_dir, clip_id=entry.clip_id)
    idx = sample_indices(len(paths), num_frames)
    cache: dict[int, np.ndarray] = {}
    frames = []
    for i in idx:
        if int(i) not in cache:
            cache[int(i)] = load_frame(paths[i], size, clip_id=entry.clip_id)
        frames.append(cache[int(i)])
    return np.stack(frames), idx, len(paths)


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
