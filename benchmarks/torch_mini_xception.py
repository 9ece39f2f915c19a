"""A PyTorch twin of fer_jax's mini-Xception (the `fer` package's FER2013 model), for benchmarks.

Same layout as `fer_jax.models.mini_xception.MiniXception` in NCHW: stem (two 3x3 valid convs
with BatchNorm + ReLU), four residual blocks (separable convs = depthwise 3x3 with
groups=channels then 1x1, BatchNorm, TensorFlow-style SAME 3x3/2 max-pool, a strided 1x1
shortcut), a 3x3 head conv with bias. `copy_from_flax` copies a Flax model's numbers in
(kernels HWIO -> OIHW, BatchNorm scale/bias/mean/var), so both compute the same function.

`forward` returns what fer_jax's frame generator takes from the network:
f32[B, 128 + 7] = (global mean of the last residual sum, head logits in FER2013 order).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPSILON = 1e-3


def _bn(features: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(features, eps=BN_EPSILON, momentum=0.01)


class SeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max-pool with TensorFlow's SAME padding (the extra pad row/column at the end)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad: last dimension first
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, stride=2)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(cout)
        self.sep1, self.bn1 = SeparableConv(cin, cout), _bn(cout)
        self.sep2, self.bn2 = SeparableConv(cout, cout), _bn(cout)

    def forward(self, x):
        shortcut = self.shortcut_bn(self.shortcut_conv(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)))
        return y + shortcut


class TorchMiniXception(nn.Module):
    def __init__(self, num_classes: int = 7, stem: int = 8, widths=(16, 32, 64, 128)):
        super().__init__()
        self.stem_conv1, self.stem_bn1 = nn.Conv2d(1, stem, 3, bias=False), _bn(stem)
        self.stem_conv2, self.stem_bn2 = nn.Conv2d(stem, stem, 3, bias=False), _bn(stem)
        chans = (stem,) + tuple(widths)
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1, bias=True)

    def feature_map(self, x):
        """x: f32[B, 1, 64, 64] -> f32[B, 128, 4, 4]."""
        x = F.relu(self.stem_bn1(self.stem_conv1(x)))
        x = F.relu(self.stem_bn2(self.stem_conv2(x)))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x):
        """x: f32[B, 1, 64, 64] -> f32[B, 128 + 7]: pooled feature map and head logits."""
        maps = self.feature_map(x)
        return torch.cat([maps.mean(dim=(2, 3)), self.head(maps).mean(dim=(2, 3))], dim=1)


def _copy_conv(dst: nn.Conv2d, conv) -> None:
    dst.weight.copy_(torch.from_numpy(np.asarray(conv.kernel[...]).transpose(3, 2, 0, 1).copy()))
    if dst.bias is not None:
        dst.bias.copy_(torch.from_numpy(np.array(conv.bias[...], np.float32)))


def _copy_bn(dst: nn.BatchNorm2d, bn) -> None:
    for name, value in (("weight", bn.scale), ("bias", bn.bias), ("running_mean", bn.mean), ("running_var", bn.var)):
        getattr(dst, name).copy_(torch.from_numpy(np.array(value[...], np.float32)))


@torch.no_grad()
def copy_from_flax(model: TorchMiniXception, flax_model) -> TorchMiniXception:
    """Copies a fer_jax MiniXception's parameters and BatchNorm statistics into `model`."""
    _copy_conv(model.stem_conv1, flax_model.stem_conv1)
    _copy_bn(model.stem_bn1, flax_model.stem_bn1)
    _copy_conv(model.stem_conv2, flax_model.stem_conv2)
    _copy_bn(model.stem_bn2, flax_model.stem_bn2)
    for ours, theirs in zip(model.blocks, flax_model.blocks):
        _copy_conv(ours.shortcut_conv, theirs.shortcut_conv)
        _copy_bn(ours.shortcut_bn, theirs.shortcut_bn)
        for sep, bn, their_sep, their_bn in ((ours.sep1, ours.bn1, theirs.sep1, theirs.bn1),
                                             (ours.sep2, ours.bn2, theirs.sep2, theirs.bn2)):
            _copy_conv(sep.depthwise, their_sep.depthwise)
            _copy_conv(sep.pointwise, their_sep.pointwise)
            _copy_bn(bn, their_bn)
    _copy_conv(model.head, flax_model.head)
    return model.eval()
