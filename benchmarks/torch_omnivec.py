"""PyTorch eager reference of OmniVec pretraining (masked-token reconstruction across modalities).

The same network as `fer_jax.models.omnivec.OmniVecPretrainer` with the default tokenizers of
configs/omnivec.py (face: LayerNorm + Linear; pose: LayerNorm + Linear + GELU + Linear): time,
modality and mask-token parameters, the pre-LN trunk of benchmarks/torch_fusion.py, one linear
decoder per modality, and the loss (mean squared error against per-token standardised inputs,
over hidden tokens of real rows). Parameter names follow Flax's, so
`torch_fusion.load_flax_params` copies a Flax state in.

    inputs {modality: float32[B, T, F]}, masks {modality: bool[B, T]}, hidden {modality: bool[B, T]}
      -> (loss, {modality: loss})

`sample_hidden` draws the masking like `fer_jax.models.omnivec.sample_hidden` (same
distribution, torch's generator). Used by benchmarks/pretrain_step.py and
tests/test_benchmark_reference.py.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _torch_fusion():
    spec = importlib.util.spec_from_file_location("torch_fusion", Path(__file__).with_name("torch_fusion.py"))
    module = sys.modules.get("torch_fusion")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["torch_fusion"] = module
        spec.loader.exec_module(module)
    return module


tf = _torch_fusion()


class KeypointEncoder(nn.Module):
    """float[B, T, F] -> LayerNorm -> Linear -> GELU (tanh) -> Linear -> float[B, T, D]."""

    def __init__(self, in_features: int, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_features, eps=tf.LN_EPS)
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.norm(x)), approximate="tanh"))


class OmniVec(nn.Module):
    def __init__(self, tokenizers: Mapping[str, nn.Module], *, num_frames: int, width: int, depth: int,
                 num_heads: int, mlp_dim: int, sdpa: bool = True):
        super().__init__()
        self.modalities = tuple(tokenizers)
        self.tokenizers = nn.ModuleDict(dict(tokenizers))
        self.time_embed = nn.Parameter(torch.randn(num_frames, width) * 0.02)
        self.modality_embed = nn.Parameter(torch.randn(len(self.modalities), width) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        self.trunk = tf.TransformerEncoder(width, depth, num_heads, mlp_dim, dropout=0.0, attention_dropout=0.0,
                                           sdpa=sdpa)

    def encode(self, inputs, masks, hidden):
        """-> trunk outputs float[B, M, T, D]."""
        tokens, present = [], []
        for i, name in enumerate(self.modalities):
            x = self.tokenizers[name](inputs[name])
            b, t = x.shape[:2]
            x = torch.where(hidden[name][..., None], self.mask_token, x)
            x = x + self.time_embed[:t] + self.modality_embed[i]
            mask = masks[name]
            tokens.append(torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype)))
            present.append(mask)
        b, t, d = tokens[0].shape
        seq = torch.stack(tokens, 1).reshape(b, len(tokens) * t, d)
        out = self.trunk(seq, torch.stack(present, 1).reshape(b, -1))
        return out.reshape(b, len(tokens), t, d)


class OmniVecPretrainer(nn.Module):
    def __init__(self, encoder: OmniVec, input_dims: Mapping[str, int], width: int):
        super().__init__()
        self.encoder = encoder
        self.decoders = nn.ModuleDict({m: nn.Linear(width, int(input_dims[m])) for m in encoder.modalities})

    def forward(self, inputs, masks, hidden, row_mask):
        out = self.encoder.encode(inputs, masks, hidden)
        total = count = 0.0
        per = {}
        for i, name in enumerate(self.encoder.modalities):
            pred = self.decoders[name](out[:, i])
            x = inputs[name].reshape(pred.shape[:2] + (-1,))
            target = (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)
            err = ((pred - target) ** 2).mean(-1)
            weight = hidden[name].to(err.dtype) * row_mask[:, None].to(err.dtype)
            s, c = (err * weight).sum(), weight.sum()
            per[name] = s / c.clamp_min(1.0)
            total, count = total + s, count + c
        return total / count.clamp_min(1.0), per


def from_config(config, input_dims: Mapping[str, int], num_frames: int, *, sdpa: bool = True) -> OmniVecPretrainer:
    """The reference for a configs/omnivec.py config whose modalities use `linear` or `mlp` tokenizers."""
    m = config.model
    tokenizers = {}
    for name, spec in config.modalities.items():
        f = int(input_dims[name])
        if spec.tokenizer == "linear":
            tokenizers[name] = tf.FeatureProjection(f, m.width)
        elif spec.tokenizer == "mlp":
            tokenizers[name] = KeypointEncoder(f, m.width, int(spec.get("hidden", m.width)))
        else:
            raise ValueError(f"the reference implements linear and mlp tokenizers, not {spec.tokenizer!r}")
    encoder = OmniVec(tokenizers, num_frames=num_frames, width=m.width, depth=m.depth, num_heads=m.num_heads,
                      mlp_dim=m.mlp_dim, sdpa=sdpa)
    return OmniVecPretrainer(encoder, input_dims, m.width)


def sample_hidden(generator: torch.Generator, present: torch.Tensor, *, mask_ratio: float,
                  modality_mask_prob: float) -> torch.Tensor:
    """present bool[B, M, T] -> hidden bool[B, M, T], drawn as fer_jax.models.omnivec.sample_hidden."""
    b, m, _ = present.shape
    hidden = (torch.rand(present.shape, generator=generator) < mask_ratio) & present
    if m > 1 and modality_mask_prob > 0:
        has = present.any(2)
        num = has.sum(1)
        pick = (torch.rand(b, generator=generator) * num.clamp_min(1)).long()
        rank = has.cumsum(1) - 1
        chosen = has & (rank == pick[:, None]) & (num[:, None] > 1)
        whole = (torch.rand(b, generator=generator) < modality_mask_prob)[:, None] & chosen
        hidden = hidden | (whole[..., None] & present)
    return hidden


def train_step(model, optimizer, scheduler, batch, hidden, *, grad_clip_norm: float | None) -> dict:
    """One AdamW step on batch {modality: float[B, T, F], 'mask/<m>': bool[B, T], 'mask': bool[B]}."""
    modalities = model.encoder.modalities
    masks = {m: batch.get(f"mask/{m}", torch.ones(batch[m].shape[:2], dtype=torch.bool)) for m in modalities}
    loss, _ = model({m: batch[m] for m in modalities}, masks, hidden, batch["mask"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    scheduler.step()
    return {"loss": loss.detach()}
