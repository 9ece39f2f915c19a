"""The captions modality (MAFW's descriptions): UTF-8 text -> bytes uint8[L] zero-padded, and a mask.

A clip without a caption (MAFW's neutral clips) is masked (all False). The bytes are what a text
encoder's tokenizer reads; `config.data.caption_bytes` sets L (default 512; a longer caption is cut
at a character boundary).
"""

from __future__ import annotations

import numpy as np

from fer_jax.modalities import Modality, ReadContext, register

KEYS = ("caption_en", "caption_zh")


def encode(text, length: int) -> tuple[np.ndarray, int]:
    """(uint8[length] UTF-8 bytes zero-padded, bytes kept) of a caption, cut whole characters only."""
    raw = text if isinstance(text, bytes) else str(text or "").encode("utf-8")
    raw = raw[:length]
    while raw and raw[-1] & 0xC0 == 0x80:  # drop the tail of a character cut in half
        raw = raw[:-1]
    if raw and raw[-1] >= 0xC0:
        raw = raw[:-1]
    out = np.zeros(int(length), np.uint8)
    out[: len(raw)] = np.frombuffer(raw, np.uint8)
    return out, len(raw)


class Captions(Modality):
    """A caption as UTF-8 bytes uint8[L] with mask bool[T] (False for a clip without one)."""

    name = "captions"
    video = ""  # a video has no caption
    priority = 10

    def matches(self, key: str) -> bool:
        return key in KEYS

    def read(self, record, name: str, key: str, ctx: ReadContext, out: dict) -> None:
        length = int(ctx.config.data.get("caption_bytes", 512))
        value, used = encode(record[key], length)
        out[name] = value
        out[f"mask/{name}"] = np.full(int(ctx.num_frames or 1), used > 0, bool)


register(Captions())
