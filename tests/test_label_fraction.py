"""Training on a class-stratified fraction of the labels (cross_validate --label_fraction)."""

import numpy as np
import pytest

from fer_jax import input_pipeline
from fer_jax.data.samplers import labelled_subset
from fer_jax.errors import ConfigError
from tests.helpers import features_config


def test_subset_is_stratified_deterministic_and_skips_unlabelled():
    labels = np.array([0] * 50 + [1] * 30 + [5] * 3 + [-1] * 20)
    subset = labelled_subset(labels, 0.1, seed=0)
    counts = np.bincount(labels[subset], minlength=7)
    assert counts.tolist() == [5, 3, 0, 0, 0, 1, 0]  # round(0.1 * n), at least one per class present
    assert (labels[subset] >= 0).all() and len(set(subset.tolist())) == len(subset)
    np.testing.assert_array_equal(subset, labelled_subset(labels, 0.1, seed=0))
    assert not np.array_equal(subset, labelled_subset(labels, 0.1, seed=1))
    assert len(labelled_subset(labels, 1.0, seed=0)) == 83
    with pytest.raises(ConfigError, match="label_fraction"):
        labelled_subset(labels, 0.0, seed=0)


class _Recording:
    """A data source that remembers which records were read."""

    def __init__(self, source):
        self.source, self.read = source, set()

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.read.add(int(i))
        return self.source[int(i)]


def test_training_stream_reads_only_the_subset(tiny_features):
    _, out, _ = tiny_features
    config = features_config(out, **{"batch_size": 4})
    with config.unlocked():
        config.data.label_fraction = 0.25
    source = _Recording(input_pipeline.open_source(config, input_pipeline.fold_split(config, "train")))
    labels = input_pipeline.read_fields(source.source, ("label",))["label"]
    kept = set(labelled_subset(labels, 0.25, seed=int(config.seed)).tolist())
    stream = iter(input_pipeline.train_dataset(config, source=source))
    source.read.clear()
    for _ in range(3 * len(kept)):  # a few epochs of the subset
        next(stream)
    assert source.read == kept
    assert len(kept) < len(source) / 3
