"""Extraction to cached features, training on them, fine-tuning a generator and extracting it again."""

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_jax import extract, input_pipeline, train
from fer_jax.models import generators
from tests.conftest import ROOT, tiny_config


def _extract_config(data_dir, out_dir, name="mini_xception_fer", **generator_overrides):
    import sys

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


@pytest.fixture(scope="module")
def cached(tiny_tfds, tmp_path_factory):
    data_dir, _ = tiny_tfds
    out = str(tmp_path_factory.mktemp("features"))
    path = extract.extract(_extract_config(data_dir, out))
    return data_dir, out, path


def _features_config(out_dir, **overrides):
    import sys

    sys.path.insert(0, ROOT)
    from configs import fusion

    c = fusion.get_config("face")
    c.dataset.data_dir = out_dir
    c.batch_size, c.eval_batch_size, c.num_train_steps = 8, 8, 4
    c.log_every, c.eval_every, c.checkpoint_every, c.progress_bar = 2, 0, 4, False
    c.model.width, c.model.depth, c.model.mlp_dim = 32, 1, 64
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return c


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


def test_finetune_then_extract_the_finetuned_generator(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    config = tiny_config(data_dir, num_train_steps=2, checkpoint_every=2, **{"data.crop_size": 48})
    config.modalities.face = dict(input="frames", tokenizer="generator", generator="mini_xception_fer",
                                  weights="", pretrained=True)
    config.optimizer.lr_multipliers = (("tokenizers/face/generator/network/stem_.*", 0.0),
                                       ("tokenizers/face/generator/.*", 0.1))
    run = str(tmp_path / "ft")
    train.train_and_evaluate(config, run)
    # frozen stem kept its pretrained values; later blocks moved
    module, report = extract.generator_from_run(run, "mini_xception_fer")
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
