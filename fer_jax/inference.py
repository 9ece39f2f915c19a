"""One inference runner for extract and predict: a features setup's generators, run on a clip's raw inputs.

`FeatureRunner` holds the generators that make a cached-features setup, each under its feature key:
  - face generators on frames uint8[n, T, H, W, 3] -> float32[n, T, F], all in one jitted call
    (on the CPU 32 frames a step inside it, `generators.clip_features`);
  - audio generators on the sound (int16 tracks + lengths, fitted to whole seconds) ->
    float32[n, T, F] per time slice, plus `audio_mask` float32[n, T];
  - a pretrained OmniVec on the features it was pretrained on (its own run's Preprocessor);
  - external embeddings (`npy`, extract only: a video has none).
`extract` calls the runner on dataset records (`runner(records)`); `predict` calls its parts on a
video's windows: `face_features` on the tracked face crops of full chunks of windows,
`sound_features` on each window's sound, `omnivec_features` on the window's assembled record.
Both therefore compute a feature the same way, through the same compiled functions.

Every call runs on all of this host's devices: the generators' weights are replicated on a
('data',) mesh of the local devices and each batch whose rows divide over them is sharded along
its first axis (rows are computed independently, so the features are those of one device; a
test compares 8 forced CPU devices with 1); a batch that does not divide runs replicated.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fer_jax.data import audio as audio_lib
from fer_jax.errors import ConfigError
from fer_jax.models import generators


def pad_rows(x: np.ndarray, batch: int) -> np.ndarray:
    """Pads axis 0 to `batch` rows (repeating the last) so a jitted function keeps one shape."""
    return x if len(x) >= batch else np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])


@dataclasses.dataclass
class OmniVecPart:
    """A pretrained OmniVec encoder and the Preprocessor of its pretraining run (how it reads a record)."""

    module: nnx.Module
    preprocessor: object
    where: str  # its pretraining run, for messages


class LocalDevices:
    """This host's devices as a ('data',) mesh: weights replicated, batches split along their first axis."""

    def __init__(self, devices=None):
        self.devices = list(devices if devices is not None else jax.local_devices())
        self.mesh = Mesh(np.asarray(self.devices), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.rows = NamedSharding(self.mesh, PartitionSpec("data"))

    def replicate(self, tree):
        return jax.device_put(tree, self.replicated) if len(self.devices) > 1 else tree

    def split(self, *arrays):
        """The arrays sharded over the devices when their rows divide (else as they are: one device computes)."""
        n = len(self.devices)
        if n == 1 or any(len(a) % n for a in arrays):
            return arrays
        return tuple(jax.device_put(a, self.rows) for a in arrays)


class FeatureRunner:
    """The generators of one features setup, by feature key (see the module docstring)."""

    def __init__(self, *, face: dict | None = None, audio: dict | None = None, omnivec: dict | None = None,
                 external: dict | None = None, batch: int = 16, max_seconds: float = 30.0, devices=None):
        self.face, self.audio = dict(face or {}), dict(audio or {})
        self.omnivec, self.external = dict(omnivec or {}), dict(external or {})
        self.batch, self.max_seconds = int(batch), float(max_seconds)
        self.local = LocalDevices(devices)
        if self.face:
            face_graph, face_state = nnx.split(self.face)
            self._face_state = self.local.replicate(face_state)

            @jax.jit
            def face_compute(state, frames):
                mods = nnx.merge(face_graph, state)
                return {k: generators.clip_features(m, frames) for k, m in mods.items()}  # CPU: 32 frames a step

            self._face_compute = face_compute
        if self.audio:
            audio_graph, audio_state = nnx.split(self.audio)
            self._audio_state = self.local.replicate(audio_state)

            @jax.jit
            def audio_compute(state, waveform, lengths):
                outs = {k: m(waveform, lengths, train=False) for k, m in nnx.merge(audio_graph, state).items()}
                mask = next(iter(outs.values()))[1]
                return {**{k: f for k, (f, _) in outs.items()}, "audio_mask": mask.astype(np.float32)}

            self._audio_compute = audio_compute
        self._omnivec_compute = {}
        for key, part in self.omnivec.items():
            graph, state = nnx.split(part.module)

            @jax.jit
            def omnivec_compute(state, inputs, masks, graph=graph):
                return nnx.merge(graph, state)(inputs, masks, train=False)

            self._omnivec_compute[key] = (omnivec_compute, self.local.replicate(state))

    @property
    def keys(self) -> list[str]:
        """Every feature key the runner makes (`audio_mask` with audio generators)."""
        return sorted([*self.face, *self.audio, *self.omnivec, *self.external] + (["audio_mask"] if self.audio else []))

    def face_features(self, clips: np.ndarray) -> dict:
        """uint8[n, T, H, W, 3] -> {key: float32[n, T, F]}: one call for a full batch; a partial one runs a few
        clips per call (one more compiled shape) rather than padding to the batch."""
        step = generators.inference_rows_per_step(clips.shape[1])
        if len(clips) == self.batch or not step:
            out = jax.device_get(self._face_compute(self._face_state, *self.local.split(pad_rows(clips, self.batch))))
        else:
            parts = [jax.device_get(self._face_compute(self._face_state,
                                                       *self.local.split(pad_rows(clips[i : i + step], step))))
                     for i in range(0, len(clips), step)]
            out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return {k: v[: len(clips)] for k, v in out.items()}

    def sound_features(self, tracks, lengths) -> dict:
        """int16 tracks (a list) and their lengths -> {key: float32[n, T, F], 'audio_mask': float32[n, T]}."""
        n = len(tracks)
        waveform, fitted = audio_lib.fit_batch(tracks, lengths, self.max_seconds)
        outs = []
        for start in range(0, n, self.batch):
            w, f = waveform[start : start + self.batch], fitted[start : start + self.batch]
            waves, fits = self.local.split(pad_rows(w, self.batch), pad_rows(f, self.batch))
            out = jax.device_get(self._audio_compute(self._audio_state, waves, fits))
            outs.append({k: np.asarray(v)[: len(w)] for k, v in out.items()})
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def omnivec_features(self, key: str, records) -> np.ndarray:
        """float32[n, T, D]: the OmniVec of `key` on records that hold the features it reads."""
        part = self.omnivec[key]
        compute, state = self._omnivec_compute[key]
        try:
            examples = [part.preprocessor(r) for r in records]
        except Exception as e:
            raise ConfigError(f"the OmniVec of {part.where} cannot read these clips: {e}") from None
        outs = []
        for start in range(0, len(examples), self.batch):
            chunk = examples[start : start + self.batch]
            batch = {k: pad_rows(np.stack([ex[k] for ex in chunk]), self.batch) for k in chunk[0]}
            modalities = part.module.modalities
            masks = {m: batch[f"mask/{m}"] for m in modalities if f"mask/{m}" in batch}
            inputs = dict(zip(modalities, self.local.split(*[batch[m] for m in modalities])))
            masks = dict(zip(masks, self.local.split(*masks.values()))) if masks else masks
            out = jax.device_get(compute(state, inputs, masks))
            outs.append(np.asarray(out)[: len(chunk)])
        return np.concatenate(outs)

    def __call__(self, records) -> dict:
        """Dataset records -> {key: array[n, ...]} of every feature of the setup (extract)."""
        out = {}
        if self.face:
            if "frames" not in records[0]:
                raise ConfigError(f"generators {sorted(self.face)} read face frames, but the source dataset has none "
                                  f"(it has {sorted(records[0])}); extract them from a clip build such as "
                                  "dfew/frames112.")
            out.update(self.face_features(np.stack([np.stack(r["frames"]) for r in records])))
        if self.audio:
            if "audio" not in records[0]:
                raise ConfigError(f"generators {sorted(self.audio)} read the clips' sound, but the source dataset has "
                                  f"none (it has {sorted(records[0])}); build an _audio config (python -m "
                                  "tfds_dfew.build ... --config frames112_pose_audio) and extract from it "
                                  "(source=frames112_pose_audio).")
            out.update(self.sound_features([r["audio"] for r in records], [r["audio_length"] for r in records]))
        for key in self.omnivec:
            out[key] = self.omnivec_features(key, records)
        for key, loader in self.external.items():
            out[key] = loader.batch(records)
        return out
