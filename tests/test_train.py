"""Training end to end on a tiny built dataset: outputs, resume after SIGKILL, evaluation, bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fer_jax import train, workdir as workdir_lib
from tests.helpers import ROOT, run_module, tiny_config


def test_train_and_evaluate_writes_run(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    config = tiny_config(data_dir)
    result = train.train_and_evaluate(config, str(tmp_path))
    assert set(result) >= {"uar", "war", "confusion_matrix", "per_class_recall"}
    assert result["num_clips"] > 0 and 0.0 <= result["uar"] <= 1.0
    lines = workdir_lib.read_metrics(str(tmp_path))
    train_lines = [m for m in lines if m["split"] == "train"]
    assert train_lines and all(np.isfinite(m["loss"]) for m in train_lines)
    assert [m["split"] for m in lines][-1] == "test"
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints")) == [3, 6]
    assert json.load(open(tmp_path / "config.json"))["model"]["width"] == config.model.width
    assert os.listdir(tmp_path / "tensorboard")


def test_workdir_of_another_config_is_refused(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    workdir_lib.claim(str(tmp_path), tiny_config(data_dir))
    os.makedirs(tmp_path / "checkpoints" / "3")  # the run trained
    workdir_lib.claim(str(tmp_path), tiny_config(data_dir, log_every=1))  # harmless key: fine
    with pytest.raises(workdir_lib.WorkdirConflictError, match="model.width"):
        workdir_lib.claim(str(tmp_path), tiny_config(data_dir, **{"model.width": 64}))


def test_a_workdir_that_never_trained_takes_another_config(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    workdir_lib.claim(str(tmp_path), tiny_config(data_dir))  # e.g. a command that failed before its first step
    workdir_lib.claim(str(tmp_path), tiny_config(data_dir, **{"model.width": 64}))
    assert json.load(open(tmp_path / "config.json"))["model"]["width"] == 64


def test_runs_from_before_added_config_keys_still_resume(tiny_tfds, tmp_path):
    import json

    data_dir, _ = tiny_tfds
    workdir_lib.claim(str(tmp_path), tiny_config(data_dir))
    os.makedirs(tmp_path / "checkpoints" / "3")  # the run trained
    path = tmp_path / workdir_lib.CONFIG_FILE
    old = json.loads(path.read_text())
    del old["data"]["sampler"], old["data"]["balance_power"], old["loss"]["soft_targets"]
    old["loss"]["class_weights"] = None
    path.write_text(json.dumps(old))
    workdir_lib.claim(str(tmp_path), tiny_config(data_dir))  # the keys' neutral values: same run
    path.write_text(json.dumps(old))
    with pytest.raises(workdir_lib.WorkdirConflictError, match="data.sampler"):
        workdir_lib.claim(str(tmp_path), tiny_config(data_dir, **{"data.sampler": "class_balanced"}))


def _train_cmd(data_dir, workdir, steps=24):
    return [sys.executable, "-m", "fer_jax.train", "--config", "configs/frames.py:tiny", "--workdir", str(workdir),
            f"--config.dataset.name=dfew/frames64", f"--config.dataset.data_dir={data_dir}",
            f"--config.num_train_steps={steps}", "--config.checkpoint_every=4", "--config.log_every=1",
            "--config.eval_every=4"]


def _final_state(workdir):
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    path = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    # restore onto this process's first device, whatever device count wrote the checkpoint
    tree = checkpointer.metadata(path).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    restore_args = jax.tree.map(lambda m: ocp.ArrayRestoreArgs(sharding=device), tree,
                                is_leaf=lambda x: hasattr(x, "shape"))
    return steps[-1], checkpointer.restore(path, restore_args=restore_args)


@pytest.mark.slow
def test_random_sigkills_then_rerun_match_uninterrupted(tiny_tfds, tmp_path):
    """SIGKILL at random moments (start-up, mid-step, mid-save, mid-evaluation), three times; the
    rerun of the same command ends bitwise where an uninterrupted run ends."""
    data_dir, _ = tiny_tfds
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(data_dir, straight), cwd=ROOT, env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    rng = random.Random(1234)
    for round_ in range(3):
        proc = subprocess.Popen(_train_cmd(data_dir, killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 9.0) + 2.0 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rerun = subprocess.run(_train_cmd(data_dir, killed), cwd=ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    step_a, state_a = _final_state(straight)
    step_b, state_b = _final_state(killed)
    assert step_a == step_b == 24
    flat_a = dict(_flatten(state_a))
    flat_b = dict(_flatten(state_b))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:  # bitwise equal on CPU
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)
    # the metrics log has one line per step, no duplicates from the killed attempts
    logged = [m["step"] for m in workdir_lib.read_metrics(str(killed)) if m["split"] == "train"]
    assert logged == sorted(set(logged)) and logged[-1] == 24
    losses_a = [m["loss"] for m in workdir_lib.read_metrics(str(straight)) if m["split"] == "train"]
    losses_b = [m["loss"] for m in workdir_lib.read_metrics(str(killed)) if m["split"] == "train"]
    assert losses_a == losses_b
    tests_a = [m for m in workdir_lib.read_metrics(str(straight)) if m["split"] == "test"]
    tests_b = [m for m in workdir_lib.read_metrics(str(killed)) if m["split"] == "test"]
    assert [(m["step"], m["uar"], m["war"]) for m in tests_a] == [(m["step"], m["uar"], m["war"]) for m in tests_b]


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(_train_cmd(data_dir, tmp_path, steps=400), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (tmp_path / "checkpoints" / "4").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 75 and len(errors) == 1 and "stopped by SIGTERM at step" in errors[0], err[-2000:]
    assert "Rerun the same command to resume" in errors[0]
    step = int(errors[0].split("at step ")[1].split(";")[0])
    assert 4 <= step < 400 and (tmp_path / "checkpoints" / str(step)).exists()


def test_same_seed_same_numbers(tiny_features, tmp_path):
    from tests.helpers import features_config

    _, out, _ = tiny_features
    a = train.train_and_evaluate(features_config(out), str(tmp_path / "a"))
    b = train.train_and_evaluate(features_config(out), str(tmp_path / "b"))
    assert a["confusion_matrix"] == b["confusion_matrix"]
    la = [m["loss"] for m in workdir_lib.read_metrics(str(tmp_path / "a")) if m["split"] == "train"]
    lb = [m["loss"] for m in workdir_lib.read_metrics(str(tmp_path / "b")) if m["split"] == "train"]
    assert la == lb and len(la) == 2
    c = train.train_and_evaluate(features_config(out, seed=1), str(tmp_path / "c"))
    lc = [m["loss"] for m in workdir_lib.read_metrics(str(tmp_path / "c")) if m["split"] == "train"]
    assert lc != la  # the seed matters


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _flatten(v, f"{prefix}/{i}")
    elif tree is not None:
        yield prefix, np.asarray(tree)


def test_evaluate_cli_writes_json_and_png(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    train.train_and_evaluate(tiny_config(data_dir), str(tmp_path))
    proc = run_module("fer_jax.evaluate", "--workdir", str(tmp_path), check=True)
    assert "UAR" in proc.stdout and "WAR" in proc.stdout
    report = json.load(open(tmp_path / "eval" / "fold1_step6.json"))
    assert report["step"] == 6 and report["split"] == "fold1"
    assert report["num_clips"] == sum(map(sum, report["confusion_matrix"]))
    assert os.path.getsize(tmp_path / "eval" / "fold1_step6_confusion.png") > 1000
    # every test clip counted exactly once (eval batch 8 does not divide the split)
    import tensorflow_datasets as tfds

    assert report["num_clips"] == len(tfds.data_source("dfew/frames64", split="fold1", data_dir=data_dir,
                                                       download=False))
    proc = run_module("fer_jax.evaluate", "--workdir", str(tmp_path), "--step", "5")
    assert proc.returncode == 2 and "no checkpoint at step 5" in proc.stderr


@pytest.mark.parametrize(
    "override,expected",
    [("--config.modell.width=3", "unknown config key 'modell' (did you mean 'model'?)"),
     ("--config.model.widht=3", "unknown config key 'widht' (did you mean 'width'?)")],
)
def test_config_typo_gets_one_line(tmp_path, override, expected):
    proc = run_module("fer_jax.train", "--config", "configs/frames.py:tiny", override, "--workdir", str(tmp_path))
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_missing_dataset_says_how_to_build(tmp_path):
    proc = run_module("fer_jax.train", "--config", "configs/frames.py:tiny", "--workdir", str(tmp_path / "run"),
                      f"--config.dataset.data_dir={tmp_path / 'nothing'}")
    assert proc.returncode == 2 and "python -m tfds_dfew.build" in proc.stderr and "Traceback" not in proc.stderr


def test_bfloat16_compute_keeps_float32_state(tiny_features, tmp_path):
    from tests.helpers import features_config

    _, out, _ = tiny_features
    result = train.train_and_evaluate(features_config(out, **{"model.dtype": "bfloat16"}), str(tmp_path))
    assert np.isfinite(result["uar"])
    _, state = _final_state(str(tmp_path))
    dtypes = {a.dtype for k, a in _flatten(state) if k.startswith(("/params/", "/opt_state/")) and a.dtype.kind == "f"}
    assert dtypes == {np.dtype(np.float32)}
