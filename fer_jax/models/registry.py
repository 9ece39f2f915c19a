"""Builds a model from a config: tokenizers are looked up by name in `TOKENIZERS`.

`config.modalities` maps a modality name ('face', 'pose', ...) to its spec:
`input` (the dataset feature it reads), `tokenizer` (a key of TOKENIZERS) and the tokenizer's
own options. Adding a tokenizer = one function here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fer_jax.errors import ConfigError
from fer_jax.models import generators
from fer_jax.models.audio import AudioConvTokenizer
from fer_jax.models.fusion import FusionTransformer
from fer_jax.models.omnivec import OmniVec, OmniVecPretrainer
from fer_jax.models.tokenizers import (FeatureProjection, FrameCNN, GeneratorTokenizer, KeypointEncoder,
                                       OmniVecTokenizer, WaveformTokenizer)

# name -> fn(spec, input_shape (per clip, e.g. (T, H, W, 3) or (T, F)), width, dtype, rngs, *, modality,
#            pretrained, encoders) -> module. pretrained=False skips loading weights (a restore
#            overwrites them); encoders: {modality: a pretrained network the tokenizer wraps}.
TOKENIZERS: dict[str, Callable[..., nnx.Module]] = {}


def register_tokenizer(name: str):
    def wrap(fn):
        TOKENIZERS[name] = fn
        return fn

    return wrap


@register_tokenizer("cnn")
def _cnn(spec, input_shape, width, dtype, rngs, **_):
    return FrameCNN(width, tuple(spec.get("channels", (32, 64, 128, 256))), dtype=dtype, rngs=rngs)


@register_tokenizer("linear")
def _linear(spec, input_shape, width, dtype, rngs, **_):
    return FeatureProjection(int(input_shape[-1]), width, dtype=dtype, rngs=rngs)


@register_tokenizer("generator")
def _generator(spec, input_shape, width, dtype, rngs, *, pretrained=True, num_frames=16, **_):
    """A pretrained feature generator on raw frames or sound, fine-tuned end to end (spec.generator, spec.weights)."""
    name = spec.get("generator", "mini_xception_fer")
    generator = generators.get(name)
    options = {"num_slices": num_frames} if "num_slices" in generator.options else {}
    module = generator.build(rngs, None if dtype == jnp.float32 else dtype, **options)
    if pretrained and spec.get("pretrained", True):
        report = generator.load(module, spec.get("weights", "") or "")
        logging.getLogger(__name__).info("generator %s: %s", name, str(report).splitlines()[0])
    if generator.modality == "audio":
        return WaveformTokenizer(module, feature_dim=generator.feature_dim, width=width, dtype=dtype, rngs=rngs)
    return GeneratorTokenizer(module, generator.feature_dim, width, dtype=dtype, rngs=rngs)


@register_tokenizer("audio_conv")
def _audio_conv(spec, input_shape, width, dtype, rngs, *, num_frames=16, **_):
    """The clip's sound (input 'audio'): JAX log-mel -> 1-D convs -> T slice tokens, trained from scratch."""
    channels = tuple(spec.get("channels", (128, 192, 256)))
    strides = tuple(spec.get("strides", (1, 2, 2)))
    return WaveformTokenizer(AudioConvTokenizer(width, channels=channels, strides=strides, num_slices=num_frames,
                                                dtype=dtype, rngs=rngs), rngs=rngs)


@register_tokenizer("mlp")
def _mlp(spec, input_shape, width, dtype, rngs, **_):
    """Per-frame vectors (e.g. normalised keypoints, float[B, T, 411]) -> LayerNorm, 2-layer GELU MLP."""
    return KeypointEncoder(int(input_shape[-1]), width, hidden=int(spec.get("hidden", width)), dtype=dtype,
                           rngs=rngs)


@register_tokenizer("omnivec")
def _omnivec(spec, input_shape, width, dtype, rngs, *, modality, encoders=None, **_):
    """The OmniVec encoder of a pretraining run (spec.checkpoint), fine-tuned on spec.inputs.

    The encoder itself comes in `encoders[<modality>]`, built (and loaded) by the caller from the
    pretraining run: networks do not read runs.
    """
    if not spec.get("checkpoint"):
        raise ConfigError("the omnivec tokenizer needs config.modalities.<name>.checkpoint = the workdir of a "
                          "`python -m fer_jax.pretrain` run.")
    if not encoders or modality not in encoders:
        raise ConfigError(f"modality {modality!r}: its OmniVec encoder was not given; build the model with "
                          "fer_jax.runs.build_model, which reads it from the pretraining run.")
    return OmniVecTokenizer(encoders[modality], width, dtype=dtype, rngs=rngs)


def compute_dtype(name: str | None):
    """'float32' | 'bfloat16' | None -> a jnp dtype for activations (parameters stay float32)."""
    if name in (None, "", "float32"):
        return jnp.float32
    if name == "bfloat16":
        return jnp.bfloat16
    raise ConfigError(f"config.model.dtype={name!r}: expected 'float32' or 'bfloat16'.")


def build_tokenizers(config, input_shapes: Mapping[str, tuple[int, ...]], width: int, dtype, rngs, *,
                     pretrained: bool = True, encoders: Mapping[str, nnx.Module] | None = None) -> dict:
    """{modality: tokenizer module} for config.modalities."""
    tokenizers = {}
    for name, spec in config.modalities.items():
        kind = spec.tokenizer
        if kind not in TOKENIZERS:
            raise ConfigError(
                f"config.modalities.{name}.tokenizer={kind!r} is unknown; choose one of {sorted(TOKENIZERS)}."
            )
        if name not in input_shapes:
            raise ConfigError(f"modality {name!r} has no input shape; the dataset does not provide it.")
        tokenizers[name] = TOKENIZERS[kind](spec, input_shapes[name], width, dtype, rngs, modality=name,
                                            pretrained=pretrained, encoders=encoders,
                                            num_frames=clip_frames(config))
    return tokenizers


def head_classes(config, num_classes: int | None = None) -> int:
    """The head's classes: `num_classes`, else config.num_classes; ConfigError while neither is set (0: the
    dataset's, which `fer_jax.train` fills in from the dataset's metadata before it builds a model)."""
    n = int(num_classes or config.get("num_classes", 0) or 0)
    if n < 1:
        raise ConfigError("config.num_classes is 0 (the dataset's count, not resolved yet): pass num_classes= to "
                          "build_model, or set --config.num_classes to the dataset's number of classes.")
    return n


def clip_frames(config) -> int:
    """The model's frames per clip T: config.data.num_frames once the run has resolved it, else 16."""
    data = config.get("data") or {}
    return int(data.get("num_frames", 0) or 0) or 16


def num_frames_of(shape) -> int:
    """Frames of a per-clip input shape (T, ...), or of the first entry of a nested {name: shape}."""
    if isinstance(shape, Mapping):
        return num_frames_of(next(iter(shape.values())))
    return int(shape[0])


def num_tokens(tokenizers: Mapping[str, nnx.Module], input_shapes: Mapping) -> int:
    """The most tokens per clip of any modality: a tokenizer's own `num_tokens`, else its input's frames."""
    return max(int(getattr(tok, "num_tokens", 0) or num_frames_of(input_shapes[name]))
               for name, tok in tokenizers.items())


def build_model(config, input_shapes: Mapping[str, tuple[int, ...]], *, seed: int = 0, pretrained: bool = True,
                encoders: Mapping[str, nnx.Module] | None = None, num_classes: int | None = None) -> FusionTransformer:
    """The fusion model for `config`; `input_shapes` gives each modality's per-clip shape.

    pretrained=False leaves generators randomly initialised (a restore fills them); encoders holds
    the OmniVec encoder of each `omnivec`-tokenizer modality (fer_jax.runs.build_model reads them).
    num_classes: the head's classes (default config.num_classes; the dataset's, which the run resolves).
    """
    m = config.model
    dtype = compute_dtype(m.get("dtype", "float32"))
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    tokenizers = build_tokenizers(config, input_shapes, m.width, dtype, rngs, pretrained=pretrained,
                                  encoders=encoders)
    num_frames = num_tokens(tokenizers, input_shapes)
    return FusionTransformer(
        tokenizers,
        num_frames=num_frames,
        width=m.width,
        depth=m.depth,
        num_heads=m.num_heads,
        mlp_dim=m.mlp_dim,
        num_classes=head_classes(config, num_classes),
        dropout=m.dropout,
        attention_dropout=m.get("attention_dropout", 0.0),
        head_dropout=m.get("head_dropout", 0.0),
        modality_dropout=m.get("modality_dropout", 0.0),
        fusion=m.get("fusion", "concat"),
        bottleneck_tokens=int(m.get("bottleneck_tokens", 4)),
        fusion_layer=int(m.get("fusion_layer", 0)),
        dtype=None if dtype == jnp.float32 else dtype,
        rngs=rngs,
    )


def build_omnivec(config, input_shapes: Mapping[str, tuple[int, ...]], *, seed: int = 0, pretrained: bool = True,
                  encoders=None):
    """The OmniVec pretrainer (encoder + decoders) of a `configs/omnivec.py` config."""

    m = config.model
    dtype = compute_dtype(m.get("dtype", "float32"))
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    tokenizers = build_tokenizers(config, input_shapes, m.width, dtype, rngs, pretrained=pretrained,
                                  encoders=encoders)
    raw = [name for name, tok in tokenizers.items() if isinstance(tok, WaveformTokenizer)]
    if raw:
        raise ConfigError(f"OmniVec pretraining reconstructs per-frame inputs, but modality {raw[0]!r} reads the raw "
                          "sound; give it cached audio features instead (configs/omnivec.py:...,audio=logmel, "
                          "extracted with configs/extract.py:<face generator>+logmel,source=frames112_pose_audio).")
    encoder = OmniVec(tokenizers, num_frames=num_tokens(tokenizers, input_shapes),
                      width=m.width, depth=m.depth, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
                      dropout=m.get("dropout", 0.0), dtype=None if dtype == jnp.float32 else dtype, rngs=rngs)
    dims = {name: int(np.prod(input_shapes[name][1:])) for name in tokenizers}  # per frame, e.g. H*W*3 pixels
    return OmniVecPretrainer(encoder, dims, dtype=None if dtype == jnp.float32 else dtype, rngs=rngs)
