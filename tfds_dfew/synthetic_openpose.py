"""OpenPose JSON of a drawn synthetic clip: face landmarks and the body points just below a face crop."""

from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- OpenPose JSON
_BODY_LOCAL = {1: (0.0, 1.6), 2: (-1.7, 1.95), 5: (1.7, 1.95), 17: (-1.0, -0.05),
               18: (1.0, -0.05)}
_BODY_AT_EDGE = (1, 2, 5)  # neck and shoulders: just below a face crop, reported at its edge


def _body_points(face_xy: np.ndarray, center, scale: float, angle: float, size: int,
                 rng: np.random.Generator, conf_range) -> np.ndarray:
    """BODY_25 float[25, 3]: nose, neck, shoulders, eyes, ears; every other point (0, 0, 0).

    Neck and shoulders below the frame are clamped to its edge with lower confidence (the
    detector still places them); eyes, ears and nose outside the frame are not found.
    """
    body = np.zeros((25, 3))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    for index, local in _BODY_LOCAL.items():
        body[index, :2] = np.asarray(local) @ rot.T + center
    body[0, :2] = face_xy[30]
    body[15, :2] = face_xy[68]
    body[16, :2] = face_xy[69]
    body[:, 2] = rng.uniform(*conf_range, 25)
    edge = list(_BODY_AT_EDGE)
    clamped = np.clip(body[edge, :2], 0, size - 1)
    body[edge, 2] *= np.where((clamped != body[edge, :2]).any(1), 0.6, 1.0)
    body[edge, :2] = clamped
    found = np.zeros(25, bool)
    found[[0, 1, 2, 5, 15, 16, 17, 18]] = True
    inside = (body[:, 0] >= 0) & (body[:, 0] < size) & (body[:, 1] >= 0) & (body[:, 1] < size)
    body[~(found & inside)] = 0.0
    return body


def _person_json(body: np.ndarray, face: np.ndarray) -> dict:
    def flat(a, digits):
        a = np.asarray(a, np.float64)
        rounded = np.concatenate([np.round(a[:, :2], digits), np.round(a[:, 2:], 4)], 1)
        return rounded.ravel().tolist()

    return {
        "person_id": [-1],
        "pose_keypoints_2d": flat(body, 3),
        "face_keypoints_2d": flat(face, 3),
        "hand_left_keypoints_2d": [0.0] * 63,
        "hand_right_keypoints_2d": [0.0] * 63,
        "pose_keypoints_3d": [],
        "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": [],
    }


def openpose_frames(rng: np.random.Generator, face_keypoints: np.ndarray, meta: dict,
                    frame_size: int) -> list[dict]:
    """OpenPose 1.3 JSON documents, one per frame, for a clip drawn by `draw_clip`.

    face_keypoints: float32[T, 70, 3]. The face points get detector jitter (~0.5% of the face
    size); degenerate frames are drawn from `rng`: a few with `people: []`, a run with a second
    smaller, less confident person (listed first or second), and single points set to (0, 0, 0).
    """
    num_frames = len(face_keypoints)
    empty = np.zeros(num_frames, bool)
    if rng.uniform() < 0.35:
        count = min(num_frames, int(rng.integers(1, 4)))
        empty[rng.choice(num_frames, count, replace=False)] = True
    second = np.zeros(num_frames, bool)
    if rng.uniform() < 0.25:
        start = int(rng.integers(0, num_frames))
        second[start:start + int(rng.integers(2, 7))] = True
    dropped = rng.uniform(size=(num_frames, 70)) < 0.01
    jitter = rng.normal(0.0, 1.0, (num_frames, 70, 2)) * (0.005 * meta["face_scale"][:, None, None])
    corner = rng.uniform([0.02, 0.02], [0.2, 0.3]) * frame_size
    if rng.uniform() < 0.5:
        corner[0] = frame_size - corner[0]
    second_scale = rng.uniform(0.3, 0.5)
    second_first = rng.uniform(size=num_frames) < 0.5
    docs = []
    for f in range(num_frames):
        if empty[f]:
            docs.append({"version": 1.3, "people": []})
            continue
        face = face_keypoints[f].astype(np.float64).copy()
        face[:, :2] += jitter[f]
        face[dropped[f]] = 0.0
        face[((face[:, :2] < 0) | (face[:, :2] > frame_size - 1)).any(1)] = 0.0  # outside the crop: not found
        center, scale, angle = meta["face_center"][f], meta["face_scale"][f], meta["face_angle"][f]
        body = _body_points(face_keypoints[f, :, :2], center, scale, angle, frame_size, rng,
                            (0.45, 0.9))
        people = [_person_json(body, face)]
        if second[f]:
            other = face_keypoints[f].astype(np.float64).copy()
            other[:, :2] = corner + (other[:, :2] - center) * second_scale
            other[:, 2] = rng.uniform(0.31, 0.55, 70)
            outside = ((other[:, :2] < 0) | (other[:, :2] >= frame_size)).any(1)
            other[outside] = 0.0
            other_body = _body_points(other[:, :2], corner, scale * second_scale, angle,
                                      frame_size, rng, (0.2, 0.45))
            extra = _person_json(other_body, other)
            people = [extra] + people if second_first[f] else people + [extra]
        docs.append({"version": 1.3, "people": people})
    return docs
