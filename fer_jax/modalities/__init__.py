"""Modalities: what a clip offers a model besides its label, one spec each, registered by name.

A modality spec (`Modality`) says which dataset keys it reads (`matches`), how a record's value
becomes model input (`read`: cropping, mirroring, normalising, temporal sampling, masks), and how
a video supplies it at predict time (`video`: 'frames' — the tracked face crops —, 'pose' — the
video's OpenPose JSON —, 'sound' — the video's sound track —, 'generator' — computed by the
generator that made it from one of those —, 'self' — the spec makes it itself —, or '' — a video
cannot supply it). The built-in specs, one module each:

    frames    'frames'                    uint8[T, S, S, 3]: crop (random in training), flip
    pose      'pose' (builds before 1.2.0: 'keypoints')   normalised OpenPose points + frame mask
    sound     'audio'                     '<m>/waveform' float32[S], '<m>/length' + slice mask
    captions  'caption_en', 'caption_zh'  UTF-8 bytes uint8[L] + mask (MAFW; a text encoder reads them)
    features  any other float array       cached generator features float32[T, F] (+ audio_mask)

A config's modality names its dataset key in `input` (and may name its spec in `kind`); the spec is
found by `spec_for(modality config)`. A plug-in modality is one module that subclasses `Modality`
and calls `register` (see examples/constant_modality.py), imported through FER_JAX_PLUGINS.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from fer_jax.errors import ConfigError
from tfds_dfew import frames as frames_lib
from tfds_dfew import plugins


@dataclasses.dataclass
class ReadContext:
    """What reading one record needs: training or not, the clip's random stream, the flip decision, T."""

    train: bool
    rng: np.random.Generator | None
    mirror: bool  # this clip is mirrored (one decision per clip, for every modality that can be)
    num_frames: int  # T the model reads (0: as stored)
    config: object

    def indices(self, stored: int) -> np.ndarray | None:
        """Which of `stored` frames the model reads: T uniformly spaced ones (None: all, as stored)."""
        if not self.num_frames or int(self.num_frames) == int(stored):
            return None
        return frames_lib.sample_indices(int(stored), int(self.num_frames))


class Modality:
    """One modality spec. Subclasses set `name`, `video`, and implement `matches` and `read`."""

    name = ""
    video = ""  # how predict supplies it: 'frames' | 'pose' | 'sound' | 'generator' | 'self' | ''
    mirrors = False  # whether a horizontal flip changes it (frames and pose do)
    priority = 0  # specs are tried from the highest priority down (the catch-all features spec is last)

    def matches(self, key: str) -> bool:
        raise NotImplementedError

    def keys(self, key: str) -> tuple[str, ...]:
        """The dataset keys a record must hold to read `key` (default: `key` itself)."""
        return (key,)

    def read(self, record, name: str, key: str, ctx: ReadContext, out: dict) -> None:
        """Puts modality `name` (dataset key `key`) of `record` into `out`, with 'mask/<name>' where it has one."""
        raise NotImplementedError

    def stand_in(self, key: str, num_frames: int, shapes: dict) -> dict:
        """A record's worth of zeros for `key` (predict builds its input shapes from one): {record key: array}."""
        return {}

    def describe(self) -> str:
        return (self.__doc__ or self.name).strip().splitlines()[0]


_SPECS: dict[str, Modality] = {}
_BUILTIN = ("fer_jax.modalities.frames", "fer_jax.modalities.pose", "fer_jax.modalities.sound",
            "fer_jax.modalities.captions", "fer_jax.modalities.features")


def register(spec: Modality) -> Modality:
    """Adds a modality spec (an instance) under its name."""
    _SPECS[spec.name] = spec
    return spec


def _load() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)  # each registers its spec (a table of names, not an import to dodge a cycle)
    plugins.load()


def names() -> list[str]:
    _load()
    return sorted(_SPECS)


def get(name: str) -> Modality:
    _load()
    if name not in _SPECS:
        raise ConfigError(f"unknown modality kind {name!r}; known: {', '.join(sorted(_SPECS))}.")
    return _SPECS[name]


def for_key(key: str) -> Modality:
    """The spec that reads dataset key `key` (the first, by priority, whose `matches` says so)."""
    _load()
    for spec in sorted(_SPECS.values(), key=lambda s: -s.priority):
        if spec.matches(key):
            return spec
    raise ConfigError(f"no modality reads dataset key {key!r}; known kinds: {', '.join(sorted(_SPECS))}.")


def spec_for(modality_config) -> Modality:
    """The spec of one config modality: its `kind` when given, else the one that reads its `input`."""
    kind = modality_config.get("kind", "") if hasattr(modality_config, "get") else ""
    return get(kind) if kind else for_key(str(modality_config.get("input", "")))
