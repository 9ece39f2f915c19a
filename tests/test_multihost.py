"""Multi-host: two processes on localhost (CPU collectives) train like one; checkpoints move between them."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from fer_jax import workdir as workdir_lib
from tests.helpers import ROOT
from tests.test_train import _final_state, _flatten

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(features_dir, workdir, processes: int, devices_each: int, module="fer_jax.train", config=None):
    """Trains configs/fusion.py:face (tiny) with `processes` processes of `devices_each` CPU devices.

    module="fer_jax.pretrain" with config="configs/omnivec.py:face" pretrains an OmniVec instead.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
    base = [sys.executable, "-m", module, "--config", config or "configs/fusion.py:face", "--workdir", str(workdir),
            "--config.dataset.name=dfew_features/mini_xception_fer", f"--config.dataset.data_dir={features_dir}",
            "--config.batch_size=8", "--config.num_train_steps=6",
            "--config.checkpoint_every=3", "--config.log_every=1",
            "--config.model.width=32", "--config.model.depth=1", "--config.model.mlp_dim=64",
            "--config.progress_bar=False"]
    if module == "fer_jax.train":
        base += ["--config.eval_batch_size=8", "--config.eval_every=0"]
    port = _free_port()
    procs = []
    for i in range(processes):
        flags = [] if processes == 1 else [f"--coordinator_address=127.0.0.1:{port}",
                                           f"--num_processes={processes}", f"--process_id={i}"]
        procs.append(subprocess.Popen(base + flags, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outputs]


def _losses(workdir):
    return [m["loss"] for m in workdir_lib.read_metrics(str(workdir)) if m["split"] == "train"]


def _assert_same_state(a_dir, b_dir):
    step_a, a = _final_state(str(a_dir))
    step_b, b = _final_state(str(b_dir))
    assert step_a == step_b == 6
    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    for key in fa:
        if key.startswith("/params/"):
            np.testing.assert_allclose(fa[key], fb[key], atol=5e-5, rtol=1e-4, err_msg=key)


def _resume_from_step3(src, dst):
    shutil.copytree(src, dst)
    shutil.rmtree(os.path.join(dst, "checkpoints", "6"))


def test_two_processes_match_one_and_checkpoints_move(tiny_features, tmp_path):
    _, features_dir, _ = tiny_features
    two, one = tmp_path / "two", tmp_path / "one"
    errs = _run(features_dir, two, processes=2, devices_each=2)
    assert "4 cpu device(s) in 2 process(es)" in errs[0]
    _run(features_dir, one, processes=1, devices_each=4)
    # Same global batches, same devices in all: same losses; only process 0 wrote metrics.
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=2e-5)
    assert len(_losses(two)) == 6
    _assert_same_state(two, one)

    # A checkpoint written by 2 processes resumes in 1, and the reverse.
    _resume_from_step3(two, tmp_path / "two_then_one")
    errs = _run(features_dir, tmp_path / "two_then_one", processes=1, devices_each=4)
    assert "resumed from checkpoint at step 3" in errs[0]
    _assert_same_state(two, tmp_path / "two_then_one")
    np.testing.assert_allclose(_losses(tmp_path / "two_then_one"), _losses(two), rtol=2e-5)

    _resume_from_step3(one, tmp_path / "one_then_two")
    errs = _run(features_dir, tmp_path / "one_then_two", processes=2, devices_each=2)
    assert "resumed from checkpoint at step 3" in errs[0]
    _assert_same_state(one, tmp_path / "one_then_two")


def test_two_processes_pretrain_omnivec_like_one(tiny_features, tmp_path):
    """The masking is drawn inside the sharded step: the same global batch gives the same loss."""
    _, features_dir, _ = tiny_features
    kw = dict(module="fer_jax.pretrain", config="configs/omnivec.py:face")
    errs = _run(features_dir, tmp_path / "two", processes=2, devices_each=2, **kw)
    assert "pretraining on fold2+fold3+fold4+fold5+unlabelled: inductive, test split fold1 left out" in errs[0]
    _run(features_dir, tmp_path / "one", processes=1, devices_each=4, **kw)
    logs = {n: workdir_lib.read_metrics(str(tmp_path / n)) for n in ("two", "one")}
    losses = {n: [m["loss"] for m in log if m["split"] == "pretrain"] for n, log in logs.items()}
    assert len(losses["two"]) == 6
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=2e-5)
    final = {n: [m["reconstruction_loss"] for m in log if m["split"] == "pretrain_eval"] for n, log in logs.items()}
    np.testing.assert_allclose(final["two"], final["one"], rtol=2e-5)


def test_two_hosts_extract_the_features_one_host_extracts(tiny_features, tmp_path):
    """Each process computes its share of every split, process 0 writes the dataset: the same clips with the
    same features as a one-host extraction, and the shares are gone afterwards."""
    from tfds_dfew import datasets

    data_dir, local_out, _ = tiny_features
    out = tmp_path / "features"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    port = _free_port()
    base = [sys.executable, "-m", "fer_jax.extract", "--config", "configs/extract.py:mini_xception_fer",
            "--config.source.name=dfew/frames64", f"--config.source.data_dir={data_dir}",
            f"--config.output.data_dir={out}", "--config.output.name=mini_xception_fer", "--config.batch_size=8"]
    procs = [subprocess.Popen(base + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                                      f"--process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    name = "dfew_features/mini_xception_fer"
    said = [[line for line in o.splitlines() if line.startswith("cached features in")] for o, _ in outputs]
    assert said[0] == said[1] and len(said[0]) == 1  # both print the same folder
    assert not [n for n in os.listdir(out / "dfew_features" / "mini_xception_fer") if n.startswith("_parts")]
    ours, theirs = datasets.open_built(str(out), name), datasets.open_built(local_out, name)
    assert ours.info.splits.keys() == theirs.info.splits.keys()
    for split in ours.info.splits.keys():
        a = {r["clip_id"]: r for r in ours.as_data_source(split=split)}
        b = {r["clip_id"]: r for r in theirs.as_data_source(split=split)}
        assert a.keys() == b.keys() and a
        for clip_id in a:
            np.testing.assert_allclose(a[clip_id]["face_mini_xception_fer"], b[clip_id]["face_mini_xception_fer"],
                                       atol=1e-6, err_msg=f"{split} {clip_id}")
            assert a[clip_id]["label"] == b[clip_id]["label"]
    assert ours.info.metadata["setup"] == theirs.info.metadata["setup"]
