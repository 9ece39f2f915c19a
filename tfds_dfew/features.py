"""The TFDS builder of cached per-frame features (`dfew_features/<setup>`), same folds/labels/ids as `dfew`.

Each record: {<feature key>: float32[16, F] (zlib), label, clip_id, fold, num_frames}. The
setup that produced the features (source dataset, generator names, weights, fine-tuned
checkpoints) is stored in the dataset's metadata as `setup`, so a training run can refuse
features that do not match its config. The per-batch computation is a callable handed in by
`fer_jax.extract`; this module does not import JAX.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from tfds_dfew import release

NAME = "dfew_features"
PASSED_THROUGH = ("keypoints",)  # copied from the source dataset when it has them


@dataclasses.dataclass
class FeaturesConfig(tfds.core.BuilderConfig):
    """One generator setup: the stored feature keys with their per-clip shapes, and how they were made."""

    feature_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    setup: Mapping[str, object] = dataclasses.field(default_factory=dict)


class DfewFeatures(tfds.core.GeneratorBasedBuilder):
    """Cached generator features of every DFEW clip, one split per official test fold."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Per-frame generator features with label, clip id, fold, frame count."}

    def __init__(self, *, source_name: str = "dfew/frames112", source_data_dir: str | None = None,
                 compute: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None, batch_size: int = 16,
                 **kwargs):
        self._source_name = source_name
        self._source_data_dir = source_data_dir
        self._compute = compute
        self._batch_size = batch_size
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            key: tfds.features.Tensor(shape=tuple(shape), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB)
            for key, shape in self.builder_config.feature_shapes.items()
        }
        features.update(
            label=tfds.features.ClassLabel(names=list(release.CLASS_NAMES)),
            clip_id=tfds.features.Text(),
            fold=np.int32,
            num_frames=np.int32,
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description="Per-frame features of DFEW clips computed by pretrained (or fine-tuned) generators.",
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(setup=dict(self.builder_config.setup)),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        if self._compute is None:
            raise ValueError("DfewFeatures needs a `compute` callable to build; use python -m fer_jax.extract.")
        return {f"fold{k}": self._generate_examples(f"fold{k}") for k in range(1, release.NUM_FOLDS + 1)}

    def _generate_examples(self, split):
        source = tfds.data_source(self._source_name, split=split, data_dir=self._source_data_dir, download=False)
        n = len(source)
        for start in range(0, n, self._batch_size):
            records = [source[i] for i in range(start, min(start + self._batch_size, n))]
            frames = np.stack([np.stack(r["frames"]) for r in records])
            outputs = self._compute(frames)
            for i, r in enumerate(records):
                clip_id = r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else r["clip_id"]
                example = {key: np.asarray(r[key] if key in PASSED_THROUGH else outputs[key][i], np.float32)
                           for key in self.builder_config.feature_shapes}
                example.update(label=int(r["label"]), clip_id=clip_id, fold=int(r["fold"]),
                               num_frames=int(r["num_frames"]))
                yield clip_id, example


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
