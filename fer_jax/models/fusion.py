"""The fusion transformer: a dict of modality -> per-frame tokens in, 7 emotion logits out.

Each modality's tokenizer gives float[B, T, D]; time and modality embeddings are added; all
modalities and a CLS token form one joint sequence (`concat` fusion) for a pre-LN transformer
encoder; a dense head reads the CLS token. Masks (bool[B, T] per modality) mark missing frames or
a missing modality; masked tokens receive no attention. In training, `modality_dropout` masks a
whole modality of a clip at random (never all of a clip's modalities).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.transformer import TransformerEncoder


class FusionTransformer(nnx.Module):
    """inputs: {modality: array[B, T, ...]} (+ optional masks {modality: bool[B, T]}) -> logits[B, C]."""

    def __init__(
        self,
        tokenizers: Mapping[str, nnx.Module],
        *,
        num_frames: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        num_classes: int = 7,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        head_dropout: float = 0.0,
        modality_dropout: float = 0.0,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if not tokenizers:
            raise ValueError("the fusion model needs at least one modality")
        self.modalities = tuple(tokenizers)
        self.tokenizers = nnx.Dict(dict(tokenizers))
        init = nnx.initializers.normal(0.02)
        self.time_embed = nnx.Param(init(rngs.params(), (num_frames, width)))
        self.modality_embed = nnx.Param(init(rngs.params(), (len(self.modalities), width)))
        self.cls_token = nnx.Param(jnp.zeros((1, 1, width)))
        self.encoder = TransformerEncoder(
            width, depth, num_heads, mlp_dim, dropout=dropout, attention_dropout=attention_dropout,
            dtype=dtype, rngs=rngs,
        )
        self.head_dropout = nnx.Dropout(head_dropout)
        self.head = nnx.Linear(width, num_classes, dtype=dtype, rngs=rngs)
        self.modality_dropout = modality_dropout
        self.dtype = dtype

    def __call__(self, inputs, masks=None, *, train: bool = False, rngs: nnx.Rngs | None = None):
        masks = dict(masks or {})
        unknown = set(inputs) - set(self.modalities)
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"model expects modalities {self.modalities}; batch lacks {sorted(missing)}")
        del unknown  # extra entries (labels, ids) are ignored
        tokens, token_masks = [], []
        for i, name in enumerate(self.modalities):
            x = self.tokenizers[name](inputs[name], train=train)
            b, t = x.shape[:2]
            x = x + self.time_embed[:t].astype(x.dtype) + self.modality_embed[i].astype(x.dtype)
            tokens.append(x)
            token_masks.append(masks.get(name, jnp.ones((b, t), bool)))
        if train and self.modality_dropout > 0 and len(tokens) > 1:
            token_masks = self._drop_modalities(token_masks, rngs)
        b = tokens[0].shape[0]
        cls = jnp.broadcast_to(self.cls_token[...].astype(tokens[0].dtype), (b, 1, tokens[0].shape[-1]))
        x = jnp.concatenate([cls] + tokens, axis=1)
        mask = jnp.concatenate([jnp.ones((b, 1), bool)] + token_masks, axis=1)
        x = self.encoder(x, mask, train=train, rngs=rngs)
        x = self.head_dropout(x[:, 0], deterministic=not train, rngs=rngs)
        return self.head(x).astype(jnp.float32)

    def _drop_modalities(self, token_masks, rngs):
        """Masks each modality of each clip with probability p, keeping at least one per clip."""
        b, m = token_masks[0].shape[0], len(token_masks)
        key = rngs.dropout() if rngs is not None else jax.random.key(0)
        keep = jax.random.bernoulli(key, 1.0 - self.modality_dropout, (b, m))
        # A clip that lost every modality keeps one chosen at random.
        fallback = jax.nn.one_hot(jax.random.randint(jax.random.fold_in(key, 1), (b,), 0, m), m, dtype=bool)
        keep = jnp.where(keep.any(axis=1, keepdims=True), keep, fallback)
        return [mk & keep[:, i : i + 1] for i, mk in enumerate(token_masks)]
