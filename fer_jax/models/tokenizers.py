"""Tokenizers: turn one modality of a clip into per-frame tokens float[B, T, D].

- `FrameCNN`: raw face frames uint8[B, T, H, W, 3] -> a small CNN per frame (trained end to end).
- `FeatureProjection`: cached per-frame features float[B, T, F] -> LayerNorm + linear.
- `KeypointEncoder`: normalised OpenPose keypoints float[B, T, 411] -> a 2-layer MLP.
- `GeneratorTokenizer`: a pretrained feature generator (fer_jax.models.generators) + projection,
  for fine-tuning the generator end to end on frames.
- `OmniVecTokenizer`: a pretrained OmniVec network on its own inputs + projection, fine-tuned.
- `WaveformTokenizer`: a clip's sound {'waveform': float[B, S], 'length': int[B]} -> 16 tokens, through
  an audio module (fer_jax.models.audio.AudioConvTokenizer trained from scratch, or a speech
  generator fine-tuned) + an optional projection.

Every tokenizer has `__call__(x, *, train) -> float[B, T, D]`; the fusion model adds time and
modality embeddings. A tokenizer whose token count is not the input's first axis says so in
`num_tokens` (the audio ones: T, one per time slice of the clip).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.transformer import dense


class ConvBlock(nnx.Module):
    """3x3 conv (stride s) -> BatchNorm -> ReLU."""

    def __init__(self, cin, cout, stride, *, dtype, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), strides=stride, padding=((1, 1), (1, 1)), use_bias=False,
                             dtype=dtype, rngs=rngs)
        self.norm = nnx.BatchNorm(cout, momentum=0.9, dtype=dtype, rngs=rngs)

    def __call__(self, x, *, train: bool):
        return jax.nn.relu(self.norm(self.conv(x), use_running_average=not train))


class FrameCNN(nnx.Module):
    """A small from-scratch CNN applied to every frame: uint8[B, T, H, W, 3] -> float[B, T, D].

    A strided stem, then one stride-2 block per entry of `channels`, global average pooling and a
    linear map to the model width. Pixels are scaled to [-1, 1].
    """

    def __init__(self, width: int, channels=(32, 64, 128, 256), *, dtype=None, rngs: nnx.Rngs):
        self.stem = ConvBlock(3, channels[0], 2, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List(
            [ConvBlock(a, b, 2, dtype=dtype, rngs=rngs) for a, b in zip(channels[:-1], channels[1:])]
        )
        self.proj = nnx.Linear(channels[-1], width, dtype=dtype, rngs=rngs)
        self.dtype = dtype

    def __call__(self, frames, *, train: bool):
        b, t = frames.shape[:2]
        x = frames.reshape((b * t,) + frames.shape[2:]).astype(self.dtype or jnp.float32)
        x = x * (2.0 / 255.0) - 1.0
        x = self.stem(x, train=train)
        for block in self.blocks:
            x = block(x, train=train)
        return self.proj(x.mean(axis=(1, 2))).reshape(b, t, -1)


class FeatureProjection(nnx.Module):
    """Cached per-frame features float[B, T, F] -> LayerNorm -> Linear -> float[B, T, D]."""

    def __init__(self, in_features: int, width: int, *, dtype=None, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(in_features, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(in_features, width, dtype=dtype, rngs=rngs)

    def __call__(self, features, *, train: bool):
        del train
        return dense(self.proj, self.norm(features))


class GeneratorTokenizer(nnx.Module):
    """A feature generator on raw frames followed by a FeatureProjection: uint8[B, T, H, W, 3] -> float[B, T, D].

    Used to fine-tune a pretrained generator end to end (its parameters live under `generator`).
    """

    def __init__(self, generator: nnx.Module, feature_dim: int, width: int, *, dtype=None, rngs: nnx.Rngs):
        self.generator = generator
        self.projection = FeatureProjection(feature_dim, width, dtype=dtype, rngs=rngs)

    def __call__(self, frames, *, train: bool):
        return self.projection(self.generator(frames, train=train), train=train)


class KeypointEncoder(nnx.Module):
    """Per-frame keypoint vectors float[B, T, F] -> LayerNorm -> Linear -> GELU -> Linear -> float[B, T, D].

    F is 411 for normalised OpenPose points (137 points x (x, y, confidence), see
    fer_jax.data.keypoints.keypoint_features); missing points are zeros with confidence 0.
    """

    def __init__(self, in_features: int, width: int, *, hidden: int, dtype=None, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(in_features, dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(in_features, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, features, *, train: bool):
        del train
        return dense(self.fc2, jax.nn.gelu(dense(self.fc1, self.norm(features))))


class OmniVecTokenizer(nnx.Module):
    """A pretrained OmniVec (fer_jax.models.omnivec) followed by a FeatureProjection, fine-tuned end to end.

    x: {part: float[B, T, F_part], 'mask/<part>': bool[B, T]} (the OmniVec's own modalities, e.g.
    face features and keypoints) -> float[B, T, D]. Its parameters live under `omnivec`.
    """

    def __init__(self, omnivec: nnx.Module, width: int, *, dtype=None, rngs: nnx.Rngs):
        self.omnivec = omnivec
        self.projection = FeatureProjection(omnivec.width, width, dtype=dtype, rngs=rngs)

    def __call__(self, x, *, train: bool):
        inputs = {k: v for k, v in x.items() if not k.startswith("mask/")}
        masks = {k.split("/", 1)[1]: v for k, v in x.items() if k.startswith("mask/")}
        return self.projection(self.omnivec(inputs, masks, train=train), train=train)


class WaveformTokenizer(nnx.Module):
    """A clip's sound -> float[B, 16, D]: x = {'waveform': float[B, S], 'length': int[B]} (fer_jax.data.audio).

    `audio` maps (waveform, lengths) -> (features float[B, 16, F], mask bool[B, 16]); the mask
    is not used here (the batch's own `mask/<modality>` says which clips have sound). With
    `feature_dim`, a FeatureProjection to the model width follows (a speech generator); without,
    the module's output already is the tokens (AudioConvTokenizer).
    """

    def __init__(self, audio: nnx.Module, *, feature_dim: int | None = None, width: int | None = None, dtype=None,
                 rngs: nnx.Rngs):
        self.audio = audio
        self.num_tokens = int(getattr(audio, "num_slices", 16))  # one token per time slice of the clip
        self.projection = (FeatureProjection(feature_dim, width, dtype=dtype, rngs=rngs)
                           if feature_dim is not None else None)

    def __call__(self, x, *, train: bool):
        if not isinstance(x, dict) or "waveform" not in x:
            raise ValueError("an audio tokenizer reads {'waveform': float[B, S], 'length': int[B]}; the modality's "
                             "input must be the dataset feature 'audio' (a dfew/*_audio build, or features from one).")
        features, _ = self.audio(x["waveform"], x.get("length"), train=train)
        return features if self.projection is None else self.projection(features, train=train)
