"""Audio of a clip as tokens: a JAX log-mel front end, slice pooling, and a small convolutional tokenizer.

All audio here is 16 kHz mono float32 in [-1, 1], batched and right-padded with zeros:

    waveform float[B, S], lengths int[B] (valid samples per clip; 0 = the clip has no audio)

The 16 stored frames of a DFEW clip cover the whole clip uniformly, so an audio token t is the
t-th of 16 equal time slices of the clip's valid audio.

  log_mel(waveform, cfg)        -> float32[B, frames, n_mels]: librosa's melspectrogram (centred
                                   STFT, periodic Hann window, zero padding, power spectrum, Slaney
                                   mel filterbank with Slaney area normalisation) then
                                   10 * log10(max(mel, amin)) = `librosa.power_to_db(..., top_db=None)`.
                                   Parity with librosa: within 1e-3 dB (test_audio_models.py).
  mel_lengths(lengths, cfg)     -> valid log-mel frames per clip (1 + length // hop; 0 without audio).
  pool_to_slices(x, lengths, 16) -> float[B, 16, F]: the mean over each of 16 equal slices of a
                                   clip's valid frames; a clip with fewer than 16 frames repeats the
                                   nearest frame; a clip with none gives zeros.
  slice_mask(lengths, 16)       -> bool[B, 16]: True where the clip has audio.
  AudioConvTokenizer            waveform + lengths -> (tokens float[B, 16, D], mask bool[B, 16]);
                                   trained from scratch with the fusion model.

Padding never changes a clip's result: frames past a clip's length are zeroed before every
convolution, and each layer's valid length is computed from the clip's own length, so a clip
gives the same tokens alone or padded in a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fer_jax.models.transformer import dense

SAMPLE_RATE = 16_000
NUM_SLICES = 16


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    """The log-mel front end. Defaults: 25 ms Hann windows every 10 ms (100 frames/s), 64 mel bands to 8 kHz."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    amin: float = 1e-10  # power floor before the log (-100 dB)


# -- the mel filterbank (numpy float64, built once per config) ----------------------------------

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 66.67 Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # Slaney: log-spaced above 1 kHz


def hz_to_mel(hz: Any) -> np.ndarray:
    """Slaney's mel scale (librosa's htk=False): linear to 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: Any) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
    """Triangular filters evenly spaced in Slaney mels, each scaled to unit area in Hz (2 / bandwidth).

    Returns float32[n_fft // 2 + 1, n_mels] (power spectrum @ filterbank = mel power).
    """
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2.0
    bins = np.linspace(0.0, cfg.sample_rate / 2.0, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(fmax), cfg.n_mels + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - left) / (centre - left)
    falling = (right - bins[None]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (right - left))
    return weights.T.astype(np.float32)


def hann_window(n: int) -> np.ndarray:
    """The periodic Hann window (scipy's get_window('hann', n, fftbins=True))."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


# -- log-mel ------------------------------------------------------------------------------------


def num_frames(num_samples: int, cfg: LogMelConfig) -> int:
    """Frames of a centred STFT over `num_samples` samples."""
    return 1 + num_samples // cfg.hop_length


def power_spectrogram(waveform: Any, cfg: LogMelConfig) -> jax.Array:
    """|STFT|^2 of a centred, zero-padded STFT: float[B, S] -> float32[B, 1 + S // hop, n_fft // 2 + 1]."""
    x = jnp.asarray(waveform, jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a waveform batch float[B, S], got shape {list(x.shape)}")
    half = cfg.n_fft // 2
    x = jnp.pad(x, ((0, 0), (half, half)))
    starts = np.arange(num_frames(waveform.shape[1], cfg)) * cfg.hop_length
    frames = x[:, starts[:, None] + np.arange(cfg.n_fft)[None]]  # [B, frames, n_fft]
    spectrum = jnp.fft.rfft(frames * hann_window(cfg.n_fft), axis=-1)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel(waveform: Any, cfg: LogMelConfig = LogMelConfig()) -> jax.Array:
    """float[B, S] 16 kHz mono -> float32[B, 1 + S // hop, n_mels] in dB: 10 log10(max(mel power, amin))."""
    mel = power_spectrogram(waveform, cfg) @ mel_filterbank(cfg)
    return 10.0 * jnp.log10(jnp.maximum(mel, cfg.amin))


def mel_lengths(lengths: Any, cfg: LogMelConfig = LogMelConfig()) -> jax.Array:
    """Valid log-mel frames per clip: int[B] samples -> int32[B] (0 where the clip has no audio)."""
    lengths = jnp.asarray(lengths, jnp.int32)
    return jnp.where(lengths > 0, 1 + lengths // cfg.hop_length, 0)


# -- slices -------------------------------------------------------------------------------------


def slice_weights(lengths: Any, num_frames_: int, num_slices: int = NUM_SLICES) -> jax.Array:
    """float32[B, num_slices, N]: row s averages the frames of a clip whose centre lies in slice s.

    With n valid frames, frame k (centre (k + 1/2) / n of the clip) belongs to slice
    floor(num_slices (k + 1/2) / n). A slice holding no frame centre (only when n < num_slices)
    takes the frame under its own centre; n = 0 gives a zero row.
    """
    n = jnp.clip(jnp.asarray(lengths, jnp.int32), 0, num_frames_)[:, None]
    s = jnp.arange(num_slices, dtype=jnp.int32)[None]

    def first_frame(s):  # smallest k with num_slices (2k + 1) >= 2 s n
        return jnp.maximum(-((num_slices - 2 * s * n) // (2 * num_slices)), 0)

    start, end = first_frame(s), first_frame(s + 1)
    nearest = jnp.clip(((2 * s + 1) * n) // (2 * num_slices), 0, jnp.maximum(n - 1, 0))
    empty = end <= start
    start, end = jnp.where(empty, nearest, start), jnp.where(empty, nearest + 1, end)
    i = jnp.arange(num_frames_, dtype=jnp.int32)[None, None]
    inside = (i >= start[..., None]) & (i < end[..., None]) & (n[..., None] > 0)
    counts = jnp.maximum(inside.sum(-1, keepdims=True), 1)
    return inside.astype(jnp.float32) / counts


def pool_to_slices(features: Any, lengths: Any = None, num_slices: int = NUM_SLICES) -> jax.Array:
    """features float[B, N, F] (frames past lengths[b] are ignored) -> float[B, num_slices, F].

    lengths: valid frames per clip, int[B] (None: all N). Slice s of a clip is the mean of the
    frames whose centre falls in the clip's s-th time slice (slice_weights); with fewer frames
    than slices, a slice without one repeats the frame under its centre; no frames gives zeros
    (see slice_mask).
    """
    features = jnp.asarray(features)
    b, n = features.shape[:2]
    if lengths is None:
        lengths = jnp.full((b,), n, jnp.int32)
    weights = slice_weights(lengths, n, num_slices)
    return jnp.einsum("bsn,bnf->bsf", weights.astype(features.dtype), features)


def slice_mask(lengths: Any, num_slices: int = NUM_SLICES) -> jax.Array:
    """bool[B, num_slices]: True for every slice of a clip with audio (lengths > 0), False otherwise."""
    has_audio = jnp.asarray(lengths) > 0
    return jnp.broadcast_to(has_audio[:, None], (has_audio.shape[0], num_slices))


def _valid(lengths: jax.Array, n: int) -> jax.Array:
    return jnp.arange(n)[None] < lengths[:, None]


def _lengths_or_full(waveform: jax.Array, lengths: Any) -> jax.Array:
    if lengths is None:
        return jnp.full((waveform.shape[0],), waveform.shape[1], jnp.int32)
    return jnp.minimum(jnp.asarray(lengths, jnp.int32), waveform.shape[1])


# -- the tokenizer ------------------------------------------------------------------------------


class AudioConvTokenizer(nnx.Module):
    """Log-mel -> 1-D conv stack over time -> 16 slice means -> linear: (waveform, lengths) -> (tokens, mask).

    waveform float[B, S] (16 kHz mono, right-padded), lengths int[B] (None: all S samples valid)
    -> tokens float[B, 16, width] (zeros where the clip has no audio), mask bool[B, 16].

    Each conv block: Conv1D(kernel 3, padding 1, stride from `strides`) -> LayerNorm over channels
    -> GELU, frames past the clip's length zeroed. With the defaults (100 log-mel frames/s, strides
    1, 2, 2) a token of a 3 s clip pools about 5 frames of 40 ms. The log-mel in dB is scaled by
    (dB + 40) / 40 so that speech lies near [-1, 1]. No batch statistics: a clip's tokens do not
    depend on the rest of the batch or on its padding. Trained with the fusion model from scratch.
    """

    def __init__(self, width: int, *, channels: tuple[int, ...] = (128, 192, 256), strides: tuple[int, ...] = (1, 2, 2),
                 mel: LogMelConfig = LogMelConfig(), num_slices: int = NUM_SLICES, dtype: Any = None,
                 rngs: nnx.Rngs):
        if len(channels) != len(strides):
            raise ValueError(f"channels {channels} and strides {strides} must have the same length")
        self.mel, self.num_slices, self.strides, self.dtype = mel, num_slices, tuple(strides), dtype
        dims = (mel.n_mels, *channels)
        self.convs = nnx.List([
            nnx.Conv(a, b, (3,), strides=(s,), padding=((1, 1),), dtype=dtype, rngs=rngs)
            for a, b, s in zip(dims[:-1], dims[1:], strides)
        ])
        self.norms = nnx.List([nnx.LayerNorm(c, dtype=dtype, rngs=rngs) for c in channels])
        self.proj = nnx.Linear(channels[-1], width, dtype=dtype, rngs=rngs)

    def __call__(self, waveform: Any, lengths: Any = None, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        del train  # no dropout or batch statistics
        waveform = jnp.asarray(waveform, jnp.float32)
        lengths = _lengths_or_full(waveform, lengths)
        waveform = jnp.where(_valid(lengths, waveform.shape[1]), waveform, 0.0)
        n = mel_lengths(lengths, self.mel)
        x = (log_mel(waveform, self.mel) + 40.0) / 40.0
        x = jnp.where(_valid(n, x.shape[1])[..., None], x, 0.0).astype(self.dtype or jnp.float32)
        for conv, norm, stride in zip(self.convs, self.norms, self.strides):
            x = jax.nn.gelu(norm(conv(x)))
            n = (n - 1) // stride + 1  # the outputs whose centre frame is valid (0 stays 0)
            x = jnp.where(_valid(n, x.shape[1])[..., None], x, jnp.zeros((), x.dtype))
        mask = slice_mask(n, self.num_slices)
        tokens = dense(self.proj, pool_to_slices(x, n, self.num_slices))
        return jnp.where(mask[..., None], tokens, jnp.zeros((), tokens.dtype)), mask


class LogMelGenerator(nnx.Module):
    """A fixed audio feature generator: (waveform, lengths) -> (features float32[B, 16, n_mels], mask bool[B, 16]).

    The clip's log-mel (the same front end and (dB + 40) / 40 scaling as AudioConvTokenizer),
    averaged over each of its 16 time slices. No parameters: cached once by `fer_jax.extract`, it
    is the cheap audio input of the linear tokenizer and of OmniVec pretraining (whose decoders
    reconstruct per-slice vectors).
    """

    def __init__(self, mel: LogMelConfig = LogMelConfig(), num_slices: int = NUM_SLICES):
        self.mel, self.num_slices = mel, num_slices
        self.feature_dim = mel.n_mels

    def __call__(self, waveform: Any, lengths: Any = None, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        del train
        waveform = jnp.asarray(waveform, jnp.float32)
        lengths = _lengths_or_full(waveform, lengths)
        waveform = jnp.where(_valid(lengths, waveform.shape[1]), waveform, 0.0)
        n = mel_lengths(lengths, self.mel)
        x = (log_mel(waveform, self.mel) + 40.0) / 40.0
        mask = slice_mask(n, self.num_slices)
        pooled = pool_to_slices(jnp.where(_valid(n, x.shape[1])[..., None], x, 0.0), n, self.num_slices)
        return jnp.where(mask[..., None], pooled, 0.0), mask
