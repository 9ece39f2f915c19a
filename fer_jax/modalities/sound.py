"""The sound modality: a clip's stored track -> a fixed-size waveform, its length, and the per-slice mask."""

from __future__ import annotations

import numpy as np

from fer_jax.data import audio as audio_lib
from fer_jax.errors import ConfigError
from fer_jax.modalities import Modality, ReadContext, register


class Sound(Modality):
    """The raw sound: '<m>/waveform' float32[S] (S = config.data.audio_seconds x 16 kHz), '<m>/length', mask bool[T]."""

    name = "sound"
    video = "sound"
    priority = 10

    def matches(self, key: str) -> bool:
        return key == "audio"

    def keys(self, key: str) -> tuple[str, ...]:
        return ("audio", "audio_length")

    def read(self, record, name: str, key: str, ctx: ReadContext, out: dict) -> None:
        if "/" in name:
            raise ConfigError(f"{name!r} reads the raw sound inside another modality; only a top-level "
                              "modality can (give the part cached audio features, e.g. audio_logmel).")
        samples = int(round(float(ctx.config.data.get("audio_seconds", 8.0)) * audio_lib.SAMPLE_RATE))
        slices = int(ctx.num_frames or audio_lib.NUM_SLICES)
        waveform, length = audio_lib.fit(record[key], record.get("audio_length"), samples, slices)
        out[f"{name}/waveform"], out[f"{name}/length"] = waveform, np.int32(length)
        out[f"mask/{name}"] = audio_lib.slice_mask(length, slices)

    def stand_in(self, key: str, num_frames: int, shapes: dict) -> dict:
        return {"audio": np.zeros(audio_lib.SAMPLE_RATE, np.int16), "audio_length": np.int32(0)}


register(Sound())
