"""The fusion transformer: a dict of modality -> per-frame tokens in, 7 emotion logits out.

Every modality's tokenizer gives float[B, T, D]; a time embedding and a modality embedding are
added. Masks (bool[B, T] per modality, True = a real frame) mark missing frames; a modality absent
from a clip is all False for that clip. Masked tokens are zeroed and receive no attention, so
their values never reach the logits. Four ways to fuse the modalities (`fusion`):

- `concat`: all modalities' tokens and one CLS token form a joint sequence of 1 + sum(T_m) tokens
  for one pre-LN transformer encoder; a dense head reads the CLS token.
- `early`: per-time-step fusion. At frame t the present modalities' tokens are averaged into one
  token (the mean over the modalities whose mask is True at (b, t); each tokenizer already ends in
  its own linear projection, so a mean of projections equals a projection of the concatenated
  features, and the modality embeddings in the mean tell the encoder which modalities were
  present). A frame with no modality present is masked. CLS + T fused tokens -> encoder -> head.
  All modalities must have the same T.
- `bottleneck`: MBT-style ("Attention Bottlenecks for Multimodal Fusion"). Each modality has its
  own encoder over [CLS_m, its tokens]; from layer `fusion_layer` on, `bottleneck_tokens` shared
  tokens are appended to every modality's sequence, and after each layer they are replaced by
  their mean over the modalities present in the clip. The head reads the mean of the present
  modalities' CLS tokens.
- `late`: per-modality encoders and per-modality heads; the logits are averaged over the
  modalities present in the clip.

In training, `modality_dropout` masks a whole modality of a clip at random (never all of a clip's
present modalities); every mode sees it through the masks. A clip with no modality present at
all gets finite logits (the CLS-only output in `concat`/`early`, the bias of the head in
`bottleneck`, zeros in `late`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.errors import ConfigError
from fer_jax.models.transformer import Dropout, TransformerEncoder

FUSION_MODES = ("concat", "early", "bottleneck", "late")


def drop_modalities(key, masks: Sequence[jax.Array], rate: float) -> list[jax.Array]:
    """Modality dropout: masks: list over modalities of bool[B, T] -> the same with whole modalities masked.

    Each modality present in a clip (any True frame) is dropped with probability `rate`; a clip
    that would lose all its present modalities keeps one of them, chosen uniformly at random.
    Modalities already absent stay absent; a clip with none present is returned unchanged.
    """
    b, m = masks[0].shape[0], len(masks)
    present = jnp.stack([mk.any(axis=1) for mk in masks], axis=1)  # [B, M]
    keep = jax.random.bernoulli(key, 1.0 - rate, (b, m)) & present
    # Fallback: the r-th present modality, r uniform in [0, number present).
    num_present = present.sum(axis=1)
    r = jax.random.randint(jax.random.fold_in(key, 1), (b,), 0, jnp.maximum(num_present, 1))
    rank = jnp.cumsum(present, axis=1) - 1
    fallback = present & (rank == r[:, None])
    keep = jnp.where(keep.any(axis=1, keepdims=True), keep, fallback)
    return [mk & keep[:, i : i + 1] for i, mk in enumerate(masks)]


def _masked_mean(values, present):
    """values: [B, M, ...], present: bool[B, M] -> mean over the present M (zeros where none) [B, ...]."""
    shape = present.shape + (1,) * (values.ndim - 2)
    weights = present.reshape(shape)
    total = jnp.where(weights, values, jnp.zeros((), values.dtype)).sum(axis=1)
    count = jnp.maximum(present.sum(axis=1), 1).reshape(present.shape[:1] + (1,) * (values.ndim - 2))
    return total / count.astype(values.dtype)


class FusionTransformer(nnx.Module):
    """inputs: {modality: array[B, T, ...]} (+ optional masks {modality: bool[B, T]}) -> logits float32[B, C].

    Parameters by mode (tokenizers, time_embed and modality_embed in all of them):
    `concat`/`early`: cls_token, encoder, head. `bottleneck`: cls_tokens [M, D], encoders
    {modality}, bottleneck [bottleneck_tokens, D], head. `late`: cls_tokens, encoders {modality},
    heads {modality}. Per-modality encoders each have `depth` blocks.
    """

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
        fusion: str = "concat",
        bottleneck_tokens: int = 4,
        fusion_layer: int = 0,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if not tokenizers:
            raise ValueError("the fusion model needs at least one modality")
        if fusion not in FUSION_MODES:
            raise ConfigError(f"config.model.fusion={fusion!r} is unknown; choose one of {FUSION_MODES}.")
        if fusion == "bottleneck":
            if bottleneck_tokens < 1:
                raise ConfigError(f"config.model.bottleneck_tokens={bottleneck_tokens}: need at least 1.")
            if not 0 <= fusion_layer <= depth:
                raise ConfigError(f"config.model.fusion_layer={fusion_layer}: expected 0..depth ({depth}); "
                                 f"layers from fusion_layer on exchange bottleneck tokens.")
        self.modalities = tuple(tokenizers)
        self.tokenizers = nnx.Dict(dict(tokenizers))
        self.fusion = fusion
        self.num_frames = num_frames
        init = nnx.initializers.normal(0.02)
        self.time_embed = nnx.Param(init(rngs.params(), (num_frames, width)))
        self.modality_embed = nnx.Param(init(rngs.params(), (len(self.modalities), width)))

        def encoder():
            return TransformerEncoder(width, depth, num_heads, mlp_dim, dropout=dropout,
                                      attention_dropout=attention_dropout, dtype=dtype, rngs=rngs)

        if fusion in ("concat", "early"):
            self.cls_token = nnx.Param(jnp.zeros((1, 1, width)))
            self.encoder = encoder()
        else:
            self.cls_tokens = nnx.Param(jnp.zeros((len(self.modalities), width)))
            self.encoders = nnx.Dict({name: encoder() for name in self.modalities})
        if fusion == "bottleneck":
            self.num_bottleneck_tokens = bottleneck_tokens
            self.fusion_layer = fusion_layer
            self.bottleneck = nnx.Param(init(rngs.params(), (bottleneck_tokens, width)))
        self.head_dropout = Dropout(head_dropout)
        if fusion == "late":
            self.heads = nnx.Dict({name: nnx.Linear(width, num_classes, dtype=dtype, rngs=rngs)
                                   for name in self.modalities})
        else:
            self.head = nnx.Linear(width, num_classes, dtype=dtype, rngs=rngs)
        self.modality_dropout = modality_dropout
        self.dtype = dtype

    def __call__(self, inputs, masks=None, *, train: bool = False, rngs: nnx.Rngs | None = None):
        """inputs: {modality: array[B, T, ...]}; masks: {modality: bool[B, T]} or None -> float32[B, C]."""
        tokens, token_masks = self._embed(inputs, dict(masks or {}), train=train)
        if train and self.modality_dropout > 0 and len(tokens) > 1:
            if rngs is None:
                raise ValueError("modality dropout in training needs `rngs` with a 'dropout' stream.")
            key = rngs.dropout()
            token_masks = drop_modalities(key, token_masks, self.modality_dropout)
        fuse = {"concat": self._concat, "early": self._early, "bottleneck": self._bottleneck,
                "late": self._late}[self.fusion]
        return fuse(tokens, token_masks, train=train, rngs=rngs)

    def _embed(self, inputs, masks, *, train):
        """Tokenizes every modality -> (tokens [B, T_m, D] with embeddings, masked ones zeroed; masks bool[B, T_m])."""
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"model expects modalities {self.modalities}; batch lacks {sorted(missing)}")
        # extra input entries (labels, ids) are ignored; extra mask entries are a caller's mistake.
        unknown = set(masks) - set(self.modalities)
        if unknown:
            raise KeyError(f"masks for {sorted(unknown)} given, but the model's modalities are {self.modalities}")
        tokens, token_masks = [], []
        for i, name in enumerate(self.modalities):
            x = self.tokenizers[name](inputs[name], train=train)
            b, t = x.shape[:2]
            if t > self.num_frames:
                raise ValueError(f"modality {name!r} has {t} frames but the model was built for at most "
                                 f"{self.num_frames}; rebuild it with the dataset's clip length.")
            x = x + self.time_embed[:t].astype(x.dtype) + self.modality_embed[i].astype(x.dtype)
            mask = masks.get(name)
            if mask is None:
                mask = jnp.ones((b, t), bool)
            else:
                mask = jnp.asarray(mask).astype(bool)
                if mask.shape != (b, t):
                    raise ValueError(f"masks[{name!r}] has shape {mask.shape}; expected (B, T) = {(b, t)} "
                                     f"to match the {name!r} input.")
                x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
            tokens.append(x)
            token_masks.append(mask)
        return tokens, token_masks

    def _cls(self, batch, dtype, index=None):
        """The CLS token broadcast to [B, 1, D] (the shared one, or modality `index`'s)."""
        token = self.cls_token[...] if index is None else self.cls_tokens[index][None, None]
        return jnp.broadcast_to(token.astype(dtype), (batch, 1, token.shape[-1]))

    def _classify(self, features, head, *, train, rngs):
        """features [B, D] -> head dropout -> dense -> float32 logits [B, C]."""
        features = self.head_dropout(features, deterministic=not train, rngs=rngs)
        return head(features).astype(jnp.float32)

    def _concat(self, tokens, masks, *, train, rngs):
        b = tokens[0].shape[0]
        x = jnp.concatenate([self._cls(b, tokens[0].dtype)] + tokens, axis=1)
        mask = jnp.concatenate([jnp.ones((b, 1), bool)] + masks, axis=1)
        x = self.encoder(x, mask, train=train, rngs=rngs)
        return self._classify(x[:, 0], self.head, train=train, rngs=rngs)

    def _early(self, tokens, masks, *, train, rngs):
        lengths = {name: x.shape[1] for name, x in zip(self.modalities, tokens)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"fusion='early' fuses frame t of every modality, but the modalities have different "
                             f"numbers of frames {lengths}; use the same clip length for all, or fusion='concat'.")
        present = jnp.stack(masks, axis=1)  # [B, M, T]
        stacked = jnp.stack(tokens, axis=1)  # [B, M, T, D]
        b, m, t, d = stacked.shape
        # Mean over the modalities present at each (clip, frame): fold frames into the batch axis.
        flat = stacked.transpose(0, 2, 1, 3).reshape(b * t, m, d)
        flat_present = present.transpose(0, 2, 1).reshape(b * t, m)
        fused = _masked_mean(flat, flat_present).reshape(b, t, d)
        frame_mask = present.any(axis=1)
        x = jnp.concatenate([self._cls(b, fused.dtype), fused], axis=1)
        mask = jnp.concatenate([jnp.ones((b, 1), bool), frame_mask], axis=1)
        x = self.encoder(x, mask, train=train, rngs=rngs)
        return self._classify(x[:, 0], self.head, train=train, rngs=rngs)

    def _modality_sequences(self, tokens, masks):
        """Per modality: ([CLS_m, tokens] [B, 1 + T_m, D], mask bool[B, 1 + T_m])."""
        b = tokens[0].shape[0]
        seqs = [jnp.concatenate([self._cls(b, x.dtype, i), x], axis=1) for i, x in enumerate(tokens)]
        seq_masks = [jnp.concatenate([jnp.ones((b, 1), bool), mk], axis=1) for mk in masks]
        return seqs, seq_masks

    def _bottleneck(self, tokens, masks, *, train, rngs):
        b, dtype = tokens[0].shape[0], tokens[0].dtype
        n = self.num_bottleneck_tokens
        present = jnp.stack([mk.any(axis=1) for mk in masks], axis=1)  # [B, M]
        seqs, seq_masks = self._modality_sequences(tokens, masks)
        encoders = [self.encoders[name] for name in self.modalities]
        shared = None
        for layer in range(len(encoders[0].blocks)):
            if layer == self.fusion_layer:
                shared = jnp.broadcast_to(self.bottleneck[...].astype(dtype), (b, n, self.bottleneck.shape[-1]))
            outs = []
            for i, enc in enumerate(encoders):
                block = enc.blocks[layer]
                if shared is None:
                    seqs[i] = block(seqs[i], seq_masks[i], train=train, rngs=rngs)
                    continue
                x = jnp.concatenate([seqs[i], shared], axis=1)
                mask = jnp.concatenate([seq_masks[i], jnp.ones((b, n), bool)], axis=1)
                x = block(x, mask, train=train, rngs=rngs)
                seqs[i], out = x[:, :-n], x[:, -n:]
                outs.append(out)
            if shared is not None:
                shared = _masked_mean(jnp.stack(outs, axis=1), present)
        cls = jnp.stack([enc.norm(x[:, 0]) for enc, x in zip(encoders, seqs)], axis=1)  # [B, M, D]
        return self._classify(_masked_mean(cls, present), self.head, train=train, rngs=rngs)

    def _late(self, tokens, masks, *, train, rngs):
        present = jnp.stack([mk.any(axis=1) for mk in masks], axis=1)  # [B, M]
        seqs, seq_masks = self._modality_sequences(tokens, masks)
        logits = []
        for name, x, mask in zip(self.modalities, seqs, seq_masks):
            x = self.encoders[name](x, mask, train=train, rngs=rngs)
            logits.append(self._classify(x[:, 0], self.heads[name], train=train, rngs=rngs))
        return _masked_mean(jnp.stack(logits, axis=1), present)
