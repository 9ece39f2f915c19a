"""Cached features: a generator's per-frame (or per-slice) vectors float32[T, F] read as stored.

Any float array of a cached-features dataset that no other spec claims: `face_<generator>`,
`audio_<generator>` (masked by the record's `audio_mask`: False where the clip has no sound),
`omnivec`, `external`. They cannot be mirrored. At predict time the generator that made them
(named in the features dataset's metadata, copied into the run) computes them again.
"""

from __future__ import annotations

import numpy as np

from fer_jax.modalities import Modality, ReadContext, register

AUDIO_FEATURE_PREFIX = "audio_"  # an audio generator's features; the record's `audio_mask` masks them


class Features(Modality):
    """Cached generator features float32[T, F] (audio ones masked by `audio_mask`)."""

    name = "features"
    video = "generator"
    priority = -100  # the catch-all: tried last

    def matches(self, key: str) -> bool:
        return bool(key)

    def read(self, record, name: str, key: str, ctx: ReadContext, out: dict) -> None:
        x = np.asarray(record[key], np.float32)
        picked = ctx.indices(len(x)) if x.ndim >= 2 else None
        out[name] = x if picked is None else x[picked]
        if key.startswith(AUDIO_FEATURE_PREFIX) and "audio_mask" in record:
            mask = np.asarray(record["audio_mask"]) > 0.5
            out[f"mask/{name}"] = mask if picked is None else mask[picked]

    def stand_in(self, key: str, num_frames: int, shapes: dict) -> dict:
        dim = int(shapes.get(key, (1,))[-1])
        out = {key: np.zeros((num_frames, dim), np.float32)}
        if key.startswith(AUDIO_FEATURE_PREFIX):
            out["audio_mask"] = np.zeros(num_frames, np.float32)
        return out


register(Features())
