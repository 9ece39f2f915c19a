"""MAFW and FERV39k through the whole pipeline at demo size: build, extract, train, evaluate, cross-validate, predict.

Each dataset's own class names must appear in every table, JSON and figure (the figures' tick
labels, legends and texts are read through `fer_jax.plots.write`); FERV39k's evaluation reports
per-scene UAR/WAR, its cross-validation is its one train/test split, and a DFEW run is scored on
FERV39k and MAFW through the classes they share.
"""

from __future__ import annotations

import json
import os

import matplotlib
import pytest

from fer_jax import cross_validate, evaluate, extract, plots, predict, train
from tests.helpers import ROOT, extract_config, face_video, features_config
from tfds_dfew import build, datasets, synthetic_ferv39k, synthetic_mafw

SIZE = 48


pytestmark = pytest.mark.usefixtures("quick_compiles")


@pytest.fixture(scope="module")
def figures(monkeypatch_module):
    """Every text of every figure written, by file name: {png name: [texts]}."""
    seen = {}
    write = plots.write

    def spy(fig, path):
        seen[os.path.basename(path)] = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        return write(fig, path)

    monkeypatch_module.setattr(plots, "write", spy)
    return seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _pipeline_data(name, tmp_path_factory):
    """(data_dir, features data_dir, class names) of a synthetic release of `name`, built and extracted."""
    root = str(tmp_path_factory.mktemp(name) / "release")
    if name == "mafw":
        synthetic_mafw.generate(root, 60, seed=2, frame_size=SIZE, audio=False, max_frames=20)
    else:
        synthetic_ferv39k.generate(root, 60, seed=2, frame_size=SIZE, audio=False, max_frames=20)
    data_dir = str(tmp_path_factory.mktemp(f"{name}_tfds"))
    builder = build.build(root, data_dir, dataset=name, config=f"frames{SIZE}", num_workers=2)
    c = extract_config(data_dir, data_dir)
    c.source.name = f"{name}/frames{SIZE}"
    extract.extract(c)
    return data_dir, tuple(builder.info.features["label"].names)


@pytest.fixture(scope="module")
def mafw_data(tmp_path_factory):
    return _pipeline_data("mafw", tmp_path_factory)


@pytest.fixture(scope="module")
def ferv39k_data(tmp_path_factory):
    return _pipeline_data("ferv39k", tmp_path_factory)


def _config(name, data_dir, **overrides):
    return features_config(data_dir, **{"dataset.name": f"{name}_features/mini_xception_fer", **overrides})


@pytest.mark.parametrize("name", ["mafw", "ferv39k"])
def test_a_dataset_trains_evaluates_cross_validates_and_predicts_in_its_own_classes(
        name, mafw_data, ferv39k_data, figures, tmp_path):
    data_dir, classes = {"mafw": mafw_data, "ferv39k": ferv39k_data}[name]
    assert classes == datasets.description(name).class_names
    figures.clear()

    # train + evaluate: the head has the dataset's classes, the JSON and the confusion PNG name them
    run = str(tmp_path / "run")
    result = train.train_and_evaluate(_config(name, data_dir), run)
    assert result["class_names"] == list(classes) and len(result["confusion_matrix"]) == len(classes)
    summary = evaluate.evaluate_checkpoint(run)
    saved = json.load(open(summary["json"]))
    assert saved["class_names"] == list(classes) and list(saved["per_class_recall"]) == list(classes)
    png = os.path.basename(summary["confusion_png"])
    assert set(classes) <= set(figures[png])
    assert json.load(open(os.path.join(run, "run.json")))["dataset"]["class_names"] == list(classes)
    if name == "ferv39k":  # per-scene results, and its one split is called `test`
        assert summary["split"] == "test" and summary["by_scene"]
        assert sum(v["num_clips"] for v in summary["by_scene"].values()) == summary["num_clips"]
    else:
        assert summary["split"] == "fold1"

    # cross-validation: the dataset's folds (FERV39k: its one train/test split), names in the table
    c = _config(name, data_dir)
    scheme = datasets.description(name).scheme
    folds = [1] if name == "ferv39k" else [1, 2]
    rows = {"face/concat": {**cross_validate.run_folds(c, str(tmp_path / "cv"), folds, scheme=scheme),
                            "workdir": str(tmp_path / "cv")}}
    report = cross_validate.write_report(str(tmp_path / "cv"), rows, chart=True, num_classes=len(classes))
    expected = ["test"] if name == "ferv39k" else ["fold1", "fold2"]
    assert list(rows["face/concat"]["folds"]) == expected
    assert all(f"{f} UAR / WAR" in report["table"] for f in expected)
    fold_json = json.load(open(os.path.join(tmp_path, "cv", expected[0], "eval",
                                            f"{expected[0]}_step4.json")))
    assert fold_json["class_names"] == list(classes)

    # predict: probabilities over the dataset's classes in the JSON, CSV and the timeline's legend
    video = face_video(tmp_path / "face.avi")
    out = predict.predict_video(video, workdir=run, batch=2, stride=8)
    assert out["class_names"] == list(classes)
    assert all(set(w["probabilities"]) == set(classes) for w in out["windows"] if w["probabilities"])
    paths = predict.write_outputs(out, str(tmp_path / "predicted"))
    assert open(paths["csv"]).readline().strip().split(",")[7:] == list(classes)
    assert set(classes) <= set(figures[os.path.basename(paths["png"])])


def test_a_dfew_run_scores_other_datasets_on_the_classes_they_share(tiny_features, mafw_data, ferv39k_data,
                                                                     tmp_path):
    _, dfew_features, _ = tiny_features
    run = str(tmp_path / "dfew_run")
    train.train_and_evaluate(features_config(dfew_features), run)
    for name, (data_dir, classes) in (("ferv39k", ferv39k_data), ("mafw", mafw_data)):
        summary = evaluate.evaluate_checkpoint(run, dataset=name, data_dir=data_dir)
        cross = summary["cross_dataset"]
        assert summary["dataset"] == f"{name}_features/mini_xception_fer"
        assert cross["trained_on"] == "dfew" and cross["evaluated_on"] == name
        if name == "ferv39k":  # one to one by name
            assert sorted(cross["scored_classes"]) == sorted(classes) and not cross["left_out_classes"]
        else:  # MAFW's 11 -> DFEW's 7: four classes have no counterpart and are not scored
            assert cross["left_out_classes"] == ["contempt", "anxiety", "helplessness", "disappointment"]
            assert cross["as_trained_classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
        assert summary["class_names"] == cross["scored_classes"]
        assert os.path.basename(summary["json"]).startswith(f"{name}_")


def test_cross_dataset_evaluation_says_how_to_make_missing_features(tiny_features, tmp_path):
    from fer_jax.errors import DatasetNotFoundError

    _, dfew_features, _ = tiny_features
    run = str(tmp_path / "dfew_run")
    train.train_and_evaluate(features_config(dfew_features), run)
    with pytest.raises(DatasetNotFoundError, match="dataset=ferv39k"):
        evaluate.evaluate_checkpoint(run, dataset="ferv39k", data_dir=str(tmp_path))


def test_build_extract_and_train_commands_take_any_dataset(ferv39k_data, tmp_path):
    """The CLIs as a user types them, on FERV39k (its builder, its features name, its one split)."""
    from tests.helpers import run_module

    data_dir, classes = ferv39k_data
    proc = run_module("fer_jax.train", "--config", "configs/fusion.py:face,dataset=ferv39k", "--workdir",
                      str(tmp_path / "run"), f"--config.dataset.data_dir={data_dir}", "--config.num_train_steps=2",
                      "--config.batch_size=4", "--config.eval_batch_size=4", "--config.model.width=16",
                      "--config.model.depth=1", "--config.model.mlp_dim=16", "--config.model.num_heads=2",
                      "--config.progress_bar=False", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(c[:3] in proc.stdout for c in classes)
    assert os.path.isdir(os.path.join(ROOT, "configs"))
