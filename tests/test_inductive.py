"""Inductive by default: a classifier run whose OmniVec (feature or tokenizer) was pretrained on its test fold's
inputs is refused unless config.allow_transductive, and then named transductive in its results and tables."""

import json

import pytest

from configs import fusion
from fer_jax import cross_validate, inductive
from fer_jax.errors import ConfigError


def _setup(exclude_fold, run="/runs/omnivec"):
    made = {"generator": "omnivec", "weights": f"checkpoint:{run}", "feature_dim": 32}
    if exclude_fold is not None:
        made["exclude_fold"] = exclude_fold
    return {"source": "dfew_features/mini_xception_fer",
            "generators": {"face_mini_xception_fer": {"generator": "mini_xception_fer"}, "omnivec": made}}


def test_a_pretraining_that_left_the_test_fold_out_is_inductive():
    c = fusion.get_config("face+pose+omnivec,fold=3")
    assert inductive.check(c, _setup(3)) is None
    assert inductive.check(fusion.get_config("face+pose,fold=3"), _setup(0)) is None  # omnivec not read


@pytest.mark.parametrize("excluded", [0, 1, None])
def test_a_pretraining_that_saw_the_test_fold_is_refused_unless_allowed(excluded, tmp_path):
    c = fusion.get_config("face+pose+omnivec,fold=3")
    with pytest.raises(ConfigError, match="exclude_fold=3.*allow_transductive=True"):
        inductive.check(c, _setup(excluded, run=str(tmp_path / "gone")))
    c.allow_transductive = True
    text = inductive.check(c, _setup(excluded, run=str(tmp_path / "gone")))
    assert text.startswith("transductive:") and "test fold 3" in text


def test_an_older_feature_asks_its_pretraining_run(tmp_path):
    run = tmp_path / "omnivec"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"pretrain": {"exclude_fold": 2}}))
    assert inductive.check(fusion.get_config("face+omnivec,fold=2"), _setup(None, run=str(run))) is None
    tuned = fusion.get_config(f"face+pose+omnivec,omnivec_run={run},fold=4")  # a fine-tuned omnivec tokenizer
    with pytest.raises(ConfigError, match="modality omnivec"):
        inductive.check(tuned, {})


def test_the_cross_validation_table_names_transductive_rows(tmp_path):
    rows = {"face/concat": {"folds": {"fold1": {"uar": 0.5, "war": 0.6}}, "uar_mean": 0.5, "war_mean": 0.6,
                            "uar_std": None, "war_std": None},
            "face+omnivec/concat": {"folds": {"fold1": {"uar": 0.7, "war": 0.8, "transductive": "transductive: x"}},
                                    "uar_mean": 0.7, "war_mean": 0.8, "uar_std": None, "war_std": None,
                                    "transductive": ["fold1: transductive: x"]}}
    out = cross_validate.write_report(str(tmp_path), rows, chart=False)
    assert "| face+omnivec/concat (transductive) |" in out["table"] and "| face/concat |" in out["table"]
    assert "Transductive rows" in (tmp_path / "cross_validation.md").read_text()
    assert json.loads((tmp_path / "cross_validation.json").read_text())["face+omnivec/concat"]["transductive"]
