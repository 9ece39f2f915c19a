"""The MAFW release's fixed facts: classes, folders, clip ids, label names, and the check that a folder is a release.

MAFW.md gives the layout; `mafw_release` (split lists, frames) and `mafw_sheets` (the label
workbooks) read it. Class index i is the paper's order (the workbooks write i + 1).
"""

from __future__ import annotations

import os
import re

from tfds_dfew.errors import ReleaseError

CLASS_NAMES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
               "helplessness", "disappointment")
# Each class's basic emotion (tfds_dfew.description.BASIC_EMOTIONS), None without a counterpart.
BASIC_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", None, None, None, None)
NUM_CLASSES = len(CLASS_NAMES)
NUM_FOLDS = 5
VIEWS = ("single", "compound")  # the label views: 11 single labels, or 43 compound (multi-label) classes
CAPTION_KINDS = ("no_caption", "with_caption")
SPLIT_DIR = "Train & Test Set"  # spaces and an ampersand: always one path component, never split
LABELS_DIR = "Labels"
FRAMES_DIR = os.path.join("data", "frames")
CLIPS_DIR = os.path.join("data", "clips")
NEUTRAL = CLASS_NAMES.index("neutral")
UNLABELLED, UNLABELLED_FOLD = -1, 0
RESTORE = "Restore it from the MAFW release."
_ID = re.compile(r"0*(\d{1,5})\s*(?:\.[A-Za-z0-9]{2,4})?")  # '03747', '3747', '03747.mp4'


def split_list_path(root: str, view: str, captions: str, fold: int, part: str) -> str:
    """<root>/Train & Test Set/<view>/<captions>/set_<fold>/<part>.txt (captions: no_caption | with_caption)."""
    return os.path.join(root, SPLIT_DIR, view, captions, f"set_{fold}", f"{part}.txt")


def normalize_clip_id(raw, *, where: str = "") -> str:
    """The 5-digit clip id of `raw` ('3747', '03747', '03747.mp4', 3747, 3747.0) or ReleaseError naming `where`."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    text = str(raw).strip()
    m = _ID.fullmatch(text)
    if m is None or not 1 <= int(m.group(1)) <= 99999:
        raise ReleaseError(f"{where}: clip id {text!r} is not a MAFW clip number (1..99999, e.g. 03747 or "
                           f"03747.mp4). {RESTORE}")
    return f"{int(m.group(1)):05d}"


def is_clip_id(cell) -> bool:
    """Whether a workbook cell reads as a clip id (a number 1..99999, optionally with an extension)."""
    if isinstance(cell, bool) or cell is None:
        return False
    if isinstance(cell, (int, float)):
        return float(cell).is_integer() and 1 <= cell <= 99999
    m = _ID.fullmatch(str(cell).strip())
    return m is not None and 1 <= int(m.group(1)) <= 99999


def label_name(raw: str, *, compound: bool, where: str) -> str:
    """A label as its canonical class name: one of CLASS_NAMES, or (compound) names joined by '_' in paper
    order ('disgust_anger' -> 'anger_disgust'); ReleaseError naming `where` for anything else."""
    text = str(raw).strip().lower()
    parts = text.split("_") if compound else [text]
    if not text or any(p not in CLASS_NAMES for p in parts) or len(set(parts)) != len(parts):
        kind = ("names of " + ", ".join(CLASS_NAMES) + " joined by '_' (e.g. anger_disgust)" if compound
                else ", ".join(CLASS_NAMES))
        raise ReleaseError(f"{where}: label {str(raw).strip()!r} is not a MAFW label; expected {kind}. {RESTORE}")
    return "_".join(sorted(parts, key=CLASS_NAMES.index))


def class_order(name: str) -> tuple:
    """Sort key of a class name: the singles first in paper order, then compounds by their paper-order index tuples."""
    indices = tuple(CLASS_NAMES.index(p) for p in name.split("_"))
    return (len(indices) > 1, indices)


def basic_emotion(name: str) -> str | None:
    """The basic emotion of a class name (a compound class has none)."""
    return BASIC_EMOTIONS[CLASS_NAMES.index(name)] if name in CLASS_NAMES else None


def check_root(root: str) -> None:
    """Raises ReleaseError unless `root` holds MAFW's data/frames and 'Train & Test Set' folders."""
    if not root or not os.path.isdir(root):
        raise ReleaseError(f"MAFW folder {root!r} does not exist. Unpack the release and pass its folder (the one "
                           f"holding data/ and '{SPLIT_DIR}') as --manual_dir.")
    for what, sub in (("frame folders", FRAMES_DIR), ("split lists", SPLIT_DIR)):
        if not os.path.isdir(os.path.join(root, sub)):
            inner = [n for n in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, n, sub))]
            hint = f" It is in {os.path.join(root, inner[0])}: pass that folder." if inner else ""
            raise ReleaseError(f"{root}: no '{sub}' folder (MAFW's {what}); --manual_dir must be the unpacked MAFW "
                               f"release, the folder holding data/frames, data/clips and '{SPLIT_DIR}'.{hint}")
