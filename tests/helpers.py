"""Helpers shared by the tests: configs pointed at test datasets, running a module as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CLIPS = 60
TINY_FRAME_SIZE = 64


def extract_config(data_dir, out_dir, name="mini_xception_fer", **generator_overrides):
    """configs/extract.py:mini_xception_fer reading dfew/frames64 in data_dir, writing to out_dir."""
    sys.path.insert(0, ROOT)
    from configs import extract as extract_configs

    c = extract_configs.get_config("mini_xception_fer")
    c.source.name = "dfew/frames64"
    c.source.data_dir = data_dir
    c.output.data_dir = out_dir
    c.output.name = name
    c.batch_size = 8
    for k, v in generator_overrides.items():
        c.generators.face_mini_xception_fer[k] = v
    return c


def features_config(out_dir, **overrides):
    """configs/fusion.py:face, tiny, on the features in out_dir; `overrides` are dotted keys."""
    sys.path.insert(0, ROOT)
    from configs import fusion

    c = fusion.get_config("face")
    c.dataset.data_dir = out_dir
    c.batch_size, c.eval_batch_size, c.num_train_steps = 8, 8, 4
    c.log_every, c.eval_every, c.checkpoint_every, c.progress_bar = 2, 0, 4, False
    c.model.width, c.model.depth, c.model.mlp_dim = 32, 1, 64
    return _override(c, overrides)


def _override(config, overrides):
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def tiny_config(data_dir: str, **overrides):
    """configs/frames.py:tiny pointed at a test dataset; `overrides` are dotted keys."""
    sys.path.insert(0, ROOT)
    from configs import frames

    config = frames.get_config("tiny")
    config.dataset.name = "dfew/frames64"
    config.dataset.data_dir = data_dir
    return _override(config, overrides)


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 300, check: bool = False):
    """Runs `python -m module args...` from the repository root; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("JAX_PLATFORMS", "cpu")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# -- Test videos: the astronaut's face (skimage), moving a little, or noise ---------------------------

FPS = 10.0
H, W = 180, 240
# skimage.data.astronaut(): the face is at x 177..272, y 66..161 of the 512 x 512 image.
FACE_CENTRE = (224.5, 113.5)


def astronaut_frame(i):
    """A 240 x 180 frame around the astronaut's face, shifted a few pixels from frame to frame.

    Returns (uint8[180, 240, 3] RGB, expected face centre (x, y) in the frame)."""
    from skimage import data  # noqa: PLC0415  (lazy: scikit-image is slow to import and only some tests draw)

    img = data.astronaut()
    dx, dy = int(round(6 * np.sin(i / 3.0))), int(round(4 * np.cos(i / 4.0)))
    x0, y0 = 24 + dx, max(0, -10 + dy)
    region = img[y0 : y0 + 300, x0 : x0 + 400]
    scale = W / 400.0
    frame = cv2.resize(region, (W, int(round(region.shape[0] * scale))), interpolation=cv2.INTER_AREA)[:H]
    return frame, ((FACE_CENTRE[0] - x0) * scale, (FACE_CENTRE[1] - y0) * scale)


def blank_frame(i):
    rng = np.random.default_rng(i)
    return np.clip(120 + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)


def write_video(path, frames, fps=FPS):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def face_video(path, num_frames: int = 24, fps: float = FPS) -> str:
    """An MJPG video of `num_frames` frames of the astronaut's face, moving a little."""
    return write_video(path, [astronaut_frame(i)[0] for i in range(num_frames)], fps)
