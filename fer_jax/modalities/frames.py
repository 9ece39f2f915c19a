"""The face frames modality: stored JPEG frames -> uint8[T, S, S, 3] crops (random crop + flip in training)."""

from __future__ import annotations

import numpy as np

from fer_jax.errors import ConfigError
from fer_jax.modalities import Modality, ReadContext, register


class Frames(Modality):
    """Face frames uint8[T, S, S, 3]: a random S crop (centre crop in evaluation) of every frame, flipped with the clip."""

    name = "frames"
    video = "frames"
    mirrors = True
    priority = 10

    def matches(self, key: str) -> bool:
        return key == "frames"

    def read(self, record, name: str, key: str, ctx: ReadContext, out: dict) -> None:
        frames = record[key]
        x = np.stack(frames) if isinstance(frames, list) else np.asarray(frames)
        picked = ctx.indices(len(x))
        if picked is not None:
            x = x[picked]
        h, w = x.shape[1:3]
        crop = int(ctx.config.data.get("crop_size", 0) or 0)
        s = crop or h
        if s > min(h, w):
            raise ConfigError(f"config.data.crop_size={s} is larger than the stored frames ({h}x{w}).")
        if ctx.train and ctx.rng is not None:
            top, left = int(ctx.rng.integers(0, h - s + 1)), int(ctx.rng.integers(0, w - s + 1))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        x = x[:, top : top + s, left : left + s]
        if ctx.mirror:
            x = x[:, :, ::-1]
        out[name] = np.ascontiguousarray(x)

    def stand_in(self, key: str, num_frames: int, shapes: dict) -> dict:
        size = int(shapes.get("frame_size", 112))
        return {key: np.zeros((num_frames, size, size, 3), np.uint8)}


register(Frames())
