"""UAR / WAR / confusion matrix against scikit-learn, and the loss against a float64 numpy reference."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix as sk_confusion, recall_score

from fer_jax import losses, metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uar_war_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, size=500, p=[0.2, 0.16, 0.23, 0.19, 0.12, 0.02, 0.08])
    preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 7, 500))
    conf = metrics.confusion_matrix(labels, preds, 7)
    np.testing.assert_array_equal(conf, sk_confusion(labels, preds, labels=range(7)))
    assert metrics.war(conf) == pytest.approx(accuracy_score(labels, preds), abs=1e-12)
    assert metrics.uar(conf) == pytest.approx(recall_score(labels, preds, average="macro"), abs=1e-12)
    np.testing.assert_allclose(metrics.per_class_recall(conf), recall_score(labels, preds, average=None), atol=1e-12)


def test_absent_class_left_out_of_uar():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    conf = metrics.confusion_matrix(labels, preds, 7)
    # sklearn, restricted to the classes present, is the reference
    assert metrics.uar(conf) == pytest.approx(recall_score(labels, preds, average="macro", labels=[0, 1, 2]))
    summary = metrics.summarize(conf, [str(i) for i in range(7)])
    assert summary["per_class_recall"]["6"] is None and summary["num_clips"] == 5


def test_jax_confusion_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 64)
    logits = rng.normal(size=(64, 7)).astype(np.float32)
    mask = rng.random(64) < 0.8
    expected = metrics.confusion_matrix(labels, logits.argmax(-1), 7, mask=mask)
    got = np.asarray(metrics.confusion_matrix_jax(jnp.asarray(labels), jnp.asarray(logits), jnp.asarray(mask), 7))
    np.testing.assert_array_equal(got.astype(np.int64), expected)
    assert got.sum() == mask.sum()


def test_cross_entropy_matches_float64_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 7)) * 3
    labels = rng.integers(0, 7, 16)
    mask = rng.random(16) < 0.7
    weights = losses.class_balanced_weights([2445, 1894, 2669, 2173, 1469, 145, 902])
    eps = 0.1
    target = np.eye(7)[labels] * (1 - eps) + eps / 7
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per = -(target * logp).sum(-1)
    w = mask * weights[labels]
    expected = (per * w).sum() / w.sum()
    got = losses.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), num_classes=7,
                               label_smoothing=eps, class_weights=weights, mask=jnp.asarray(mask))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # balanced weights: inverse frequency, mean one, Disgust the largest
    assert weights.mean() == pytest.approx(1.0) and weights.argmax() == 5
