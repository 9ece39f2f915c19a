"""Load transformers wav2vec 2.0 / HuBERT weights into fer_jax's Wav2Vec2Encoder, in place.

    report = load_speech_encoder(wav2vec2_base(rngs=nnx.Rngs(0)), "~/w/wav2vec2-base")  # folder or file
    print(report)

Files: a transformers `save_pretrained` folder (model.safetensors, else pytorch_model.bin; its
config.json is read when present) or one such file (.safetensors, or .bin/.pt in torch's zip format, all read without
torch: fer_jax.weights.torch_file). Keys as transformers writes them:
  - `wav2vec2.*` / `hubert.*`: a model with a head (Wav2Vec2ForPreTraining as facebook/wav2vec2-base
    publishes it, *ForCTC, *ForSequenceClassification ...): the head's keys (quantizer.*,
    project_hid.*, project_q.*, lm_head.*, projector.*, classifier.* ...) are reported as unused;
  - the same keys without a prefix: a bare Wav2Vec2Model / HubertModel.
`masked_spec_embed` (SpecAugment's training-time mask vector) is reported as unused.
The positional conv's weight norm is read in either of torch's layouts,
`parametrizations.weight.original0/original1` (recent torch) or `weight_g/weight_v` (older), or as a
plain `weight` with the norm folded in (then weight_g = the per-tap norms, weight_v = weight).

Conversions: conv weight [out, in, k] -> kernel [k, in, out]; linear weight [out, in] -> kernel
[in, out]; LayerNorm / GroupNorm weight -> scale; q/k/v projections -> one packed qkv kernel;
weight_g [1, 1, k] -> [k].

A file of another architecture (other width, layer count or conv stack, a layer-norm
feature encoder or stable-layer-norm encoder (the large "lv60" models), the other family (a HuBERT
file for a wav2vec 2.0 model and the reverse), a ViT or ResNet file) is refused with a ValueError
naming the file and what it holds, before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from flax import nnx

from fer_jax.models.wav2vec2 import WAV2VEC2_BASE, SpeechEncoderConfig, Wav2Vec2Encoder
from fer_jax.weights.vit_loaders import read_state_dict
from fer_jax.weights.report import SHOW as _SHOW, Entry, LoadReport as _BaseReport, apply_entries

_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec_audio", "unispeech", "unispeech_sat", "sew", "sew_d")
_TOWER_ROOTS = ("feature_extractor.", "feature_projection.", "encoder.", "masked_spec_embed", "adapter.")
_TRAINING_ONLY = ("masked_spec_embed",)
_KNOWN = {(WAV2VEC2_BASE.width, WAV2VEC2_BASE.depth): "base"}


@dataclasses.dataclass
class AudioLoadReport(_BaseReport):
    """What a speech-encoder load did. Key names are the file's, without the `wav2vec2.` / `hubert.` prefix.

    `unused`: heads and training-only entries.
    """

    unused_label = "unused (heads, training-only)"


# -- what the file holds ------------------------------------------------------------------------


def _config_next_to(source: str) -> dict[str, Any]:
    path = os.path.join(os.path.dirname(source), "config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable JSON config ({type(e).__name__}: {e})") from e
    return config if isinstance(config, dict) else {}


def _split(state: dict[str, np.ndarray]) -> tuple[str | None, dict[str, np.ndarray], list[str]]:
    """(family named by the key prefix or None, encoder entries without the prefix, unused keys)."""
    for family in _FAMILIES:
        prefix = family + "."
        if any(k.startswith(prefix + "feature_extractor.") for k in state):
            tower = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            return family, tower, [k for k in state if not k.startswith(prefix)]
    tower = {k: v for k, v in state.items() if k.startswith(_TOWER_ROOTS)}
    return None, tower, [k for k in state if k not in tower]


def _count(state: Mapping[str, Any], pattern: str) -> int:
    idx = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(idx) + 1 if idx else 0


def _what_else(source: str, state: Mapping[str, Any], wanted: str) -> ValueError:
    keys = list(state)
    if any(re.match(r"(\w+\.)?layer\d\.\d+\.", k) for k in keys):
        what = "a ResNet (layer1.0.conv1 ...)"
    elif any("patch_embedding" in k or k.endswith("conv1.weight") or "resblocks" in k for k in keys):
        what = "a vision transformer (patch embedding / resblocks keys)"
    else:
        what = f"no speech encoder (first keys: {', '.join(keys[:_SHOW]) or 'none'})"
    return ValueError(f"{source} holds {what}, not {wanted}; pass a transformers Wav2Vec2Model / HubertModel "
                      "save_pretrained folder or its model.safetensors (nothing was written)")


def _held(tower: Mapping[str, np.ndarray]) -> dict[str, Any]:
    proj = tower.get("feature_projection.projection.weight")
    n_conv = _count(tower, r"feature_extractor\.conv_layers\.(\d+)\.")
    return {
        "width": int(proj.shape[0]) if proj is not None and proj.ndim == 2 else None,
        "depth": _count(tower, r"encoder\.layers\.(\d+)\."),
        "conv_dim": tuple(int(tower[f"feature_extractor.conv_layers.{i}.conv.weight"].shape[0]) for i in range(n_conv)
                          if f"feature_extractor.conv_layers.{i}.conv.weight" in tower),
        "conv_kernel": tuple(int(tower[f"feature_extractor.conv_layers.{i}.conv.weight"].shape[-1])
                             for i in range(n_conv) if f"feature_extractor.conv_layers.{i}.conv.weight" in tower),
        "layer_norm_convs": "feature_extractor.conv_layers.1.layer_norm.weight" in tower,
    }


def _arch(held: Mapping[str, Any]) -> str:
    known = _KNOWN.get((held["width"], held["depth"]))
    shape = f"width {held['width']}, {held['depth']} layers, {len(held['conv_dim'])} conv layers"
    return f"{known}-shaped ({shape})" if known else shape


def _check_architecture(source: str, family: str | None, held: Mapping[str, Any], config: Mapping[str, Any],
                        cfg: SpeechEncoderConfig) -> None:
    model = f"the model is {cfg.name} (width {cfg.width}, {cfg.depth} layers, {len(cfg.conv_dim)} conv layers)"
    if family and family != cfg.family:
        raise ValueError(f"{source} holds a {family} model but {model}; build the {family} generator or pass a "
                         f"{cfg.family} checkpoint (nothing was written)")
    wrong = [f"{k} {held[k]} vs {getattr(cfg, k)}" for k in ("width", "depth") if held[k] != getattr(cfg, k)]
    if held["conv_dim"] != cfg.conv_dim or held["conv_kernel"] != cfg.conv_kernel:
        wrong.append(f"conv stack {held['conv_dim']} kernels {held['conv_kernel']} vs {cfg.conv_dim} {cfg.conv_kernel}")
    if held["layer_norm_convs"] or config.get("feat_extract_norm") == "layer":
        wrong.append("a layer-norm feature encoder (feat_extract_norm='layer') vs group norm")
    if config.get("do_stable_layer_norm"):
        wrong.append("a pre-LN encoder (do_stable_layer_norm=True) vs post-LN")
    if wrong:
        raise ValueError(f"{source} holds a speech encoder of {_arch(held)} but {model}: {'; '.join(wrong)}; pass a "
                         f"{cfg.name} checkpoint (nothing was written)")


# -- entries: (model variable name, variable, file keys, conversion) ---------------------------



def _one(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[list[np.ndarray]], np.ndarray]:
    return lambda arrays: fn(arrays[0])


_AS_IS = _one(lambda a: a)
_T = _one(lambda a: a.T)
_CONV = _one(lambda a: a.transpose(2, 1, 0))  # torch [out, in, k] -> [k, in, out]


def _linear(name: str, file_prefix: str, layer: nnx.Linear) -> Iterator[Entry]:
    yield f"{name}.kernel", layer.kernel, (f"{file_prefix}.weight",), _T
    yield f"{name}.bias", layer.bias, (f"{file_prefix}.bias",), _AS_IS


def _norm(name: str, file_prefix: str, norm: Any) -> Iterator[Entry]:
    yield f"{name}.scale", norm.scale, (f"{file_prefix}.weight",), _AS_IS
    yield f"{name}.bias", norm.bias, (f"{file_prefix}.bias",), _AS_IS


def _tap_norms(w: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.square(w.astype(np.float64)), axis=(0, 1))).astype(np.float32)


def _pos_conv_entries(m: Wav2Vec2Encoder, tower: Mapping[str, Any]) -> Iterator[Entry]:
    p = "encoder.pos_conv_embed.conv"
    pc = m.pos_conv
    if f"{p}.weight_g" in tower or f"{p}.weight_v" in tower:  # torch.nn.utils.weight_norm (older transformers)
        g, v = f"{p}.weight_g", f"{p}.weight_v"
    elif f"{p}.weight" in tower:  # weight norm folded into a plain weight
        yield "pos_conv.weight_g", pc.weight_g, (f"{p}.weight",), _one(_tap_norms)
        yield "pos_conv.weight_v", pc.weight_v, (f"{p}.weight",), _CONV
        yield "pos_conv.bias", pc.bias, (f"{p}.bias",), _AS_IS
        return
    else:  # torch.nn.utils.parametrizations.weight_norm (recent transformers)
        g, v = f"{p}.parametrizations.weight.original0", f"{p}.parametrizations.weight.original1"
    yield "pos_conv.weight_g", pc.weight_g, (g,), _one(lambda a: a.reshape(-1))
    yield "pos_conv.weight_v", pc.weight_v, (v,), _CONV
    yield "pos_conv.bias", pc.bias, (f"{p}.bias",), _AS_IS


def _entries(m: Wav2Vec2Encoder, tower: Mapping[str, Any]) -> Iterator[Entry]:
    for i, conv in enumerate(m.conv_layers):
        yield f"conv_layers.{i}.kernel", conv.kernel, (f"feature_extractor.conv_layers.{i}.conv.weight",), _CONV
    yield from _norm("conv_norm", "feature_extractor.conv_layers.0.layer_norm", m.conv_norm)
    yield from _norm("projection_norm", "feature_projection.layer_norm", m.projection_norm)
    yield from _linear("projection", "feature_projection.projection", m.projection)
    yield from _pos_conv_entries(m, tower)
    yield from _norm("encoder_norm", "encoder.layer_norm", m.encoder_norm)
    for i, layer in enumerate(m.layers):
        f, n = f"encoder.layers.{i}", f"layers.{i}"
        qkv = tuple(f"{f}.attention.{p}_proj" for p in "qkv")
        yield (f"{n}.attn.qkv.kernel", layer.attn.qkv.kernel, tuple(f"{k}.weight" for k in qkv),
               lambda arrays: np.concatenate(arrays, axis=0).T)
        yield (f"{n}.attn.qkv.bias", layer.attn.qkv.bias, tuple(f"{k}.bias" for k in qkv),
               lambda arrays: np.concatenate(arrays, axis=0))
        yield from _linear(f"{n}.attn.out", f"{f}.attention.out_proj", layer.attn.out)
        yield from _norm(f"{n}.norm1", f"{f}.layer_norm", layer.norm1)
        yield from _linear(f"{n}.fc1", f"{f}.feed_forward.intermediate_dense", layer.fc1)
        yield from _linear(f"{n}.fc2", f"{f}.feed_forward.output_dense", layer.fc2)
        yield from _norm(f"{n}.norm2", f"{f}.final_layer_norm", layer.norm2)


# -- the load -----------------------------------------------------------------------------------


def load_speech_encoder(module: Wav2Vec2Encoder, path: str | os.PathLike, *, strict: bool = False) -> AudioLoadReport:
    """Copy a transformers wav2vec 2.0 / HuBERT encoder from `path` into `module` (a Wav2Vec2Encoder), in place.

    path: a save_pretrained folder (model.safetensors or pytorch_model.bin, + config.json) or the file.
    strict: also raise (before writing) when a parameter is missing or an encoder entry is unused.
    Raises ValueError, before writing anything, when the file holds another architecture or family.
    """
    if not isinstance(module, Wav2Vec2Encoder):
        raise TypeError(f"load_speech_encoder loads into a fer_jax Wav2Vec2Encoder, got {type(module).__name__}")
    cfg = module.cfg
    source, state = read_state_dict(path, ("model.safetensors", "pytorch_model.bin"))
    config = _config_next_to(source)
    family, tower, unused = _split(state)
    family = family or (config.get("model_type") if config.get("model_type") in _FAMILIES else None)
    wanted = f"a {cfg.family} speech encoder"
    if "feature_extractor.conv_layers.0.conv.weight" not in tower or "encoder.layers.0.attention.q_proj.weight" not in tower:
        raise _what_else(source, state, wanted)
    held = _held(tower)
    _check_architecture(source, family, held, config, cfg)
    training_only = [k for k in tower if k in _TRAINING_ONLY]
    for k in training_only:
        del tower[k]
    report = AudioLoadReport(source, f"{family or 'unnamed family'} {_arch(held)}", cfg.name,
                             unused=unused + training_only)
    if unused:
        report.notes.append(f"a model with a head: its {len(unused)} head entries ({', '.join(unused[:3])} ...) "
                            "were not used")
    if training_only:
        report.notes.append("masked_spec_embed (SpecAugment's training-time mask vector) was not used")
    if family is None:
        report.notes.append(f"the file names no model family (no prefix, no config.json): assumed {cfg.family}")
    return apply_entries(module, list(_entries(module, tower)), tower, report, strict)
