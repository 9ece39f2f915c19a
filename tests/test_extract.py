"""Extraction to cached features, training on them, fine-tuning a generator and extracting it again."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_jax import extract, input_pipeline, predict, train
from fer_jax import runs
from fer_jax.models import generators
from tests.helpers import extract_config as _extract_config, face_video, features_config as _features_config, run_module
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def cached(tiny_features):
    return tiny_features


def test_cached_features_equal_direct_computation(cached):
    data_dir, out, _ = cached
    frames_src = tfds.data_source("dfew/frames64", split="fold3", data_dir=data_dir, download=False)
    config = _features_config(out)
    feats_src = input_pipeline.open_source(config, "fold3")
    assert len(feats_src) == len(frames_src)
    module, _ = generators.create("mini_xception_fer")
    for i in (0, len(frames_src) - 1):
        record = feats_src[i]
        frames = frames_src[i]
        assert record["clip_id"] == frames["clip_id"] and record["label"] == frames["label"]
        direct = np.asarray(module(np.stack(frames["frames"])[None]))[0]
        assert record["face_mini_xception_fer"].shape == (16, generators.get("mini_xception_fer").feature_dim)
        np.testing.assert_allclose(record["face_mini_xception_fer"], direct, rtol=1e-4, atol=1e-5)


def test_train_on_cached_features(cached, tmp_path):
    _, out, _ = cached
    result = train.train_and_evaluate(_features_config(out), str(tmp_path))
    assert result["num_clips"] > 0 and np.isfinite(result["uar"])


def test_features_of_another_generator_are_refused(cached):
    _, out, _ = cached
    config = _features_config(out, **{"modalities.face.generator": "resnet18"})
    with pytest.raises(input_pipeline.FeatureSetupError, match="made by generator 'mini_xception_fer'"):
        input_pipeline.open_source(config, "fold1")
    config = _features_config(out, **{"modalities.face.input": "face_resnet18"})
    with pytest.raises(input_pipeline.FeatureSetupError, match="holds \\['face_mini_xception_fer'\\]"):
        input_pipeline.open_source(config, "fold1")
    config = _features_config(out, **{"modalities.face.checkpoint": "runs/elsewhere"})
    with pytest.raises(input_pipeline.FeatureSetupError, match="fine-tuned generator"):
        input_pipeline.open_source(config, "fold1")
    config = _features_config(out, **{"dataset.name": "dfew_features/resnet18"})
    with pytest.raises(input_pipeline.DatasetNotFoundError, match="python -m fer_jax.extract"):
        input_pipeline.open_source(config, "fold1")


def test_finetune_then_extract_the_finetuned_generator_and_predict_from_a_moved_run(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    config = tiny_config(data_dir, num_train_steps=2, checkpoint_every=2, **{"data.crop_size": 48})
    config.modalities.face = dict(input="frames", tokenizer="generator", generator="mini_xception_fer",
                                  weights="", pretrained=True)
    config.optimizer.lr_multipliers = (("tokenizers/face/generator/network/stem_.*", 0.0),
                                       ("tokenizers/face/generator/.*", 0.1))
    run = str(tmp_path / "ft")
    train.train_and_evaluate(config, run)
    # frozen stem kept its pretrained values; later blocks moved
    module, report = runs.generator_from_run(run, "mini_xception_fer")
    pretrained, _ = generators.create("mini_xception_fer")
    np.testing.assert_array_equal(np.asarray(module.network.stem_conv1.kernel[...]),
                                  np.asarray(pretrained.network.stem_conv1.kernel[...]))
    assert not np.array_equal(np.asarray(module.network.head.kernel[...]), np.asarray(pretrained.network.head.kernel[...]))
    assert "step 2" in report
    out = str(tmp_path / "features")
    path = extract.extract(_extract_config(data_dir, out, name="finetuned", checkpoint=run))
    assert os.path.exists(os.path.join(path, "dataset_info.json"))
    ok = _features_config(out, **{"dataset.name": "dfew_features/finetuned", "modalities.face.checkpoint": run})
    source = input_pipeline.open_source(ok, "fold1")  # the setup matches: no error
    frames = tfds.data_source("dfew/frames64", split="fold1", data_dir=data_dir, download=False)
    direct = np.asarray(jax.jit(lambda f: module(f))(np.stack(frames[0]["frames"])[None]))[0]
    np.testing.assert_allclose(source[0]["face_mini_xception_fer"], direct, rtol=1e-4, atol=1e-5)

    # The fine-tuning run moves: the features name it by its run id, so training on them still checks out.
    moved = str(tmp_path / "ft_moved")
    shutil.move(run, moved)
    moved_ok = _features_config(out, **{"dataset.name": "dfew_features/finetuned", "modalities.face.checkpoint": moved,
                                        "num_train_steps": 2, "checkpoint_every": 2})
    fusion = str(tmp_path / "fusion")
    train.train_and_evaluate(moved_ok, fusion)

    # A fusion run predicts with nothing but its own folder: copied elsewhere, the fine-tuning run, the
    # features and the weights cache gone, it gives the same windows (its bundle holds the fine-tuned generator).
    video = face_video(tmp_path / "face.avi")
    before = predict.predict_video(video, workdir=fusion, batch=2)
    copied = str(tmp_path / "elsewhere" / "fusion")
    shutil.copytree(fusion, copied)
    shutil.rmtree(fusion)
    shutil.rmtree(moved)
    assert os.listdir(os.path.join(copied, "bundle", "generators")) == ["face_mini_xception_fer.npz"]
    proc = run_module("fer_jax.predict", "--workdir", copied, video, "--out", str(tmp_path / "out"), "--batch", "2",
                      "--data_dir", str(tmp_path / "no_data"),
                      env={"FER_JAX_CACHE": str(tmp_path / "empty_cache"), "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = json.load(open(tmp_path / "out" / "face_emotions.json"))
    assert [w["dominant"] for w in after["windows"]] == [w["dominant"] for w in before["windows"]]
    for a, b in zip(after["windows"], before["windows"]):  # another process (its own compiler flags): 1e-6
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-6)
    assert after["model"]["modalities"] == before["model"]["modalities"]
    assert after["frames"] == before["frames"] and after["class_names"] == before["class_names"]


def test_overwrite_rewrites_an_existing_features_dataset(tiny_tfds, tmp_path):
    """--config.overwrite=True on a dataset that exists rebuilds it (TFDS refused to set its file format again)."""
    data_dir, _ = tiny_tfds
    config = _extract_config(data_dir, str(tmp_path))
    path = extract.extract(config)
    stamp = os.path.getmtime(os.path.join(path, "dataset_info.json"))
    config.overwrite = True
    assert extract.extract(config) == path
    assert os.path.getmtime(os.path.join(path, "dataset_info.json")) > stamp


@pytest.mark.parametrize("name,size", [("mini_xception_fer", 48), ("resnet18", 32)])
def test_features_in_steps_equal_one_call(name, size):
    """CPU inference runs generators a few clips per step (generators.in_steps): same features as one call."""
    module, _ = generators.create(name, pretrained=False)
    clips = np.random.default_rng(0).integers(0, 256, (5, 4, size, size, 3), dtype=np.uint8)
    whole = np.asarray(jax.jit(lambda c: module(c, train=False))(clips))
    for per_step in (1, 2, 3, 5):  # 3 leaves two clips over: one more call after the loop
        stepped = np.asarray(jax.jit(lambda c, k=per_step: generators.clip_features(module, c, k))(clips))
        np.testing.assert_allclose(stepped, whole, rtol=1e-5, atol=1e-6, err_msg=f"{per_step} clips per step")
    assert generators.inference_rows_per_step(16) == generators.CPU_FRAMES_PER_STEP // 16  # tests run on CPU
