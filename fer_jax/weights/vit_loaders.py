"""Load open_clip CLIP and transformers SigLIP vision weights into fer_jax's ViT towers, in place.

    report = load_openclip(clip_vit_b16(rngs=nnx.Rngs(0)), "~/w/open_clip_model.safetensors")
    report = load_siglip(siglip_vit_b16(rngs=nnx.Rngs(0)), "~/w/siglip-base-patch16-224")  # folder or file
    print(report)

Files:
  load_openclip  an open_clip state dict: `.safetensors` (read with safetensors.numpy, no torch)
                 or a `torch.save` file (.pt/.pth/.bin; torch is imported only then). Keys
                 `visual.*` (a whole CLIP model: every other key is the text tower, reported
                 as unused) or the same keys without the `visual.` prefix (the image tower alone).
  load_siglip    a transformers `save_pretrained` folder (its model.safetensors) or that file.
                 Keys `vision_model.*` (a whole SiglipModel, as google/siglip-base-patch16-224
                 publishes it: `text_model.*`, `logit_scale`, `logit_bias` are reported as
                 unused) or without the prefix (SiglipVisionModel.save_pretrained).

Conversions: conv patch weight [D, 3, p, p] -> kernel [p*p*3, D] ((ph, pw, c) order, as the
towers cut patches); linear weight [out, in] -> kernel [in, out]; LayerNorm weight -> scale;
SigLIP's separate q/k/v projections -> one packed qkv kernel; the pooling head's packed
`in_proj` -> its q and kv kernels.

A file of another architecture (other width, depth, patch size or projection, a SigLIP file
given to load_openclip or the reverse, a ResNet) is refused with a ValueError naming the file
and what it holds, before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from flax import nnx
from safetensors import SafetensorError
from safetensors.numpy import load_file

from fer_jax.models.vit import CLIP_B16, CLIP_L14, SIGLIP_B16, ClipViT, SiglipViT, ViTConfig
from fer_jax.weights import torch_file
from fer_jax.weights.report import SHOW as _SHOW, Entry, LoadReport as _BaseReport, apply_entries
from fer_jax.weights.report import to_numpy as _to_numpy

_KNOWN = {(c.width, c.depth, c.patch, c.embed_dim): c.name for c in (CLIP_B16, CLIP_L14, SIGLIP_B16)}


@dataclasses.dataclass
class ViTLoadReport(_BaseReport):
    """What a ViT load did. Key names are the file's, without the `visual.` / `vision_model.` prefix.

    `unused`: the other tower (text) and scalars of a whole CLIP/SigLIP file.
    """

    unused_label = "unused (other tower)"


# -- reading files ----------------------------------------------------------------------------



def _resolve_file(path: str, folder_files: tuple[str, ...]) -> str:
    if os.path.isdir(path):
        for name in folder_files:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        found = sorted(os.listdir(path))[:10]
        raise FileNotFoundError(
            f"{path} is a folder without {' or '.join(folder_files)} (it holds: {', '.join(found) or 'nothing'}); "
            "pass the weights file itself or a transformers save_pretrained folder"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    return path


def read_state_dict(path: str | os.PathLike, folder_files: tuple[str, ...] = ("model.safetensors",)) -> tuple[str, dict[str, np.ndarray]]:
    """(file path, {key: numpy array}) from a .safetensors file, a torch.save file, or a folder holding one."""
    path = _resolve_file(os.path.expanduser(os.fspath(path)), folder_files)
    if path.endswith(".safetensors"):
        try:
            return path, dict(load_file(path))
        except (SafetensorError, TypeError, ValueError) as e:
            raise ValueError(f"{path} could not be read as a safetensors file ({type(e).__name__}: {e})") from e
    raw = torch_file.load(path, hint="; OpenAI's original CLIP .pt files are TorchScript archives: use the "
                                     "open_clip safetensors copy (fer_jax.weights.hub) instead")
    if isinstance(raw, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(raw.get(wrapper), Mapping):
                raw = raw[wrapper]
                break
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a state dict (a mapping of name -> tensor)")
    state = {str(k): _to_numpy(v) for k, v in raw.items() if hasattr(v, "shape")}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return path, state


def _split_prefix(state: dict[str, np.ndarray], prefix: str, others: Callable[[str], bool]) -> tuple[dict, list[str]]:
    """Keys under `prefix` (stripped) -> the tower's entries; when there are none, every key is the tower's
    except those `others` claims. Returns (tower entries, unused keys)."""
    if any(k.startswith(prefix) for k in state):
        tower = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        return tower, [k for k in state if not k.startswith(prefix)]
    return {k: v for k, v in state.items() if not others(k)}, [k for k in state if others(k)]


def _count(state: Mapping[str, Any], pattern: str) -> int:
    idx = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(idx) + 1 if idx else 0


def _not_a_vit(source: str, state: Mapping[str, Any], wanted: str, use_instead: str) -> ValueError:
    if any(re.match(r"(visual\.)?layer\d\.\d+\.", k) for k in state):
        what = "a ResNet (torchvision or open_clip ModifiedResNet keys layer1.0.conv1 ...)"
    elif any(k.startswith(("embeddings.patch_embedding", "vision_model.embeddings")) for k in state):
        what = "a transformers SigLIP/CLIP vision model (embeddings.patch_embedding ...)"
    elif any(k.startswith(("visual.conv1", "conv1.weight")) for k in state) and any("resblocks" in k for k in state):
        what = "an open_clip ViT (conv1, transformer.resblocks ...)"
    else:
        what = f"no {wanted} (first keys: {', '.join(list(state)[:_SHOW]) or 'none'})"
    return ValueError(f"{source} holds {what}, not {wanted}; {use_instead}")


def _arch_name(width: int, depth: int, patch: int, embed: int | None) -> str:
    known = _KNOWN.get((width, depth, patch, embed))
    shape = f"width {width}, {depth} layers, patch {patch}" + (f", projection {embed}" if embed else "")
    return f"{known} ({shape})" if known else shape


def _cfg_name(cfg: ViTConfig) -> str:
    return _arch_name(cfg.width, cfg.depth, cfg.patch, cfg.embed_dim)


# -- entries: (model variable, file keys, conversion) -----------------------------------------



def _one(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[list[np.ndarray]], np.ndarray]:
    return lambda arrays: fn(arrays[0])


_AS_IS = _one(lambda a: a)
_T = _one(lambda a: a.T)


def _patch_kernel(a: np.ndarray) -> np.ndarray:
    if a.ndim != 4:
        return a
    return a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0])


def _linear(name: str, file_prefix: str, layer: nnx.Linear) -> Iterator[Entry]:
    yield f"{name}.kernel", layer.kernel, (f"{file_prefix}.weight",), _T
    if layer.bias is not None:
        yield f"{name}.bias", layer.bias, (f"{file_prefix}.bias",), _AS_IS


def _norm(name: str, file_prefix: str, ln: nnx.LayerNorm) -> Iterator[Entry]:
    yield f"{name}.scale", ln.scale, (f"{file_prefix}.weight",), _AS_IS
    yield f"{name}.bias", ln.bias, (f"{file_prefix}.bias",), _AS_IS


def _clip_entries(m: ClipViT) -> Iterator[Entry]:
    yield "patch_embed.kernel", m.patch_embed.kernel, ("conv1.weight",), _one(_patch_kernel)
    yield "class_embedding", m.class_embedding, ("class_embedding",), _AS_IS
    yield "positional_embedding", m.positional_embedding, ("positional_embedding",), _AS_IS
    yield from _norm("ln_pre", "ln_pre", m.ln_pre)
    for i, b in enumerate(m.blocks):
        f, n = f"transformer.resblocks.{i}", f"blocks.{i}"
        yield from _norm(f"{n}.norm1", f"{f}.ln_1", b.norm1)
        yield f"{n}.attn.qkv.kernel", b.attn.qkv.kernel, (f"{f}.attn.in_proj_weight",), _T
        yield f"{n}.attn.qkv.bias", b.attn.qkv.bias, (f"{f}.attn.in_proj_bias",), _AS_IS
        yield from _linear(f"{n}.attn.out", f"{f}.attn.out_proj", b.attn.out)
        yield from _norm(f"{n}.norm2", f"{f}.ln_2", b.norm2)
        yield from _linear(f"{n}.mlp.fc1", f"{f}.mlp.c_fc", b.mlp.fc1)
        yield from _linear(f"{n}.mlp.fc2", f"{f}.mlp.c_proj", b.mlp.fc2)
    yield from _norm("ln_post", "ln_post", m.ln_post)
    yield "proj", m.proj, ("proj",), _AS_IS


def _siglip_entries(m: SiglipViT) -> Iterator[Entry]:
    width = m.cfg.width
    yield "patch_embed.kernel", m.patch_embed.kernel, ("embeddings.patch_embedding.weight",), _one(_patch_kernel)
    yield "patch_embed.bias", m.patch_embed.bias, ("embeddings.patch_embedding.bias",), _AS_IS
    yield "position_embedding", m.position_embedding, ("embeddings.position_embedding.weight",), _AS_IS
    for i, b in enumerate(m.blocks):
        f, n = f"encoder.layers.{i}", f"blocks.{i}"
        qkv = tuple(f"{f}.self_attn.{p}_proj" for p in "qkv")
        yield from _norm(f"{n}.norm1", f"{f}.layer_norm1", b.norm1)
        yield (f"{n}.attn.qkv.kernel", b.attn.qkv.kernel, tuple(f"{k}.weight" for k in qkv),
               lambda arrays: np.concatenate(arrays, axis=0).T)
        yield (f"{n}.attn.qkv.bias", b.attn.qkv.bias, tuple(f"{k}.bias" for k in qkv),
               lambda arrays: np.concatenate(arrays, axis=0))
        yield from _linear(f"{n}.attn.out", f"{f}.self_attn.out_proj", b.attn.out)
        yield from _norm(f"{n}.norm2", f"{f}.layer_norm2", b.norm2)
        yield from _linear(f"{n}.mlp.fc1", f"{f}.mlp.fc1", b.mlp.fc1)
        yield from _linear(f"{n}.mlp.fc2", f"{f}.mlp.fc2", b.mlp.fc2)
    yield from _norm("post_layernorm", "post_layernorm", m.post_layernorm)
    h = m.head
    yield "head.probe", h.probe, ("head.probe",), _one(lambda a: a.reshape(-1))
    yield "head.q.kernel", h.q.kernel, ("head.attention.in_proj_weight",), _one(lambda a: a[:width].T)
    yield "head.q.bias", h.q.bias, ("head.attention.in_proj_bias",), _one(lambda a: a[:width])
    yield "head.kv.kernel", h.kv.kernel, ("head.attention.in_proj_weight",), _one(lambda a: a[width:].T)
    yield "head.kv.bias", h.kv.bias, ("head.attention.in_proj_bias",), _one(lambda a: a[width:])
    yield from _linear("head.out", "head.attention.out_proj", h.out)
    yield from _norm("head.layernorm", "head.layernorm", h.layernorm)
    yield from _linear("head.mlp.fc1", "head.mlp.fc1", h.mlp.fc1)
    yield from _linear("head.mlp.fc2", "head.mlp.fc2", h.mlp.fc2)


# -- the shared load ---------------------------------------------------------------------------


def load_openclip(module: ClipViT, path: str | os.PathLike, *, strict: bool = False) -> ViTLoadReport:
    """Copy an open_clip ViT image tower (OpenAI layout) from `path` into `module`, in place.

    path: .safetensors (no torch needed) or a torch.save state dict (.pt/.pth/.bin); a folder
        holding open_clip_model.safetensors / open_clip_pytorch_model.bin also works.
    strict: also raise (before writing) when a parameter is missing or an image-tower entry unused.
    Raises ValueError, before writing anything, when the file holds another architecture.
    """
    if not isinstance(module, ClipViT):
        raise TypeError(f"load_openclip loads into a fer_jax ClipViT, got {type(module).__name__}")
    source, state = read_state_dict(path, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    tower, unused = _split_prefix(state, "visual.", lambda k: False)
    wanted, fix = "an open_clip ViT image tower", "pass an open_clip ViT state dict (open_clip_model.safetensors)"
    conv = tower.get("conv1.weight")
    if conv is None or conv.ndim != 4 or "transformer.resblocks.0.ln_1.weight" not in tower:
        raise _not_a_vit(source, state, wanted, fix + "; SigLIP files load with load_siglip")
    proj = tower.get("proj")
    held = (int(conv.shape[0]), _count(tower, r"transformer\.resblocks\.(\d+)\."), int(conv.shape[-1]),
            int(proj.shape[-1]) if proj is not None and proj.ndim == 2 else None)
    cfg = module.cfg
    if held != (cfg.width, cfg.depth, cfg.patch, cfg.embed_dim):
        raise ValueError(
            f"{source} holds an open_clip ViT of {_arch_name(*held)} but the model is {_cfg_name(cfg)}; "
            f"build the generator that matches the file or pass a {cfg.name} checkpoint (nothing was written)"
        )
    report = ViTLoadReport(source, _arch_name(*held), cfg.name, unused=unused)
    if unused:
        report.notes.append(f"whole CLIP model: the {len(unused)} non-visual entries (text tower) were not used")
    return apply_entries(module, list(_clip_entries(module)), tower, report, strict)


def load_siglip(module: SiglipViT, path: str | os.PathLike, *, strict: bool = False) -> ViTLoadReport:
    """Copy a transformers SigLIP vision tower from `path` (save_pretrained folder or model.safetensors) into `module`.

    Accepts SiglipVisionModel files (keys without prefix) and whole SiglipModel files
    (`vision_model.*`; `text_model.*`, `logit_scale`, `logit_bias` are reported as unused).
    Raises ValueError, before writing anything, when the file holds another architecture.
    """
    if not isinstance(module, SiglipViT):
        raise TypeError(f"load_siglip loads into a fer_jax SiglipViT, got {type(module).__name__}")
    source, state = read_state_dict(path, ("model.safetensors",))
    tower, unused = _split_prefix(state, "vision_model.",
                                  lambda k: k.startswith("text_model.") or k in ("logit_scale", "logit_bias"))
    wanted, fix = "a SigLIP vision model", "pass a transformers SiglipModel / SiglipVisionModel save_pretrained folder"
    patch = tower.get("embeddings.patch_embedding.weight")
    if patch is None or patch.ndim != 4 or "encoder.layers.0.layer_norm1.weight" not in tower:
        raise _not_a_vit(source, state, wanted, fix + "; open_clip files load with load_openclip")
    fc1 = tower.get("encoder.layers.0.mlp.fc1.weight")
    held = (int(patch.shape[0]), _count(tower, r"encoder\.layers\.(\d+)\."), int(patch.shape[-1]), None)
    cfg = module.cfg
    mlp = int(fc1.shape[0]) if fc1 is not None else cfg.mlp_dim
    if held != (cfg.width, cfg.depth, cfg.patch, None) or mlp != cfg.mlp_dim:
        raise ValueError(
            f"{source} holds a SigLIP vision model of {_arch_name(*held)}, MLP {mlp}, but the model is "
            f"{_cfg_name(cfg)}, MLP {cfg.mlp_dim}; pass a {cfg.name} checkpoint (nothing was written)"
        )
    if "head.probe" not in tower:
        raise ValueError(f"{source} has no attention-pooling head (head.*): it was saved with vision_use_head=False; "
                         "the siglip generator's features are the head's pooler_output (nothing was written)")
    report = ViTLoadReport(source, _arch_name(*held), cfg.name, unused=unused)
    if unused:
        report.notes.append(f"whole SigLIP model: the {len(unused)} text-tower / logit entries were not used")
    return apply_entries(module, list(_siglip_entries(module)), tower, report, strict)
