"""Stopping: SIGTERM to some processes of a multi-host run, Ctrl-C to a run, SIGTERM to a cross-validation.

Each stops cleanly (a checkpoint, one line saying how to resume, exit status 75) and resumes exactly.
"""

import json
import os
import re
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
            "--config.eval_every=0", "--config.stop_check_s=0.3"]


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


def _finish(procs, code=0):
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == code, err[-3000:]
    return [err for _, err in outs]


def _saved_step(err):
    """The step of the one `error:` line a stopped run ends with (it says how to resume)."""
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Rerun the same command to resume" in line, line
    return int(re.search(r"at step (\d+); its checkpoint is saved", line).group(1))


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
    errs = _finish(procs, code=75)  # both exit with the stop status
    saved = [_saved_step(err) for err in errs]
    assert saved[0] == saved[1] < STEPS, saved
    _finish(_start(features_dir, tmp_path))  # the rerun resumes and finishes
    _assert_bitwise_equal(straight, tmp_path)


def test_ctrl_c_saves_says_how_to_resume_and_the_rerun_is_bitwise_exact(tiny_features, tmp_path):
    _, features_dir, _ = tiny_features
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    straight_dir = tmp_path / "straight"
    subprocess.run(_command(features_dir, straight_dir), cwd=ROOT, env=env, capture_output=True, check=True)
    run = tmp_path / "stopped"
    # a job started in the background ignores SIGINT; the child gets the default handler back, as a terminal's has
    proc = subprocess.Popen(_command(features_dir, run), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_step(run, 10, [proc])
    proc.send_signal(signal.SIGINT)
    (err,) = _finish([proc], code=75)
    step = _saved_step(err)
    assert "Ctrl-C" in err and "Traceback" not in err
    assert 10 <= step < STEPS and str(step) in os.listdir(run / "checkpoints")
    subprocess.run(_command(features_dir, run), cwd=ROOT, env=env, capture_output=True, check=True)
    _assert_bitwise_equal(straight_dir, run)


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
    assert len(errors) == 1 and "fold1 was stopped" in errors[0] and "Rerun the same command" in errors[0]
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
