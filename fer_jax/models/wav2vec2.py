"""wav2vec 2.0 base and HuBERT base speech encoders in Flax NNX, and the audio generator over them.

Both are transformers' `Wav2Vec2Model` / `HubertModel` with their base configs (the two share one
architecture; they differ in pretraining, i.e. in their weights):

    waveform float[B, S] (16 kHz mono) --Wav2Vec2Encoder--> hidden float32[B, N, 768], N ~ 50 per second

  feature encoder   7 conv layers (512 channels, kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2, no
                    bias, exact GELU); the first is followed by GroupNorm with one group per channel
                    (feat_extract_norm="group": each channel normalised over time). 400 samples give
                    1 frame; then one frame per 320 samples (20 ms).
  projection        LayerNorm(512) -> Linear(512, 768).
  positions         a grouped conv over time (kernel 128, 16 groups, weight-normalised over the
                    kernel axis, padding 64, the last output dropped) -> GELU, added to the frames.
  encoder           LayerNorm, then 12 post-LN layers (do_stable_layer_norm=False):
                    x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x)))). 12 heads, MLP 3072, eps 1e-5.

`lengths` (valid samples per clip, right-padded batches): the first GroupNorm takes its statistics
over the clip's valid conv frames, padded frames are zeroed before the positional conv and
masked out of attention, so a padded clip gives the same valid frames as the clip alone (which
is what transformers computes for an unpadded clip; transformers' own attention_mask path for
base models still lets the padding into the GroupNorm statistics).

Not implemented (inference and light fine-tuning only): dropout, LayerDrop, SpecAugment masking
(`masked_spec_embed` is training-only and is reported as unused by the loader).

`dtype` is the computation dtype (None = float32, or jnp.bfloat16 on accelerators); parameters
stay float32; GroupNorm, LayerNorm statistics and softmax run in float32; outputs are float32.
Weights: fer_jax.weights.audio_loaders.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.audio import NUM_SLICES, pool_to_slices, slice_mask
from fer_jax.models.transformer import dense

SAMPLE_RATE = 16_000
_init = nnx.initializers.normal(0.02)


@dataclasses.dataclass(frozen=True)
class SpeechEncoderConfig:
    """Shape of a wav2vec 2.0 / HuBERT encoder; `name` is how errors and reports call it, `family` the
    transformers model_type (and state-dict prefix) its checkpoints carry."""

    name: str
    family: str
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    pos_kernel: int = 128
    pos_groups: int = 16
    eps: float = 1e-5


WAV2VEC2_BASE = SpeechEncoderConfig("wav2vec2_base", "wav2vec2")
HUBERT_BASE = SpeechEncoderConfig("hubert_base", "hubert")


def gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def conv_lengths(lengths: Any, cfg: SpeechEncoderConfig) -> jax.Array:
    """Valid output frames of the feature encoder for clips of `lengths` samples: int[B] -> int32[B]."""
    n = jnp.asarray(lengths, jnp.int32)
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        n = _conv_length(n, k, s)
    return n


def _conv_length(n: jax.Array, kernel: int, stride: int) -> jax.Array:
    return jnp.where(n >= kernel, (n - kernel) // stride + 1, 0)


def _valid(lengths: jax.Array, n: int) -> jax.Array:
    return jnp.arange(n)[None] < lengths[:, None]


class ChannelNorm(nnx.Module):
    """GroupNorm with one group per channel: x[B, N, C] normalised per (clip, channel) over its valid frames."""

    def __init__(self, channels: int, eps: float):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x: jax.Array, valid: jax.Array | None) -> jax.Array:
        x32 = x.astype(jnp.float32)
        if valid is None:
            mean, var = x32.mean(1, keepdims=True), x32.var(1, keepdims=True)
        else:
            w = valid[..., None].astype(jnp.float32)
            count = jnp.maximum(w.sum(1, keepdims=True), 1.0)
            mean = (x32 * w).sum(1, keepdims=True) / count
            var = (jnp.square(x32 - mean) * w).sum(1, keepdims=True) / count
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale.get_value() + self.bias.get_value()
        return y.astype(x.dtype)


class PositionalConv(nnx.Module):
    """Relative positions: weight-normalised grouped conv over time -> GELU. [B, N, D] -> [B, N, D].

    Kernel = weight_g[k] * weight_v[k] / ||weight_v[k]|| (one norm per kernel tap, torch's
    weight_norm(dim=2)); weight_v is [kernel, D / groups, D] (WIO), weight_g [kernel].
    """

    def __init__(self, width: int, kernel: int, groups: int, *, dtype: Any, rngs: nnx.Rngs):
        self.kernel_size, self.groups, self.dtype = kernel, groups, dtype
        v = _init(rngs.params(), (kernel, width // groups, width), jnp.float32)
        self.weight_v = nnx.Param(v)
        self.weight_g = nnx.Param(jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2))))
        self.bias = nnx.Param(jnp.zeros((width,), jnp.float32))

    def kernel(self) -> jax.Array:
        v = self.weight_v.get_value()
        norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
        return self.weight_g.get_value()[:, None, None] * v / norm

    def __call__(self, x: jax.Array) -> jax.Array:
        half = self.kernel_size // 2
        y = jax.lax.conv_general_dilated(
            x, self.kernel().astype(x.dtype), window_strides=(1,), padding=((half, half),),
            dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
        if self.kernel_size % 2 == 0:  # an even kernel gives one extra frame: drop the last
            y = y[:, :-1]
        return gelu(y + self.bias.get_value().astype(y.dtype))


def _linear(n_in: int, n_out: int, *, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, dtype=dtype, kernel_init=_init, rngs=rngs)


class SelfAttention(nnx.Module):
    """Multi-head self-attention (packed q/k/v) with a key-padding mask: [B, N, D] -> [B, N, D]."""

    def __init__(self, width: int, heads: int, *, dtype: Any, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = _linear(width, 3 * width, dtype=dtype, rngs=rngs)
        self.out = _linear(width, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, valid: jax.Array | None) -> jax.Array:
        b, n, d = x.shape
        qkv = dense(self.qkv, x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * (d // self.heads) ** -0.5, k).astype(jnp.float32)
        if valid is not None:
            logits = jnp.where(valid[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, d)
        return dense(self.out, out)


class EncoderLayer(nnx.Module):
    """Post-LN transformer layer: x = norm1(x + attn(x)); x = norm2(x + fc2(gelu(fc1(x))))."""

    def __init__(self, cfg: SpeechEncoderConfig, *, dtype: Any, rngs: nnx.Rngs):
        self.attn = SelfAttention(cfg.width, cfg.heads, dtype=dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(cfg.width, epsilon=cfg.eps, dtype=dtype, rngs=rngs)
        self.fc1 = _linear(cfg.width, cfg.mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = _linear(cfg.mlp_dim, cfg.width, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(cfg.width, epsilon=cfg.eps, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, valid: jax.Array | None) -> jax.Array:
        x = self.norm1(x + self.attn(x, valid))
        return self.norm2(x + dense(self.fc2, gelu(dense(self.fc1, x))))


class Wav2Vec2Encoder(nnx.Module):
    """transformers' Wav2Vec2Model / HubertModel (base: group-norm feature encoder, post-LN encoder).

    __call__(waveform float[B, S], lengths int[B] | None) -> float32[B, N, width] (last_hidden_state)
    hidden_states(waveform, lengths, up_to) -> [float32[B, N, width]] * (up_to + 1): transformers'
        `output_hidden_states` list (entry 0 = the encoder input after positions and LayerNorm,
        entry i = the output of layer i), computing only the first `up_to` layers.
    frame_lengths(lengths) -> int32[B]: valid output frames per clip.
    """

    def __init__(self, cfg: SpeechEncoderConfig = WAV2VEC2_BASE, *, dtype: Any = None, rngs: nnx.Rngs):
        if not (len(cfg.conv_dim) == len(cfg.conv_kernel) == len(cfg.conv_stride)):
            raise ValueError(f"{cfg.name}: conv_dim, conv_kernel and conv_stride must have the same length")
        self.cfg, self.dtype = cfg, dtype
        dims = (1, *cfg.conv_dim)
        self.conv_layers = nnx.List([
            nnx.Conv(a, b, (k,), strides=(s,), padding="VALID", use_bias=False, dtype=dtype, rngs=rngs)
            for a, b, k, s in zip(dims[:-1], dims[1:], cfg.conv_kernel, cfg.conv_stride)
        ])
        self.conv_norm = ChannelNorm(cfg.conv_dim[0], cfg.eps)
        self.projection_norm = nnx.LayerNorm(cfg.conv_dim[-1], epsilon=cfg.eps, dtype=dtype, rngs=rngs)
        self.projection = _linear(cfg.conv_dim[-1], cfg.width, dtype=dtype, rngs=rngs)
        self.pos_conv = PositionalConv(cfg.width, cfg.pos_kernel, cfg.pos_groups, dtype=dtype, rngs=rngs)
        self.encoder_norm = nnx.LayerNorm(cfg.width, epsilon=cfg.eps, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])

    def frame_lengths(self, lengths: Any) -> jax.Array:
        return conv_lengths(lengths, self.cfg)

    def features(self, waveform: Any, lengths: Any = None) -> tuple[jax.Array, jax.Array | None]:
        """The feature encoder + projection: (frames [B, N, width] in the compute dtype, valid bool[B, N] or None)."""
        x = jnp.asarray(waveform)
        if x.ndim != 2:
            raise ValueError(f"{self.cfg.name} expects a waveform batch float[B, S], got shape {list(x.shape)}")
        if x.shape[1] < self.cfg.conv_kernel[0]:
            raise ValueError(f"{self.cfg.name} needs at least {self.cfg.conv_kernel[0]} samples, got {x.shape[1]}")
        x = x.astype(self.dtype or jnp.float32)[..., None]
        n = None if lengths is None else jnp.minimum(jnp.asarray(lengths, jnp.int32), x.shape[1])
        for i, conv in enumerate(self.conv_layers):
            x = conv(x)
            if i == 0:
                first = None if n is None else _conv_length(n, self.cfg.conv_kernel[0], self.cfg.conv_stride[0])
                x = self.conv_norm(x, None if first is None else _valid(first, x.shape[1]))
            x = gelu(x)
        x = dense(self.projection, self.projection_norm(x))
        valid = None if n is None else _valid(self.frame_lengths(n), x.shape[1])
        return x, valid

    def hidden_states(self, waveform: Any, lengths: Any = None, up_to: int | None = None) -> list[jax.Array]:
        up_to = self.cfg.depth if up_to is None else up_to
        if not 0 <= up_to <= self.cfg.depth:
            raise ValueError(f"{self.cfg.name} has hidden states 0..{self.cfg.depth}, asked for {up_to}")
        x, valid = self.features(waveform, lengths)
        if valid is not None:  # padded frames are zero before the positional conv, as for a clip alone
            x = jnp.where(valid[..., None], x, jnp.zeros((), x.dtype))
        x = self.encoder_norm(x + self.pos_conv(x))
        states = [x]
        for layer in self.layers[:up_to]:
            x = layer(x, valid)
            states.append(x)
        return [s.astype(jnp.float32) for s in states]

    def __call__(self, waveform: Any, lengths: Any = None, *, train: bool = False) -> jax.Array:
        del train  # no dropout / LayerDrop / SpecAugment (see the module docstring)
        return self.hidden_states(waveform, lengths)[-1]


class SpeechGenerator(nnx.Module):
    """An audio feature generator: (waveform, lengths) -> (features float32[B, 16, width], mask bool[B, 16]).

    waveform float[B, S], 16 kHz mono, right-padded; lengths int[B] valid samples (None: all S;
    clips shorter than 400 samples count as without audio). Each clip is first scaled to zero mean
    and unit variance over its valid samples (transformers' Wav2Vec2FeatureExtractor with
    do_normalize=True; the group-normalised first conv layer makes the encoder nearly gain-invariant
    anyway), then encoded; hidden state `layer` (0..depth; default depth, the last) is pooled into
    16 equal time slices of the clip with pool_to_slices. `mask` is False for clips without audio
    (their features are zeros), the same contract as AudioConvTokenizer.

    Why the last layer by default: it is what `last_hidden_state` (and the parity test) pins, and
    when the generator is fine-tuned with the fusion model the top layer is the one that adapts.
    For frozen features, intermediate layers (about 6-9 of 12 for wav2vec 2.0 base) carry more
    prosody and speaker information than the pretraining-specialised top; `layer` selects one,
    and only the layers up to it are computed.
    """

    def __init__(self, network: Wav2Vec2Encoder, *, layer: int | None = None, num_slices: int = NUM_SLICES,
                 normalize: bool = True):
        depth = network.cfg.depth
        self.network, self.num_slices, self.normalize = network, num_slices, normalize
        self.layer = depth if layer is None else (layer + depth + 1 if layer < 0 else layer)
        if not 0 <= self.layer <= depth:
            raise ValueError(f"layer {layer} is outside 0..{depth} (or -1..-{depth + 1}) for {network.cfg.name}")
        self.feature_dim = network.cfg.width

    def __call__(self, waveform: Any, lengths: Any = None, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        del train
        x = jnp.asarray(waveform, jnp.float32)
        n = jnp.full((x.shape[0],), x.shape[1], jnp.int32) if lengths is None else jnp.minimum(
            jnp.asarray(lengths, jnp.int32), x.shape[1])
        valid = _valid(n, x.shape[1])
        if self.normalize:
            count = jnp.maximum(n, 1)[:, None].astype(jnp.float32)
            mean = jnp.where(valid, x, 0.0).sum(1, keepdims=True) / count
            var = jnp.where(valid, jnp.square(x - mean), 0.0).sum(1, keepdims=True) / count
            x = (x - mean) / jnp.sqrt(var + 1e-7)
        x = jnp.where(valid, x, 0.0)
        hidden = self.network.hidden_states(x, None if lengths is None else n, up_to=self.layer)[-1]
        frames = self.network.frame_lengths(n)
        mask = slice_mask(frames, self.num_slices)
        return pool_to_slices(hidden, frames, self.num_slices), mask


# -- the networks by name -----------------------------------------------------------------------


def wav2vec2_base(*, rngs: nnx.Rngs, dtype: Any = None) -> Wav2Vec2Encoder:
    """wav2vec 2.0 base (12 layers, 768 wide; facebook/wav2vec2-base, LibriSpeech 960 h)."""
    return Wav2Vec2Encoder(WAV2VEC2_BASE, dtype=dtype, rngs=rngs)


def hubert_base(*, rngs: nnx.Rngs, dtype: Any = None) -> Wav2Vec2Encoder:
    """HuBERT base (12 layers, 768 wide; facebook/hubert-base-ls960)."""
    return Wav2Vec2Encoder(HUBERT_BASE, dtype=dtype, rngs=rngs)
