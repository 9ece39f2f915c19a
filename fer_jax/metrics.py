"""Classification metrics of the DFER field: WAR, UAR, per-class recall, confusion matrix.

WAR (weighted average recall) is plain accuracy; UAR (unweighted average recall) is the mean of
the per-class recalls. Rows of a confusion matrix are true classes, columns predictions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels, predictions, num_classes: int, mask=None) -> np.ndarray:
    """int64[C, C] counts; rows true class, columns predicted class. mask: bool[N] (False = padding)."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    predictions = np.asarray(predictions, np.int64).reshape(-1)
    if mask is not None:
        keep = np.asarray(mask, bool).reshape(-1)
        labels, predictions = labels[keep], predictions[keep]
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (labels, predictions), 1)
    return out


def confusion_matrix_jax(labels, logits, mask, num_classes: int):
    """Inside jit: float32[C, C] counts of the batch (padding rows, mask False, count nothing)."""
    true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * mask[:, None].astype(jnp.float32)
    pred = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
    return true.T @ pred


def per_class_recall(confusion) -> np.ndarray:
    """float64[C]: diagonal / row sums; a class with no test clip gets NaN (and is left out of UAR)."""
    c = np.asarray(confusion, np.float64)
    support = c.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(c) / support, np.nan)


def war(confusion) -> float:
    c = np.asarray(confusion, np.float64)
    total = c.sum()
    return float(np.trace(c) / total) if total else float("nan")


def uar(confusion) -> float:
    recall = per_class_recall(confusion)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def summarize(confusion, class_names) -> dict:
    """JSON-ready dict: uar, war, per-class recall by name, confusion matrix, clip count."""
    c = np.asarray(confusion).astype(np.int64)
    recall = per_class_recall(c)
    return {
        "uar": uar(c),
        "war": war(c),
        "num_clips": int(c.sum()),
        "per_class_recall": {n: (None if np.isnan(r) else float(r)) for n, r in zip(class_names, recall)},
        "confusion_matrix": c.tolist(),
        "class_names": list(class_names),
    }


def format_table(summary: dict) -> str:
    """A small plain-text table of a `summarize` result."""
    names = summary["class_names"]
    lines = [
        f"UAR {100 * summary['uar']:.2f}   WAR {100 * summary['war']:.2f}   ({summary['num_clips']} clips)",
        "class       recall   confusion row (predicted: " + " ".join(n[:3] for n in names) + ")",
    ]
    for name, row in zip(names, summary["confusion_matrix"]):
        r = summary["per_class_recall"][name]
        rtxt = "   n/a" if r is None else f"{100 * r:6.2f}"
        lines.append(f"{name:<10}{rtxt}    " + " ".join(f"{v:>3d}" for v in row))
    return "\n".join(lines)
