"""Pre-LayerNorm transformer encoder blocks (Flax NNX) with key-padding masks.

Shapes: tokens float[B, N, D], mask bool[B, N] (True = a real token). Dropout draws from the
`rngs` passed at call time, so a jitted step can feed a key derived from (seed, step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def dropout(x, rate: float, key):
    """Inverted dropout with cheap masks: x float[..., F] -> x with elements zeroed, the rest rescaled.

    `jax.random.bernoulli` spends one threefry hash per element, and on CPU JAX runs threefry as a
    5-trip while loop over the whole tensor (slow). Here one 32-bit draw gives four 8-bit
    uniforms, a quarter of the hashes. The rate is rounded to a multiple of 1/256 (0.1 ->
    26/256 = 0.1016) and the kept elements are scaled by 1 / (1 - rounded rate), so E[out] = x.
    Draws keep the leading axes of x, so a batch-sharded x gets batch-sharded masks.
    """
    threshold = int(round(rate * 256))
    if threshold <= 0:
        return x
    if threshold >= 256:
        return jnp.zeros_like(x)
    *lead, last = x.shape
    words = -(-last // 4)
    bits = jax.random.bits(key, (*lead, words), jnp.uint32)
    uniform8 = jax.lax.bitcast_convert_type(bits, jnp.uint8).reshape(*lead, 4 * words)[..., :last]
    keep = uniform8 >= np.uint8(threshold)
    scale = jnp.asarray(256.0 / (256 - threshold), x.dtype)
    return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


def dense(layer: nnx.Module, x):
    """Applies a Linear layer to x[..., F] as one 2-D matmul over the flattened leading axes.

    Same numbers as `layer(x)`; on CPU, XLA runs the backward weight-gradient matmul of a 2-D
    input about twice as fast as that of a [B, N, F] input (both leading axes contracted).
    """
    lead = x.shape[:-1]
    return layer(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


class Dropout(nnx.Module):
    """`nnx.Dropout`'s call interface over `dropout` (keys from rngs.dropout(), one per call)."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, x, *, deterministic: bool, rngs: nnx.Rngs | None):
        if deterministic or self.rate == 0.0:
            return x
        if rngs is None:
            raise ValueError("Dropout in training needs `rngs` with a 'dropout' stream.")
        return dropout(x, self.rate, rngs.dropout())


class SelfAttention(nnx.Module):
    """Multi-head self-attention; padded keys get no weight."""

    def __init__(self, width: int, num_heads: int, *, dropout: float, dtype, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"model width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nnx.Linear(width, 3 * width, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(dropout)

    def __call__(self, x, mask, *, train: bool, rngs: nnx.Rngs | None):
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = jnp.split(dense(self.qkv, x).reshape(b, n, 3 * h, d // h), 3, axis=2)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (d // h) ** -0.5
        if mask is not None:
            logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        weights = self.dropout(weights, deterministic=not train, rngs=rngs)
        return dense(self.out, jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, d))


class EncoderBlock(nnx.Module):
    """x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, width, num_heads, mlp_dim, *, dropout, attention_dropout, dtype, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.attn = SelfAttention(width, num_heads, dropout=attention_dropout, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(width, mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_dim, width, dtype=dtype, rngs=rngs)
        self.dropout = Dropout(dropout)

    def __call__(self, x, mask, *, train: bool, rngs: nnx.Rngs | None):
        det = not train
        x = x + self.dropout(self.attn(self.norm1(x), mask, train=train, rngs=rngs), deterministic=det, rngs=rngs)
        y = dense(self.fc2, self.dropout(jax.nn.gelu(dense(self.fc1, self.norm2(x))), deterministic=det, rngs=rngs))
        return x + self.dropout(y, deterministic=det, rngs=rngs)


class TransformerEncoder(nnx.Module):
    """A stack of EncoderBlocks followed by a final LayerNorm."""

    def __init__(self, width, depth, num_heads, mlp_dim, *, dropout, attention_dropout, dtype, rngs: nnx.Rngs):
        self.blocks = nnx.List(
            [
                EncoderBlock(
                    width,
                    num_heads,
                    mlp_dim,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask=None, *, train: bool, rngs: nnx.Rngs | None = None):
        for block in self.blocks:
            x = block(x, mask, train=train, rngs=rngs)
        return self.norm(x)
