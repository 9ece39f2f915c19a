"""A clip's frame folder: list its images in frame order, sample a fixed number, decode, resize, encode.

Shared by every builder (DFEW, MAFW, FERV39k and plug-ins): releases name frame files in many ways
(`00001_00001.jpg`, `1.jpg`, `0000.png`, `<id>_<n>.png`), so frames are always sorted by the last
integer in the file name, never lexically (`10.jpg` < `2.jpg` lexically). Plain Python + numpy +
Pillow: no TFDS, no JAX.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image

from tfds_dfew.errors import ReleaseError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
JPEG_QUALITY = 95
_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def list_frames(frame_dir: str, *, clip_id: str = "") -> list[str]:
    """Image files of a clip folder, sorted numerically by the last integer in the name.

    Raises ReleaseError when the folder is empty or a name has no number.
    """
    names = [n for n in os.listdir(frame_dir) if n.lower().endswith(IMAGE_SUFFIXES)]
    if not names:
        raise ReleaseError(
            f"{frame_dir}: clip {clip_id} has no frame images. Re-extract this clip's frames from the "
            "release archive, or delete the folder to have the clip reported as missing."
        )
    keyed = []
    for n in names:
        m = _LAST_INT.search(os.path.splitext(n)[0])
        if m is None:
            raise ReleaseError(
                f"{os.path.join(frame_dir, n)}: frame file name has no frame number; expected names like "
                f"{clip_id}_00001.jpg or 1.jpg."
            )
        keyed.append((int(m.group(1)), n))
    keyed.sort()
    numbers = [k for k, _ in keyed]
    if len(set(numbers)) != len(numbers):
        dup = next(k for k in numbers if numbers.count(k) > 1)
        raise ReleaseError(f"{frame_dir}: two frame files carry frame number {dup}; keep one of them.")
    return [os.path.join(frame_dir, n) for _, n in keyed]


def count_frames(frame_dir: str) -> int:
    """The number of frame images in a folder (without checking their names)."""
    return sum(n.lower().endswith(IMAGE_SUFFIXES) for n in os.listdir(frame_dir))


def sample_indices(num_available: int, num_frames: int = 16) -> np.ndarray:
    """Uniformly spaced frame indices: int[num_frames] in [0, num_available).

    The first and last frame are included, evenly spaced in between (numpy.linspace, rounded);
    clips shorter than `num_frames` repeat frames (each index appears in order, some twice).
    """
    if num_available <= 0:
        raise ValueError("num_available must be positive")
    if num_available == num_frames:
        return np.arange(num_frames)
    positions = np.linspace(0.0, num_available - 1, num_frames)
    return np.clip(np.round(positions), 0, num_available - 1).astype(np.int64)


def load_frame(path: str, size: int, *, clip_id: str = ""):
    """Decodes one frame with Pillow, converts to RGB and resizes to size x size (area filter).

    Returns uint8[size, size, 3]. Raises ReleaseError naming the file for unreadable images.
    """
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:  # Pillow raises several types for damaged files
        raise ReleaseError(
            f"{path}: frame of clip {clip_id} cannot be decoded ({type(e).__name__}: {e}). Re-extract the "
            "clip from the release archive, or rebuild with --skip_bad_clips to leave it out (it is reported)."
        ) from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BOX if rgb.size[0] > size else Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_frames(frame_dir: str, size: int, num_frames: int = 16, *, clip_id: str = ""):
    """Reads `num_frames` frames sampled uniformly over a clip folder.

    Returns (uint8[num_frames, size, size, 3], the sampled frame indices int[num_frames], the
    folder's frame count). Each distinct frame is decoded once.
    """
    paths = list_frames(frame_dir, clip_id=clip_id)
    idx = sample_indices(len(paths), num_frames)
    cache: dict[int, np.ndarray] = {}
    frames = []
    for i in idx:
        if int(i) not in cache:
            cache[int(i)] = load_frame(paths[i], size, clip_id=clip_id)
        frames.append(cache[int(i)])
    return np.stack(frames), idx, len(paths)


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8[H, W, 3] -> JPEG bytes (Pillow, 4:4:4 chroma so small faces keep their colour edges)."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()
