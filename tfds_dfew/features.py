"""The TFDS builder of cached per-frame features (`<dataset>_features/<setup>`), same splits/labels/ids as its source.

Each record: {<feature key>: float32[T, F] (zlib)} next to every per-clip field of its source (label
with the source's class names, clip_id, fold, num_frames, and the dataset's own: DFEW's votes,
FERV39k's scene, MAFW's captions), and when the source has the clips' sound (an `_audio` build, or
features made from one) its `audio` (int16 mono 16 kHz, variable length) and `audio_length` too,
so a model can read the raw sound next to cached features. Audio generators add `audio_<name>`
float32[T, F] and `audio_mask` float32[T] (1 where the clip has sound).

A DFEW source makes `dfew_features/<setup>`, a MAFW one `mafw_features/<setup>`, and so on
(`features_name`): the name says which dataset the features belong to. The source is a clip
dataset build or another cached-features dataset; every split it stores is written. Float arrays of
the source that the new setup lists are passed through unchanged (OpenPose `pose`, or the features
of a features source, so an OmniVec or external embedding can be added next to them). Metadata:
`setup` (source dataset, generator names, weights, fine-tuned checkpoints), `dataset` (the source's
description, copied) and `source_build` (the source's build fingerprint and, per split, its clip
count and clip-id digest), so a training run can refuse features that do not match its config or
that were made from an older build of their source. The per-batch computation is a callable handed
in by `fer_jax.extract`; this module does not import JAX.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from tfds_dfew import clip_builder, datasets

SUFFIX = "_features"
NAME = "dfew_features"  # DFEW's (kept for the name earlier code and runs use)
AUDIO_KEYS = ("audio", "audio_length")  # the raw sound, carried along when the source has it
FRAME_KEY = "frames"
READ_THREADS = 4  # threads reading (decoding) the next batch of clips while the current one is computed


def features_name(dataset: str) -> str:
    """'dfew' -> 'dfew_features' (the TFDS name of the dataset's cached features)."""
    return f"{dataset}{SUFFIX}"


def parse_name(name: str) -> tuple[str, str] | None:
    """'mafw_features/resnet18' -> ('mafw', 'resnet18'); None for a name that is not a features dataset."""
    head, _, setup = str(name).partition("/")
    if not head.endswith(SUFFIX) or not setup:
        return None
    return head[: -len(SUFFIX)], setup.split(":", 1)[0]


@dataclasses.dataclass
class FeaturesConfig(tfds.core.BuilderConfig):
    """One generator setup: the stored feature keys with their per-clip shapes, and how they were made."""

    feature_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    setup: Mapping[str, object] = dataclasses.field(default_factory=dict)
    audio: bool = False  # carry the source's `audio` / `audio_length`


def per_clip_fields(source_features) -> list[str]:
    """The source's per-clip fields a features dataset copies: everything but frames, sound and float arrays."""
    out = []
    for key, feature in source_features.items():
        if key == FRAME_KEY or key in AUDIO_KEYS or key in passed_through(source_features):
            continue
        out.append(key)
    return out


def copy_feature(feature):
    """The same feature spec (a ClassLabel keeps its names, which its JSON form does not hold)."""
    if isinstance(feature, tfds.features.ClassLabel):
        return tfds.features.ClassLabel(names=list(feature.names))
    return tfds.features.FeatureConnector.from_json(feature.to_json())


class FeaturesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Cached generator features of every clip of a dataset, one split per stored split of the source."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Per-frame generator features with label, clip id, fold, frame count.",
        "1.1.0": "Every split of the source (incl. `unlabelled`), vote counts, features sources.",
        "1.2.0": "Every per-clip field of the source with its own class names; metadata `dataset` and "
                 "`source_build`; one features dataset per source dataset (`<dataset>_features`).",
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
        print(f"Extracting features {self.name}/{self.builder_config.name} into {self.data_dir}...", flush=True)

    def _log_download_done(self) -> None:
        print(f"{self.name}/{self.builder_config.name} written to {self.data_dir}.", flush=True)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            key: tfds.features.Tensor(shape=tuple(shape), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)
            for key, shape in self.builder_config.feature_shapes.items()
        }
        metadata = {"setup": dict(self.builder_config.setup)}
        if self._source is not None:
            source = self._source.info.features
            if self.builder_config.audio:  # the same feature specs as the source's
                features.update({k: copy_feature(source[k]) for k in AUDIO_KEYS})
            features.update({k: copy_feature(source[k]) for k in per_clip_fields(source)})
            metadata["dataset"] = datasets.description_of(self._source).to_json()
            metadata["source_build"] = source_build(self._source)
        return tfds.core.DatasetInfo(
            builder=self,
            description="Per-frame features of a dataset's clips computed by pretrained (or fine-tuned) generators.",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(metadata),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._compute is None or self._source is None:
            raise ValueError("a features dataset needs a source builder and a `compute` callable to build; use "
                             "python -m fer_jax.extract.")
        return {split: self._generate_examples(split) for split in sorted(self._source.info.splits.keys())}

    def _generate_examples(self, split):
        source = self._source.as_data_source(split=split)
        fields = per_clip_fields(self._source.info.features)
        for records in read_ahead(source, range(len(source)), self._batch_size):
            yield from self._examples(records, self._compute(records), fields)

    def _examples(self, records, outputs, fields):
        """(clip id, example) of each record of a batch, with the features `compute` gave it."""
        for i, r in enumerate(records):
            clip_id = r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else r["clip_id"]
            example = {key: np.asarray(outputs[key][i] if key in outputs else r[key], np.float32)
                       for key in self.builder_config.feature_shapes}
            for key in fields:
                value = r[key]
                example[key] = value.decode() if isinstance(value, bytes) else value
            example["clip_id"] = clip_id
            if self.builder_config.audio:
                example.update(audio=np.asarray(r["audio"], np.int16).reshape(-1),
                               audio_length=int(r["audio_length"]))
            yield clip_id, example


def read_ahead(source, indices: Sequence[int], batch_size: int):
    """Lists of `source[i]` for consecutive batches of `indices`, in order; while the caller works on one
    batch, the next is read (its JPEGs decoded, which releases the GIL) by READ_THREADS threads."""
    starts = list(range(0, len(indices), batch_size))
    with concurrent.futures.ThreadPoolExecutor(max_workers=READ_THREADS) as readers:
        def read(k):
            if k >= len(starts):
                return []
            return [readers.submit(source.__getitem__, int(i)) for i in indices[starts[k]:starts[k] + batch_size]]

        pending = read(0)
        for k in range(len(starts)):
            records = [f.result() for f in pending]
            pending = read(k + 1)
            yield records


@functools.cache
def builder_class(dataset: str) -> type:
    """The features builder of `dataset` (TFDS name `<dataset>_features`), made once per dataset."""
    camel = "".join(part[:1].upper() + part[1:] for part in dataset.split("_"))
    cls = type(f"{camel}Features", (FeaturesBuilder,), {"__module__": __name__})
    cls.name = features_name(dataset)
    return cls


DfewFeatures = builder_class("dfew")  # the name earlier code used


def source_build(source) -> dict:
    """What a features dataset records of its source: the source's build fingerprint and clip ids per split.

    For a features source, the record it holds of its own source (the chain ends at a clip build).
    """
    metadata = dict(source.info.metadata or {})
    if "source_build" in metadata:
        return dict(metadata["source_build"])
    return {"dataset": f"{source.info.name}/{source.builder_config.name}",
            "version": str(source.info.version), "fingerprint": clip_builder.fingerprint(metadata),
            "splits": dict(dict(metadata.get("build", {}) or {}).get("splits", {}) or {})}


def has_audio(source_features) -> bool:
    """Whether a dataset's features hold the clips' sound."""
    return all(k in source_features for k in AUDIO_KEYS)


def passed_through(source_features) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the float arrays of a source dataset that a features dataset carries along."""
    out = {}
    for key, feature in source_features.items():
        if key in AUDIO_KEYS or key == FRAME_KEY:
            continue
        if not isinstance(feature, tfds.features.Tensor):
            continue
        if np.dtype(feature.np_dtype) == np.float32 and len(feature.shape) >= 1:
            out[key] = tuple(feature.shape)
    return out


def open_builder(data_dir: str, setup_name: str, dataset: str = "dfew"):
    """A read-only builder of a built features dataset `<dataset>_features/<setup_name>`, or None."""
    return datasets.open_built(data_dir, f"{features_name(dataset)}/{setup_name}")
