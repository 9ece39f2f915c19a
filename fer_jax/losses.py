"""Classification losses: cross-entropy with label smoothing and optional per-class weights.

logits: float32[B, C], labels: int[B], mask: bool[B] (False rows contribute nothing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def class_balanced_weights(counts, *, power: float = 1.0) -> np.ndarray:
    """float32[C] weights proportional to (1 / count) ** power, normalised to mean 1 over classes."""
    counts = np.maximum(np.asarray(counts, np.float64), 1.0)
    w = counts ** (-power)
    return (w * len(w) / w.sum()).astype(np.float32)


def cross_entropy(logits, labels, *, num_classes: int, label_smoothing: float = 0.0, class_weights=None,
                  mask=None):
    """Mean (weighted) cross-entropy against smoothed one-hot targets; returns a scalar."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    per_clip = -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)
    weights = jnp.ones_like(per_clip) if mask is None else mask.astype(jnp.float32)
    if class_weights is not None:
        weights = weights * jnp.asarray(class_weights, jnp.float32)[labels]
    return jnp.sum(per_clip * weights) / jnp.maximum(jnp.sum(weights), 1e-9)
