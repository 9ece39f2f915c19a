"""Which training clip comes at each position of the stream: class-balanced sampling and label subsets."""

from __future__ import annotations

import sys
import threading

import numpy as np

from fer_jax.errors import ConfigError


class ClassBalancedSampler:
    """The source index at each position of an infinite class-balanced stream: a pure function of (seed, position).

    labels: int[N] of the source records. A clip of class c is drawn with probability proportional
    to n_c ** -power (power 1: every class equally often; power 0: the data's class frequencies);
    a class with no clip gets none, and clips labelled outside 0..C-1 (-1: unlabelled) are never
    drawn. The stream is cut into epochs of E positions (E = the number of labelled clips). Epoch e
    holds a fixed quota of each class, E * p_c rounded by largest remainder with
    p_c ∝ n_c ** (1 - power), filled from fresh random permutations of that class's clips (so the
    clips of a class come up as evenly as possible), in random order; all of epoch e's randomness
    comes from numpy's Generator seeded with (seed, e). With power 0 an epoch is thus a random
    permutation of the labelled clips. `sampler[i]` is the source index at position i; len() is
    sys.maxsize, so `grain.MapDataset.source(sampler)` is the infinite stream of indices.
    """

    def __init__(self, labels, *, seed: int, power: float = 1.0, num_classes: int = 7):
        labels = np.asarray(labels, np.int64).reshape(-1)
        if not np.isfinite(power) or power < 0:
            raise ConfigError(f"config.data.balance_power={power}: expected a number >= 0 (1: balanced classes, "
                              "0: the data's class frequencies).")
        self.seed = int(seed) % 2**64
        self.num_classes = int(num_classes)
        self.power = float(power)
        labelled = (labels >= 0) & (labels < self.num_classes)
        if (labels[~labelled] != -1).any():
            bad = sorted(set(labels[~labelled].tolist()) - {-1})
            raise ConfigError(f"training labels {bad[:5]} are outside 0..{self.num_classes - 1} "
                              f"(config.num_classes={self.num_classes}).")
        self.members = [np.flatnonzero(labels == c) for c in range(self.num_classes)]
        self.counts = np.array([len(m) for m in self.members], np.int64)
        self.epoch_size = int(self.counts.sum())
        if self.epoch_size == 0:
            raise ConfigError("config.data.sampler='class_balanced': the training split has no labelled clip.")
        weights = np.zeros(self.num_classes)
        present = self.counts > 0
        weights[present] = self.counts[present].astype(np.float64) ** (1.0 - self.power)
        self.class_probabilities = weights / weights.sum()
        exact = self.epoch_size * self.class_probabilities
        quotas = np.floor(exact).astype(np.int64)
        remainder = np.where(present, exact - quotas, -1.0)
        quotas[np.argsort(-remainder, kind="stable")[: self.epoch_size - int(quotas.sum())]] += 1
        self.quotas = quotas
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def epoch(self, e: int) -> np.ndarray:
        """int64[E]: the source indices of positions [e*E, (e+1)*E)."""
        with self._lock:
            cached = self._cache.get(e)
        if cached is not None:
            return cached
        rng = np.random.default_rng([self.seed, int(e)])
        parts = []
        for members, quota in zip(self.members, self.quotas):
            if quota:
                rounds = -(-int(quota) // len(members))
                parts.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:quota])
        order = np.concatenate(parts)[rng.permutation(self.epoch_size)]
        with self._lock:
            self._cache[e] = order
            while len(self._cache) > 4:  # positions are read nearly in order: keep the last few epochs
                del self._cache[next(iter(self._cache))]
        return order

    def __getitem__(self, position: int) -> int:
        e, i = divmod(int(position), self.epoch_size)
        return int(self.epoch(e)[i])

    def __len__(self) -> int:
        return sys.maxsize

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _cache={}, _lock=threading.Lock())


def labelled_subset(labels, fraction: float, *, seed: int) -> np.ndarray:
    """int64[n]: sorted indices of a class-stratified `fraction` of the labelled clips (at least one per class).

    Class c keeps round(fraction * n_c) of its clips (at least 1), drawn with numpy's Generator
    seeded with (seed, c); clips labelled -1 (unlabelled) are never kept.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"config.data.label_fraction={fraction}: expected a fraction in (0, 1].")
    labels = np.asarray(labels, np.int64).reshape(-1)
    kept = []
    for c in sorted(set(labels[labels >= 0].tolist())):
        members = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(members))))
        kept.append(np.random.default_rng([int(seed) % 2**32, c]).choice(members, n, replace=False))
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
