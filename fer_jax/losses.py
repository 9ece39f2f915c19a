"""Classification losses: cross-entropy with label smoothing, optional per-class weights, soft targets.

logits: float32[B, C], labels: int[B], mask: bool[B] (False rows contribute nothing),
votes: float[B, C] annotator vote counts in class order, targets: float32[B, C] (rows sum to 1).
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


def targets(labels, *, num_classes: int, label_smoothing: float = 0.0, votes=None, soft_targets: float = 0.0):
    """float32[B, C] training targets: (1 - soft) * smoothed one-hot + soft * votes / sum(votes).

    The smoothed one-hot is the target of `cross_entropy`. A row whose votes sum to 0 (no vote
    counts known) keeps the smoothed one-hot alone. soft_targets=0 ignores `votes`.
    """
    hard = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        hard = hard * (1.0 - label_smoothing) + label_smoothing / num_classes
    if not soft_targets:
        return hard
    if votes is None:
        raise ValueError("targets(): soft_targets > 0 needs `votes` (float[B, C] vote counts).")
    votes = jnp.asarray(votes, jnp.float32)
    total = jnp.sum(votes, axis=-1, keepdims=True)
    distribution = votes / jnp.maximum(total, 1e-9)
    mixed = (1.0 - soft_targets) * hard + soft_targets * distribution
    return jnp.where(total > 0, mixed, hard)


def soft_cross_entropy(logits, targets, *, labels=None, class_weights=None, mask=None):
    """Mean (weighted) cross-entropy against target distributions float[B, C]; returns a scalar.

    Class weights act per clip through its single label (`labels`, needed with `class_weights`),
    as in `cross_entropy`: with `targets(labels, ...)` at soft_targets=0 both losses are equal.
    """
    per_clip = -jnp.sum(jnp.asarray(targets, jnp.float32) * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)
    weights = jnp.ones_like(per_clip) if mask is None else mask.astype(jnp.float32)
    if class_weights is not None:
        if labels is None:
            raise ValueError("soft_cross_entropy(): class_weights need `labels` (each clip is weighted by its label).")
        weights = weights * jnp.asarray(class_weights, jnp.float32)[labels]
    return jnp.sum(per_clip * weights) / jnp.maximum(jnp.sum(weights), 1e-9)
