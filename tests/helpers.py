"""Helpers shared by the tests: configs pointed at test datasets, running a module as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

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
