"""Feature generators: pretrained networks that turn face frames into per-frame features.

A generator is an NNX module that owns its preprocessing. A face generator maps frames
uint8[B, T, H, W, 3] -> float32[B, T, F] (resize, colour, normalisation inside); an audio
generator (`modality='audio'`) maps a clip's sound, waveform float32[B, S] 16 kHz mono with its
valid lengths int32[B], to (float32[B, T, F], mask bool[B, T]): one vector per time slice of
the clip (fer_jax.data.audio). `GENERATORS` maps its name to a `GeneratorSpec`:
  - `build(rngs, dtype)`: the module, randomly initialised;
  - `load(module, weights)`: fills it with pretrained weights and returns a report whose `str()`
    says what was and was not loaded; `weights` is a local file, a weights name (e.g. 'imagenet')
    or '' for the generator's default;
  - `feature_dim`: F; `weights`: the names it knows and which is the default.
extract, train (the `generator` tokenizer) and predict look generators up here and nowhere else.
A generator module registers itself (`register(name, GeneratorSpec(...))`) when it is imported:
the built-in ones are fer_jax.models.face_generators (mini_xception_fer, resnet18/34/50,
clip_vit_b16/l14, siglip_vit_b16) and fer_jax.models.audio_generators (wav2vec2_base,
hubert_base, logmel); a plug-in is a module named in FER_JAX_PLUGINS (examples/pixel_mean.py).
Weights names are fetched once into $FER_JAX_CACHE and checked against a pinned SHA-256
(fer_jax.weights.hub).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.errors import ConfigError
from fer_jax.weights.report import AbstractUnfilledError
from tfds_dfew import plugins

# The modules that register the built-in generators, imported (by name) the first time the registry is read:
# a generator module registers itself, and this table only says where the package's own ones are.
_BUILTIN = ("fer_jax.models.face_generators", "fer_jax.models.audio_generators")


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


def _load() -> None:
    """Imports the built-in generator modules and the plug-ins (FER_JAX_PLUGINS); each registers its generators."""
    for module in _BUILTIN:
        importlib.import_module(module)
    plugins.load()


def names() -> list[str]:
    _load()
    return sorted(GENERATORS)


def get(name: str) -> GeneratorSpec:
    if name not in GENERATORS:
        _load()
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


