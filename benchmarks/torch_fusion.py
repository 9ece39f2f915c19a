"""PyTorch eager reference of the fusion transformer on cached features, and its AdamW training step.

The same architecture as `fer_jax.models.fusion.FusionTransformer` with `linear` tokenizers:
per modality LayerNorm + Linear (float[B, T, F] -> float[B, T, D]), plus time and modality
embeddings; a CLS token; pre-LN encoder blocks (x + Drop(Attn(LN(x))); x + Drop(fc2(Drop(GELU_tanh
(fc1(LN(x))))))); a final LayerNorm; head dropout and a linear head on the CLS token. LayerNorm
epsilon 1e-6 as in Flax. Modules and parameters carry the Flax names, so `load_flax_params` maps
`encoder/blocks/0/attn/qkv/kernel` to `encoder.blocks.0.attn.qkv.weight` (transposed).

    inputs: {modality: float32[B, T, F]}, masks: optional {modality: bool[B, T]} -> logits float32[B, C]

`make_optimizer` and `train_step` mirror `fer_jax.train`: clip by global norm, AdamW with weight
decay on matrices only, warmup + cosine learning-rate schedule, label-smoothed cross-entropy.
Used by benchmarks/train_step.py and tests/test_benchmark_reference.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6


class FeatureProjection(nn.Module):
    """float[B, T, F] -> LayerNorm -> Linear -> float[B, T, D]."""

    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_features, eps=LN_EPS)
        self.proj = nn.Linear(in_features, width)

    def forward(self, x):
        return self.proj(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention; the qkv output is laid out [q heads | k heads | v heads] as in Flax."""

    def __init__(self, width: int, num_heads: int, *, dropout: float, sdpa: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.attn_dropout = dropout
        self.sdpa = sdpa

    def forward(self, x, mask):
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, N, dh] each
        keep = None if mask is None else mask[:, None, None, :]
        p = self.attn_dropout if self.training else 0.0
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
        else:
            logits = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5
            if keep is not None:
                logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
            y = F.dropout(logits.softmax(-1), p, self.training) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, width, num_heads, mlp_dim, *, dropout, attention_dropout, sdpa):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = SelfAttention(width, num_heads, dropout=attention_dropout, sdpa=sdpa)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask):
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        y = self.fc2(self.dropout(F.gelu(self.fc1(self.norm2(x)), approximate="tanh")))
        return x + self.dropout(y)


class TransformerEncoder(nn.Module):
    def __init__(self, width, depth, num_heads, mlp_dim, *, dropout, attention_dropout, sdpa):
        super().__init__()
        self.blocks = nn.ModuleList(
            [EncoderBlock(width, num_heads, mlp_dim, dropout=dropout, attention_dropout=attention_dropout, sdpa=sdpa)
             for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=LN_EPS)

    def forward(self, x, mask):
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class FusionTransformer(nn.Module):
    """{modality: float[B, T, F]} (+ masks {modality: bool[B, T]}) -> logits float[B, num_classes]."""

    def __init__(self, feature_dims: Mapping[str, int], *, num_frames: int, width: int, depth: int, num_heads: int,
                 mlp_dim: int, num_classes: int = 7, dropout: float = 0.1, attention_dropout: float = 0.0,
                 head_dropout: float = 0.0, sdpa: bool = True):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"model width {width} is not divisible by num_heads {num_heads}")
        self.modalities = tuple(feature_dims)
        self.tokenizers = nn.ModuleDict({m: FeatureProjection(int(f), width) for m, f in feature_dims.items()})
        self.time_embed = nn.Parameter(torch.randn(num_frames, width) * 0.02)
        self.modality_embed = nn.Parameter(torch.randn(len(self.modalities), width) * 0.02)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.encoder = TransformerEncoder(width, depth, num_heads, mlp_dim, dropout=dropout,
                                          attention_dropout=attention_dropout, sdpa=sdpa)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None):
        masks = dict(masks or {})
        tokens, token_masks = [], []
        for i, name in enumerate(self.modalities):
            x = self.tokenizers[name](inputs[name])
            b, t = x.shape[:2]
            tokens.append(x + self.time_embed[:t] + self.modality_embed[i])
            token_masks.append(masks.get(name))
        b = tokens[0].shape[0]
        x = torch.cat([self.cls_token.expand(b, 1, -1)] + tokens, dim=1)
        mask = None
        if any(m is not None for m in token_masks):
            ones = lambda *shape: torch.ones(shape, dtype=torch.bool, device=x.device)  # noqa: E731
            parts = [ones(b, 1)] + [ones(*t.shape[:2]) if m is None else m for t, m in zip(tokens, token_masks)]
            mask = torch.cat(parts, dim=1)
        x = self.encoder(x, mask)
        return self.head(self.head_dropout(x[:, 0]))


def from_config(config, feature_dims: Mapping[str, int], num_frames: int, *, sdpa: bool = True) -> FusionTransformer:
    """The reference model for a fer_jax config (config.model, config.num_classes); modalities in config order."""
    m = config.model
    return FusionTransformer(
        {name: int(feature_dims[name]) for name in config.modalities}, num_frames=num_frames, width=m.width,
        depth=m.depth, num_heads=m.num_heads, mlp_dim=m.mlp_dim, num_classes=config.get("num_classes", 7),
        dropout=m.dropout, attention_dropout=m.get("attention_dropout", 0.0), head_dropout=m.get("head_dropout", 0.0),
        sdpa=sdpa)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torch_name(flax_path: str) -> tuple[str, bool]:
    """'encoder/blocks/0/fc1/kernel' -> ('encoder.blocks.0.fc1.weight', transpose=True)."""
    *parents, leaf = flax_path.split("/")
    name = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(parents + [name]), leaf == "kernel"


def load_flax_params(model: FusionTransformer, flat_params: Mapping[str, np.ndarray]) -> None:
    """Copies Flax parameters {'a/b/kernel': array} into `model`; every parameter must be matched exactly once."""
    own = dict(model.named_parameters())
    seen = set()
    for path, value in flat_params.items():
        name, transpose = torch_name(path)
        if name not in own:
            raise KeyError(f"Flax parameter {path!r} has no PyTorch counterpart {name!r}")
        value = np.array(np.asarray(value, np.float32).T if transpose else value, np.float32)
        if tuple(own[name].shape) != value.shape:
            raise ValueError(f"{path}: Flax shape {value.shape} (as {name}) vs PyTorch {tuple(own[name].shape)}")
        with torch.no_grad():
            own[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
        seen.add(name)
    if set(own) - seen:
        raise KeyError(f"PyTorch parameters without a Flax value: {sorted(set(own) - seen)}")


def warmup_cosine(step: int, *, peak: float, warmup: int, total: int, end_factor: float) -> float:
    """optax.warmup_cosine_decay_schedule(0, peak, warmup, total, peak * end_factor) at `step`."""
    if warmup > 0 and step < warmup:
        return peak * step / warmup
    decay = max(total - warmup, 1)
    frac = min(step - warmup, decay) / decay
    alpha = end_factor
    return peak * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)


def make_optimizer(model: nn.Module, config, **adamw_kwargs):
    """(AdamW, LambdaLR) as fer_jax.train.make_optimizer builds for config.optimizer (adamw only)."""
    o = config.optimizer
    if o.name != "adamw":
        raise ValueError(f"the PyTorch reference implements adamw only, not {o.name!r}")
    total = int(config.num_train_steps)
    warmup = min(int(o.warmup_steps), max(total - 1, 0))
    decay = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": plain, "weight_decay": 0.0}],
        lr=o.lr, betas=(o.get("b1", 0.9), o.get("b2", 0.999)), eps=1e-8, **adamw_kwargs)
    schedule = lambda step: warmup_cosine(step, peak=1.0, warmup=warmup, total=max(total, warmup + 1),  # noqa: E731
                                          end_factor=o.get("end_lr_factor", 0.01))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def train_step(model, optimizer, scheduler, batch: Mapping[str, torch.Tensor], *, label_smoothing: float,
               grad_clip_norm: float | None) -> dict:
    """One training step on batch {modality: float[B, T, F], 'label': int64[B], 'mask': bool[B]}."""
    model.train()
    logits = model({m: batch[m] for m in model.modalities})
    per_clip = F.cross_entropy(logits, batch["label"], label_smoothing=label_smoothing, reduction="none")
    weights = batch["mask"].to(per_clip.dtype)
    loss = (per_clip * weights).sum() / weights.sum().clamp_min(1e-9)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip_norm:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    optimizer.step()
    scheduler.step()
    return {"loss": loss.detach(), "grad_norm": grad_norm}
