"""Sliding windows over a video's frames, and which frames of a window stand in for frames without a face."""

from __future__ import annotations

import numpy as np

from fer_jax.errors import ConfigError
from tfds_dfew import release

SAMPLES_PER_WINDOW = release.NUM_FRAMES


def window_indices(num_frames: int, window: int = 16, stride: int = 8, samples: int = SAMPLES_PER_WINDOW):
    """Sliding windows over `num_frames` frames.

    Windows start at 0, stride, 2*stride, ... while they fit; if the last one ends before the
    video does, one more window ends at the last frame. A video shorter than `window` gets one
    window over all its frames. Returns (start int[W], end int[W] (exclusive), frames int[W, samples]):
    `samples` frame indices spread uniformly over each window (repeated when the window is shorter).
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window={window} and stride={stride} must be at least 1 frame.")
    if num_frames <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, samples), np.int64)
    span = min(window, num_frames)
    starts = list(range(0, num_frames - span + 1, stride))
    if starts[-1] + span < num_frames:
        starts.append(num_frames - span)
    starts = np.asarray(starts, np.int64)
    frames = starts[:, None] + release.sample_indices(span, samples)[None, :]
    return starts, starts + span, frames


def face_windows(starts, ends, has_face) -> np.ndarray:
    """bool[W]: True where at most half of a window's frames lack a face."""
    cum = np.concatenate([[0], np.cumsum(~np.asarray(has_face, bool))])
    missing = cum[ends] - cum[starts]
    return missing * 2 <= (ends - starts)


def nearest_face_frames(frames, starts, ends, has_face) -> np.ndarray:
    """Replaces sampled frames without a face by the nearest face frame of the same window (earlier on ties).

    frames: int[W, T]; starts/ends: int[W]; has_face: bool[N]. Windows with no face frame at all
    keep their indices. Returns int[W, T].
    """
    out = np.array(frames, copy=True)
    has_face = np.asarray(has_face, bool)
    for w in range(len(out)):
        candidates = np.flatnonzero(has_face[starts[w] : ends[w]]) + starts[w]
        if not len(candidates):
            continue
        for t, f in enumerate(out[w]):
            if not has_face[f]:
                out[w, t] = candidates[np.argmin(np.abs(candidates - f) * 2 + (candidates > f))]
    return out
