"""The PyTorch references of the benchmarks match the Flax models and the real train and pretraining steps.

Checks: equal parameter counts (small config and the benchmark's own), equal eval-mode logits
given copied weights (with and without token masks), and equal parameters after a few AdamW
steps without dropout (optimizer, clipping, schedule, weight-decay mask, loss).
"""

from __future__ import annotations

import importlib.util
from fer_jax import train_state, runs
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


tf = _load("torch_fusion")
bench = _load("train_step")

SMALL_DIMS = {"face": 9, "pose": 13, "omnivec": 8}


def _small_config(**kw):
    kw = {"width": 32, "depth": 2, "num_heads": 4, "mlp_dim": 48, "feature_dims": SMALL_DIMS, **kw}
    return bench.benchmark_config(4, **kw)


def _flax_state(config, dims):
    from fer_jax import train

    graphdef, tx, state = train_state.init(config, runs.model_builder(config, bench.input_shapes(dims)))
    return graphdef, tx, state


def _flat(params) -> dict[str, np.ndarray]:
    from fer_jax import train

    flat = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())[0]
    return {train_state.param_path(path): np.asarray(v) for path, v in flat}


def _torch_model(config, dims, flat, *, sdpa=True):
    model = tf.from_config(config, dims, bench.NUM_FRAMES, sdpa=sdpa)
    tf.load_flax_params(model, flat)
    return model


def test_parameter_count_of_the_benchmark_model():
    from flax import nnx

    from fer_jax.models import registry

    config = bench.benchmark_config(32)
    abstract = nnx.eval_shape(lambda: registry.build_model(config, bench.input_shapes()))
    flax_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    model = tf.from_config(config, bench.FEATURE_DIMS, bench.NUM_FRAMES)
    assert tf.param_count(model) == flax_count == 3_374_155


@pytest.mark.parametrize("sdpa", [True, False])
def test_eval_logits_match_flax(sdpa):
    from flax import nnx

    config = _small_config()
    graphdef, _, state = _flax_state(config, SMALL_DIMS)
    logits = jax.jit(lambda s, x, m: nnx.merge(graphdef, s)(x, m, train=False))
    model = _torch_model(config, SMALL_DIMS, _flat(state["params"]), sdpa=sdpa).eval()
    batch = bench.random_batch(5, seed=1, feature_dims=SMALL_DIMS)
    rng = np.random.default_rng(2)
    masks = {m: rng.random((5, bench.NUM_FRAMES)) > 0.3 for m in SMALL_DIMS}
    masks["pose"][0] = False  # a clip without one modality
    inputs = {m: batch[m] for m in SMALL_DIMS}
    for mk in (None, masks):
        want = np.asarray(logits(state["params"], inputs, mk))
        with torch.no_grad():
            got = model({m: torch.from_numpy(v) for m, v in inputs.items()},
                        None if mk is None else {m: torch.from_numpy(v) for m, v in mk.items()}).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert np.abs(want).max() > 0.1  # not trivially zero


def test_parameter_mapping_is_complete():
    config = _small_config()
    _, _, state = _flax_state(config, SMALL_DIMS)
    flat = _flat(state["params"])
    flat.pop("head/bias")
    with pytest.raises(KeyError, match="head.bias"):
        _torch_model(config, SMALL_DIMS, flat)


def test_adamw_steps_match_the_real_train_step():
    """Dropout 0: after 4 steps (warmup 2, cosine to 6, clipping active) the parameters agree."""
    from fer_jax import parallel, train

    config = _small_config(dropout=0.0, head_dropout=0.0)
    config.optimizer.warmup_steps = 2
    config.num_train_steps = 6
    config.optimizer.lr = 3e-3
    config.optimizer.grad_clip_norm = 0.5
    graphdef, tx, state = _flax_state(config, SMALL_DIMS)
    model = _torch_model(config, SMALL_DIMS, _flat(state["params"]))
    opt, sched = tf.make_optimizer(model, config)
    mesh = parallel.make_mesh()
    trainer = train.make_trainer(config, graphdef, tx, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    key = jax.random.key(0)
    norms = []
    for step in range(4):
        batch = bench.random_batch(4 * mesh.size, seed=10 + step, feature_dims=SMALL_DIMS)
        batch["mask"][-1] = False  # a padding row: no loss
        state, stats = trainer.train_step(state, parallel.global_batch(batch, mesh), jax.random.fold_in(key, step))
        tb = {k: torch.from_numpy(v) for k, v in batch.items()}
        tb["label"] = tb["label"].long()
        out = tf.train_step(model, opt, sched, tb, label_smoothing=float(config.loss.label_smoothing),
                            grad_clip_norm=config.optimizer.grad_clip_norm)
        np.testing.assert_allclose(float(out["loss"]), float(stats["loss"]), rtol=1e-5)
        np.testing.assert_allclose(float(out["grad_norm"]), float(stats["grad_norm"]), rtol=1e-4)
        norms.append(float(stats["grad_norm"]))
    assert max(norms) > config.optimizer.grad_clip_norm  # clipping was exercised
    theirs = {n: p.detach().numpy() for n, p in model.named_parameters()}
    initial = _flat(_flax_state(config, SMALL_DIMS)[2]["params"])
    for path, value in _flat(state["params"]).items():
        name, transpose = tf.torch_name(path)
        got = theirs[name].T if transpose else theirs[name]
        start = initial[path]
        if path.endswith("attn/qkv/bias"):
            # The key bias adds the same q.b to every logit of a query: its true gradient is 0 and
            # Adam turns rounding noise into +-lr steps. Compare the query and value biases only.
            keys = np.s_[config.model.width : 2 * config.model.width]
            got, value, start = np.delete(got, keys), np.delete(value, keys), np.delete(start, keys)
        assert np.abs(value - start).max() > 1e-4, path  # every parameter moved
        np.testing.assert_allclose(got, value, rtol=1e-4, atol=2e-6, err_msg=path)


# ----------------------------------------------------------------------------------------------
# benchmarks/pretrain_step.py: the OmniVec pretraining twin
# ----------------------------------------------------------------------------------------------


def test_omnivec_twin_matches_the_real_pretraining_step():
    """Same weights and masking: equal losses over 3 AdamW steps (clipping on), equal final parameters."""
    from fer_jax import parallel, pretrain, train
    from fer_jax.models import omnivec, registry

    to = _load("torch_omnivec")
    pb = _load("pretrain_step")
    config = pb.benchmark_config(4)
    config.model.width, config.model.mlp_dim = 32, 48
    config.num_train_steps, config.optimizer.warmup_steps, config.optimizer.lr = 5, 1, 3e-3
    config.optimizer.grad_clip_norm = 0.5
    shapes = {m: (pb.NUM_FRAMES, f) for m, f in pb.INPUT_DIMS.items()}
    graphdef, tx, state = train_state.init(config, runs.model_builder(config, shapes))
    assert train_state.param_count(state) == tf.param_count(to.from_config(config, pb.INPUT_DIMS, pb.NUM_FRAMES))
    model = to.from_config(config, pb.INPUT_DIMS, pb.NUM_FRAMES)
    tf.load_flax_params(model, _flat(state["params"]))
    opt, sched = tf.make_optimizer(model, config)
    mesh = parallel.make_mesh()
    step_fn, _ = pretrain.make_steps(config, graphdef, tx, mesh)
    state = jax.device_put(state, parallel.replicated(mesh))
    key = jax.random.key(0)
    for step in range(3):
        batch = pb.random_batch(4 * mesh.size, seed=step)
        batch["mask"][-1] = False  # a padding row: no loss
        step_key = jax.random.fold_in(key, step)
        # the masking the JAX step draws from its key (fer_jax.pretrain.make_steps)
        present = np.stack([np.ones(batch["face"].shape[:2], bool), batch["mask/pose"]], axis=1)
        mask_key, _ = jax.random.split(step_key)
        hidden = np.array(omnivec.sample_hidden(mask_key, present, mask_ratio=config.pretrain.mask_ratio,
                                                  modality_mask_prob=config.pretrain.modality_mask_prob))
        state, stats = step_fn(state, parallel.global_batch(batch, mesh), step_key)
        tb = {k: torch.from_numpy(v) for k, v in batch.items()}
        out = to.train_step(model, opt, sched, tb, {"face": torch.from_numpy(hidden[:, 0]),
                                                    "pose": torch.from_numpy(hidden[:, 1])},
                            grad_clip_norm=config.optimizer.grad_clip_norm)
        np.testing.assert_allclose(float(out["loss"]), float(stats["loss"]), rtol=1e-5)
        assert float(stats["grad_norm"]) > config.optimizer.grad_clip_norm  # clipping exercised
    theirs = {n: p.detach().numpy() for n, p in model.named_parameters()}
    for path, value in _flat(state["params"]).items():
        name, transpose = tf.torch_name(path)
        got = theirs[name].T if transpose else theirs[name]
        if path.endswith("attn/qkv/bias"):  # key bias: zero true gradient, Adam amplifies noise (see above)
            keys = np.s_[config.model.width : 2 * config.model.width]
            got, value = np.delete(got, keys), np.delete(value, keys)
        np.testing.assert_allclose(got, value, rtol=1e-4, atol=2e-6, err_msg=path)
