"""Tests for the fusion transformer's modes (concat, early, bottleneck, late): masks, modality dropout, dtype, training.

The concat mode is checked against a float64 numpy reference forward and against logits recorded
before the other modes existed (same seed), so existing checkpoints keep their meaning.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from fer_jax.errors import ConfigError
from fer_jax.models import registry
from fer_jax.models.fusion import FUSION_MODES, FusionTransformer, drop_modalities
from fer_jax.models.tokenizers import FeatureProjection

FEATURES = {"a": 6, "b": 5, "c": 4}
T, WIDTH, CLASSES = 5, 16, 7
B = 16  # one batch size for every model call: eager ops compile once per shape
# (fusion, extra constructor options): every mode, and bottleneck fusing only from layer 1.
VARIANTS = [("concat", {}), ("early", {}), ("bottleneck", {}), ("bottleneck", {"fusion_layer": 1}), ("late", {})]
IDS = ["concat", "early", "bottleneck", "bottleneck_from_1", "late"]


pytestmark = pytest.mark.usefixtures("quick_compiles")  # tests/conftest.py


def build(modalities=("a", "b"), fusion="concat", *, seed=0, dtype=None, **options):
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    tokenizers = {m: FeatureProjection(FEATURES[m], WIDTH, dtype=dtype, rngs=rngs) for m in modalities}
    kwargs = dict(num_frames=T, width=WIDTH, depth=2, num_heads=2, mlp_dim=32, num_classes=CLASSES, dropout=0.1)
    kwargs.update(options)
    return FusionTransformer(tokenizers, fusion=fusion, dtype=dtype, rngs=rngs, **kwargs)


def make_inputs(batch=B, modalities=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=(batch, T, FEATURES[m])).astype(np.float32) for m in modalities}


def all_true(batch=B, modalities=("a", "b")):
    return {m: np.ones((batch, T), bool) for m in modalities}


def params_of(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def copy_into_single_modality(model, fusion, keep, **options):
    """A model with only modality `keep`, holding `model`'s parameters for it (its rows of the per-modality tables)."""
    index = model.modalities.index(keep)
    small = build((keep,), fusion, **options)
    big = params_of(model)

    def pick(path, template):
        if isinstance(template, dict):
            return {k: pick(path + (k,), v) for k, v in template.items()}
        source = big
        for k in path:
            source = source[k]
        if path in (("modality_embed",), ("cls_tokens",)):
            source = source[index : index + 1]
        assert source.shape == template.shape, path
        return source

    state = nnx.state(small, nnx.Param)
    nnx.replace_by_pure_dict(state, pick((), params_of(small)))
    nnx.update(small, state)
    return small


# ---------------------------------------------------------------- every mode builds, runs, trains


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_training_reduces_loss(fusion):
    """Three modalities, dropout and modality dropout on, a jitted split/merge step as in training."""
    modalities = ("a", "b", "c")
    model = build(modalities, fusion, modality_dropout=0.3, depth=1)  # one layer: a quicker compile
    # Each class has a feature pattern per modality; the clips are that pattern plus noise.
    rng = np.random.default_rng(1)
    labels = rng.permutation(np.arange(B) % CLASSES)
    x = {m: (rng.normal(size=(CLASSES, 1, FEATURES[m]))[labels] + 0.5 * rng.normal(size=(B, T, FEATURES[m])))
         .astype(np.float32) for m in modalities}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, key):
        def loss_fn(params):
            m = nnx.merge(graphdef, params, rest, copy=True)
            logits = m(x, train=True, rngs=nnx.Rngs(dropout=key))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, logits

    losses = []
    for i in range(30):
        params, opt_state, loss, logits = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert logits.shape == (B, CLASSES) and logits.dtype == jnp.float32
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("fusion,options", VARIANTS, ids=IDS)
def test_absent_modality_has_no_effect(fusion, options):
    """b absent for clip 0: clip 0 = the a-only model's logits whatever b's values; other clips untouched."""
    model = build(("a", "b"), fusion, **options)
    x = make_inputs(seed=3)
    masks = all_true()
    masks["b"][0] = False
    masks["a"][0, 4] = False  # a padding frame of a as well
    logits = np.asarray(model(x, masks))

    perturbed = {k: v.copy() for k, v in x.items()}
    perturbed["b"][0] = 100.0 * np.random.default_rng(4).normal(size=perturbed["b"][0].shape)
    np.testing.assert_allclose(model(perturbed, masks), logits, rtol=0, atol=1e-6)

    # Masking clip 0's b leaves the other clips as they were without masks.
    np.testing.assert_allclose(logits[1:], np.asarray(model(x))[1:], rtol=0, atol=1e-5)
    assert not np.allclose(logits[0], np.asarray(model(x))[0], atol=1e-3)  # the mask did something

    # Clip 0 equals a model that never had modality b, holding the same parameters.
    small = copy_into_single_modality(model, fusion, "a", **options)
    alone = small({"a": x["a"]}, {"a": masks["a"]})
    np.testing.assert_allclose(alone[0], logits[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fusion,options", VARIANTS, ids=IDS)
def test_masked_frames_do_not_matter(fusion, options):
    """Frames masked within a modality (padding) may hold anything, even NaN: the logits do not change."""
    model = build(("a", "b"), fusion, **options)
    x = make_inputs(seed=5)
    masks = all_true()
    masks["a"][0, 3:] = False
    masks["b"][0, 4] = False  # frame 4 of clip 0: no modality at all (early fusion masks it)
    masks["b"][1, 0] = False
    logits = np.asarray(model(x, masks))
    assert not np.allclose(logits, np.asarray(model(x)), atol=1e-4)

    perturbed = {k: v.copy() for k, v in x.items()}
    perturbed["a"][0, 3] = 50.0
    perturbed["a"][0, 4] = np.nan
    perturbed["b"][0, 4] = -30.0
    perturbed["b"][1, 0] = np.inf
    out = np.asarray(model(perturbed, masks))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, logits, rtol=0, atol=1e-6)


def test_mask_errors():
    model = build(("a", "b"), "concat")
    x = make_inputs()
    with pytest.raises(ValueError, match=r"masks\['b'\] has shape"):
        model(x, {"b": np.ones((B, T + 1), bool)})
    with pytest.raises(KeyError, match="masks for"):
        model(x, {"z": np.ones((B, T), bool)})
    with pytest.raises(KeyError, match="batch lacks"):
        model({"a": x["a"]})
    with pytest.raises(ConfigError, match="config.model.fusion"):
        build(("a",), "middle")
    with pytest.raises(ConfigError, match="fusion_layer"):
        build(("a",), "bottleneck", fusion_layer=3)
    early = build(("a", "b"), "early")
    with pytest.raises(ValueError, match="different numbers of frames"):
        early({"a": x["a"], "b": x["b"][:, :3]})


# ---------------------------------------------------------------- modality dropout


def test_drop_modalities_function():
    rng = np.random.default_rng(6)
    b, m, rate = 4096, 3, 0.5
    masks = [rng.random((b, T)) < 0.8 for _ in range(m)]
    masks[1][: b // 4] = False  # modality 1 absent from the first quarter of clips
    masks[2][: b // 8] = False  # ... and modality 2 from the first eighth
    masks[0][:16] = False  # 16 clips with no modality at all
    out = [np.asarray(o) for o in drop_modalities(jax.random.key(0), [jnp.asarray(mk) for mk in masks], rate)]
    present = np.stack([mk.any(1) for mk in masks], 1)
    kept = np.stack([o.any(1) for o in out], 1)
    for mk, o, k in zip(masks, out, kept.T):
        np.testing.assert_array_equal(o, mk & k[:, None])  # whole modalities only, frames untouched
    assert not (kept & ~present).any()  # never revives an absent modality
    assert kept[present.any(1)].any(1).all()  # a clip with data keeps at least one modality
    assert not kept[:16].any()
    # All three present: each kept with 0.5 + P(all dropped) / 3 = 0.5 + 1/24; one present: always kept.
    full = present.all(1)
    np.testing.assert_allclose(kept[full].mean(0), 0.5 + 1 / 24, atol=0.04)
    only0 = present[:, 0] & ~present[:, 1] & ~present[:, 2]
    assert only0.sum() > 100 and kept[only0, 0].all()
    # Two present (0 and 2): each kept with 0.5 + 0.25 / 2.
    two = present[:, 0] & ~present[:, 1] & present[:, 2]
    np.testing.assert_allclose(kept[two][:, [0, 2]].mean(0), 0.625, atol=0.06)


@pytest.mark.parametrize("fusion,options", VARIANTS, ids=IDS)
def test_modality_dropout_in_model(fusion, options):
    """Training logits of each clip are those of a non-empty subset of its modalities; evaluation drops nothing."""
    model = build(("a", "b"), fusion, dropout=0.0, modality_dropout=0.5, **options)
    x = make_inputs(seed=7)
    subsets = {}
    for name, (use_a, use_b) in {"a": (1, 0), "b": (0, 1), "ab": (1, 1), "none": (0, 0)}.items():
        masks = {"a": np.full((B, T), bool(use_a)), "b": np.full((B, T), bool(use_b))}
        subsets[name] = np.asarray(model(x, masks))
    train = np.asarray(model(x, train=True, rngs=nnx.Rngs(dropout=11)))
    seen = []
    for i in range(B):
        match = [k for k, v in subsets.items() if np.allclose(train[i], v[i], atol=1e-5)]
        assert match and match[0] != "none", (i, match)
        seen.append(match[0])
    assert {"a", "b", "ab"} <= set(seen), seen
    np.testing.assert_array_equal(model(x, train=False, rngs=nnx.Rngs(dropout=11)), subsets["ab"])


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize("fusion,options", VARIANTS, ids=IDS)
def test_bfloat16_compute(fusion, options):
    x = make_inputs(seed=8)
    masks = all_true()
    masks["b"][1] = False
    masks["a"][2, 2:] = False
    ref = np.asarray(build(("a", "b"), fusion, **options)(x, masks))
    model = build(("a", "b"), fusion, dtype=jnp.bfloat16, **options)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.float32)}
    out = model(x, masks)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=0.06 * np.abs(ref).max() + 0.02)


# ---------------------------------------------------------------- concat is unchanged


CONCAT_PATHS = {("cls_token",), ("time_embed",), ("modality_embed",), ("head", "kernel"), ("head", "bias"),
                ("encoder", "norm", "scale"), ("encoder", "norm", "bias")}
CONCAT_PATHS |= {("tokenizers", m, layer, p) for m in "ab" for layer, p in
                 [("norm", "scale"), ("norm", "bias"), ("proj", "kernel"), ("proj", "bias")]}
CONCAT_PATHS |= {("encoder", "blocks", i) + tail for i in range(2) for tail in [
    ("norm1", "scale"), ("norm1", "bias"), ("norm2", "scale"), ("norm2", "bias"), ("attn", "qkv", "kernel"),
    ("attn", "qkv", "bias"), ("attn", "out", "kernel"), ("attn", "out", "bias"), ("fc1", "kernel"),
    ("fc1", "bias"), ("fc2", "kernel"), ("fc2", "bias")]}


def _flat(tree, prefix=()):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, prefix + (k,)))
        return out
    return {prefix: np.asarray(tree, np.float64)}


def reference_concat(params, x, masks, num_heads=2):
    """The concat forward in float64 numpy: tokens + embeddings, CLS, pre-LN encoder, head on CLS."""
    p = _flat(params)

    def layer_norm(v, *path):
        mean = v.mean(-1, keepdims=True)
        var = ((v - mean) ** 2).mean(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + 1e-6) * p[path + ("scale",)] + p[path + ("bias",)]

    def dense(v, *path):
        return v @ p[path + ("kernel",)] + p[path + ("bias",)]

    def gelu(v):  # tanh approximation, as jax.nn.gelu by default
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))

    seq, keep = [], []
    for i, m in enumerate(("a", "b")):
        tok = dense(layer_norm(np.asarray(x[m], np.float64), "tokenizers", m, "norm"), "tokenizers", m, "proj")
        seq.append(tok + p[("time_embed",)][: tok.shape[1]] + p[("modality_embed",)][i])
        keep.append(masks[m])
    b = seq[0].shape[0]
    h = np.concatenate([np.broadcast_to(p[("cls_token",)], (b, 1, WIDTH))] + seq, 1)
    keep = np.concatenate([np.ones((b, 1), bool)] + keep, 1)
    dh = WIDTH // num_heads
    for i in range(2):
        blk = ("encoder", "blocks", i)
        y = dense(layer_norm(h, *blk, "norm1"), *blk, "attn", "qkv")
        q, k, v = (y[..., j * WIDTH : (j + 1) * WIDTH].reshape(b, -1, num_heads, dh) for j in range(3))
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
        scores = np.where(keep[:, None, None, :], scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w = w / w.sum(-1, keepdims=True)
        attended = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, -1, WIDTH)
        h = h + dense(attended, *blk, "attn", "out")
        h = h + dense(gelu(dense(layer_norm(h, *blk, "norm2"), *blk, "fc1")), *blk, "fc2")
    cls = layer_norm(h[:, 0], "encoder", "norm")
    return dense(cls, "head")


def test_concat_matches_reference_and_recorded_logits():
    model = build(("a", "b"), "concat")
    assert set(_flat(params_of(model))) == CONCAT_PATHS  # checkpoints of concat runs still fit
    x = {"a": np.sin(np.arange(2 * T * 6, dtype=np.float32)).reshape(2, T, 6) * 2,
         "b": np.cos(np.arange(2 * T * 5, dtype=np.float32) * 0.7).reshape(2, T, 5)}
    masks = {"a": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool),
             "b": np.array([[0, 0, 0, 0, 0], [1, 0, 1, 0, 1]], bool)}
    # Logits of this model and seed, recorded with the implementation that had only concat fusion.
    recorded = np.array([[1.1276970e+00, 4.2726624e-01, -1.5459611e+00, -1.3954639e-03,
                          -5.9416151e-01, 6.1315870e-01, -5.6170130e-01],
                         [7.4645257e-01, 5.5974710e-01, -1.8882780e+00, 7.7149874e-01,
                          -6.2360728e-01, 1.0157138e+00, -6.5669966e-01]])
    recorded_masked = np.array([[1.5732688, 0.67100304, -1.9197526, 0.364078, -0.106746614, 1.2187381, -0.75986624],
                                [-0.9897928, -0.8037046, 0.7183572, 0.6935247, -0.37328276, -1.1804653, 0.87632275]])
    np.testing.assert_allclose(model(x), recorded, rtol=0, atol=2e-6)
    np.testing.assert_allclose(model(x, masks), recorded_masked, rtol=0, atol=2e-6)
    params = params_of(model)
    np.testing.assert_allclose(model(x), reference_concat(params, x, all_true(2)), rtol=0, atol=2e-5)
    np.testing.assert_allclose(model(x, masks), reference_concat(params, x, masks), rtol=0, atol=2e-5)


# ---------------------------------------------------------------- config keys


def test_registry_passes_fusion_keys():
    config = ml_collections.ConfigDict({
        "num_classes": CLASSES,
        "modalities": {"face": {"input": "face_features", "tokenizer": "linear"}},
        "model": {"width": 16, "depth": 2, "num_heads": 2, "mlp_dim": 32, "dropout": 0.0},
    })
    default = registry.build_model(config, {"face": (T, 6)})
    assert default.fusion == "concat"
    config.model.fusion = "bottleneck"
    config.model.bottleneck_tokens = 3
    config.model.fusion_layer = 1
    model = registry.build_model(config, {"face": (T, 6)})
    assert model.fusion == "bottleneck" and model.bottleneck.shape == (3, 16) and model.fusion_layer == 1
    assert model({"face": make_inputs()["a"]}).shape == (B, CLASSES)
    assert set(FUSION_MODES) == {"concat", "early", "bottleneck", "late"}
