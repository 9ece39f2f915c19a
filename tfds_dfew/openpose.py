"""Reading OpenPose JSON output (one file per frame) into fixed-layout keypoint arrays.

OpenPose writes `<name>_<12-digit frame>_keypoints.json` per frame (or `<image name>_keypoints.json`
when it runs on an image folder). Each file holds `{"version": 1.3, "people": [...]}` where every
person carries flat lists of (x, y, confidence) triples in pixels; a point that was not found is
(0, 0, 0). This module turns one file into `points: float32[137, 3]` and one folder into
`points: float32[T, 137, 3]`, always in the same output layout:

    KEYPOINT_GROUPS = {'body': 25, 'face': 70, 'hand_left': 21, 'hand_right': 21}   # 137 points

rows 0-24 body (BODY_25 order), 25-94 face, 95-115 left hand, 116-136 right hand. Confidence 0
means missing. Only numpy and json are used (it runs inside the dataset builder).

Body layouts. BODY_25 (25 points) is stored as is. COCO (18 points) is mapped into BODY_25
slots with `COCO_TO_BODY25`:

    COCO index   0 Nose 1 Neck 2 RShoulder 3 RElbow 4 RWrist 5 LShoulder 6 LElbow 7 LWrist 8 RHip
    BODY_25 slot 0      1      2           3        4        5           6        7        9
    COCO index   9 RKnee 10 RAnkle 11 LHip 12 LKnee 13 LAnkle 14 REye 15 LEye 16 REar 17 LEar
    BODY_25 slot 10      11        12      13       14        15      16      17      18

COCO has no MidHip (BODY_25 slot 8) and no feet (slots 19-24): those slots stay (0, 0, 0).

File versions. 1.0-1.2 name the lists `pose_keypoints`, `face_keypoints`,
`hand_left_keypoints`, `hand_right_keypoints`; 1.3 adds the `_2d` suffix (and `*_3d` lists, which
are ignored). Both spellings are accepted in any file; a missing or empty list means the group was
not computed (all zeros).

Choosing one person (`select_person`). When a frame holds several people, the one kept has:
  1. the highest mean confidence over the 95 face + body slots (25 body + 70 face, a point that
     was not found counts as 0 — a person with many confident face points beats a stray
     detection with a few confident body points);
  2. on a tie, the larger area of the bounding box of its detected face + body points;
  3. on a further tie, the lexicographically largest flattened `float32[137, 3]` array.
The rule depends only on the people's contents, never on their order in the file, so the pick is
the same under any permutation of `people`.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, NamedTuple, Sequence

import numpy as np

from tfds_dfew.errors import UserError

BODY_25_POINTS = 25
COCO_POINTS = 18
FACE_POINTS = 70
HAND_POINTS = 21

KEYPOINT_GROUPS = {'body': BODY_25_POINTS, 'face': FACE_POINTS,
                   'hand_left': HAND_POINTS, 'hand_right': HAND_POINTS}
NUM_KEYPOINTS = sum(KEYPOINT_GROUPS.values())  # 137


def _group_slices() -> dict[str, slice]:
    slices, start = {}, 0
    for name, count in KEYPOINT_GROUPS.items():
        slices[name] = slice(start, start + count)
        start += count
    return slices


GROUP_SLICES = _group_slices()  # body 0:25, face 25:95, hand_left 95:116, hand_right 116:137

BODY_25_NAMES = (
    'Nose', 'Neck', 'RShoulder', 'RElbow', 'RWrist', 'LShoulder', 'LElbow', 'LWrist', 'MidHip',
    'RHip', 'RKnee', 'RAnkle', 'LHip', 'LKnee', 'LAnkle', 'REye', 'LEye', 'REar', 'LEar',
    'LBigToe', 'LSmallToe', 'LHeel', 'RBigToe', 'RSmallToe', 'RHeel')
COCO_NAMES = (
    'Nose', 'Neck', 'RShoulder', 'RElbow', 'RWrist', 'LShoulder', 'LElbow', 'LWrist', 'RHip',
    'RKnee', 'RAnkle', 'LHip', 'LKnee', 'LAnkle', 'REye', 'LEye', 'REar', 'LEar')
# COCO_TO_BODY25[i] is the BODY_25 slot of COCO point i (same body part, see BODY_25_NAMES).
COCO_TO_BODY25 = tuple(BODY_25_NAMES.index(name) for name in COCO_NAMES)

BODY_LAYOUTS = {BODY_25_POINTS: 'BODY_25', COCO_POINTS: 'COCO'}
SUPPORTED_VERSIONS = (1.0, 1.1, 1.2, 1.3)

# Output group -> accepted JSON keys (1.3 spelling first) and accepted point counts.
_GROUP_KEYS = {
    'body': ('pose_keypoints_2d', 'pose_keypoints'),
    'face': ('face_keypoints_2d', 'face_keypoints'),
    'hand_left': ('hand_left_keypoints_2d', 'hand_left_keypoints'),
    'hand_right': ('hand_right_keypoints_2d', 'hand_right_keypoints'),
}
_GROUP_COUNTS = {
    'body': (BODY_25_POINTS, COCO_POINTS),
    'face': (FACE_POINTS,),
    'hand_left': (HAND_POINTS,),
    'hand_right': (HAND_POINTS,),
}

_FIX = 're-run OpenPose on this clip or remove the file (the frame is then treated as missing)'
_FRAME_NUMBER = re.compile(r'(\d+)_keypoints\.json$')
KEYPOINTS_SUFFIX = '_keypoints.json'


class OpenPoseError(UserError, ValueError):
    """An OpenPose JSON file or folder that cannot be read; the message names the file."""


class FrameKeypoints(NamedTuple):
    """One frame: `points: float32[137, 3]` (x, y, confidence; confidence 0 = missing).

    `num_people` is the length of the file's `people` list, `person_index` the index of the person
    kept (-1 when `people` is empty), `body_layout` 'BODY_25', 'COCO' or None (no body list), and
    `version` the file's `version` field (None when absent).
    """
    points: np.ndarray
    num_people: int
    person_index: int
    body_layout: str | None
    version: float | None


class ClipKeypoints(NamedTuple):
    """One clip: `points: float32[T, 137, 3]`; `num_missing` counts the T rows with no file."""
    points: np.ndarray
    num_missing: int


def _flat_triples(values: Any, *, path: str, person: int, key: str,
                  counts: Sequence[int]) -> np.ndarray:
    """Checks one flat keypoint list and returns it as float32[N, 3]."""
    where = f'{path}: people[{person}].{key}'
    if not isinstance(values, list):
        raise OpenPoseError(f'{where} is a {type(values).__name__}, expected a flat list of numbers '
                            f'(x, y, confidence, ...); {_FIX}.')
    for i, v in enumerate(values):
        if type(v) not in (int, float):
            raise OpenPoseError(f'{where}[{i}] is {v!r} ({type(v).__name__}), expected a number; {_FIX}.')
        if not math.isfinite(v):
            raise OpenPoseError(f'{where}[{i}] is {v!r}, expected a finite number; {_FIX}.')
    if len(values) % 3:
        raise OpenPoseError(f'{where} has {len(values)} values, not a multiple of 3 (x, y, '
                            f'confidence triples): the file is truncated or corrupt; {_FIX}.')
    n = len(values) // 3
    if n not in counts:
        allowed = ' or '.join(str(c) for c in counts)
        raise OpenPoseError(f'{where} has {n} points, expected {allowed} '
                            f'(supported: BODY_25 or COCO body, 70 face, 21 per hand); '
                            f're-run OpenPose with a supported model ({_FIX}).')
    return np.asarray(values, dtype=np.float64).reshape(n, 3).astype(np.float32)


def _person_points(person: Any, *, path: str, index: int) -> tuple[np.ndarray, str | None]:
    """One `people[index]` entry -> (float32[137, 3], body layout or None)."""
    if not isinstance(person, dict):
        raise OpenPoseError(f'{path}: people[{index}] is a {type(person).__name__}, expected an '
                            f'object with keypoint lists; {_FIX}.')
    points = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    layout = None
    for group, keys in _GROUP_KEYS.items():
        key = next((k for k in keys if k in person), None)
        if key is None or person[key] == []:
            continue
        triples = _flat_triples(person[key], path=path, person=index, key=key,
                                counts=_GROUP_COUNTS[group])
        rows = points[GROUP_SLICES[group]]
        if group == 'body':
            layout = BODY_LAYOUTS[len(triples)]
            if layout == 'COCO':
                rows[list(COCO_TO_BODY25)] = triples
                continue
        rows[:] = triples
    return points, layout


def _person_rank(points: np.ndarray) -> tuple:
    """Sort key of `select_person`: larger is preferred (see the module docstring)."""
    head = np.concatenate([points[GROUP_SLICES['body']], points[GROUP_SLICES['face']]])
    conf = head[:, 2].astype(np.float64)
    score = float(conf.sum()) / len(head)
    found = head[conf > 0, :2].astype(np.float64)
    area = 0.0
    if len(found):
        extent = found.max(axis=0) - found.min(axis=0)
        area = float(extent[0] * extent[1])
    return (score, area, tuple(points.ravel().tolist()))


def select_person(people: Sequence[np.ndarray]) -> int:
    """Index of the person to keep among `people: float32[137, 3]` each (-1 if there is none)."""
    if not people:
        return -1
    ranks = [_person_rank(p) for p in people]
    return max(range(len(people)), key=lambda i: ranks[i])


def _load_json(path: str) -> Any:
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise OpenPoseError(f'{path}: cannot be read ({e.strerror}); check the path and '
                            f'permissions, or {_FIX}.') from e
    if not raw.strip():
        raise OpenPoseError(f'{path}: the file is empty (OpenPose was interrupted?); {_FIX}.')
    try:
        return json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as e:
        raise OpenPoseError(f'{path}: not UTF-8 text ({e.reason}); {_FIX}.') from e
    except json.JSONDecodeError as e:
        raise OpenPoseError(f'{path}: malformed or truncated JSON ({e.msg} at line {e.lineno}, '
                            f'column {e.colno}); {_FIX}.') from e


def read_frame(path: str | os.PathLike) -> FrameKeypoints:
    """Reads one OpenPose `*_keypoints.json` (versions 1.0-1.3) into `points: float32[137, 3]`.

    Empty `people` gives all zeros; with several people the one chosen by `select_person` is kept.
    Raises `OpenPoseError` for empty, malformed or truncated JSON, a missing `people` list, lists
    whose length is not 3 x a supported point count, and non-numeric or non-finite values.
    """
    path = os.fspath(path)
    data = _load_json(path)
    if not isinstance(data, dict) or 'people' not in data:
        raise OpenPoseError(f'{path}: no "people" list at the top level: not an OpenPose keypoint '
                            f'file; {_FIX}.')
    people = data['people']
    if not isinstance(people, list):
        raise OpenPoseError(f'{path}: "people" is a {type(people).__name__}, expected a list; {_FIX}.')
    version = data.get('version')
    if type(version) not in (int, float):
        version = None
    parsed = [_person_points(p, path=path, index=i) for i, p in enumerate(people)]
    index = select_person([points for points, _ in parsed])
    if index < 0:
        return FrameKeypoints(np.zeros((NUM_KEYPOINTS, 3), np.float32), 0, -1, None,
                              None if version is None else float(version))
    points, layout = parsed[index]
    return FrameKeypoints(points, len(people), index, layout,
                          None if version is None else float(version))


def frame_number(path: str | os.PathLike) -> int:
    """The frame number of a keypoint file: the last integer before `_keypoints.json`.

    `clip_000000000010_keypoints.json` -> 10 (OpenPose on a video), `00001_00010_keypoints.json`
    -> 10 (OpenPose on an image folder named like DFEW's frames).
    """
    name = os.path.basename(os.fspath(path))
    match = _FRAME_NUMBER.search(name)
    if match is None:
        raise OpenPoseError(f'{path}: no frame number before "{KEYPOINTS_SUFFIX}" in the file name; '
                            f'rename it to <name>_<frame number>{KEYPOINTS_SUFFIX} or remove it.')
    return int(match.group(1))


def list_frames(folder: str | os.PathLike) -> list[tuple[int, str]]:
    """`(frame number, path)` of every `*_keypoints.json` in `folder`, sorted by frame number."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise OpenPoseError(f'{folder}: keypoint folder not found; run OpenPose on this clip with '
                            f'--write_json {folder}, or drop the pose modality for it.')
    frames: dict[int, str] = {}
    for name in os.listdir(folder):
        if not name.endswith(KEYPOINTS_SUFFIX):
            continue
        path = os.path.join(folder, name)
        number = frame_number(path)
        if number in frames:
            other = os.path.basename(frames[number])
            raise OpenPoseError(f'{folder}: two files for frame {number} ({other} and {name}): keep '
                                f'one OpenPose run per clip folder.')
        frames[number] = path
    return sorted(frames.items())


def read_clip(folder: str | os.PathLike, num_frames: int | None = None,
              frame_indices: Sequence[int] | None = None, *,
              first_frame: int = 0) -> ClipKeypoints:
    """Reads a clip's folder of `*_keypoints.json` into `points: float32[T, 137, 3]`.

    Frames are ordered by the number in the file name (numerically, never lexically). Position i
    of the clip is the file numbered `first_frame + i` (OpenPose numbers video frames from 0; use
    `first_frame=1` for files named after 1-based image frames such as `00001_00001.jpg`).
      - `frame_indices` given: T = len(frame_indices), row k holds position `frame_indices[k]`
        (repeats allowed, e.g. the 16 uniformly sampled indices chosen by the builder); if
        `num_frames` is given too, every index must be below it.
      - else `num_frames` given: T = num_frames, positions 0..num_frames-1.
      - else: positions 0..(largest frame number - first_frame); T = 0 for an empty folder.
    A position with no file is all zeros (masked) and counted in `num_missing`. Files outside the
    requested positions are not read.
    """
    folder = os.fspath(folder)
    frames = list_frames(folder)
    by_position = {}
    for number, path in frames:
        if number < first_frame:
            raise OpenPoseError(f'{path}: frame number {number} is below first_frame={first_frame}; '
                                f'pass first_frame={number} (or the numbering the files use).')
        by_position[number - first_frame] = path
    if frame_indices is not None:
        positions = [int(i) for i in frame_indices]
        bad = [i for i in positions if i < 0 or (num_frames is not None and i >= num_frames)]
        if bad:
            raise ValueError(f'{folder}: frame_indices {bad[:5]} out of range for a clip of '
                             f'{num_frames if num_frames is not None else "any"} frames; pass 0-based '
                             f'indices below num_frames.')
    elif num_frames is not None:
        if num_frames < 0:
            raise ValueError(f'{folder}: num_frames={num_frames} must be >= 0.')
        positions = list(range(num_frames))
    else:
        positions = list(range(max(by_position) + 1)) if by_position else []

    points = np.zeros((len(positions), NUM_KEYPOINTS, 3), np.float32)
    cache: dict[int, np.ndarray] = {}
    num_missing = 0
    for row, position in enumerate(positions):
        path = by_position.get(position)
        if path is None:
            num_missing += 1
            continue
        if position not in cache:
            cache[position] = read_frame(path).points
        points[row] = cache[position]
    return ClipKeypoints(points, num_missing)


def summarize(points: np.ndarray) -> dict[str, float]:
    """Fraction of detected points (confidence > 0) per group, over `points: float[..., 137, 3]`.

    Also `'frames_with_face'`: the fraction of frames with at least one detected face point.
    """
    points = np.asarray(points)
    if points.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f'points must be [..., {NUM_KEYPOINTS}, 3], got {points.shape}.')
    found = points[..., 2] > 0
    summary = {name: float(found[..., s].mean()) if found[..., s].size else 0.0
               for name, s in GROUP_SLICES.items()}
    face = found[..., GROUP_SLICES['face']].any(axis=-1)
    summary['frames_with_face'] = float(face.mean()) if face.size else 0.0
    return summary


def to_openpose_json(people: Sequence[np.ndarray], version: float = 1.3) -> dict:
    """The OpenPose 1.3 JSON object (BODY_25) for `people: float[137, 3]` each; inverse of reading."""
    out = []
    for points in people:
        points = np.asarray(points, np.float64)
        person = {'person_id': [-1]}
        for group, keys in _GROUP_KEYS.items():
            person[keys[0]] = [float(v) for v in points[GROUP_SLICES[group]].ravel()]
        for key in ('pose_keypoints_3d', 'face_keypoints_3d', 'hand_left_keypoints_3d',
                    'hand_right_keypoints_3d'):
            person[key] = []
        out.append(person)
    return {'version': version, 'people': out}
