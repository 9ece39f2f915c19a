"""Loss options: soft targets from vote counts (against float64 numpy) and the class-balanced sampler.

The sampler is checked on plain label lists (class frequencies, unlabelled clips, empty classes,
purity in the position) and through `train_dataset` on the tiny cached-features dataset (resume
at a step, several processes, the default shuffle unchanged), then trained for a few steps.
"""

from __future__ import annotations

import pickle

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import input_pipeline, losses, parallel, train, workdir as workdir_lib
from fer_jax import train_state, runs
from fer_jax.errors import ConfigError
from fer_jax.input_pipeline import ClassBalancedSampler
from tests.helpers import features_config

C = 7


# ----------------------------------------------------------------------------------------------
# Soft targets
# ----------------------------------------------------------------------------------------------


def _log_softmax64(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _targets64(labels, votes, smoothing, soft):
    hard = np.eye(C)[labels] * (1 - smoothing) + smoothing / C
    votes = np.asarray(votes, np.float64)
    total = votes.sum(-1, keepdims=True)
    mixed = (1 - soft) * hard + soft * votes / np.where(total > 0, total, 1)
    return np.where(total > 0, mixed, hard)


def _loss64(logits, targets, labels, class_weights, mask):
    per_clip = -(targets * _log_softmax64(logits)).sum(-1)
    w = mask.astype(np.float64) * np.asarray(class_weights, np.float64)[labels]
    return (per_clip * w).sum() / w.sum()


def _case(seed=0, b=8):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(b, C)).astype(np.float32)
    labels = rng.integers(0, C, size=b).astype(np.int32)
    votes = rng.integers(0, 6, size=(b, C)).astype(np.float32)
    votes[1] = 0  # no vote counts known: the hard target alone
    votes[4] = 0
    mask = np.ones(b, bool)
    mask[[2, 6]] = False  # padding rows
    class_weights = rng.uniform(0.2, 3.0, size=C).astype(np.float32)
    return logits, labels, votes, mask, class_weights


def test_soft_targets_loss_and_gradient_match_float64_numpy():
    logits, labels, votes, mask, cw = _case()
    smoothing, soft = 0.1, 0.4
    t = losses.targets(labels, num_classes=C, label_smoothing=smoothing, votes=votes, soft_targets=soft)
    ref_t = _targets64(labels, votes, smoothing, soft)
    np.testing.assert_allclose(np.asarray(t), ref_t, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(t).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(t)[[1, 4]], (np.eye(C)[labels] * 0.9 + 0.1 / C)[[1, 4]], rtol=1e-6)

    def loss(z):
        return losses.soft_cross_entropy(z, t, labels=labels, class_weights=cw, mask=mask)

    value, grad = jax.value_and_grad(loss)(jnp.asarray(logits))
    np.testing.assert_allclose(float(value), _loss64(logits, ref_t, labels, cw, mask), rtol=1e-6)
    # d/dz of the weighted mean: w_i (softmax(z_i) - t_i) / sum(w)
    w = mask * cw[labels].astype(np.float64)
    ref_grad = w[:, None] * (np.exp(_log_softmax64(logits)) - ref_t) / w.sum()
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-5, atol=1e-7)
    assert not np.asarray(grad)[[2, 6]].any()  # masked rows get no gradient


def test_soft_targets_zero_equals_cross_entropy_exactly():
    logits, labels, votes, mask, cw = _case(seed=1)
    for smoothing, weights in [(0.0, None), (0.1, None), (0.1, cw)]:
        hard = losses.cross_entropy(logits, labels, num_classes=C, label_smoothing=smoothing, class_weights=weights,
                                    mask=mask)
        t = losses.targets(labels, num_classes=C, label_smoothing=smoothing, votes=votes, soft_targets=0.0)
        soft = losses.soft_cross_entropy(logits, t, labels=labels, class_weights=weights, mask=mask)
        assert np.asarray(soft) == np.asarray(hard), (smoothing, weights)
    # the unweighted, unmasked soft loss is the plain mean, as numpy says
    t = losses.targets(labels, num_classes=C, votes=votes, soft_targets=1.0)
    expected = _loss64(logits, _targets64(labels, votes, 0.0, 1.0), labels, np.ones(C), np.ones(8, bool))
    np.testing.assert_allclose(float(losses.soft_cross_entropy(logits, t)), expected, rtol=1e-6)


def test_soft_loss_needs_labels_for_class_weights_and_votes_for_soft_targets():
    logits, labels, votes, mask, cw = _case()
    with pytest.raises(ValueError, match="labels"):
        losses.soft_cross_entropy(logits, np.full((8, C), 1 / C), class_weights=cw)
    with pytest.raises(ValueError, match="votes"):
        losses.targets(labels, num_classes=C, soft_targets=0.5)


def test_preprocessor_adds_votes_only_for_soft_target_training():
    record = {"face_mini_xception_fer": np.zeros((16, 4), np.float32), "label": 3,
              "votes": np.array([0, 1, 0, 7, 2, 0, 0], np.int32)}
    soft = features_config("unused", **{"loss.soft_targets": 0.3})
    out = input_pipeline.Preprocessor(soft, train=True)(record)
    assert out["votes"].dtype == np.float32 and out["votes"].tolist() == [0, 1, 0, 7, 2, 0, 0]
    assert "votes" not in input_pipeline.Preprocessor(soft, train=False)(record)
    assert "votes" not in input_pipeline.Preprocessor(features_config("unused"), train=True)(record)


def test_soft_targets_without_votes_names_dataset_and_fix():
    config = features_config("/data/x", **{"loss.soft_targets": 0.3})
    record = {"face_mini_xception_fer": np.zeros((16, 4), np.float32), "label": 0}
    zero = np.zeros(C, np.int32)
    for records, lacking in [([record], "has no 'votes' feature"), ([dict(record, votes=zero)] * 3, "only zero vote")]:
        with pytest.raises(ConfigError) as e:
            input_pipeline.check_votes(config, records)
        message = str(e.value)
        assert lacking in message and config.dataset.name in message
        assert "rebuild the dataset" in message and "Annotation/annotation.xlsx" in message
    some = [dict(record, votes=zero), dict(record, votes=np.eye(C, dtype=np.int32)[2] * 8)]
    input_pipeline.check_votes(config, some)  # one clip with votes is enough; the other trains on its label


def test_soft_targets_outside_unit_interval_is_refused():
    with pytest.raises(ConfigError, match="soft_targets"):
        train.make_trainer(features_config("unused", **{"loss.soft_targets": 1.5}), None, None, None)


def test_train_step_loss_is_the_float64_soft_target_loss():
    """The jitted train step's loss on a batch with votes equals the float64 soft-target loss."""
    config = features_config("unused", **{"loss.soft_targets": 0.5, "loss.label_smoothing": 0.1,
                                          "loss.class_weights": "1.0,2.0,0.5,1.0,1.5,3.0,1.0",
                                          "model.dropout": 0.0, "model.head_dropout": 0.0})
    mesh = parallel.make_mesh()
    graphdef, tx, state = train_state.init(config, runs.model_builder(config, {"face": (16, 4)}))
    rng = np.random.default_rng(0)
    _, labels, votes, mask, _ = _case(seed=2)
    batch = {"face": rng.normal(size=(8, 16, 4)).astype(np.float32), "label": labels, "mask": mask, "votes": votes}
    from flax import nnx

    logits = np.asarray(nnx.merge(graphdef, state["params"], state["model_state"])({"face": batch["face"]}, {},
                                                                                     train=False))
    weights = [1.0, 2.0, 0.5, 1.0, 1.5, 3.0, 1.0]
    expected = _loss64(logits, _targets64(labels, votes, 0.1, 0.5), labels, weights, mask)
    trainer = train.make_trainer(config, graphdef, tx, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    _, stats = trainer.train_step(state, parallel.global_batch(batch, mesh), jax.random.key(0))
    np.testing.assert_allclose(float(stats["loss"]), expected, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Class-balanced sampler on label lists
# ----------------------------------------------------------------------------------------------

# DFEW-like imbalance (disgust ~1.3%), a few unlabelled (-1) clips, in a fixed random order.
COUNTS = np.array([245, 189, 267, 217, 147, 15, 90])


def _labels(counts=COUNTS, unlabelled=30, seed=0):
    labels = np.concatenate([np.repeat(np.arange(len(counts)), counts), np.full(unlabelled, -1)])
    return np.random.default_rng(seed).permutation(labels)


def _draw(sampler, n=7000, start=0):
    return np.array([sampler[i] for i in range(start, start + n)])


def test_power_one_makes_classes_equally_frequent():
    labels = _labels()
    idx = _draw(ClassBalancedSampler(labels, seed=0, power=1.0))
    assert (labels[idx] >= 0).all()  # unlabelled clips never drawn
    freq = np.bincount(labels[idx], minlength=C) / len(idx)
    np.testing.assert_allclose(freq, 1 / C, atol=0.01)
    # within a class the clips are drawn evenly: every disgust clip about 7000 / 7 / 15 = 67 times
    per_clip = np.bincount(idx, minlength=len(labels))[labels == 5]
    assert per_clip.min() >= 60 and per_clip.max() <= 74, per_clip


@pytest.mark.parametrize("power", [0.0, 0.5])
def test_power_below_one_follows_n_to_the_minus_power_per_clip(power):
    labels = _labels()
    idx = _draw(ClassBalancedSampler(labels, seed=3, power=power))
    per_clip_weight = COUNTS.astype(np.float64) ** -power  # each clip of class c: n_c ** -power
    expected = COUNTS * per_clip_weight / (COUNTS * per_clip_weight).sum()
    freq = np.bincount(labels[idx], minlength=C) / len(idx)
    np.testing.assert_allclose(freq, expected, atol=0.005)
    if power == 0.0:
        np.testing.assert_allclose(freq, COUNTS / COUNTS.sum(), atol=0.005)  # the data's frequencies


def test_power_zero_epoch_is_a_permutation_of_the_labelled_clips():
    labels = _labels()
    sampler = ClassBalancedSampler(labels, seed=5, power=0.0)
    labelled = np.flatnonzero(labels >= 0)
    assert sampler.epoch_size == len(labelled)
    for e in range(3):
        np.testing.assert_array_equal(np.sort(sampler.epoch(e)), labelled)
    assert not np.array_equal(sampler.epoch(0), sampler.epoch(1))  # a new order each epoch


def test_class_without_clips_gets_weight_zero():
    counts = COUNTS.copy()
    counts[5] = 0
    labels = _labels(counts)
    sampler = ClassBalancedSampler(labels, seed=0, power=1.0)
    idx = _draw(sampler)
    freq = np.bincount(labels[idx], minlength=C) / len(idx)
    assert freq[5] == 0 and sampler.class_probabilities[5] == 0
    np.testing.assert_allclose(np.delete(freq, 5), 1 / 6, atol=0.01)
    with pytest.raises(ConfigError, match="no labelled clip"):
        ClassBalancedSampler([-1, -1], seed=0)
    with pytest.raises(ConfigError, match="outside 0..6"):
        ClassBalancedSampler([0, 9], seed=0)
    with pytest.raises(ConfigError, match="balance_power"):
        ClassBalancedSampler([0, 1], seed=0, power=-1.0)


def test_position_is_a_pure_function_of_seed_and_position():
    labels = _labels()
    a = ClassBalancedSampler(labels, seed=7)
    forward = _draw(a, 3000)
    b = ClassBalancedSampler(labels, seed=7)
    positions = np.random.default_rng(0).permutation(3000)  # another reading order, fresh caches
    np.testing.assert_array_equal([b[i] for i in positions], forward[positions])
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(_draw(c, 500, start=2500), forward[2500:])
    assert not np.array_equal(_draw(ClassBalancedSampler(labels, seed=8), 3000), forward)  # the seed matters


def _batches_of(sampler, local, process_index, process_count, start_step, n):
    ds = grain.MapDataset.source(sampler).batch(local, drop_remainder=True)
    ds = ds[process_index::process_count][start_step:]
    it = iter(ds.to_iter_dataset())
    return [np.asarray(next(it)) for _ in range(n)]


def test_grain_stream_resumes_and_splits_over_processes():
    labels = _labels()
    sampler = ClassBalancedSampler(labels, seed=11)
    full = _batches_of(sampler, 32, 0, 1, 0, 70)  # crosses two epoch boundaries (1170 clips)
    np.testing.assert_array_equal(np.concatenate(full), _draw(sampler, 70 * 32))
    resumed = _batches_of(ClassBalancedSampler(labels, seed=11), 32, 0, 1, 40, 30)
    for a, b in zip(full[40:], resumed):
        np.testing.assert_array_equal(a, b)
    halves = [_batches_of(ClassBalancedSampler(labels, seed=11), 16, p, 2, 5, 20) for p in range(2)]
    for step, (a, b) in enumerate(zip(*halves)):
        np.testing.assert_array_equal(np.concatenate([a, b]), full[5 + step])


# ----------------------------------------------------------------------------------------------
# The sampler in train_dataset, and training with it
# ----------------------------------------------------------------------------------------------


def _take(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_unknown_sampler_lists_choices():
    with pytest.raises(ConfigError, match=r"'shuffle', 'class_balanced'"):
        input_pipeline.train_dataset(features_config("/nowhere", **{"data.sampler": "balanced"}))


def test_train_dataset_class_balanced_resume_and_processes(tiny_features):
    _, out, _ = tiny_features
    config = features_config(out, **{"data.sampler": "class_balanced", "data.read_threads": 1})
    full = _take(input_pipeline.train_dataset(config), 12)  # 96 clips: two epochs of the 46-clip split
    source = input_pipeline.open_source(config, input_pipeline.fold_split(config, "train"))
    labels = input_pipeline.read_fields(source, ("label",))["label"]
    np.testing.assert_array_equal(labels, [int(source[i]["label"]) for i in range(len(source))])
    sampler = ClassBalancedSampler(labels, seed=config.seed)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in full]), labels[_draw(sampler, 96)])
    _assert_same_batches(_take(input_pipeline.train_dataset(config, start_step=7), 5), full[7:])
    parts = [_take(input_pipeline.train_dataset(config, process_index=p, process_count=2, start_step=3), 9)
             for p in range(2)]
    reassembled = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*parts)]
    _assert_same_batches(reassembled, full[3:])


def test_default_shuffle_stream_is_unchanged(tiny_features):
    _, out, _ = tiny_features
    config = features_config(out, **{"data.read_threads": 1})
    source = input_pipeline.open_source(config, input_pipeline.fold_split(config, "train"))
    reference = (grain.MapDataset.source(source).shuffle(seed=config.seed).repeat()
                 .random_map(input_pipeline.Preprocessor(config, train=True), seed=config.seed + 1)
                 .batch(8, drop_remainder=True)[2:])
    _assert_same_batches(_take(input_pipeline.train_dataset(config, start_step=2), 8),
                         _take(reference.to_iter_dataset(), 8))


def test_training_with_class_balanced_sampler(tiny_features, tmp_path):
    _, out, _ = tiny_features
    config = features_config(out, **{"data.sampler": "class_balanced", "data.balance_power": 1.0})
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["num_clips"] > 0 and 0.0 <= result["uar"] <= 1.0
    logged = [m for m in workdir_lib.read_metrics(str(tmp_path)) if m["split"] == "train"]
    assert [m["step"] for m in logged] == [2, 4] and all(np.isfinite(m["loss"]) for m in logged)


def test_training_with_soft_targets(tiny_features, tmp_path):
    """End to end with the dataset's vote counts; skipped while the features dataset has no `votes`."""
    from tfds_dfew import features as features_lib

    _, out, _ = tiny_features
    builder = features_lib.open_builder(out, "mini_xception_fer")
    if "votes" not in builder.info.features:
        pytest.skip("the tiny features dataset has no 'votes' feature (built without vote counts)")
    config = features_config(out, **{"loss.soft_targets": 0.5, "data.sampler": "class_balanced"})
    batch = _take(input_pipeline.train_dataset(config), 1)[0]
    assert batch["votes"].shape == (8, C) and batch["votes"].dtype == np.float32
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result["num_clips"] > 0
    logged = [m for m in workdir_lib.read_metrics(str(tmp_path)) if m["split"] == "train"]
    assert logged and all(np.isfinite(m["loss"]) for m in logged)


@pytest.mark.parametrize("spec, expected", [
    ("", None),
    ("1,1,1,1,1,5,1", [1, 1, 1, 1, 1, 5, 1]),
    ("balanced", "balanced"),
])
def test_class_weights_from_config(spec, expected):
    counts = [2445, 1894, 2669, 2173, 1469, 145, 902]
    weights = train.class_weights_of(features_config("unused", **{"loss.class_weights": spec}), counts)
    if expected is None:
        assert weights is None
    elif expected == "balanced":  # 1 / count, mean 1, in float64
        inv = 1.0 / np.asarray(counts, np.float64)
        np.testing.assert_allclose(weights, inv * 7 / inv.sum(), rtol=1e-6)
    else:
        np.testing.assert_array_equal(weights, expected)


@pytest.mark.parametrize("spec", ["1,2,3", "a,b,c,d,e,f,g", "1,1,1,1,1,-5,1", "inverse"])
def test_bad_class_weights_are_refused(spec):
    with pytest.raises(ConfigError, match="class_weights"):
        train.class_weights_of(features_config("unused", **{"loss.class_weights": spec}), [1] * 7)


def test_balanced_class_weights_train_from_the_command_line(tiny_features, tmp_path):
    from tests.helpers import run_module

    _, features_dir, _ = tiny_features
    proc = run_module("fer_jax.train", "--config", "configs/fusion.py:face", "--workdir", str(tmp_path / "run"),
                      f"--config.dataset.data_dir={features_dir}", "--config.loss.class_weights=balanced",
                      "--config.num_train_steps=3", "--config.batch_size=8", "--config.progress_bar=False",
                      "--config.model.width=32", "--config.model.depth=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "class weights (balanced) from training counts" in proc.stderr
