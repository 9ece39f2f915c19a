"""Cross-validation resumes finished folds; the ablation writes its table and chart."""

import json
import os

import numpy as np

from fer_jax import cross_validate, workdir as workdir_lib
from tests.helpers import features_config, run_module


def test_folds_run_once_and_summarize(tiny_features, tmp_path):
    _, out, _ = tiny_features
    config = features_config(out, num_train_steps=2, checkpoint_every=2)
    first = cross_validate.run_folds(config, str(tmp_path), [1, 2])
    assert set(first["folds"]) == {"fold1", "fold2"}
    values = np.array([first["folds"][f]["uar"] for f in ("fold1", "fold2")])
    assert first["uar_mean"] == np.mean(values) and first["uar_std"] == np.std(values)
    stamp = os.path.getmtime(tmp_path / "fold1" / workdir_lib.METRICS_FILE)
    again = cross_validate.run_folds(config, str(tmp_path), [1, 2])  # finished folds are not rerun
    assert again == first and os.path.getmtime(tmp_path / "fold1" / workdir_lib.METRICS_FILE) == stamp


def test_ablation_cli_writes_table_and_chart(tiny_features, tmp_path):
    _, out, _ = tiny_features
    proc = run_module(
        "fer_jax.cross_validate", "--config", "configs/fusion.py:face", "--workdir", str(tmp_path),
        f"--config.dataset.data_dir={out}", "--config.num_train_steps=2", "--config.batch_size=8",
        "--config.eval_batch_size=8", "--config.model.width=32", "--config.model.depth=1",
        "--config.progress_bar=False", "--folds=1", "--subsets=face", "--fusions=concat,late", check=True)
    assert "| face/concat |" in proc.stdout and "| face/late |" in proc.stdout
    rows = json.load(open(tmp_path / "cross_validation.json"))
    assert set(rows) == {"face/concat", "face/late"}
    assert os.path.getsize(tmp_path / "ablation.png") > 1000
    assert (tmp_path / "face_late" / "fold1" / "config.json").exists()
    bad = run_module("fer_jax.cross_validate", "--config", "configs/fusion.py:face", "--workdir", str(tmp_path / "x"),
                     f"--config.dataset.data_dir={out}", "--subsets=face+pose")
    assert bad.returncode == 2 and "does not define" in bad.stderr


def test_per_fold_datasets_get_their_fold(monkeypatch, tmp_path):
    """'{fold}' in the dataset name (features pretrained without that fold) becomes each fold's number."""
    import numpy as np

    from fer_jax import input_pipeline, metrics, train
    from tfds_dfew import release
    from tfds_dfew.description import SplitScheme

    config = features_config(str(tmp_path), **{"dataset.name": "dfew_features/mx_omnivec_x{fold}"})
    seen = {}

    def fake_train(c, workdir):
        seen[c.dataset.fold] = c.dataset.name
        summary = metrics.summarize(np.eye(7, dtype=np.int64), release.CLASS_NAMES)
        return {**summary, "stopped": False, "step": int(c.num_train_steps)}

    monkeypatch.setattr(train, "train_and_evaluate", fake_train)
    cross_validate.run_folds(config, str(tmp_path), [2, 5], scheme=SplitScheme.k_folds(5))
    assert seen == {2: "dfew_features/mx_omnivec_x2", 5: "dfew_features/mx_omnivec_x5"}
    assert input_pipeline.dataset_name(features_config(str(tmp_path))) == "dfew_features/mini_xception_fer"
