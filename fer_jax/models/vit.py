"""CLIP (ViT-B/16, ViT-L/14) and SigLIP (ViT-B/16) image towers in Flax NNX, as per-frame feature generators.

Each tower owns its preprocessing and maps a clip of frames to one feature vector per frame:

    frames uint8[B, T, H, W, 3] (RGB, any H, W)  --__call__-->  float32[B, T, F]
    images float32[N, 224, 224, 3] (preprocessed) --encode_images-->  float32[N, F]

  ClipViT     open_clip's `VisionTransformer` (OpenAI layout): patch embedding without bias,
              class token, learned positions, ln_pre, pre-LN blocks with QuickGELU (OpenAI
              weights) or exact GELU, ln_post on the class token, then `@ proj`. Features are
              what open_clip's `model.encode_image(x)` returns (not normalised): F = 512 (B/16),
              768 (L/14). Preprocessing as open_clip's OpenAI transform: resize the shorter side
              to 224 (bicubic, antialiased), centre crop 224x224, x / 255, CLIP mean/std.
  SiglipViT   transformers' `SiglipVisionModel`: patch embedding with bias, learned positions
              (no class token), pre-LN blocks with tanh-GELU, post_layernorm, then the
              attention-pooling head (a learned probe attends over all tokens, + LN/MLP
              residual). Features = `pooler_output`, F = 768. Preprocessing as
              `SiglipImageProcessor`: resize to 224x224 (bicubic, antialiased), x / 255, mean =
              std = 0.5.

Resizing: `jax.image.resize(..., antialias=True)` with the Keys cubic (a = -0.5), the same
kernel PIL and torchvision's antialiased bicubic use; values are rounded to uint8 levels as
the reference's uint8 images are. Frames already at 224 px skip the resize (exact).

Linear layers (patch embedding included: non-overlapping patches are a reshape) run as 2-D
matmuls over flattened tokens. `dtype` is the computation dtype (None = float32, or
jnp.bfloat16 on accelerators); parameters stay float32, softmax and LayerNorm statistics run
in float32 and features come back as float32. Weights: `fer_jax.weights.vit_loaders`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fer_jax.models.transformer import dense

IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

_embed_init = nnx.initializers.normal(0.02)


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT image tower; `name` is how errors and reports call it."""

    name: str
    width: int
    depth: int
    heads: int
    patch: int
    mlp_dim: int
    embed_dim: int | None  # CLIP's projection width; None: no projection (SigLIP)
    image_size: int = IMAGE_SIZE

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


CLIP_B16 = ViTConfig("clip_vit_b16", width=768, depth=12, heads=12, patch=16, mlp_dim=3072, embed_dim=512)
CLIP_L14 = ViTConfig("clip_vit_l14", width=1024, depth=24, heads=16, patch=14, mlp_dim=4096, embed_dim=768)
SIGLIP_B16 = ViTConfig("siglip_vit_b16", width=768, depth=12, heads=12, patch=16, mlp_dim=3072, embed_dim=None)


# -- preprocessing ----------------------------------------------------------------------------


def resize_uint8(frames: Any, height: int, width: int, *, method: str = "bicubic") -> jax.Array:
    """Antialiased resize with uint8 rounding: uint8[..., H, W, 3] -> float32[..., height, width, 3] in [0, 255].

    Same size: the frames unchanged (as float32). Otherwise `jax.image.resize` (antialias=True)
    along W, then along H, each pass rounded and clipped to [0, 255] as PIL does for uint8 images.
    """
    frames = jnp.asarray(frames)
    h, w = frames.shape[-3:-1]
    x = frames.astype(jnp.float32)
    if (h, w) == (height, width):
        return x
    # Two passes, horizontal then vertical, each rounded to uint8 levels: PIL's order and rounding.
    if w != width:
        x = jax.image.resize(x, (*x.shape[:-2], width, x.shape[-1]), method=method, antialias=True)
        x = jnp.clip(jnp.round(x), 0.0, 255.0)
    if h != height:
        x = jax.image.resize(x, (*x.shape[:-3], height, *x.shape[-2:]), method=method, antialias=True)
        x = jnp.clip(jnp.round(x), 0.0, 255.0)
    return x


def _check_frames(frames: Any) -> None:
    if frames.dtype != jnp.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames [..., H, W, 3], got {frames.dtype}{list(frames.shape)}")


def _normalize(x: jax.Array, mean, std) -> jax.Array:
    return (x / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def preprocess_clip(frames: Any, size: int = IMAGE_SIZE, *, method: str = "bicubic") -> jax.Array:
    """open_clip's OpenAI eval transform: uint8[..., H, W, 3] -> float32[..., size, size, 3].

    Resize so the shorter side is `size` (the longer one int(size * long / short), as
    torchvision's Resize(int)), centre crop size x size (offsets rounded as torchvision's
    CenterCrop), x / 255, CLIP mean/std.
    """
    frames = jnp.asarray(frames)
    _check_frames(frames)
    h, w = frames.shape[-3:-1]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    x = resize_uint8(frames, new_h, new_w, method=method)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = x[..., top : top + size, left : left + size, :]
    return _normalize(x, CLIP_MEAN, CLIP_STD)


def preprocess_siglip(frames: Any, size: int = IMAGE_SIZE, *, method: str = "bicubic") -> jax.Array:
    """SiglipImageProcessor: uint8[..., H, W, 3] -> float32[..., size, size, 3]; resize to size x size, (x/255 - .5)/.5."""
    frames = jnp.asarray(frames)
    _check_frames(frames)
    return _normalize(resize_uint8(frames, size, size, method=method), SIGLIP_MEAN, SIGLIP_STD)


# -- building blocks --------------------------------------------------------------------------


def quick_gelu_activation(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


def gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def _linear(n_in: int, n_out: int, *, use_bias: bool = True, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=use_bias, dtype=dtype, kernel_init=_embed_init, rngs=rngs)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """q [N, Lq, H, d], k/v [N, Lk, H, d] -> [N, Lq, H * d]; softmax in float32."""
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) * (q.shape[-1] ** -0.5)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("nhqk,nkhd->nqhd", weights, v)
    return out.reshape(*out.shape[:2], -1)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with packed q/k/v: x [N, L, D] -> [N, L, D]."""

    def __init__(self, width: int, heads: int, *, dtype: Any, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = _linear(width, 3 * width, dtype=dtype, rngs=rngs)
        self.out = _linear(width, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, length, d = x.shape
        qkv = dense(self.qkv, x).reshape(n, length, 3, self.heads, d // self.heads)
        return dense(self.out, _attend(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]))


class Mlp(nnx.Module):
    """fc1 -> activation -> fc2: [N, L, D] -> [N, L, D]."""

    def __init__(self, width: int, hidden: int, act: Callable, *, dtype: Any, rngs: nnx.Rngs):
        self.act = act
        self.fc1 = _linear(width, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = _linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return dense(self.fc2, self.act(dense(self.fc1, x)))


class EncoderBlock(nnx.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then + mlp(norm2(x)). [N, L, D] -> [N, L, D]."""

    def __init__(self, cfg: ViTConfig, act: Callable, eps: float, *, dtype: Any, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(cfg.width, epsilon=eps, dtype=dtype, rngs=rngs)
        self.attn = SelfAttention(cfg.width, cfg.heads, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(cfg.width, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim, act, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _patchify(x: jax.Array, patch: int) -> jax.Array:
    """[N, H, W, C] -> [N * (H/p) * (W/p), p * p * C] (row-major patches, (ph, pw, c) inside)."""
    n, h, w, c = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = x.reshape(n, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, patch * patch * c)


class _Tower(nnx.Module):
    """Shared parts: patch embedding, positions, encoder blocks, and the frames -> features wrapper."""

    cfg: ViTConfig

    def _init_trunk(self, cfg: ViTConfig, act: Callable, eps: float, *, patch_bias: bool, dtype: Any,
                    rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.feature_dim = cfg.embed_dim or cfg.width
        self.dtype = dtype
        self.patch_embed = _linear(cfg.patch * cfg.patch * 3, cfg.width, use_bias=patch_bias, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([EncoderBlock(cfg, act, eps, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])

    def _patch_tokens(self, images: jax.Array) -> jax.Array:
        """images float32[N, S, S, 3] -> tokens [N, (S/p)^2, width]."""
        if images.ndim != 4 or images.shape[1:] != (self.cfg.image_size, self.cfg.image_size, 3):
            raise ValueError(
                f"{self.cfg.name} expects preprocessed images [N, {self.cfg.image_size}, {self.cfg.image_size}, 3], "
                f"got {list(images.shape)}"
            )
        n = images.shape[0]
        tokens = self.patch_embed(_patchify(images.astype(self.dtype or jnp.float32), self.cfg.patch))
        return tokens.reshape(n, self.cfg.grid * self.cfg.grid, self.cfg.width)

    def _encode(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x

    def preprocess(self, frames: Any) -> jax.Array:
        raise NotImplementedError

    def encode_images(self, images: jax.Array) -> jax.Array:
        raise NotImplementedError

    def __call__(self, frames: Any, *, train: bool = False) -> jax.Array:
        """frames uint8[B, T, H, W, 3] -> float32[B, T, F]. `train` is accepted for the generator
        interface; the towers have no dropout or batch statistics, so it changes nothing."""
        del train
        frames = jnp.asarray(frames)
        if frames.ndim != 5:
            raise ValueError(f"{self.cfg.name} expects frames [B, T, H, W, 3], got shape {list(frames.shape)}")
        b, t = frames.shape[:2]
        images = self.preprocess(frames.reshape((b * t,) + frames.shape[2:]))
        return self.encode_images(images).reshape(b, t, -1)


class ClipViT(_Tower):
    """open_clip `VisionTransformer` (OpenAI CLIP layout).

    encode_images(images float32[N, 224, 224, 3], CLIP-normalised) -> float32[N, embed_dim]
    __call__(frames uint8[B, T, H, W, 3]) -> float32[B, T, embed_dim]
    quick_gelu=True for the OpenAI weights (open_clip's `*-quickgelu` / pretrained='openai').
    """

    def __init__(self, cfg: ViTConfig = CLIP_B16, *, quick_gelu: bool = True, dtype: Any = None,
                 rngs: nnx.Rngs):
        if cfg.embed_dim is None:
            raise ValueError(f"a CLIP tower needs a projection width (embed_dim); {cfg.name} has none")
        self.quick_gelu = quick_gelu
        self._init_trunk(cfg, quick_gelu_activation if quick_gelu else gelu_exact, 1e-5, patch_bias=False, dtype=dtype,
                         rngs=rngs)
        self.class_embedding = nnx.Param(_embed_init(rngs.params(), (cfg.width,), jnp.float32))
        self.positional_embedding = nnx.Param(
            _embed_init(rngs.params(), (cfg.grid * cfg.grid + 1, cfg.width), jnp.float32)
        )
        self.ln_pre = nnx.LayerNorm(cfg.width, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.ln_post = nnx.LayerNorm(cfg.width, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.proj = nnx.Param(_embed_init(rngs.params(), (cfg.width, cfg.embed_dim), jnp.float32))

    def preprocess(self, frames: Any) -> jax.Array:
        """uint8[..., H, W, 3] -> float32[..., 224, 224, 3] (open_clip's OpenAI transform)."""
        return preprocess_clip(frames, self.cfg.image_size)

    def encode_images(self, images: jax.Array) -> jax.Array:
        """images float32[N, 224, 224, 3] -> float32[N, embed_dim], = open_clip `encode_image`."""
        tokens = self._patch_tokens(images)
        dtype = tokens.dtype
        cls = jnp.broadcast_to(self.class_embedding.get_value().astype(dtype), (tokens.shape[0], 1, self.cfg.width))
        x = jnp.concatenate([cls, tokens], axis=1) + self.positional_embedding.get_value().astype(dtype)
        x = self._encode(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0])
        out = pooled @ self.proj.get_value().astype(dtype)
        return out.astype(jnp.float32)



class AttentionPoolHead(nnx.Module):
    """SigLIP's `head`: a learned probe attends over the tokens, then x + mlp(layernorm(x)).

    tokens [N, L, D] -> [N, D] (transformers' `pooler_output`).
    """

    def __init__(self, cfg: ViTConfig, eps: float, *, dtype: Any, rngs: nnx.Rngs):
        self.heads = cfg.heads
        self.probe = nnx.Param(_embed_init(rngs.params(), (cfg.width,), jnp.float32))
        self.q = _linear(cfg.width, cfg.width, dtype=dtype, rngs=rngs)
        self.kv = _linear(cfg.width, 2 * cfg.width, dtype=dtype, rngs=rngs)
        self.out = _linear(cfg.width, cfg.width, dtype=dtype, rngs=rngs)
        self.layernorm = nnx.LayerNorm(cfg.width, epsilon=eps, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim, gelu_tanh, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, length, d = x.shape
        hd = d // self.heads
        q = self.q(self.probe.get_value()[None].astype(x.dtype)).reshape(1, 1, self.heads, hd)
        kv = dense(self.kv, x).reshape(n, length, 2, self.heads, hd)
        y = self.out(_attend(jnp.broadcast_to(q, (n, 1, self.heads, hd)), kv[:, :, 0], kv[:, :, 1])[:, 0])
        return y + self.mlp(self.layernorm(y))


class SiglipViT(_Tower):
    """transformers `SiglipVisionModel` with its attention-pooling head.

    encode_images(images float32[N, 224, 224, 3], (x/255 - .5)/.5) -> float32[N, 768] (pooler_output)
    __call__(frames uint8[B, T, H, W, 3]) -> float32[B, T, 768]
    """

    def __init__(self, cfg: ViTConfig = SIGLIP_B16, *, dtype: Any = None, rngs: nnx.Rngs):
        if cfg.embed_dim is not None:
            raise ValueError(f"a SigLIP tower has no projection; {cfg.name} sets embed_dim={cfg.embed_dim}")
        self._init_trunk(cfg, gelu_tanh, 1e-6, patch_bias=True, dtype=dtype, rngs=rngs)
        self.position_embedding = nnx.Param(_embed_init(rngs.params(), (cfg.grid * cfg.grid, cfg.width), jnp.float32))
        self.post_layernorm = nnx.LayerNorm(cfg.width, epsilon=1e-6, dtype=dtype, rngs=rngs)
        self.head = AttentionPoolHead(cfg, 1e-6, dtype=dtype, rngs=rngs)

    def preprocess(self, frames: Any) -> jax.Array:
        """uint8[..., H, W, 3] -> float32[..., 224, 224, 3] (SiglipImageProcessor)."""
        return preprocess_siglip(frames, self.cfg.image_size)

    def encode_images(self, images: jax.Array) -> jax.Array:
        """images float32[N, 224, 224, 3] -> float32[N, 768], = SiglipVisionModel pooler_output."""
        tokens = self._patch_tokens(images)
        x = tokens + self.position_embedding.get_value().astype(tokens.dtype)
        x = self.post_layernorm(self._encode(x))
        return self.head(x).astype(jnp.float32)


# -- the generators by name ---------------------------------------------------------------------


def clip_vit_b16(*, rngs: nnx.Rngs, dtype: Any = None, quick_gelu: bool = True) -> ClipViT:
    """OpenAI CLIP ViT-B/16 image tower (F = 512)."""
    return ClipViT(CLIP_B16, quick_gelu=quick_gelu, dtype=dtype, rngs=rngs)


def clip_vit_l14(*, rngs: nnx.Rngs, dtype: Any = None, quick_gelu: bool = True) -> ClipViT:
    """OpenAI CLIP ViT-L/14 image tower (F = 768)."""
    return ClipViT(CLIP_L14, quick_gelu=quick_gelu, dtype=dtype, rngs=rngs)


def siglip_vit_b16(*, rngs: nnx.Rngs, dtype: Any = None) -> SiglipViT:
    """SigLIP ViT-B/16 (224 px, WebLI) vision tower with its pooling head (F = 768)."""
    return SiglipViT(SIGLIP_B16, dtype=dtype, rngs=rngs)
