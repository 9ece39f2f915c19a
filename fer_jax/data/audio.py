"""A clip's stored sound track as model input: int16 samples -> a fixed-size float waveform + its length.

The `_audio` builds of `dfew` (and the features datasets extracted from them) store each clip's
whole sound track as int16 mono 16 kHz (`audio`) with its length (`audio_length`, 0 = no sound).
The 16 stored frames span the whole clip, so audio token t is the t-th of 16 equal time slices of
the track. Training needs one array shape, so `fit` pads every track to `max_samples`; a longer
track keeps, of each of its 16 slices, the `max_samples // 16` samples around the slice's centre,
so token t still comes from the time of frame t (the joins between slices are the only change).

Tracks shorter than `MIN_SAMPLES` (25 ms, one analysis window of the speech encoders) count as
no sound. Evaluation, extraction and predict all go through `fit`, so a clip gives the same
input whichever of them reads it.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
NUM_SLICES = 16
MIN_SAMPLES = 400  # 25 ms at 16 kHz


def to_float(samples) -> np.ndarray:
    """int16 samples -> float32 in [-1, 1) (float input is returned as float32 unchanged)."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return x.astype(np.float32)


def fit(samples, length: int | None, max_samples: int, num_slices: int = NUM_SLICES) -> tuple[np.ndarray, int]:
    """(float32[max_samples] zero-padded waveform, valid length) of one clip's track.

    samples: int16 (or float) [n]; length: the valid samples among them (None: all). A track
    shorter than MIN_SAMPLES gives length 0 and zeros. A track longer than max_samples keeps
    `max_samples // num_slices` samples centred in each of its `num_slices` equal slices.
    """
    x = to_float(samples).reshape(-1)
    n = len(x) if length is None else min(int(length), len(x))
    out = np.zeros(int(max_samples), np.float32)
    if n < MIN_SAMPLES:
        return out, 0
    if n <= max_samples:
        out[:n] = x[:n]
        return out, n
    width = int(max_samples) // num_slices
    bounds = np.arange(num_slices + 1) * n // num_slices
    parts = []
    for s in range(num_slices):
        centre = (bounds[s] + bounds[s + 1]) // 2
        start = min(max(centre - width // 2, 0), n - width)
        parts.append(x[start : start + width])
    kept = np.concatenate(parts)
    out[: len(kept)] = kept
    return out, len(kept)


def slice_mask(length: int, num_slices: int = NUM_SLICES) -> np.ndarray:
    """bool[num_slices]: every slice True when the clip has sound (length > 0), else all False."""
    return np.full(num_slices, int(length) > 0, bool)


def span(samples, start_s: float, end_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The samples of [start_s, end_s) of a track (the part of a video's sound under a window of frames)."""
    first = max(int(round(start_s * sample_rate)), 0)
    last = max(int(round(end_s * sample_rate)), first)
    return np.asarray(samples)[first:last]


def fit_batch(tracks, lengths, max_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(float32[n, S], int32[n]): tracks `fit` to whole seconds, at most max_seconds (audio generators' input).

    S is the longest track rounded up to a second, so jitted shapes repeat; the generators'
    outputs do not depend on the padding (their lengths mask it).
    """
    longest = max([int(n) for n in lengths] + [1])
    seconds = min(-(-longest // SAMPLE_RATE), max(int(max_seconds), 1))
    fitted = [fit(t, n, seconds * SAMPLE_RATE) for t, n in zip(tracks, lengths)]
    return np.stack([w for w, _ in fitted]), np.asarray([n for _, n in fitted], np.int32)
