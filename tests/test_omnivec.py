"""OmniVec: masking, the reconstruction loss against numpy, pretraining (resume), extraction, fine-tuning."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fer_jax import extract, input_pipeline, pretrain, train, workdir as workdir_lib
from fer_jax import train_state, runs
from fer_jax.errors import ConfigError
from fer_jax.models import omnivec, registry
from fer_jax.models.tokenizers import FeatureProjection, KeypointEncoder
from tests.helpers import ROOT, extract_config, features_config

sys.path.insert(0, ROOT)


def _tiny_omnivec(seed=0, dims=(("face", 12), ("pose", 9))):
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    toks = {"face": FeatureProjection(dims[0][1], 16, rngs=rngs),
            "pose": KeypointEncoder(dims[1][1], 16, hidden=16, rngs=rngs)}
    enc = omnivec.OmniVec(toks, num_frames=6, width=16, depth=2, num_heads=2, mlp_dim=32, rngs=rngs)
    return omnivec.OmniVecPretrainer(enc, dict(dims), rngs=rngs)


def _inputs(seed=0, b=3, t=6):
    rng = np.random.default_rng(seed)
    return {"face": rng.normal(size=(b, t, 12)).astype(np.float32),
            "pose": rng.normal(size=(b, t, 9)).astype(np.float32)}


def test_sample_hidden_is_a_subset_and_hides_whole_modalities():
    present = jnp.asarray(np.random.default_rng(0).random((256, 2, 16)) < 0.8)
    present = present.at[:32, 1].set(False)  # clips with only one modality present
    hidden = omnivec.sample_hidden(jax.random.key(0), present, mask_ratio=0.25, modality_mask_prob=0.5)
    hidden = np.asarray(hidden)
    assert not (hidden & ~np.asarray(present)).any()
    whole = [(hidden[b, m] == np.asarray(present)[b, m]).all() and np.asarray(present)[b, m].sum() > 8
             for b in range(256) for m in range(2)]
    assert 0.15 < np.mean(whole) < 0.4  # ~half the clips hide one of two modalities
    # a clip's only present modality is never hidden whole
    assert all(hidden[b, 0].sum() < np.asarray(present)[b, 0].sum() for b in range(32))
    rate = hidden[32:].sum() / np.asarray(present)[32:].sum()
    assert 0.35 < rate < 0.75  # 0.25 per token, plus the whole-modality share


def test_hidden_tokens_do_not_leak_into_predictions():
    model = _tiny_omnivec()
    x = _inputs()
    hidden = {"face": np.zeros((3, 6), bool), "pose": np.zeros((3, 6), bool)}
    hidden["face"][0, 2] = hidden["pose"][1, :] = True
    out, _ = model.encoder.encode(x, None, hidden)
    y = {k: v.copy() for k, v in x.items()}
    y["face"][0, 2] += 100.0
    y["pose"][1] = -y["pose"][1]
    out2, _ = model.encoder.encode(y, None, hidden)
    np.testing.assert_allclose(out, out2, atol=1e-6)
    # ...while an unhidden token's content does change the outputs
    y["face"][2, 0] = y["face"][2, 0][::-1]  # (a constant shift would vanish in the LayerNorm)
    assert np.abs(model.encoder.encode(y, None, hidden)[0] - out).max() > 1e-3


def test_absent_tokens_change_nothing():
    model = _tiny_omnivec()
    x = _inputs()
    masks = {"pose": np.ones((3, 6), bool)}
    masks["pose"][:, 3:] = False
    emb = model.encoder(x, masks)
    y = {k: v.copy() for k, v in x.items()}
    y["pose"][:, 3:] = 1e3
    np.testing.assert_allclose(model.encoder(y, masks), emb, atol=1e-6)


def test_reconstruction_loss_matches_numpy_float64():
    model = _tiny_omnivec()
    x = _inputs()
    rng = np.random.default_rng(1)
    hidden = {m: rng.random((3, 6)) < 0.4 for m in x}
    row_mask = np.array([True, True, False])
    loss, per = model.reconstruction_loss(x, None, hidden, row_mask)
    out, _ = model.encoder.encode(x, None, hidden)
    total = count = 0.0
    for i, m in enumerate(("face", "pose")):
        dec = model.decoders[m]
        pred = np.asarray(out[:, i], np.float64) @ np.asarray(dec.kernel[...], np.float64) + np.asarray(
            dec.bias[...], np.float64)
        v = x[m].astype(np.float64)
        target = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-6)
        err = ((pred - target) ** 2).mean(-1)
        w = hidden[m] & row_mask[:, None]
        total, count = total + (err * w).sum(), count + w.sum()
        np.testing.assert_allclose(per[m], (err * w).sum() / w.sum(), rtol=2e-5)
    np.testing.assert_allclose(loss, total / count, rtol=2e-5)


def test_omnivec_on_raw_frames_reconstructs_pixels():
    """Any tokenizer works: a CNN on frames next to keypoints; the decoder predicts H*W*3 values per frame."""
    from configs import omnivec as omnivec_configs

    c = omnivec_configs.get_config("face+pose")
    c.modalities.face.input, c.modalities.face.tokenizer = "frames", "cnn"
    c.modalities.face.channels = (4, 8)
    c.model.width, c.model.depth, c.model.mlp_dim = 16, 1, 32
    model = registry.build_omnivec(c, {"face": (4, 16, 16, 3), "pose": (4, 411)})
    assert model.decoders["face"].kernel.shape == (16, 16 * 16 * 3)
    rng = np.random.default_rng(0)
    x = {"face": rng.integers(0, 255, (2, 4, 16, 16, 3)).astype(np.uint8),
         "pose": rng.normal(size=(2, 4, 411)).astype(np.float32)}
    hidden = {"face": np.array([[1, 0, 0, 1], [0, 1, 0, 0]], bool), "pose": np.zeros((2, 4), bool)}
    loss, per = model.reconstruction_loss(x, None, hidden)
    assert np.isfinite(loss) and float(per["pose"]) == 0.0 and float(per["face"]) > 0
    assert model.encoder(x).shape == (2, 4, 16)


# ----------------------------------------------------------------------------------------------
# Pretraining, extraction and fine-tuning on the tiny synthetic release (with OpenPose).
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose_features(tiny_release, tmp_path_factory):
    """dfew/frames64_pose of tiny_release and its mini_xception_fer features (keypoints carried along)."""
    from tfds_dfew import build

    data_dir = str(tmp_path_factory.mktemp("pose_tfds"))
    build.build(tiny_release[0], data_dir, config="frames64_pose", num_workers=2)
    c = extract_config(data_dir, data_dir)
    c.source.name = "dfew/frames64_pose"
    extract.extract(c)
    return data_dir


def _pretrain_config(data_dir, **overrides):
    from configs import omnivec as omnivec_configs

    c = omnivec_configs.get_config("face+pose")
    c.dataset.data_dir = data_dir
    c.batch_size, c.num_train_steps, c.log_every, c.checkpoint_every, c.progress_bar = 8, 30, 10, 15, False
    c.model.width, c.model.depth, c.model.mlp_dim = 32, 1, 64
    c.optimizer.warmup_steps, c.optimizer.lr = 5, 3e-3
    for k, v in overrides.items():
        parent, leaf = k.rsplit(".", 1) if "." in k else ("", k)
        (c[parent] if parent else c)[leaf] = v
    return c


def test_pretrain_split_leaves_the_test_fold_out_unless_transductive(pose_features, tiny_release):
    from configs import omnivec as omnivec_configs

    c = _pretrain_config(pose_features)
    assert c.pretrain.exclude_fold == 1  # inductive by default: fold 1, every recipe's default test fold
    assert "unlabelled" in input_pipeline.dataset_splits(c)
    split = pretrain.pretrain_split(c, input_pipeline.dataset_splits(c))
    assert split.split("+") == ["fold2", "fold3", "fold4", "fold5", "unlabelled"]
    assert omnivec_configs.get_config("face+pose,transductive").pretrain.exclude_fold == 0
    c.pretrain.exclude_fold = 0
    split = pretrain.pretrain_split(c, input_pipeline.dataset_splits(c))
    assert split.split("+") == ["fold1", "fold2", "fold3", "fold4", "fold5", "unlabelled"]
    source = input_pipeline.open_source(c, split)
    labels = {int(source[i]["label"]) for i in range(len(source))}
    assert -1 in labels  # multi-labelled clips are part of pretraining
    c.pretrain.exclude_fold = 2
    assert "fold2" not in pretrain.pretrain_split(c, input_pipeline.dataset_splits(c)).split("+")
    c.pretrain.exclude_fold = 9
    with pytest.raises(ConfigError, match="exclude_fold=9"):
        pretrain.pretrain_split(c, input_pipeline.dataset_splits(c))


@pytest.fixture(scope="module")
def pretrained(pose_features, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("omnivec_run"))
    result = pretrain.pretrain(_pretrain_config(pose_features), workdir)
    return workdir, result


def test_pretraining_learns_and_a_crashed_run_resumes_bitwise(pose_features, pretrained, tmp_path, monkeypatch):
    workdir, result = pretrained
    assert result["steps"] == 30 and result["reconstruction_loss"] < 1.0  # 1.0 = predicting zeros
    log = [r for r in workdir_lib.read_metrics(workdir) if r["split"] == "pretrain"]
    assert [r["step"] for r in log] == [10, 15, 20, 30]  # logged every 10 steps and at each checkpoint
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]

    real = pretrain.make_steps

    def crash_after_first_checkpoint(*args, **kwargs):
        step_fn, loss_fn = real(*args, **kwargs)
        calls = {"n": 0}

        def step(state, batch, key):
            calls["n"] += 1
            if calls["n"] == 20:
                raise RuntimeError("simulated crash")
            return step_fn(state, batch, key)

        return step, loss_fn

    monkeypatch.setattr(pretrain, "make_steps", crash_after_first_checkpoint)
    resumed = str(tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain.pretrain(_pretrain_config(pose_features), resumed)
    monkeypatch.setattr(pretrain, "make_steps", real)
    again = pretrain.pretrain(_pretrain_config(pose_features), resumed)  # resumes from step 15
    assert again["reconstruction_loss"] == result["reconstruction_loss"]
    a, _ = runs.omnivec_encoder(workdir)
    b, _ = runs.omnivec_encoder(resumed)
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def omnivec_features(pose_features, pretrained):
    """dfew_features/mini_xception_fer_omnivec: the pretrained OmniVec extracted next to the face features."""
    from configs import extract as extract_configs

    c = extract_configs.get_config(f"omnivec,run={pretrained[0]}")
    c.source.data_dir = c.output.data_dir = pose_features
    c.batch_size = 8
    extract.extract(c)
    return pose_features


def test_extracted_omnivec_features_equal_the_network(pose_features, pretrained, omnivec_features):
    workdir, _ = pretrained
    config = features_config(pose_features)
    config.dataset.name = "dfew_features/mini_xception_fer_omnivec"
    from configs import fusion

    config.modalities = fusion.get_config("face+pose+omnivec").modalities
    assert "unlabelled" in input_pipeline.dataset_splits(config)
    source = input_pipeline.open_source(config, "unlabelled")
    module, _ = runs.omnivec_encoder(workdir)
    pre = input_pipeline.Preprocessor(workdir_lib.load_config(workdir), train=False)
    record = source[0]
    ex = pre(record)
    expected = module({"face": ex["face"][None], "pose": ex["pose"][None]}, {"pose": ex["mask/pose"][None]})
    assert record["omnivec"].shape == (16, 32)
    np.testing.assert_allclose(record["omnivec"], expected[0], atol=1e-5)
    # face features and keypoints travel along unchanged
    base = input_pipeline.open_source(features_config(pose_features), "unlabelled")
    np.testing.assert_array_equal(record["pose"], base[0]["pose"])
    # and the three modalities train together in every fusion mode
    for mode in ("concat", "early", "bottleneck", "late"):
        config.model.fusion = mode
        result = train.train_and_evaluate(config, os.path.join(workdir, f"fusion_{mode}"))
        assert np.isfinite(result["uar"])


def test_finetuning_starts_from_the_pretrained_omnivec(pose_features, pretrained, tmp_path):
    workdir, _ = pretrained
    from configs import fusion

    config = features_config(pose_features)
    full = fusion.get_config(f"face+pose+omnivec,omnivec_run={workdir}")
    config.modalities = full.modalities
    config.optimizer.lr_multipliers = full.optimizer.lr_multipliers
    assert config.dataset.name == "dfew_features/mini_xception_fer"
    shapes = input_pipeline.example_shapes(config)
    assert shapes["omnivec"] == {"face": (16, 135), "pose": (16, 411)}
    model = runs.model_builder(config, shapes)()
    pretrained_net, _ = runs.omnivec_encoder(workdir)
    for x, y in zip(jax.tree.leaves(nnx.state(model.tokenizers["omnivec"].omnivec, nnx.Param)),
                    jax.tree.leaves(nnx.state(pretrained_net, nnx.Param))):
        np.testing.assert_array_equal(x, y)
    result = train.train_and_evaluate(config, str(tmp_path / "ft"))
    assert np.isfinite(result["uar"])


def test_omnivec_errors_name_the_problem(pose_features, pretrained, tmp_path):
    workdir, _ = pretrained
    with pytest.raises(ConfigError, match="not an OmniVec pretraining run"):
        run = tmp_path / "fusion_run"
        workdir_lib.claim(str(run), features_config(pose_features))
        runs.omnivec_encoder(str(run))
    with pytest.raises(ConfigError, match="reads"):
        runs.omnivec_encoder(workdir, inputs={"face": "face_resnet18", "pose": "keypoints"})
    with pytest.raises(FileNotFoundError, match="config.json"):
        runs.omnivec_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="leave out the unlabelled clips"):
        pretrain.pretrain(_pretrain_config(pose_features, **{"data.sampler": "class_balanced"}), str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="no `pretrain` block"):
        pretrain.pretrain(features_config(pose_features), str(tmp_path / "wrong"))
    with pytest.raises(ConfigError, match="fer_jax.pretrain"):
        train.train_and_evaluate(_pretrain_config(pose_features), str(tmp_path / "wrong2"))
    from fer_jax import evaluate

    with pytest.raises(ConfigError, match="has no classifier"):
        evaluate.evaluate_checkpoint(workdir)


def test_pretraining_on_eight_devices_matches_one(pose_features, tmp_path):
    """The masking is drawn inside the sharded step; it must not depend on the device count."""
    import subprocess

    def run(devices):
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        workdir = tmp_path / f"d{devices}"
        cmd = [sys.executable, "-m", "fer_jax.pretrain", "--config", "configs/omnivec.py:face+pose,steps=6",
               "--workdir", str(workdir), f"--config.dataset.data_dir={pose_features}", "--config.batch_size=12",
               "--config.log_every=1", "--config.model.width=32", "--config.model.depth=1",
               "--config.progress_bar=False"]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return workdir_lib.read_metrics(str(workdir))

    one, eight = run(1), run(8)  # batch 12 on 8 devices: padded with masked rows
    losses = {name: [r["loss"] for r in log if r["split"] == "pretrain"] for name, log in (("1", one), ("8", eight))}
    assert len(losses["1"]) == 6
    np.testing.assert_allclose(losses["8"], losses["1"], rtol=2e-5)
    final = [[r["reconstruction_loss"] for r in log if r["split"] == "pretrain_eval"][0] for log in (one, eight)]
    assert final[0] == pytest.approx(final[1], rel=2e-5)


def test_predict_runs_pose_and_omnivec_on_a_video_with_its_openpose_output(pose_features, pretrained,
                                                                          omnivec_features, tmp_path):
    """A stored clip as 16 frames + its OpenPose JSON gives the evaluation pipeline's probabilities."""
    import json

    import tensorflow_datasets as tfds
    from PIL import Image

    from configs import fusion
    from fer_jax import checkpoint as ckpt_lib, parallel, predict
    from tfds_dfew import release

    record = tfds.data_source("dfew/frames64_pose", split="fold1", data_dir=pose_features, download=False)[0]
    frames_dir, pose_dir = tmp_path / "clip", tmp_path / "openpose"
    frames_dir.mkdir(), pose_dir.mkdir()
    for i, (frame, points) in enumerate(zip(record["frames"], record["pose"])):
        Image.fromarray(np.asarray(frame)).save(frames_dir / f"frame_{i:03d}.png")
        person = {"pose_keypoints_2d": points[:25].ravel().tolist(), "face_keypoints_2d": points[25:95].ravel().tolist(),
                  "hand_left_keypoints_2d": points[95:116].ravel().tolist(),
                  "hand_right_keypoints_2d": points[116:].ravel().tolist()}
        people = [person] if points[:, 2].any() else []
        (pose_dir / f"frame_{i:03d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))

    setups = {"frozen": fusion.get_config("face+pose+omnivec"),
              "finetuned": fusion.get_config(f"face+pose+omnivec,omnivec_run={pretrained[0]}")}
    for kind, full in setups.items():
        config = features_config(pose_features, num_train_steps=2, checkpoint_every=2)
        config.dataset.name, config.modalities = full.dataset.name, full.modalities
        run = str(tmp_path / kind)
        train.train_and_evaluate(config, run)
        got = predict.predict_video(str(frames_dir), workdir=run, aligned=True, batch=2, openpose_dir=str(pose_dir))
        assert len(got["windows"]) == 1 and got["model"]["openpose"]
        # the evaluation path: the cached record, preprocessed and fed to the restored model
        example = input_pipeline.Preprocessor(config, train=False)(input_pipeline.open_source(config, "fold1")[0])
        graphdef, _, state = train_state.init(config, runs.model_builder(config, input_pipeline.example_shapes(config)))
        checkpoints = ckpt_lib.RunCheckpoints(run, read_only=True)
        state = checkpoints.restore(2, ckpt_lib.abstract_like(state, parallel.replicated(parallel.make_mesh())))
        checkpoints.close()
        batch = {k: np.asarray(v)[None] for k, v in example.items() if k not in ("label", "mask")}
        inputs, masks = input_pipeline.model_inputs(batch, tuple(config.modalities))
        logits = np.asarray(nnx.merge(graphdef, state["params"], state["model_state"])(inputs, masks), np.float64)[0]
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose([got["windows"][0]["probabilities"][c] for c in release.CLASS_NAMES], expected,
                                   atol=1e-5, err_msg=kind)
        # Without OpenPose output: the pose input is masked as in training, and the result says so.
        masked = predict.predict_video(str(frames_dir), workdir=run, aligned=True, batch=2)
        assert any(n.startswith("pose masked") for n in masked["notes"])
        probs = [masked["windows"][0]["probabilities"][c] for c in release.CLASS_NAMES]
        if kind == "finetuned":  # the model reads only cached face features and keypoints: exact check
            source_record = dict(input_pipeline.open_source(config, "fold1")[0])
            source_record["pose"] = np.zeros_like(np.asarray(source_record["pose"]))  # nobody found
            example = input_pipeline.Preprocessor(config, train=False)(source_record)
            batch = {k: np.asarray(v)[None] for k, v in example.items() if k not in ("label", "mask")}
            inputs, masks = input_pipeline.model_inputs(batch, tuple(config.modalities))
            logits = np.asarray(nnx.merge(graphdef, state["params"], state["model_state"])(inputs, masks),
                                np.float64)[0]
            expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            np.testing.assert_allclose(probs, expected, atol=1e-5)
        else:
            assert np.isclose(sum(probs), 1.0) and min(probs) >= 0
