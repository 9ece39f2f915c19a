"""Reading a FERV39k release as users unpack it: the official split lists, the face-crop folders, the videos.

Plain Python (no TFDS, no JAX): the same code plans a build (`tfds_dfew.ferv39k`), checks a user's
copy, and is tested on generated trees (`tfds_dfew.synthetic_ferv39k`). Layout (FERV39K.md)::

    <root>/4_setups/All_scenes/train_All.csv           `Scene/Emotion/NNNN Emotion`, one clip a line
    <root>/4_setups/All_scenes/test_All.csv
    <root>/2_ClipsforFaceCrop/<Scene>/<Emotion>/<NNNN>/*.jpg    face crops, 8..47 frames
    <root>/0_7_LabelClips/<Scene>/<Emotion>/<NNNN>.mp4          the raw clip, with sound where present

A clip's id is its whole path `Scene/Emotion/NNNN` (the 4-digit numbers restart at 0000 in every
Scene/Emotion folder). The split lists have no header; a line is split on its last run of spaces
(a tab counts as one); CRLF or LF endings, a UTF-8 byte-order mark and blank lines are fine, and
Windows backslashes in an id read as '/'. A first line that holds no '/' is taken for a header
some copies add, and skipped (logged). The label word must be the id's Emotion folder, the
Emotion one of the 7 and the Scene one of the 22 of FERV39K.md: anything else, a clip listed
twice, or one in both train and test stops the reading with one ReleaseError naming file and
line. An unknown scene is an error, not a warning: the `scene` feature is a ClassLabel over the
22, so such a clip cannot be stored, and it means another release or a damaged list.

The zip of the face crops unpacks into a folder of its own name, so many copies hold
`2_ClipsforFaceCrop/2_ClipsforFaceCrop/<Scene>/...`: the level that holds scene folders is found
(`scene_level`, up to 3 levels down); the videos' folder is searched the same way. Frames are
ordered by the last integer in their names (`tfds_dfew.frames`). A listed clip without a frame
folder, or whose folder holds no image, is left out and reported (`Release.missing`); under
`strict` it stops the reading.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence

from tfds_dfew import audio
from tfds_dfew.errors import ReleaseError
from tfds_dfew.frames import IMAGE_SUFFIXES
from tfds_dfew.plan import ClipEntry, Plan, describe_ids

log = logging.getLogger(__name__)

SETUP_DIR = os.path.join("4_setups", "All_scenes")
SPLIT_FILES = {"train": "train_All.csv", "test": "test_All.csv"}
FACE_DIR = "2_ClipsforFaceCrop"
VIDEO_DIR = "0_7_LabelClips"
SCENE_IMAGE_DIR = "3_ClipsforScenImages"  # not read
EMOTIONS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")  # the Emotion folders
CLASS_NAMES = tuple(e.lower() for e in EMOTIONS)  # label i = EMOTIONS[i] (alphabetical, as S2D indexes)
SCENES = ("Action", "Argue", "Business", "Conflict", "Contest", "Crime", "Crisis", "DailyLife", "ElegantArt",
          "Experiment", "History", "Interview", "Liveshow", "Medicine", "OfficialEvent", "ScholarReport", "School",
          "Social", "Speech", "Talkshow", "Terror", "War")
# Clips per class in the real split lists (FERV39K.md), in CLASS_NAMES order.
OFFICIAL_COUNTS = {"train": (5906, 1833, 1680, 5854, 7790, 5523, 2502),
                   "test": (1487, 467, 431, 1473, 1958, 1393, 638)}
MAX_DEPTH = 3  # how far below 2_ClipsforFaceCrop / 0_7_LabelClips the scene folders may sit
_LINE = re.compile(r"^(?P<clip>.*\S)[ \t]+(?P<label>\S+)$")


@dataclasses.dataclass(frozen=True)
class ListedClip:
    """One line of a split list: the clip, its parts, its label index, and where it was read."""

    clip_id: str  # 'Crime/Angry/0063'
    scene: str
    emotion: str
    number: str  # '0063', as written
    label: int  # index into CLASS_NAMES
    split: str  # 'train' | 'test'
    path: str  # the split list it is in
    line: int  # 1-based line number there

    @property
    def where(self) -> str:
        return f"{self.path}, line {self.line}"


def _child(folder: str, name: str) -> str:
    """`folder/name`, matching `name` without regard to case when only such a spelling exists."""
    exact = os.path.join(folder, name)
    if os.path.exists(exact) or not os.path.isdir(folder):
        return exact
    found = [n for n in os.listdir(folder) if n.lower() == name.lower()]
    return os.path.join(folder, found[0]) if len(found) == 1 else exact


def split_path(root: str, split: str) -> str:
    """The split list of `split` ('train' | 'test') under the release root."""
    return _child(_child(_child(root, "4_setups"), "All_scenes"), SPLIT_FILES[split])


def _suggest(word: str, known: Sequence[str]) -> str:
    same = [k for k in known if k.lower() == word.lower()]
    return f" (did you mean {same[0]}?)" if same else ""


def _lines(path: str) -> list[str]:
    with open(path, "rb") as f:
        text = f.read().decode("utf-8-sig", errors="replace")
    if "\n" not in text and "\r" in text:  # old Mac line endings
        return text.split("\r")
    return [line.rstrip("\r") for line in text.split("\n")]


def read_split_list(path: str, split: str) -> list[ListedClip]:
    """Reads one split list (`train_All.csv` / `test_All.csv`) into its clips, in file order.

    Raises ReleaseError naming the file and line for a malformed line, an unknown scene or
    emotion, a label word other than the id's Emotion folder, or a clip listed twice.
    """
    if not os.path.isfile(path):
        raise ReleaseError(f"{path}: split list not found. --manual_dir must be the unpacked FERV39k release, the "
                           f"folder that holds {SETUP_DIR}/{SPLIT_FILES[split]} and {FACE_DIR}/.")
    out: list[ListedClip] = []
    first_at: dict[str, int] = {}
    first = True
    for line_no, raw in enumerate(_lines(path), start=1):
        text = raw.strip()
        if not text:
            continue
        where = f"{path}, line {line_no}"
        m = _LINE.match(text)
        header, first = first and "/" not in text.replace("\\", "/") and m is not None, False
        if header:
            log.info("%s: %r is not a clip; read as a header and skipped.", where, text)
            continue
        if m is None:
            raise ReleaseError(f"{where}: {text!r} is not 'Scene/Emotion/NNNN Emotion' (e.g. 'Crime/Angry/0063 "
                               "Angry'). Restore the original list from the FERV39k release.")
        clip, word = m.group("clip").strip().replace("\\", "/").strip("/"), m.group("label")
        parts = clip.split("/")
        if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
            raise ReleaseError(f"{where}: clip id {clip!r} is not Scene/Emotion/NNNN (e.g. Crime/Angry/0063). "
                               "Restore the original list from the FERV39k release.")
        scene, emotion, number = parts
        if scene not in SCENES:
            raise ReleaseError(f"{where}: clip {clip} names the scene {scene!r}{_suggest(scene, SCENES)}, which is "
                               f"not one of FERV39k's 22 ({', '.join(SCENES)}). Restore the original list.")
        if emotion not in EMOTIONS:
            raise ReleaseError(f"{where}: clip {clip} names the emotion folder {emotion!r}"
                               f"{_suggest(emotion, EMOTIONS)}, which is not one of {', '.join(EMOTIONS)}. Restore "
                               "the original list.")
        if word != emotion:
            raise ReleaseError(f"{where}: label {word!r} of clip {clip} is not its Emotion folder {emotion!r}; "
                               "FERV39k's lists repeat the folder (e.g. 'Crime/Angry/0063 Angry'). Restore the "
                               "original list.")
        if clip in first_at:
            raise ReleaseError(f"{where}: clip {clip} is listed twice in this file (first at line "
                               f"{first_at[clip]}). Restore the original list.")
        first_at[clip] = line_no
        out.append(ListedClip(clip, scene, emotion, number, EMOTIONS.index(emotion), split, path, line_no))
    if not out:
        raise ReleaseError(f"{path}: the list holds no clip; expected one 'Scene/Emotion/NNNN Emotion' a line. "
                           "Restore the original list from the FERV39k release.")
    return out


def scene_level(folder: str, max_depth: int = MAX_DEPTH) -> str | None:
    """The folder at or below `folder` (at most max_depth levels down) that holds scene folders, or None.

    The shallowest such level wins; `__MACOSX` and hidden folders are never entered.
    """
    level = [folder]
    for _ in range(max_depth + 1):
        nxt = []
        for d in level:
            try:
                names = sorted(n for n in os.listdir(d) if os.path.isdir(os.path.join(d, n)))
            except OSError:
                continue
            if any(n in SCENES for n in names):
                return d
            nxt += [os.path.join(d, n) for n in names if not n.startswith((".", "__MACOSX"))]
        level = nxt
    return None


def face_dir(root: str) -> str:
    return _child(root, FACE_DIR)


def video_dir(root: str) -> str:
    """The level of `<root>/0_7_LabelClips` that holds the scene folders (the folder itself when none does)."""
    top = _child(root, VIDEO_DIR)
    return scene_level(top) or top


def find_video(level: str, clip_id: str) -> str | None:
    """The clip's raw video `<level>/<Scene>/<Emotion>/<NNNN>.mp4` (other video extensions too), or None."""
    *folders, number = clip_id.split("/")
    return audio.find_original(os.path.join(level, *folders), number)


def check_root(root: str) -> None:
    """Raises ReleaseError unless `root` holds the split lists and the face-crop folder."""
    if not root or not os.path.isdir(root):
        raise ReleaseError(f"FERV39k folder {root!r} does not exist. Request FERV39k from its authors, unpack it, "
                           f"and pass the folder that holds {SETUP_DIR}/ and {FACE_DIR}/ as --manual_dir.")
    found = sorted(os.listdir(root))[:10]
    if not os.path.isdir(os.path.dirname(split_path(root, "train"))):
        raise ReleaseError(f"{root}: no {SETUP_DIR}/ folder (the official split lists train_All.csv and "
                           f"test_All.csv). --manual_dir must be the unpacked FERV39k release root; found: {found}.")
    if not os.path.isdir(face_dir(root)):
        raise ReleaseError(f"{root}: no {FACE_DIR}/ folder (the face crops). Unpack {FACE_DIR}.zip into the "
                           f"release root (a doubled {FACE_DIR}/{FACE_DIR}/ is fine); found: {found}.")


@dataclasses.dataclass
class Release:
    """A read release: the listed clips per split, those with frames (with their frame counts), the missing."""

    root: str
    face_level: str  # the folder that holds the scene folders of the face crops
    listed: dict[str, list[ListedClip]]  # 'train' | 'test' -> clips in file order
    frame_dirs: dict[str, str]  # clip id -> its face-crop folder (clips with frames only)
    frame_counts: dict[str, int]  # clip id -> images in that folder
    missing: list[tuple[ListedClip, str]]  # (clip, why it is left out: 'has no frame folder (...)')
    _stored: dict = dataclasses.field(default_factory=dict, repr=False)

    def stored(self, split: str) -> list[ListedClip]:
        """The clips of `split` that have frames, sorted by (scene, emotion, number)."""
        if split not in self._stored:
            key = lambda c: (c.scene, c.emotion, int(c.number), c.number)  # noqa: E731
            self._stored[split] = sorted((c for c in self.listed[split] if c.clip_id in self.frame_dirs), key=key)
        return self._stored[split]

    def class_counts(self, split: str, *, listed: bool = False) -> list[int]:
        """Clips per class (CLASS_NAMES order) of `split`: with frames, or all listed."""
        counts = [0] * len(CLASS_NAMES)
        for c in (self.listed[split] if listed else self.stored(split)):
            counts[c.label] += 1
        return counts

    def scene_counts(self, split: str) -> dict[str, int]:
        """Clips with frames per scene (all 22, in SCENES order) of `split`."""
        counts = dict.fromkeys(SCENES, 0)
        for c in self.stored(split):
            counts[c.scene] += 1
        return counts

    def entries(self, split: str) -> list[ClipEntry]:
        return [ClipEntry(c.clip_id, c.label, 0, self.frame_dirs[c.clip_id], FACE_DIR, split=split,
                          fields={"scene": c.scene}) for c in self.stored(split)]

    def report(self, num_frames: int = 16) -> list[str]:
        """What a user should know about this copy, one line each (printed by `tfds_dfew.build.summary`)."""
        lines = []
        listed = {s: len(v) for s, v in self.listed.items()}
        official = all(tuple(self.class_counts(s, listed=True)) == OFFICIAL_COUNTS[s] for s in SPLIT_FILES)
        verdict = ("the official counts" if official else
                   f"the official lists hold {sum(OFFICIAL_COUNTS['train']):,} / {sum(OFFICIAL_COUNTS['test']):,} "
                   "clips: this copy's lists differ")
        lines.append(f"split lists ({SETUP_DIR}): train {listed['train']}, test {listed['test']} clips; {verdict}")
        where = os.path.relpath(self.face_level, self.root)
        depth = where.count(os.sep)
        lines.append(f"face crops read from {where}" + (f" ({depth} level{'s' if depth > 1 else ''} below {FACE_DIR}/, "
                                                       "as the zip unpacks)" if depth else ""))
        if self.missing:
            per = {s: sum(1 for c, _ in self.missing if c.split == s) for s in SPLIT_FILES}
            lines.append(f"listed without frames (left out), per split: train {per['train']}, test {per['test']}")
        counts = [self.frame_counts[c.clip_id] for s in SPLIT_FILES for c in self.stored(s)]
        if counts:
            lines.append(f"frames per clip: {min(counts)}..{max(counts)} (mean {sum(counts) / len(counts):.1f})")
            short = {s: sum(1 for c in self.stored(s) if self.frame_counts[c.clip_id] < num_frames)
                     for s in SPLIT_FILES}
            if any(short.values()):
                lines.append(f"clips with fewer than {num_frames} frames (frames repeated): train {short['train']}, "
                             f"test {short['test']}")
        scenes = {s: sum(1 for n in self.scene_counts(s).values() if n) for s in SPLIT_FILES}
        lines.append(f"scenes with clips: train {scenes['train']}, test {scenes['test']} of {len(SCENES)}")
        return lines

    def to_plan(self, num_frames: int = 16) -> Plan:
        """The build plan: splits `train` and `test` (fold 0, field `scene`) and the metadata of this reading."""
        metadata = {
            "face_crop_dir": os.path.relpath(self.face_level, self.root),
            "listed_counts": {s: self.class_counts(s, listed=True) for s in SPLIT_FILES},
            "official_counts": {s: list(v) for s, v in OFFICIAL_COUNTS.items()},
            "scene_counts": {s: self.scene_counts(s) for s in SPLIT_FILES},
            "missing_by_split": {s: [c.clip_id for c, _ in self.missing if c.split == s] for s in SPLIT_FILES},
            "short_clips": {s: sum(1 for c in self.stored(s) if self.frame_counts[c.clip_id] < num_frames)
                            for s in SPLIT_FILES},
            "report": self.report(num_frames),
        }
        return Plan(splits={s: self.entries(s) for s in SPLIT_FILES}, metadata=metadata,
                    missing=[c.clip_id for c, _ in self.missing])


def _count_images(folder: str) -> int:
    return sum(n.lower().endswith(IMAGE_SUFFIXES) for n in os.listdir(folder))


def read_release(root: str, *, strict: bool = False) -> Release:
    """Reads and checks both split lists and finds every listed clip's face crops.

    Raises ReleaseError for a bad list (see `read_split_list`), a clip in both splits, a face-crop
    folder without scene folders, and (strict) a listed clip without frames.
    """
    root = os.fspath(root)
    check_root(root)
    listed = {s: read_split_list(split_path(root, s), s) for s in SPLIT_FILES}
    in_train = {c.clip_id: c for c in listed["train"]}
    for c in listed["test"]:
        if c.clip_id in in_train:
            raise ReleaseError(f"{c.where}: clip {c.clip_id} is also in {in_train[c.clip_id].where}; FERV39k's "
                               "train and test do not overlap. Restore the original lists.")
    top = face_dir(root)
    level = scene_level(top)
    if level is None:
        raise ReleaseError(f"{top}: no scene folders ({', '.join(SCENES[:4])}, ...) within {MAX_DEPTH} levels. "
                           f"Unpack {FACE_DIR}.zip there so that it holds <Scene>/<Emotion>/<NNNN>/*.jpg.")
    listings: dict[str, set[str]] = {}  # Scene/Emotion -> the clip folders in it

    def folders_of(scene: str, emotion: str) -> set[str]:
        key = f"{scene}/{emotion}"
        if key not in listings:
            d = os.path.join(level, scene, emotion)
            listings[key] = set(os.listdir(d)) if os.path.isdir(d) else set()
        return listings[key]

    frame_dirs, frame_counts, missing = {}, {}, []
    for split in SPLIT_FILES:
        for c in listed[split]:
            folder = os.path.join(level, c.scene, c.emotion, c.number)
            if c.number not in folders_of(c.scene, c.emotion) or not os.path.isdir(folder):
                missing.append((c, f"has no frame folder (expected {folder})"))
                continue
            count = _count_images(folder)
            if count == 0:
                missing.append((c, f"has no frame image in {folder}"))
                continue
            frame_dirs[c.clip_id], frame_counts[c.clip_id] = folder, count
    if missing:
        ids = [c.clip_id for c, _ in missing]
        first, why = missing[0]
        if strict:
            raise ReleaseError(f"{first.where}: clip {first.clip_id} {why}; listed clips without frames in all: "
                               f"{describe_ids(ids, 5)}. Restore their folders under "
                               f"{os.path.relpath(level, root)}/, or build without --strict to leave them out.")
        log.warning("Listed clips without frames, left out: %s (the first %s %s).", describe_ids(ids, 5),
                    first.clip_id, why)
    return Release(root=root, face_level=level, listed=listed, frame_dirs=frame_dirs, frame_counts=frame_counts,
                   missing=missing)


def plan_release(root: str, *, strict: bool = False, num_frames: int = 16) -> Plan:
    """The build plan of the release under `root` (`read_release(...).to_plan(num_frames)`)."""
    return read_release(root, strict=strict).to_plan(num_frames)
