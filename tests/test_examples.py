"""The example extensions (examples/): a dataset, a modality and a generator, each new files that register themselves.

Loaded the way a user loads them (FER_JAX_PLUGINS), each goes through the stage it extends: the toy
dataset builds and trains in its own three classes, the pixel-averaging generator extracts cached
features, the constant modality feeds a fusion model and predicts on a video. No module of the
package names any of them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fer_jax import extract, predict, train
from tests.helpers import ROOT, extract_config, face_video, features_config, run_module
from tfds_dfew import build, datasets, plugins

PLUGINS = "examples.toy_dataset,examples.constant_modality,examples.pixel_mean"


@pytest.fixture(scope="module", autouse=True)
def loaded():
    old = os.environ.get(plugins.ENV)
    os.environ[plugins.ENV] = PLUGINS
    plugins.load()
    yield
    if old is None:
        os.environ.pop(plugins.ENV)
    else:
        os.environ[plugins.ENV] = old


@pytest.fixture(scope="module")
def toy3(tmp_path_factory):
    from examples import toy_dataset

    root = str(tmp_path_factory.mktemp("toy3") / "release")
    toy_dataset.make_release(root, 24, frame_size=48)
    data_dir = str(tmp_path_factory.mktemp("toy3_tfds"))
    builder = build.build(root, data_dir, dataset="toy3", config="frames64")
    return root, data_dir, builder


def test_no_package_module_imports_or_lists_the_examples():
    import ast

    from fer_jax import modalities

    for package in ("fer_jax", "tfds_dfew", "configs"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for f in [f for f in files if f.endswith(".py")]:
                tree = ast.parse(open(os.path.join(folder, f)).read())
                imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
                imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
                assert not [m for m in imported if m.startswith("examples")], f
    assert "toy3" not in datasets._BUILTIN and not [m for m in modalities._BUILTIN if "examples" in m]


def test_the_toy_dataset_builds_extracts_and_trains_in_its_own_classes(toy3, tmp_path):
    _, data_dir, builder = toy3
    assert "toy3" in datasets.names()
    assert builder.info.features["label"].names == ["calm", "joy", "anger"]
    assert sorted(builder.info.splits) == ["test", "train"]
    c = extract_config(data_dir, data_dir)
    c.source.name = "toy3/frames64"
    extract.extract(c)
    config = features_config(data_dir, **{"dataset.name": "toy3_features/mini_xception_fer"})
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["class_names"] == ["calm", "joy", "anger"] and len(result["confusion_matrix"]) == 3
    assert sum(map(sum, result["confusion_matrix"])) == len(builder.as_data_source("test"))


def test_the_pixel_mean_generator_extracts_what_it_computes(tiny_tfds, tmp_path):
    data_dir, _ = tiny_tfds
    from configs import extract as extract_configs

    c = extract_configs.get_config("pixel_mean")
    c.source.name, c.source.data_dir, c.output.data_dir = "dfew/frames64", data_dir, str(tmp_path)
    path = extract.extract(c)
    source = datasets.open_built(str(tmp_path), "dfew_features/pixel_mean").as_data_source("fold1")
    frames = datasets.open_built(data_dir, "dfew/frames64").as_data_source("fold1")[0]["frames"]
    x = np.stack(frames).astype(np.float64) / 255.0  # [T, 64, 64, 3]: 2 x 2 cells of 32 px
    expected = x.reshape(len(x), 2, 32, 2, 32, 3).mean(axis=(2, 4)).reshape(len(x), 12)
    np.testing.assert_allclose(source[0]["face_pixel_mean"], expected, atol=1e-6)
    assert os.path.exists(os.path.join(path, "dataset_info.json"))


def test_the_constant_modality_trains_and_predicts_beside_the_face(tiny_features, tmp_path):
    _, out, _ = tiny_features
    config = features_config(out)
    with config.unlocked():
        config.modalities.bias = {"input": "constant", "kind": "constant", "tokenizer": "linear", "dim": 3}
    run = str(tmp_path / "run")
    result = train.train_and_evaluate(config, run)
    assert result["num_clips"] > 0
    shapes = open(os.path.join(run, "input_shapes.json")).read()
    assert '"bias": [\n      16,\n      3\n    ]' in shapes
    windows = predict.predict_video(face_video(tmp_path / "face.avi"), workdir=run, batch=2)["windows"]
    assert windows and all(w["probabilities"] for w in windows)


def test_plugins_load_in_the_command_line_tools(toy3, tmp_path):
    _, data_dir, _ = toy3
    proc = run_module("tfds_dfew.build", "--dataset", "toy3", "--manual_dir", toy3[0], "--data_dir", data_dir,
                      "--config", "frames64", env={plugins.ENV: PLUGINS})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reusing toy3/frames64" in proc.stdout and "calm" in proc.stdout
    proc = run_module("tfds_dfew.build", "--dataset", "toy3", "--manual_dir", toy3[0], "--data_dir", data_dir,
                      env={plugins.ENV: "examples.no_such_module"})
    assert proc.returncode == 2 and "error: FER_JAX_PLUGINS: plug-in module 'examples.no_such_module'" in proc.stderr
