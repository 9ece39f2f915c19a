"""The DFEW release's fixed facts: classes, folds, folder names, clip ids, and the error for a bad release."""

from __future__ import annotations

import os

from tfds_dfew import description
from tfds_dfew.errors import ReleaseError  # noqa: F401  (re-exported: layout.ReleaseError)

NUM_FRAMES = 16
NUM_FOLDS = 5
# Training order (index = official label - 1).
CLASS_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
FRAME_FOLDERS = ("clip_224x224_16f", "clip_224x224")
SPLIT_DIR = "EmoLabel_DataSplit"
TRAIN_DIR = "train(single-labeled)"
TEST_DIR = "test(single-labeled)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ANNOTATION_DIR = "Annotation"
ANNOTATION_FILE = "annotation.xlsx"
# Header of the released workbook: 7 vote columns (official label order), clip number, single label.
ANNOTATION_COLUMNS = ("1happy", "2sad", "3neutral", "4angry", "5surprise", "6disgust", "7fear", "order", "label")
UNLABELLED = -1  # label of a clip without a single label (TFDS ClassLabel accepts -1)
UNLABELLED_FOLD = 0

DESCRIPTION = description.register(description.DatasetDescription(
    name="dfew",
    title="DFEW",
    class_names=CLASS_NAMES,
    basic_emotions=CLASS_NAMES,  # DFEW's names are the basic emotions' own
    scheme=description.SplitScheme.k_folds(NUM_FOLDS),
    clip_id="5-digit zero-padded number, 00001..16372 (CSVs may drop the zeros)",
    frame_sources=tuple(f"Clip/{f}" for f in FRAME_FOLDERS),
    modalities=("pose", "audio"),
    num_frames=NUM_FRAMES,
    fields=("votes",),
    homepage="https://dfew-dataset.github.io",
))


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
