"""Preemption: SIGTERM to some processes of a multi-host run, and to a cross-validation, stops cleanly and resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fer_jax import workdir as workdir_lib
from tests.helpers import ROOT
from tests.test_multihost import _free_port
from tests.test_train import _final_state, _flatten

pytestmark = pytest.mark.slow
STEPS = 150


def _command(features_dir, workdir, steps=STEPS):
    return [sys.executable, "-m", "fer_jax.train", "--config", "configs/fusion.py:face", "--workdir", str(workdir),
            "--config.dataset.name=dfew_features/mini_xception_fer", f"--config.dataset.data_dir={features_dir}",
            "--config.batch_size=8", f"--config.num_train_steps={steps}", "--config.checkpoint_every=0",
            "--config.log_every=1", "--config.model.width=16", "--config.model.depth=1",
            "--config.model.mlp_dim=32", "--config.progress_bar=False", "--config.eval_batch_size=8",
            "--config.eval_every=0"]


def _start(features_dir, workdir, processes=2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = _free_port()
    return [subprocess.Popen(_command(features_dir, workdir) + [f"--coordinator_address=127.0.0.1:{port}",
                                                                 f"--num_processes={processes}", f"--process_id={i}"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]


def _wait_for_step(workdir, step, procs, timeout=300):
    path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a process ended early: " + procs[0].communicate()[1][-2000:])
        if os.path.exists(path):
            steps = [json.loads(line)["step"] for line in open(path) if line.strip()]
            if steps and max(steps) >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} in {timeout} s")


def _finish(procs):
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outs]


def _saved_step(err):
    line = next(line for line in err.splitlines() if "SIGTERM received: saved a checkpoint at step" in line)
    return int(line.split("at step ")[1].split(";")[0])


def _assert_bitwise_equal(a_dir, b_dir):
    step_a, a = _final_state(str(a_dir))
    step_b, b = _final_state(str(b_dir))
    assert step_a == step_b == STEPS
    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


@pytest.fixture(scope="module")
def straight(tiny_features, tmp_path_factory):
    """An uninterrupted 2-process run."""
    _, features_dir, _ = tiny_features
    workdir = tmp_path_factory.mktemp("straight")
    _finish(_start(features_dir, workdir))
    return workdir


@pytest.mark.parametrize("who", ["one process", "both, at different moments"])
def test_sigterm_on_some_processes_saves_one_agreed_step(tiny_features, straight, tmp_path, who):
    _, features_dir, _ = tiny_features
    procs = _start(features_dir, tmp_path)
    _wait_for_step(tmp_path, 10, procs)
    if who == "one process":
        procs[1].send_signal(signal.SIGTERM)  # process 0 never sees a signal
    else:  # process 1 gets its signal a moment later, when process 0 may already be stopping
        procs[0].send_signal(signal.SIGTERM)
        time.sleep(0.5)
        if procs[1].poll() is None:
            procs[1].send_signal(signal.SIGTERM)
    errs = _finish(procs)  # both exit 0
    saved = [_saved_step(err) for err in errs]
    assert saved[0] == saved[1] < STEPS, saved
    _finish(_start(features_dir, tmp_path))  # the rerun resumes and finishes
    _assert_bitwise_equal(straight, tmp_path)


def test_cross_validate_stopped_fold_records_nothing_and_resumes(tiny_features, tmp_path):
    _, features_dir, _ = tiny_features
    command = ([sys.executable, "-m", "fer_jax.cross_validate", "--folds", "1"]
               + _command(features_dir, tmp_path, steps=400)[3:])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path / "fold1", 5, [proc])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 75, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fold 1 was stopped" in errors[0] and "Rerun the same command" in errors[0]
    assert not (tmp_path / "cross_validation.json").exists()
    assert not any(m["split"] == "test" for m in workdir_lib.read_metrics(str(tmp_path / "fold1")))

    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from checkpoint" in proc.stderr
    rows = json.loads((tmp_path / "cross_validation.json").read_text())
    (row,) = rows.values()
    assert set(row["folds"]) == {"fold1"} and row["uar_std"] is None
    assert (tmp_path / "fold1" / "eval" / "fold1_step400.json").exists()
    assert (tmp_path / "fold1" / "eval" / "fold1_step400_confusion.png").exists()
