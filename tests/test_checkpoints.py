"""Checkpoints: an asynchronous save never reads buffers the next step donates; a newest checkpoint that
cannot be read (a truncated array file) is moved aside with a warning and the run resumes from the one
before it, ending bitwise equal to an uninterrupted run; a checkpoint of another model is still refused,
untouched. (Killing a run mid-save is in tests/test_train.py's SIGKILL test, with async saves on.)"""

import glob
import logging
import os

import jax
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib, train
from fer_jax.errors import CheckpointMismatchError
from tests.helpers import features_config
from tests.test_train import _final_state, _flatten

pytestmark = pytest.mark.usefixtures("quick_compiles")
STEPS = 12


def _config(out, **changes):
    return features_config(out, **{"num_train_steps": STEPS, "checkpoint_every": 4, "keep_checkpoints": 3,
                                   **changes})


def _truncate_largest_array_file(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    victim = max(files, key=os.path.getsize)
    data = open(victim, "rb").read()
    with open(victim, "wb") as f:
        f.write(data[: len(data) // 2])


def test_truncated_newest_checkpoint_is_moved_aside_and_the_rerun_matches(tiny_features, tmp_path, caplog):
    _, out, _ = tiny_features
    straight, damaged = str(tmp_path / "straight"), str(tmp_path / "damaged")
    train.train_and_evaluate(_config(out), straight)
    train.train_and_evaluate(_config(out), damaged)
    newest = os.path.join(damaged, "checkpoints", str(STEPS))
    _truncate_largest_array_file(newest)
    with caplog.at_level(logging.WARNING, logger="fer_jax.checkpoint"):
        train.train_and_evaluate(_config(out), damaged)
    (warning,) = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert newest in warning and "moved it to" in warning
    names = sorted(os.listdir(os.path.join(damaged, "checkpoints")))
    assert any(n.startswith(f"{STEPS}.unreadable-") for n in names), names
    assert str(STEPS) in names  # saved again by the rerun, from step 8 on
    step_a, a = _final_state(straight)
    step_b, b = _final_state(damaged)
    assert step_a == step_b == STEPS
    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def test_a_checkpoint_of_another_model_is_refused_and_left_alone(tiny_features, tmp_path):
    _, out, _ = tiny_features
    run = str(tmp_path / "run")
    train.train_and_evaluate(_config(out, num_train_steps=4), run)
    checkpoints = ckpt_lib.RunCheckpoints(run)
    try:
        other = {"params": {"w": jax.numpy.zeros((3, 3))}}
        with pytest.raises(CheckpointMismatchError, match="does not fit this model"):
            checkpoints.restore_latest(ckpt_lib.abstract_like(other, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    finally:
        checkpoints.close()
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["4"]


def test_an_async_save_never_reads_the_buffers_the_next_step_donates(tmp_path):
    state = {"w": jax.numpy.arange(300_000, dtype=jax.numpy.float32), "b": {"c": jax.numpy.ones((400, 400)) * 3}}
    expected = jax.tree.map(np.asarray, state)
    step = jax.jit(lambda s: jax.tree.map(lambda x: x * 0 - 1, s), donate_argnums=0)
    checkpoints = ckpt_lib.RunCheckpoints(str(tmp_path), async_save=True)
    try:
        checkpoints.save(1, state)
        leaves = jax.tree.leaves(state)
        state = jax.block_until_ready(step(state))  # donates the buffers the save was given ...
        for x in leaves:
            if not x.is_deleted():
                x.delete()  # ... and where the backend did not take them, they are freed here
        checkpoints.wait()
        abstract = ckpt_lib.abstract_like(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        restored = checkpoints.restore(1, abstract)
    finally:
        checkpoints.close()
    for key, value in _flatten(expected):
        np.testing.assert_array_equal(dict(_flatten(restored))[key], value, err_msg=key)


def test_a_resumed_run_loads_no_pretrained_weights_and_an_unreadable_only_checkpoint_is_one_error(
        tiny_features, tmp_path, monkeypatch):
    from fer_jax import runs

    _, out, _ = tiny_features
    seen = []
    real = runs.registry.build_model

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pretrained", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(runs.registry, "build_model", spy)
    run = str(tmp_path / "run")
    config = _config(out, num_train_steps=4, keep_checkpoints=1)
    first = train.train_and_evaluate(config, run)
    assert seen == [True]
    again = train.train_and_evaluate(_config(out, num_train_steps=4, keep_checkpoints=1), run)  # resumes at the end
    assert seen == [True, False] and again["confusion_matrix"] == first["confusion_matrix"]
    _truncate_largest_array_file(os.path.join(run, "checkpoints", "4"))
    with pytest.raises(CheckpointMismatchError, match="Rerun the same command: it starts from the pretrained"):
        train.train_and_evaluate(_config(out, num_train_steps=4, keep_checkpoints=1), run)
    rerun = train.train_and_evaluate(_config(out, num_train_steps=4, keep_checkpoints=1), run)
    assert seen[-1] is True and rerun["confusion_matrix"] == first["confusion_matrix"]
