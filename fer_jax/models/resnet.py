"""torchvision-compatible ResNets (18/34/50/101/152) in Flax NNX, NHWC, with BatchNorm folding.

The module tree mirrors torchvision's `torchvision.models.resnet` one to one (`conv1`, `bn1`,
`layer1..layer4[i].conv1/bn1/...`, `downsample.conv/bn`, `fc`), so a torchvision state dict
maps onto it name by name (see `fer_jax.weights.torchvision.load_torchvision`). Blocks follow
torchvision's "v1.5": in a Bottleneck the stride sits on the 3x3 convolution.

Shapes at the boundary:
  frames:   uint8[..., H, W, 3]      -> normalize_imagenet -> float32[..., H, W, 3]
  x:        float32[B, H, W, 3]      (ImageNet-normalised, NHWC)
  features: float32[B, 512]  (basic blocks: resnet18/34)  or  float32[B, 2048] (bottleneck)
  logits:   float32[B, num_classes]

`fold_batchnorm(model)` returns an inference-only copy whose BatchNorms are folded into the
convolution kernels and biases (same outputs in eval mode, fewer elementwise passes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Block type and blocks per stage, as in torchvision.
ARCHITECTURES: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
STAGE_WIDTHS = (64, 128, 256, 512)

BN_EPSILON = 1e-5
# torch's BatchNorm momentum 0.1 weighs the new batch statistic; flax's weighs the old value.
BN_MOMENTUM = 0.9

# XLA CPU flags for fast ResNet inference, measured with benchmarks/generator_inference.py on a
# 2-core AVX-512 CPU (jaxlib 0.10.2): convolutions run in XLA's Eigen kernels instead of YNNPACK
# fusions, ~1.3x torchvision eager frames/s there vs ~0.85x with the defaults. Flags act on the
# whole process and must be in XLA_FLAGS before JAX starts; measured for inference only.
CPU_INFERENCE_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="
# The same flag for training on CPU: measured on the configs/paper.py:finetune step (frames ->
# ResNet-18 -> fusion transformer, benchmarks/finetune_step.py and benchmarks/conv_backward.py),
# XLA's Eigen convolutions also compute the weight gradients ~1.5x faster than the YNNPACK
# fusions (conv1's 7x7 and layer1's 3x3 most), and the BatchNorm statistics' dots
# (_batch_norm_train) only pay off without YNNPACK: with both, the step is ~1.2x faster than
# with the defaults (interleaved, same process count, load 7-9 on 2 cores).
CPU_TRAINING_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type="

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming_normal_(fan_out, relu)
_fc_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # nn.Linear default


def normalize_imagenet(frames: Any) -> jax.Array:
    """ImageNet normalisation as torchvision applies it after ToTensor.

    frames: uint8[..., H, W, 3] (RGB)  ->  float32[..., H, W, 3] = (frames / 255 - mean) / std
    """
    if frames.dtype != jnp.uint8:
        raise TypeError(
            f"normalize_imagenet expects uint8 RGB frames [..., H, W, 3], got dtype {frames.dtype}; "
            "convert float images in [0, 1] with (x * 255).round().astype(uint8) or normalise them yourself"
        )
    if frames.shape[-1] != 3:
        raise ValueError(f"normalize_imagenet expects RGB frames [..., H, W, 3], got shape {tuple(frames.shape)}")
    x = jnp.asarray(frames, jnp.float32) / 255.0
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (x - mean) / std


def _pool_views(x: jax.Array) -> list[jax.Array]:
    """The 9 strided views of x (padded by 1 with -inf) under a 3x3 stride-2 window, in row-major order."""
    b, h, w, c = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # (h + 2 * 1 - 3) // 2 + 1
    padded = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), (1, 1, 0), (1, 1, 0), (0, 0, 0)))
    return [
        jax.lax.slice(padded, (0, i, j, 0), (b, i + 2 * (ho - 1) + 1, j + 2 * (wo - 1) + 1, c), (1, 2, 2, 1))
        for i in range(3)
        for j in range(3)
    ]


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torchvision ResNet's stem max-pool (3x3 window, stride 2, padding 1) as the max of 9 strided views.

    x: f32[B, H, W, C] -> f32[B, (H - 1) // 2 + 1, (W - 1) // 2 + 1, C]. Same values as
    `lax.reduce_window(x, -inf, max, (1, 3, 3, 1), (1, 2, 2, 1), padding 1)`; the gradient goes to each
    window's first maximum in row-major order, as torch's max_pool2d sends it (ReLU zeros tie often).
    XLA:CPU differentiates a reduce-window max into a variadic reduce-window that tracks four int32
    index arrays, ~0.5-0.8 s of a 128-frame 104 px training step (issue: fine-tuning end to end);
    this backward is a few elementwise passes and strided pads.
    """
    views = _pool_views(x)
    out = views[0]
    for view in views[1:]:
        out = jnp.maximum(out, view)
    return out


def _max_pool_forward(x):
    out = max_pool_3x3_s2(x)
    return out, (x, out)


def _max_pool_backward(residuals, grad):
    x, out = residuals
    taken, masks = jnp.zeros(out.shape, bool), []
    for view in _pool_views(x):
        masks.append((view == out) & ~taken)
        taken = taken | masks[-1]

    def winners(x):
        return sum(jnp.where(mask, view, 0) for mask, view in zip(masks, _pool_views(x)))

    return jax.vjp(winners, x)[1](grad)


max_pool_3x3_s2.defvjp(_max_pool_forward, _max_pool_backward)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, *, fused: bool, dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
    pad = kernel // 2
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=fused,
        dtype=dtype,
        kernel_init=_conv_init,
        rngs=rngs,
    )


def _bn(features: int, *, fused: bool, dtype: Any, rngs: nnx.Rngs) -> nnx.BatchNorm | None:
    if fused:
        return None
    return nnx.BatchNorm(
        features,
        use_running_average=True,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        use_fast_variance=False,
        dtype=dtype,
        rngs=rngs,
    )


def _batch_norm_train(bn: nnx.BatchNorm, x: jax.Array) -> jax.Array:
    """`bn(x, use_running_average=False)` for float32 x, with the batch statistics taken by matmuls.

    x: f32[..., C]. Same results as flax (two-pass biased variance, running statistics mixed with
    `bn.momentum`) up to float32 rounding. The mean and variance over the N = x.size / C rows are
    (1/N)[N] @ x[N, C] and (1/N)[N] @ (x - mean)**2: XLA:CPU runs these dots (and their transposes
    in the backward pass) several times faster than the reductions flax's BatchNorm lowers to
    (split into reduce-windows of partial sums), the largest part of a ResNet-18 training step
    after the convolutions.
    """
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    weights = jnp.full((flat.shape[0],), 1.0 / flat.shape[0], x.dtype)
    highest = jax.lax.Precision.HIGHEST
    mean = jnp.dot(weights, flat, precision=highest)
    centred = flat - mean
    var = jnp.dot(weights, centred * centred, precision=highest)
    bn.mean[...] = jax.lax.stop_gradient(bn.momentum * bn.mean[...] + (1 - bn.momentum) * mean)
    bn.var[...] = jax.lax.stop_gradient(bn.momentum * bn.var[...] + (1 - bn.momentum) * var)
    y = centred * (bn.scale[...] * jax.lax.rsqrt(var + bn.epsilon)) + bn.bias[...]
    return y.reshape(x.shape)


def _norm(bn: nnx.BatchNorm | None, x: jax.Array, train: bool) -> jax.Array:
    """BatchNorm in train (batch statistics) or eval (running statistics) mode; identity when folded."""
    if bn is None:
        return x
    if train and bn.dtype in (None, jnp.float32) and x.dtype == jnp.float32:
        return _batch_norm_train(bn, x)
    return bn(x, use_running_average=not train)


class Downsample(nnx.Module):
    """The projection shortcut: 1x1 conv (stride s) + BatchNorm (torchvision's `downsample.0/1`)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, *, fused: bool, dtype: Any, rngs: nnx.Rngs):
        self.conv = _conv(in_ch, out_ch, 1, stride, fused=fused, dtype=dtype, rngs=rngs)
        self.bn = _bn(out_ch, fused=fused, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return _norm(self.bn, self.conv(x), train)


class BasicBlock(nnx.Module):
    """Two 3x3 convs (stride on the first) + identity or projection shortcut; out = width channels."""

    def __init__(self, in_ch: int, width: int, stride: int, *, fused: bool, dtype: Any, rngs: nnx.Rngs):
        kw = dict(fused=fused, dtype=dtype, rngs=rngs)
        self.conv1 = _conv(in_ch, width, 3, stride, **kw)
        self.bn1 = _bn(width, **kw)
        self.conv2 = _conv(width, width, 3, 1, **kw)
        self.bn2 = _bn(width, **kw)
        self.downsample = Downsample(in_ch, width, stride, **kw) if stride != 1 or in_ch != width else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = jax.nn.relu(_norm(self.bn1, self.conv1(x), train))
        y = _norm(self.bn2, self.conv2(y), train)
        shortcut = x if self.downsample is None else self.downsample(x, train=train)
        return jax.nn.relu(y + shortcut)

    def conv_bn_pairs(self) -> Iterator[tuple[nnx.Conv, nnx.BatchNorm | None]]:
        yield self.conv1, self.bn1
        yield self.conv2, self.bn2
        if self.downsample is not None:
            yield self.downsample.conv, self.downsample.bn


class Bottleneck(nnx.Module):
    """1x1 reduce -> 3x3 (stride here, torchvision v1.5) -> 1x1 expand (x4) + shortcut."""

    def __init__(self, in_ch: int, width: int, stride: int, *, fused: bool, dtype: Any, rngs: nnx.Rngs):
        kw = dict(fused=fused, dtype=dtype, rngs=rngs)
        out_ch = width * EXPANSION["bottleneck"]
        self.conv1 = _conv(in_ch, width, 1, 1, **kw)
        self.bn1 = _bn(width, **kw)
        self.conv2 = _conv(width, width, 3, stride, **kw)
        self.bn2 = _bn(width, **kw)
        self.conv3 = _conv(width, out_ch, 1, 1, **kw)
        self.bn3 = _bn(out_ch, **kw)
        self.downsample = Downsample(in_ch, out_ch, stride, **kw) if stride != 1 or in_ch != out_ch else None

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = jax.nn.relu(_norm(self.bn1, self.conv1(x), train))
        y = jax.nn.relu(_norm(self.bn2, self.conv2(y), train))
        y = _norm(self.bn3, self.conv3(y), train)
        shortcut = x if self.downsample is None else self.downsample(x, train=train)
        return jax.nn.relu(y + shortcut)

    def conv_bn_pairs(self) -> Iterator[tuple[nnx.Conv, nnx.BatchNorm | None]]:
        yield self.conv1, self.bn1
        yield self.conv2, self.bn2
        yield self.conv3, self.bn3
        if self.downsample is not None:
            yield self.downsample.conv, self.downsample.bn


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nnx.Module):
    """torchvision ResNet in NNX.

    __call__(x: float32[B, H, W, 3], *, train=False) -> float32[B, num_classes]
        (or the features, float32[B, feature_dim], when built with num_classes=None)
    features(x: float32[B, H, W, 3], *, train=False) -> float32[B, feature_dim]
        global-average-pooled output of layer4; feature_dim = 512 (basic) or 2048 (bottleneck).

    train=True normalises with batch statistics and updates the running statistics
    (momentum as torch's 0.1). One difference from torch remains: flax updates the running
    variance with the biased batch variance, torch with the unbiased one (factor n/(n-1), n =
    batch * height * width of that layer).

    dtype is the computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    fused=True builds the inference-only variant with BatchNorm folded into the conv biases
    (use `fold_batchnorm` to make one from a trained model).
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        *,
        num_classes: int | None = 1000,
        dtype: Any = None,
        fused: bool = False,
        arch: str | None = None,
        rngs: nnx.Rngs,
    ):
        if block not in _BLOCKS:
            raise ValueError(f"unknown ResNet block {block!r}; use one of {sorted(_BLOCKS)}")
        if len(layers) != 4:
            raise ValueError(f"a ResNet has 4 stages, got layers={tuple(layers)}")
        self.block = block
        self.layers = tuple(int(n) for n in layers)
        self.arch = arch or next((n for n, v in ARCHITECTURES.items() if v == (block, self.layers)), "resnet-custom")
        self.num_classes = num_classes
        self.dtype = dtype
        self.fused = fused
        self.feature_dim = STAGE_WIDTHS[-1] * EXPANSION[block]

        kw = dict(fused=fused, dtype=dtype, rngs=rngs)
        self.conv1 = _conv(3, 64, 7, 2, **kw)
        self.bn1 = _bn(64, **kw)
        block_cls = _BLOCKS[block]
        in_ch = 64
        for stage, (width, n_blocks) in enumerate(zip(STAGE_WIDTHS, self.layers)):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(block_cls(in_ch, width, stride, **kw))
                in_ch = width * EXPANSION[block]
            setattr(self, f"layer{stage + 1}", nnx.List(blocks))
        if num_classes is None:
            self.fc = None
        else:
            bound = 1.0 / np.sqrt(self.feature_dim)
            self.fc = nnx.Linear(
                self.feature_dim,
                num_classes,
                dtype=dtype,
                kernel_init=_fc_kernel_init,
                bias_init=lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound),
                rngs=rngs,
            )

    def stages(self) -> tuple[nnx.List, nnx.List, nnx.List, nnx.List]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: float32[B, H, W, 3] (normalised, NHWC) -> float32[B, feature_dim]."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(
                f"ResNet expects NHWC images float32[B, H, W, 3], got shape {tuple(x.shape)}; "
                "for NCHW arrays use x.transpose(0, 2, 3, 1)"
            )
        if train and self.fused:
            raise ValueError(
                "this ResNet has its BatchNorm folded into the convolutions (inference only); "
                "train the unfused model and fold it again with fold_batchnorm"
            )
        y = jax.nn.relu(_norm(self.bn1, self.conv1(x), train))
        y = max_pool_3x3_s2(y)
        for stage in self.stages():
            for blk in stage:
                y = blk(y, train=train)
        return jnp.mean(y.astype(jnp.float32), axis=(1, 2))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: float32[B, H, W, 3] -> logits float32[B, num_classes] (features if headless)."""
        feats = self.features(x, train=train)
        if self.fc is None:
            return feats
        return self.fc(feats).astype(jnp.float32)

    def conv_bn_pairs(self) -> Iterator[tuple[nnx.Conv, nnx.BatchNorm | None]]:
        """Every convolution with the BatchNorm that follows it, in a fixed order."""
        yield self.conv1, self.bn1
        for stage in self.stages():
            for blk in stage:
                yield from blk.conv_bn_pairs()


def _build(arch: str, num_classes: int | None, dtype: Any, rngs: nnx.Rngs) -> ResNet:
    block, layers = ARCHITECTURES[arch]
    return ResNet(block, layers, num_classes=num_classes, dtype=dtype, arch=arch, rngs=rngs)


def resnet18(*, num_classes: int | None = 1000, dtype: Any = None, rngs: nnx.Rngs) -> ResNet:
    """torchvision resnet18: basic blocks (2, 2, 2, 2), 512-d features."""
    return _build("resnet18", num_classes, dtype, rngs)


def resnet34(*, num_classes: int | None = 1000, dtype: Any = None, rngs: nnx.Rngs) -> ResNet:
    """torchvision resnet34: basic blocks (3, 4, 6, 3), 512-d features."""
    return _build("resnet34", num_classes, dtype, rngs)


def resnet50(*, num_classes: int | None = 1000, dtype: Any = None, rngs: nnx.Rngs) -> ResNet:
    """torchvision resnet50: bottleneck blocks (3, 4, 6, 3), 2048-d features."""
    return _build("resnet50", num_classes, dtype, rngs)


def resnet101(*, num_classes: int | None = 1000, dtype: Any = None, rngs: nnx.Rngs) -> ResNet:
    """torchvision resnet101: bottleneck blocks (3, 4, 23, 3), 2048-d features."""
    return _build("resnet101", num_classes, dtype, rngs)


def resnet152(*, num_classes: int | None = 1000, dtype: Any = None, rngs: nnx.Rngs) -> ResNet:
    """torchvision resnet152: bottleneck blocks (3, 8, 36, 3), 2048-d features."""
    return _build("resnet152", num_classes, dtype, rngs)


def fold_batchnorm(model: ResNet) -> ResNet:
    """An inference-only copy of `model` with each BatchNorm folded into the conv before it.

    kernel' = kernel * gamma / sqrt(var + eps),  bias' = beta - mean * gamma / sqrt(var + eps),
    computed in float64. Eval-mode outputs equal the model's up to float32 rounding; the copy
    refuses train=True. `model` is left unchanged.
    """
    if model.fused:
        raise ValueError("fold_batchnorm: this ResNet is already folded")
    folded = nnx.eval_shape(
        lambda: ResNet(
            model.block,
            model.layers,
            num_classes=model.num_classes,
            dtype=model.dtype,
            fused=True,
            arch=model.arch,
            rngs=nnx.Rngs(0),
        )
    )
    for (conv, bn), (fconv, _) in zip(model.conv_bn_pairs(), folded.conv_bn_pairs(), strict=True):
        kernel = np.asarray(conv.kernel.get_value(), np.float64)
        scale = np.asarray(bn.scale.get_value(), np.float64) / np.sqrt(
            np.asarray(bn.var.get_value(), np.float64) + bn.epsilon
        )
        bias = np.asarray(bn.bias.get_value(), np.float64) - np.asarray(bn.mean.get_value(), np.float64) * scale
        fconv.kernel.set_value(jnp.asarray(kernel * scale, conv.kernel.get_value().dtype))
        fconv.bias.set_value(jnp.asarray(bias, conv.kernel.get_value().dtype))
    if model.fc is not None:
        folded.fc.kernel.set_value(jnp.asarray(model.fc.kernel.get_value()))
        folded.fc.bias.set_value(jnp.asarray(model.fc.bias.get_value()))
    return folded
