"""The pose modality: OpenPose points float32[T, 137, 3] -> normalised per-frame vectors + a frame mask."""

from __future__ import annotations

import numpy as np

from fer_jax.data import keypoints
from fer_jax.modalities import Modality, ReadContext, register
from tfds_dfew import openpose

OLD_KEY = "keypoints"  # what DFEW builds before 1.2.0 called the `pose` feature


class Pose(Modality):
    """OpenPose keypoints: centred, scale-free vectors float32[T, 411] (mirrored with the clip), masked where nobody was found."""

    name = "pose"
    video = "pose"
    mirrors = True
    priority = 10

    def matches(self, key: str) -> bool:
        return key in ("pose", OLD_KEY)

    def keys(self, key: str) -> tuple[str, ...]:
        return ("pose", OLD_KEY)

    def read(self, record, name: str, key: str, ctx: ReadContext, out: dict) -> None:
        value = record[key] if key in record else record[OLD_KEY if key == "pose" else "pose"]
        points = np.asarray(value, np.float32)
        picked = ctx.indices(len(points))
        if picked is not None:
            points = points[picked]
        if ctx.mirror:
            points = keypoints.flip_keypoints(points)
        threshold = float(ctx.config.data.get("keypoint_min_confidence", 0.05))
        out[name] = keypoints.keypoint_features(points, min_confidence=threshold)
        out[f"mask/{name}"] = (points[..., 2] >= threshold).any(axis=-1)

    def stand_in(self, key: str, num_frames: int, shapes: dict) -> dict:
        return {key: np.zeros((num_frames, openpose.NUM_KEYPOINTS, 3), np.float32)}


register(Pose())
