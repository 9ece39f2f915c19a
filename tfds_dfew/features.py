"""The TFDS builder of cached per-frame features (`dfew_features/<setup>`), same splits/labels/ids as its source.

Each record: {<feature key>: float32[16, F] (zlib), label, clip_id, fold, num_frames, votes}, and
when the source has the clips' sound (a `dfew/*_audio` build, or features made from one) its
`audio` (int16 mono 16 kHz, variable length) and `audio_length` too, so a model can read the raw
sound next to cached features. Audio generators add `audio_<name>` float32[16, F] and
`audio_mask` float32[16] (1 where the clip has sound).
The source is a `dfew/<config>` build or another cached-features dataset; every split it stores
is written (fold1..fold5, and `unlabelled` when the source has the multi-labelled clips). Float
arrays of the source that the new setup lists are passed through unchanged (OpenPose
`keypoints`, or the features of a features source, so an OmniVec or external embedding can be
added next to them). The setup that produced the features (source dataset, generator names,
weights, fine-tuned checkpoints) is stored in the dataset's metadata as `setup`, so a training
run can refuse features that do not match its config. The per-batch computation is a callable
handed in by `fer_jax.extract`; this module does not import JAX.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from tfds_dfew import release

NAME = "dfew_features"
META_KEYS = ("label", "clip_id", "fold", "num_frames", "votes")  # per-clip fields copied from the source
AUDIO_KEYS = ("audio", "audio_length")  # the raw sound, carried along when the source has it


@dataclasses.dataclass
class FeaturesConfig(tfds.core.BuilderConfig):
    """One generator setup: the stored feature keys with their per-clip shapes, and how they were made."""

    feature_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    setup: Mapping[str, object] = dataclasses.field(default_factory=dict)
    audio: bool = False  # carry the source's `audio` / `audio_length`


class DfewFeatures(tfds.core.GeneratorBasedBuilder):
    """Cached generator features of every DFEW clip, one split per stored split of the source."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Per-frame generator features with label, clip id, fold, frame count.",
        "1.1.0": "Every split of the source (incl. `unlabelled`), vote counts, features sources.",
    }

    def __init__(self, *, source=None, compute: Callable[[Sequence[dict]], Mapping[str, np.ndarray]] | None = None,
                 batch_size: int = 16, **kwargs):
        """source: the source TFDS builder (read with as_data_source); compute: records -> {key: array[n, ...]}."""
        self._source = source
        self._compute = compute
        self._batch_size = batch_size
        super().__init__(**kwargs)

    def _log_download_bytes(self) -> None:
        # TFDS's own line speaks of downloading; extraction computes features locally.
        print(f"Extracting features {NAME}/{self.builder_config.name} into {self.data_dir}...", flush=True)

    def _log_download_done(self) -> None:
        print(f"{NAME}/{self.builder_config.name} written to {self.data_dir}.", flush=True)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            key: tfds.features.Tensor(shape=tuple(shape), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)
            for key, shape in self.builder_config.feature_shapes.items()
        }
        if self.builder_config.audio:  # the same feature specs as the source's
            if self._source is None:
                raise ValueError("a features dataset that carries audio is built from its source (fer_jax.extract).")
            features.update({k: tfds.features.FeatureConnector.from_json(self._source.info.features[k].to_json())
                             for k in AUDIO_KEYS})
        features.update(
            label=tfds.features.ClassLabel(names=list(release.CLASS_NAMES)),
            clip_id=tfds.features.Text(),
            fold=np.int32,
            num_frames=np.int32,
            votes=tfds.features.Tensor(shape=(len(release.CLASS_NAMES),), dtype=np.int32),
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description="Per-frame features of DFEW clips computed by pretrained (or fine-tuned) generators.",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(setup=dict(self.builder_config.setup)),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._compute is None or self._source is None:
            raise ValueError("DfewFeatures needs a source builder and a `compute` callable to build; use "
                             "python -m fer_jax.extract.")
        return {split: self._generate_examples(split) for split in sorted(self._source.info.splits.keys())}

    def _generate_examples(self, split):
        source = self._source.as_data_source(split=split)
        n = len(source)
        for start in range(0, n, self._batch_size):
            records = [source[i] for i in range(start, min(start + self._batch_size, n))]
            outputs = self._compute(records)
            for i, r in enumerate(records):
                clip_id = r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else r["clip_id"]
                example = {key: np.asarray(outputs[key][i] if key in outputs else r[key], np.float32)
                           for key in self.builder_config.feature_shapes}
                votes = r.get("votes")
                example.update(label=int(r["label"]), clip_id=clip_id, fold=int(r["fold"]),
                               num_frames=int(r["num_frames"]),
                               votes=np.zeros(len(release.CLASS_NAMES), np.int32) if votes is None
                               else np.asarray(votes, np.int32))
                if self.builder_config.audio:
                    example.update(audio=np.asarray(r["audio"], np.int16).reshape(-1),
                                   audio_length=int(r["audio_length"]))
                yield clip_id, example


def has_audio(source_features) -> bool:
    """Whether a dataset's features hold the clips' sound."""
    return all(k in source_features for k in AUDIO_KEYS)


def passed_through(source_features) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the float arrays of a source dataset that a features dataset carries along."""
    out = {}
    for key, feature in source_features.items():
        if key in META_KEYS or key in AUDIO_KEYS or key == "frames":
            continue
        if not isinstance(feature, tfds.features.Tensor):
            continue
        if np.dtype(feature.np_dtype) == np.float32 and len(feature.shape) >= 1:
            out[key] = tuple(feature.shape)
    return out


def dataset_dir(data_dir: str, setup_name: str) -> str | None:
    """The newest version folder of dfew_features/<setup_name> under data_dir, or None."""
    base = os.path.join(os.path.expanduser(data_dir), NAME, setup_name)
    if not os.path.isdir(base):
        return None
    versions = sorted((v for v in os.listdir(base) if os.path.exists(os.path.join(base, v, "dataset_info.json"))),
                      key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
    return os.path.join(base, versions[-1]) if versions else None


def open_builder(data_dir: str, setup_name: str):
    """A read-only builder of a built features dataset (no builder code needed to read it)."""
    path = dataset_dir(data_dir, setup_name)
    if path is None:
        return None
    return tfds.builder_from_directory(path)
