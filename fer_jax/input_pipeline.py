"""Grain input pipelines over `tfds.data_source`: training stream and padded evaluation batches.

A batch is a dict of numpy arrays, per process (the trainer turns it into global arrays):
  {<modality>: array[L, T, ...], 'label': int32[L], 'mask': bool[L], 'mask/<modality>': bool[L, T]}
with L = global batch / process count; `mask` is False on padding rows; `mask/<modality>` (for
keypoints) is False on frames where OpenPose found nobody.

Training order: the training split is shuffled globally (a new permutation each epoch),
augmented with a per-position random stream, and cut into global batches of G consecutive
positions; process p feeds rows [p*L, (p+1)*L) of each (L = G / P). So the global batch at a step
holds the same clips in the same rows whatever the number of processes, and the
stream is a deterministic function of (seed, step): a resumed run starts the iterator at its
checkpoint's step (`start_step`), also with a different number of processes or devices.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grain
import numpy as np

from fer_jax.data import keypoints
from fer_jax.errors import ConfigError
from tfds_dfew import release


class DatasetNotFoundError(FileNotFoundError):
    """The configured TFDS dataset is not built in data_dir."""


def fold_split(config, part: str) -> str:
    """The TFDS split string for `part` ('train' | 'test') of config.dataset.fold."""
    train, test = release.fold_splits(int(config.dataset.fold))
    return {"train": train, "test": test}[part]


def open_source(config, split: str):
    """tfds.data_source for config.dataset.name and `split`, with a useful error when absent.

    `dfew/<frames config>` is the frames dataset; `dfew_features/<setup>` a cached-features dataset
    written by `python -m fer_jax.extract` (its generator setup must match config.modalities).
    """
    import tensorflow_datasets as tfds

    import tfds_dfew.dfew  # noqa: F401  (registers the `dfew` builder)
    from tfds_dfew import features as features_lib

    name = config.dataset.name
    data_dir = os.path.expanduser(config.dataset.data_dir)
    if name.startswith(features_lib.NAME + "/"):
        builder = features_lib.open_builder(data_dir, name.split("/", 1)[1])
        if builder is None:
            raise DatasetNotFoundError(
                f"cached features {name!r} are not in {data_dir}. Extract them first: python -m fer_jax.extract "
                f"--config configs/extract.py:{name.split('/', 1)[1]}")
        check_feature_setup(config, builder)
        return _split_source(builder, split, name, data_dir)
    how = f"Build it first: python -m tfds_dfew.build --manual_dir <DFEW release> --data_dir {data_dir}"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name or config
        raise DatasetNotFoundError(f"config.dataset.name={name!r} is not a known dataset ({str(e).splitlines()[0]}).") from None
    if not builder.is_prepared():
        raise DatasetNotFoundError(f"dataset {name!r} is not built in {data_dir}. {how}")
    return _split_source(builder, split, name, data_dir)


def _split_source(builder, split, name, data_dir):
    try:
        return builder.as_data_source(split=split)
    except ValueError as e:  # e.g. an unknown split name
        raise DatasetNotFoundError(f"dataset {name!r} in {data_dir} has no split {split!r} ({e}).") from None


class FeatureSetupError(ConfigError):
    """Cached features were made by another generator setup than the config expects."""


def check_feature_setup(config, builder) -> None:
    """Refuses cached features whose keys, shapes or generators do not match config.modalities."""
    setup = dict(builder.info.metadata.get("setup", {}) or {})
    made = dict(setup.get("generators", {}))
    available = sorted(k for k in builder.info.features.keys() if k not in ("label", "clip_id", "fold", "num_frames"))
    for modality, spec in config.modalities.items():
        key = spec.input
        if key not in available:
            raise FeatureSetupError(
                f"modality {modality!r} reads feature {key!r}, but {config.dataset.name} holds {available}. "
                f"Set config.modalities.{modality}.input to one of them, or extract {key!r}.")
        expected = spec.get("generator", "")
        actual = made.get(key, {}).get("generator")
        if expected and actual != expected:
            raise FeatureSetupError(
                f"{config.dataset.name}: feature {key!r} was made by generator {actual!r}, but "
                f"config.modalities.{modality}.generator is {expected!r}. Re-extract with "
                f"configs/extract.py:{expected}, or fix the config.")
        want_ckpt = spec.get("checkpoint", "")
        got = str(made.get(key, {}).get("weights", ""))
        if want_ckpt and got != f"checkpoint:{os.path.abspath(os.path.expanduser(want_ckpt))}":
            raise FeatureSetupError(
                f"{config.dataset.name}: feature {key!r} was made with weights {got!r}, but the config "
                f"expects the fine-tuned generator of {want_ckpt!r}. Re-extract with "
                f"--config.generators.{key}.checkpoint={want_ckpt}.")
        shape = builder.info.features[key].shape
        dim = made.get(key, {}).get("feature_dim")
        if dim is not None and shape[-1] != dim:
            raise FeatureSetupError(f"{config.dataset.name}: feature {key!r} has shape {shape}, its setup says "
                                    f"{dim} features per frame; the dataset is damaged, re-extract it.")


class Preprocessor:
    """Record -> example dict. Frames: random crop + horizontal flip in training, centre crop in eval.

    The same crop and flip apply to all frames of a clip. Output frames: uint8[T, S, S, 3].
    """

    def __init__(self, config, *, train: bool):
        self.modalities = {name: spec.input for name, spec in config.modalities.items()}
        self.crop = int(config.data.get("crop_size", 0) or 0)
        self.flip = bool(config.data.get("flip", True)) and train
        self.train = train
        self.min_confidence = float(config.data.get("keypoint_min_confidence", 0.05))

    def _frames(self, frames, rng: np.random.Generator | None):
        x = np.stack(frames) if isinstance(frames, list) else np.asarray(frames)
        h, w = x.shape[1:3]
        s = self.crop or h
        if s > min(h, w):
            raise ConfigError(f"config.data.crop_size={s} is larger than the stored frames ({h}x{w}).")
        if self.train and rng is not None:
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        x = x[:, top : top + s, left : left + s]
        if self.flip and rng is not None and rng.random() < 0.5:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x)

    def __call__(self, record, rng: np.random.Generator | None = None) -> dict:
        out = {}
        for name, key in self.modalities.items():
            if key not in record:
                raise ConfigError(
                    f"modality {name!r} reads dataset feature {key!r}, which this dataset lacks "
                    f"(it has {sorted(record)}). Fix config.modalities.{name}.input or the dataset."
                )
            value = record[key]
            if key == "frames":
                out[name] = self._frames(value, rng)
            elif key == "keypoints":  # OpenPose points -> normalised per-frame vectors + frame mask
                points = np.asarray(value, np.float32)
                out[name] = keypoints.keypoint_features(points, min_confidence=self.min_confidence)
                out[f"mask/{name}"] = (points[..., 2] >= self.min_confidence).any(axis=-1)
            else:
                out[name] = np.asarray(value, np.float32)
        out["label"] = np.int32(record["label"])
        out["mask"] = np.bool_(True)
        return out


def example_shapes(config) -> dict[str, tuple[int, ...]]:
    """Per-clip shape of each modality after preprocessing (reads one test record)."""
    source = open_source(config, fold_split(config, "test"))
    example = Preprocessor(config, train=False)(source[0])
    return {name: example[name].shape for name in config.modalities}


def _batch_size_per_process(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ConfigError(
            f"config.batch_size={global_batch} is not divisible by the {process_count} processes; "
            "pick a multiple of the process count."
        )
    return global_batch // process_count


def train_dataset(config, *, process_index: int = 0, process_count: int = 1, start_step: int = 0) -> grain.IterDataset:
    """Infinite, shuffled, augmented training batches of this process, from batch `start_step` on."""
    source = open_source(config, fold_split(config, "train"))
    local = _batch_size_per_process(int(config.batch_size), process_count)
    ds = (
        grain.MapDataset.source(source)
        .shuffle(seed=int(config.seed))
        .repeat()
        .random_map(Preprocessor(config, train=True), seed=int(config.seed) + 1)
    )
    # Chunks of `local` consecutive positions; global batch k = chunks kP..kP+P-1 in process order,
    # so every process count sees the same global batches, row for row.
    ds = ds.batch(local, drop_remainder=True)[process_index::process_count][int(start_step):]
    options = grain.ReadOptions(
        num_threads=int(config.data.get("read_threads", 4)), prefetch_buffer_size=int(config.data.get("prefetch", 8))
    )
    return ds.to_iter_dataset(options)


def eval_batches(
    config, split: str | None = None, *, process_index: int = 0, process_count: int = 1, batch_size: int | None = None
) -> tuple[Iterator[dict], int]:
    """Padded evaluation batches of this process, and the number of global batches.

    Every clip of the split is in exactly one batch row with mask True; padding rows repeat
    clip 0 with mask False. Global batch b holds clips [b*G, (b+1)*G); process p holds the
    contiguous block [b*G + p*L, b*G + (p+1)*L) of it.
    """
    split = split or fold_split(config, "test")
    source = open_source(config, split)
    n = len(source)
    global_batch = int(batch_size or config.get("eval_batch_size", config.batch_size))
    local = _batch_size_per_process(global_batch, process_count)
    num_batches = -(-n // global_batch)
    positions = [
        b * global_batch + process_index * local + j for b in range(num_batches) for j in range(local)
    ]
    pre = Preprocessor(config, train=False)

    def load(position):
        example = pre(source[position if position < n else 0])
        example["mask"] = np.bool_(position < n)
        return example

    ds = grain.MapDataset.source(positions).map(load).batch(local)
    options = grain.ReadOptions(num_threads=int(config.data.get("read_threads", 4)), prefetch_buffer_size=4)
    return iter(ds.to_iter_dataset(options)), num_batches
