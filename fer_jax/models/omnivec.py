"""OmniVec-style cross-modal network: modality tokenizers feeding one shared transformer trunk.

Every modality of a clip (cached face features, normalised OpenPose keypoints, external
embeddings, ...) is turned into one token per frame by its own tokenizer (the same tokenizers as
the fusion model, `fer_jax.models.registry.TOKENIZERS`), gets a time and a modality embedding,
and all M x T tokens go through one transformer trunk together:

    inputs {modality: float[B, T, F_m]}, masks {modality: bool[B, T]}
      -> trunk outputs float[B, M, T, D]
      -> per-frame embedding float32[B, T, D] (mean over the modalities present at frame t)

Pretraining (`OmniVecPretrainer`, run by `python -m fer_jax.pretrain`) is masked-token
reconstruction across modalities: a random share of the present tokens is replaced by a learned
mask token, and for a random share of clips one whole modality is hidden, so it has to be
rebuilt from the other modalities. A linear decoder per modality predicts the hidden tokens'
inputs, standardised per token (zero mean, unit variance over the features); the loss is the
mean squared error over hidden tokens only. No labels are used, so every clip counts, the
multi-labelled ones included.

As a generator, the trained `OmniVec` gives the per-frame embedding: extracted once into cached
features (`fer_jax.extract`, generator `omnivec`) or fine-tuned inside the fusion model
(tokenizer `omnivec`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.transformer import TransformerEncoder, dense


class OmniVec(nnx.Module):
    """Tokenizers + shared trunk. `__call__` -> per-frame embeddings float32[B, T, D]."""

    def __init__(self, tokenizers: Mapping[str, nnx.Module], *, num_frames: int, width: int, depth: int,
                 num_heads: int, mlp_dim: int, dropout: float = 0.0, dtype=None, rngs: nnx.Rngs):
        if not tokenizers:
            raise ValueError("OmniVec needs at least one modality")
        self.modalities = tuple(tokenizers)
        self.tokenizers = nnx.Dict(dict(tokenizers))
        self.width = width
        init = nnx.initializers.normal(0.02)
        self.time_embed = nnx.Param(init(rngs.params(), (num_frames, width)))
        self.modality_embed = nnx.Param(init(rngs.params(), (len(self.modalities), width)))
        self.mask_token = nnx.Param(init(rngs.params(), (width,)))
        self.trunk = TransformerEncoder(width, depth, num_heads, mlp_dim, dropout=dropout, attention_dropout=0.0,
                                        dtype=dtype, rngs=rngs)

    def encode(self, inputs, masks=None, hidden=None, *, train: bool = False, rngs: nnx.Rngs | None = None):
        """Trunk outputs float[B, M, T, D] and presence bool[B, M, T].

        masks: {modality: bool[B, T]} (True = a real frame; absent = all present). Absent tokens
        are zeroed and get no attention. hidden: {modality: bool[B, T]}, True = the token's
        content is replaced by the mask token (it still takes part in attention).
        """
        masks, hidden = dict(masks or {}), dict(hidden or {})
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"OmniVec expects modalities {self.modalities}; inputs lack {sorted(missing)}")
        tokens, present = [], []
        for i, name in enumerate(self.modalities):
            x = self.tokenizers[name](inputs[name], train=train)
            b, t = x.shape[:2]
            if t > self.time_embed.shape[0]:
                raise ValueError(f"modality {name!r} has {t} frames; this OmniVec was built for "
                                 f"{self.time_embed.shape[0]}.")
            if name in hidden:
                x = jnp.where(hidden[name][..., None], self.mask_token[...].astype(x.dtype), x)
            x = x + self.time_embed[:t].astype(x.dtype) + self.modality_embed[i].astype(x.dtype)
            mask = masks.get(name)
            mask = jnp.ones((b, t), bool) if mask is None else jnp.asarray(mask).astype(bool)
            tokens.append(jnp.where(mask[..., None], x, jnp.zeros((), x.dtype)))
            present.append(mask)
        lengths = {name: x.shape[1] for name, x in zip(self.modalities, tokens)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"OmniVec needs the same number of frames in every modality, got {lengths}.")
        b, t, d = tokens[0].shape
        m = len(tokens)
        seq = jnp.stack(tokens, axis=1).reshape(b, m * t, d)
        seq_mask = jnp.stack(present, axis=1).reshape(b, m * t)
        out = self.trunk(seq, seq_mask, train=train, rngs=rngs)
        return out.reshape(b, m, t, d), seq_mask.reshape(b, m, t)

    def __call__(self, inputs, masks=None, *, train: bool = False, rngs: nnx.Rngs | None = None):
        """Per-frame embeddings float32[B, T, D]: frame t's trunk outputs averaged over the present modalities."""
        out, present = self.encode(inputs, masks, train=train, rngs=rngs)
        weights = present[..., None].astype(out.dtype)
        total = (out * weights).sum(axis=1)
        count = jnp.maximum(weights.sum(axis=1), 1.0)
        return (total / count).astype(jnp.float32)


def standardize(x, eps: float = 1e-6):
    """Per-token standardisation over the last axis (the reconstruction target): float[..., F]."""
    x = x.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def sample_hidden(key, present, *, mask_ratio: float, modality_mask_prob: float):
    """Which tokens to hide: present bool[B, M, T] -> hidden bool[B, M, T] (a subset of present).

    Each present token is hidden with probability `mask_ratio`; in addition, with probability
    `modality_mask_prob` a clip hides every token of one of its present modalities (chosen
    uniformly), which only the other modalities can explain. A clip with one present modality
    never has it hidden whole.
    """
    b, m, _ = present.shape
    k_tok, k_clip, k_pick = jax.random.split(key, 3)
    hidden = jax.random.bernoulli(k_tok, mask_ratio, present.shape) & present
    if m > 1 and modality_mask_prob > 0:
        has = present.any(axis=2)  # [B, M]
        num = has.sum(axis=1)
        pick = jax.random.randint(k_pick, (b,), 0, jnp.maximum(num, 1))
        rank = jnp.cumsum(has, axis=1) - 1
        chosen = has & (rank == pick[:, None]) & (num[:, None] > 1)
        whole = jax.random.bernoulli(k_clip, modality_mask_prob, (b,))[:, None] & chosen
        hidden = hidden | (whole[..., None] & present)
    return hidden


class OmniVecPretrainer(nnx.Module):
    """An OmniVec plus one linear decoder per modality, for masked-token reconstruction."""

    def __init__(self, encoder: OmniVec, input_dims: Mapping[str, int], *, dtype=None, rngs: nnx.Rngs):
        self.encoder = encoder
        self.decoders = nnx.Dict({name: nnx.Linear(encoder.width, int(input_dims[name]), dtype=dtype, rngs=rngs)
                                  for name in encoder.modalities})

    def reconstruction_loss(self, inputs, masks, hidden, row_mask=None, *, train: bool = False,
                            rngs: nnx.Rngs | None = None):
        """Mean squared error over hidden tokens -> (loss, {modality: its own loss}).

        inputs {modality: float[B, T, F_m]}; masks, hidden {modality: bool[B, T]}; row_mask
        bool[B] (False on padding rows). Each hidden token's error is the mean over its features
        of (prediction - standardised input)^2; the loss averages over all hidden tokens.
        """
        out, _ = self.encoder.encode(inputs, masks, hidden, train=train, rngs=rngs)
        total, count, per_modality = 0.0, 0.0, {}
        for i, name in enumerate(self.encoder.modalities):
            pred = dense(self.decoders[name], out[:, i]).astype(jnp.float32)
            target = standardize(jnp.asarray(inputs[name]).reshape(pred.shape[:2] + (-1,)))
            err = jnp.mean((pred - target) ** 2, axis=-1)  # [B, T]
            weight = hidden[name].astype(jnp.float32)
            if row_mask is not None:
                weight = weight * row_mask[:, None].astype(jnp.float32)
            s, c = (err * weight).sum(), weight.sum()
            per_modality[name] = s / jnp.maximum(c, 1.0)
            total, count = total + s, count + c
        return total / jnp.maximum(count, 1.0), per_modality
