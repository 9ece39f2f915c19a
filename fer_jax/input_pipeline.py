"""Grain input pipelines over `tfds.data_source`: training stream and padded evaluation batches.

A batch is a dict of numpy arrays, per process (the trainer turns it into global arrays):
  {<modality>: array[L, T, ...], 'label': int32[L], 'mask': bool[L], 'mask/<modality>': bool[L, T]}
with L = global batch / process count; `mask` is False on padding rows; `mask/<modality>` (for
keypoints) is False on frames where OpenPose found nobody, and for sound False on every slice of
a clip without sound. A modality reading the raw sound (dataset feature `audio`) comes as
'<modality>/waveform' float32[L, S] and '<modality>/length' int32[L] (fer_jax.data.audio.fit,
S = config.data.audio_seconds x 16 kHz); cached audio features (`audio_<generator>`) are masked
by the dataset's `audio_mask`.

Training order: the training split is shuffled globally (a new permutation each epoch),
augmented with a per-position random stream, and cut into global batches of G consecutive
positions; process p feeds rows [p*L, (p+1)*L) of each (L = G / P). So the global batch at a step
holds the same clips in the same rows whatever the number of processes, and the
stream is a deterministic function of (seed, step): a resumed run starts the iterator at its
checkpoint's step (`start_step`), also with a different number of processes or devices.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds

import tfds_dfew.dfew  # noqa: F401  (registers the `dfew` builder with TFDS)
from fer_jax.data import audio as audio_lib
from fer_jax.data import keypoints
from fer_jax.data.samplers import ClassBalancedSampler, labelled_subset  # noqa: F401  (part of this module's API)
from fer_jax.errors import ConfigError, DatasetNotFoundError, FeatureSetupError
from fer_jax.models import generators
from tfds_dfew import features as features_lib
from tfds_dfew import release


def fold_split(config, part: str) -> str:
    """The TFDS split string for `part` ('train' | 'test') of config.dataset.fold."""
    train, test = release.fold_splits(int(config.dataset.fold))
    return {"train": train, "test": test}[part]


def dataset_name(config) -> str:
    """config.dataset.name with '{fold}' replaced by config.dataset.fold.

    For per-fold datasets, e.g. OmniVec features pretrained without fold k's clips:
    `dfew_features/mini_xception_fer_omnivec_x{fold}`.
    """
    name = str(config.dataset.name)
    if "{fold}" in name:
        return name.replace("{fold}", str(int(config.dataset.fold)))
    return name


def open_source(config, split: str):
    """tfds.data_source for config.dataset.name and `split`, with a useful error when absent.

    `dfew/<frames config>` is the frames dataset; `dfew_features/<setup>` a cached-features dataset
    written by `python -m fer_jax.extract` (its generator setup must match config.modalities).
    """
    return _split_source(open_builder(config), split, config.dataset.name, config.dataset.data_dir)


def dataset_splits(config) -> list[str]:
    """The stored splits of config.dataset ('fold1'..'fold5', and 'unlabelled' when built with it)."""
    return sorted(open_builder(config).info.splits.keys())


def extract_hint(setup: str, data_dir: str) -> str:
    """The commands that make cached features `dfew_features/<setup>` in `data_dir` (as extract names them)."""
    where = "" if os.path.normpath(data_dir) == "data/tfds" else (
        f" --config.source.data_dir={data_dir} --config.output.data_dir={data_dir}")
    for suffix, how in (("_omnivec", "omnivec,run=<pretraining_workdir>"), ("_external", "npy,path=<npy_folder>")):
        if setup.endswith(suffix) and len(setup) > len(suffix):
            base = setup[: -len(suffix)]
            return (f"{extract_hint(base, data_dir)}, then python -m fer_jax.extract --config "
                    f"configs/extract.py:{how},features={base}{where}")
    # frame generators: their names joined by '_'
    names, rest = [], setup
    while rest:
        match = next((g for g in sorted(generators.names(), key=len, reverse=True)
                      if rest == g or rest.startswith(g + "_")), None)
        if match is None:
            return (f"no extraction setup makes {setup!r} by that name; see python -m fer_jax.extract --help "
                    f"and the folders in {data_dir}/dfew_features")
        names.append(match)
        rest = rest[len(match) + 1:]
    return f"python -m fer_jax.extract --config configs/extract.py:{'+'.join(names)}{where}"


def open_builder(config):
    """The TFDS builder of config.dataset (checked to exist; cached features checked against the config)."""
    name = dataset_name(config)
    data_dir = os.path.expanduser(config.dataset.data_dir)
    if not os.path.isdir(data_dir):
        make = f"python -m tfds_dfew.build --manual_dir <DFEW release> --data_dir {config.dataset.data_dir}"
        if name.startswith(features_lib.NAME + "/"):
            make += f", then {extract_hint(name.split('/', 1)[1], config.dataset.data_dir)}"
        raise DatasetNotFoundError(
            f"config.dataset.data_dir={config.dataset.data_dir!r} does not exist. If that is a typo, point it at "
            f"the folder that holds the built datasets (the demo's is data/tfds); to make it there: {make}")
    if name.startswith(features_lib.NAME + "/"):
        builder = features_lib.open_builder(data_dir, name.split("/", 1)[1])
        if builder is None:
            raise DatasetNotFoundError(
                f"cached features {name!r} are not in {data_dir}. Extract them first: "
                f"{extract_hint(name.split('/', 1)[1], data_dir)}")
        check_feature_setup(config, builder)
        return builder
    how = f"Build it first: python -m tfds_dfew.build --manual_dir <DFEW release> --data_dir {data_dir}"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name or config
        raise DatasetNotFoundError(f"config.dataset.name={name!r} is not a known dataset ({str(e).splitlines()[0]}).") from None
    if not builder.is_prepared():
        raise DatasetNotFoundError(f"dataset {name!r} is not built in {data_dir}. {how}")
    return builder


def _split_source(builder, split, name, data_dir):
    try:
        return builder.as_data_source(split=split)
    except ValueError as e:  # e.g. an unknown split name
        raise DatasetNotFoundError(f"dataset {name!r} in {data_dir} has no split {split!r} ({e}).") from None


def _sound_hint(key: str) -> str:
    """What to do when a dataset lacks the raw sound (`audio`)."""
    if key not in features_lib.AUDIO_KEYS:
        return ""
    return (" The raw sound comes from a dfew/*_audio build; features extracted from one carry it unless "
            "extracted with --config.output.keep_sound=False.")


def check_feature_setup(config, builder) -> None:
    """Refuses cached features whose keys, shapes or generators do not match config.modalities."""
    setup = dict(builder.info.metadata.get("setup", {}) or {})
    made = dict(setup.get("generators", {}))
    available = sorted(k for k in builder.info.features.keys() if k not in features_lib.META_KEYS)
    for modality, spec in config.modalities.items():
        if spec.get("inputs"):  # read in parts (OmniVec tokenizer): the parts must exist
            lacking = sorted(set(dict(spec.inputs).values()) - set(available))
            if lacking:
                raise FeatureSetupError(
                    f"modality {modality!r} reads features {lacking}, but {config.dataset.name} holds "
                    f"{available}. Fix config.modalities.{modality}.inputs, or extract them.")
            continue
        key = spec.input
        if key not in available:
            raise FeatureSetupError(
                f"modality {modality!r} reads feature {key!r}, but {config.dataset.name} holds {available}. "
                f"Set config.modalities.{modality}.input to one of them, or extract {key!r}." + _sound_hint(key))
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


AUDIO_FEATURE_PREFIX = "audio_"  # cached features of an audio generator; the record's `audio_mask` masks them


class Preprocessor:
    """Record -> example dict. Frames: random crop + horizontal flip in training, centre crop in eval.

    The same crop applies to all frames of a clip. The flip (config.data.flip, half of the clips)
    mirrors everything of a clip that can be mirrored: all its frames and its OpenPose keypoints
    (x negated, left and right points swapped), so the two stay consistent; cached features
    cannot be mirrored and are left as they are. Output frames: uint8[T, S, S, 3].
    """

    def __init__(self, config, *, train: bool):
        # modality -> dataset key, or {part: dataset key} for a tokenizer that reads several
        # (an OmniVec tokenizer: its parts come out as '<modality>/<part>' keys).
        self.modalities = {name: (dict(spec.inputs) if spec.get("inputs") else spec.input)
                           for name, spec in config.modalities.items()}
        self.crop = int(config.data.get("crop_size", 0) or 0)
        self.flip = bool(config.data.get("flip", True)) and train
        self.train = train
        self.votes = train and float(config.get("loss", {}).get("soft_targets", 0.0) or 0.0) > 0
        self.min_confidence = float(config.data.get("keypoint_min_confidence", 0.05))
        self.audio_samples = int(round(float(config.data.get("audio_seconds", 8.0)) * audio_lib.SAMPLE_RATE))

    def _read(self, record, name: str, key: str, rng, mirror: bool, out: dict) -> None:
        """Puts modality `name` (dataset feature `key`) of `record` into `out`, with its frame mask if any."""
        if key not in record:
            raise ConfigError(
                f"modality {name!r} reads dataset feature {key!r}, which this dataset lacks "
                f"(it has {sorted(record)}). Fix config.modalities.{name.split('/')[0]}.input or the dataset."
                + _sound_hint(key))
        value = record[key]
        if key == "frames":
            out[name] = self._frames(value, rng, mirror)
        elif key == "keypoints":  # OpenPose points -> normalised per-frame vectors + frame mask
            points = np.asarray(value, np.float32)
            if mirror:
                points = keypoints.flip_keypoints(points)
            out[name] = keypoints.keypoint_features(points, min_confidence=self.min_confidence)
            out[f"mask/{name}"] = (points[..., 2] >= self.min_confidence).any(axis=-1)
        elif key == "audio":  # the clip's sound: a fixed-size waveform, its length, and the per-slice mask
            if "/" in name:
                raise ConfigError(f"{name!r} reads the raw sound inside another modality; only a top-level "
                                  "modality can (give the part cached audio features, e.g. audio_logmel).")
            waveform, length = audio_lib.fit(value, record.get("audio_length"), self.audio_samples)
            out[f"{name}/waveform"], out[f"{name}/length"] = waveform, np.int32(length)
            out[f"mask/{name}"] = audio_lib.slice_mask(length)
        else:
            out[name] = np.asarray(value, np.float32)
            if key.startswith(AUDIO_FEATURE_PREFIX) and "audio_mask" in record:  # cached audio features
                out[f"mask/{name}"] = np.asarray(record["audio_mask"]) > 0.5

    def _frames(self, frames, rng: np.random.Generator | None, mirror: bool):
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
        if mirror:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x)

    def __call__(self, record, rng: np.random.Generator | None = None) -> dict:
        out = {}
        mirror = bool(self.flip and rng is not None and rng.random() < 0.5)  # one decision per clip
        for name, key in self.modalities.items():
            if isinstance(key, dict):
                for part, part_key in key.items():
                    self._read(record, f"{name}/{part}", part_key, rng, mirror, out)
            else:
                self._read(record, name, key, rng, mirror, out)
        out["label"] = np.int32(record["label"])
        out["mask"] = np.bool_(True)
        if self.votes:  # training with soft targets: the clip's vote counts, float32[C] in class order
            if "votes" not in record:
                raise ConfigError(
                    f"config.loss.soft_targets needs the dataset feature 'votes' (it has {sorted(record)}).")
            out["votes"] = np.asarray(record["votes"], np.float32)
        return out


def example_shapes(config, split: str | None = None, *, source=None) -> dict:
    """Per-clip shape of each modality after preprocessing (reads one record of `split`, default the test fold).

    A modality that reads several dataset features gets {part: shape}.
    """
    source = source if source is not None else open_source(config, split or fold_split(config, "test"))
    return shapes_of(config, Preprocessor(config, train=False)(source[0]))


@dataclasses.dataclass
class RunData:
    """A run's dataset, opened (and checked against the config) once: its splits, input shapes, class counts."""

    config: object
    builder: object
    input_shapes: dict
    _sources: dict = dataclasses.field(default_factory=dict)

    def source(self, split: str):
        """The tfds data source of `split` (opened once)."""
        if split not in self._sources:
            self._sources[split] = _split_source(self.builder, split, dataset_name(self.config),
                                                 self.config.dataset.data_dir)
        return self._sources[split]

    @property
    def splits(self) -> list[str]:
        """The stored splits ('fold1'..'fold5', and 'unlabelled' when built with it)."""
        return sorted(self.builder.info.splits.keys())

    def class_counts(self, split: str) -> np.ndarray:
        """int64[C]: labelled clips of each class in `split` (read without decoding frames)."""
        labels = read_fields(self.source(split), ("label",))["label"]
        return np.bincount(labels[labels >= 0], minlength=int(self.config.num_classes))


def open_run_data(config, *, shapes_split: str | None = None) -> RunData:
    """Opens config.dataset once; input shapes are read from one clip of `shapes_split` (default the test fold)."""
    data = RunData(config=config, builder=open_builder(config), input_shapes={})
    split = shapes_split or fold_split(config, "test")
    data.input_shapes = example_shapes(config, source=data.source(split))
    return data


def shapes_of(config, example: dict) -> dict:
    """Per-clip shape of each modality of a preprocessed example ({part: shape} for one read in parts)."""
    return {name: example[name].shape if name in example else
            {k.split("/", 1)[1]: v.shape for k, v in example.items() if k.startswith(name + "/")}
            for name in config.modalities}


def model_inputs(batch: dict, modalities) -> tuple[dict, dict]:
    """(inputs, masks) of the model from a flat batch.

    inputs[m] is batch[m], or for a modality read in parts {part: batch['m/part'],
    'mask/part': batch['mask/m/part']}; masks[m] is batch['mask/m'] where the batch has it.
    """
    inputs, masks = {}, {}
    for m in modalities:
        if m in batch:
            inputs[m] = batch[m]
        else:
            inputs[m] = {k.split("/", 1)[1]: v for k, v in batch.items() if k.startswith(m + "/")}
            inputs[m].update({"mask/" + k.split("/", 2)[2]: v for k, v in batch.items()
                              if k.startswith(f"mask/{m}/")})
        if f"mask/{m}" in batch:
            masks[m] = batch[f"mask/{m}"]
    return inputs, masks


def _batch_size_per_process(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ConfigError(
            f"config.batch_size={global_batch} is not divisible by the {process_count} processes; "
            "pick a multiple of the process count."
        )
    return global_batch // process_count


SAMPLERS = ("shuffle", "class_balanced")  # config.data.sampler


def read_fields(source, keys) -> dict[str, np.ndarray]:
    """{key: array[N, ...]}: small per-clip fields (e.g. 'label', 'votes') of every record of `source`.

    A TFDS data source is read with its other features left undecoded (no frames are decoded).
    """
    class Undecoded(tfds.decode.Decoder):
        """Leaves a feature as stored (e.g. JPEG bytes)."""

        def decode_example(self, serialized):
            return serialized

        decode_example_np = decode_batch_example_np = decode_ragged_example_np = decode_example

    info = getattr(source, "dataset_info", None)
    if info is not None and dataclasses.is_dataclass(source):
        source = dataclasses.replace(source, decoders={k: Undecoded() for k in info.features.keys() if k not in keys})
    n = len(source)
    out = {k: [] for k in keys}
    for start in range(0, n, 256):
        positions = list(range(start, min(start + 256, n)))
        records = source.__getitems__(positions) if hasattr(source, "__getitems__") else [source[i] for i in positions]
        for k in keys:
            out[k].extend(np.asarray(r[k]) for r in records)
    return {k: np.stack(v) if v else np.zeros((0,)) for k, v in out.items()}


def check_votes(config, source) -> None:
    """Refuses soft targets (config.loss.soft_targets > 0) on a dataset without vote counts.

    Without counts means: no `votes` feature (built before votes existed), or all of the split's
    votes zero (built from a release without Annotation/annotation.xlsx). Clips whose votes sum
    to 0 among others train on their hard target.
    """
    info = getattr(source, "dataset_info", None)
    keys = sorted(info.features.keys()) if info is not None else sorted(source[0]) if len(source) else []
    if "votes" in keys:
        votes = read_fields(source, ("votes",))["votes"]
        totals = votes.sum(-1) if votes.ndim == 2 else np.zeros(0)
        if (totals > 0).any():
            if not (totals > 0).all():
                logging.getLogger(__name__).info(
                    "soft targets: %d of %d training clips have no votes; they train on their hard target.",
                    int((totals == 0).sum()), len(totals))
            return
        lacking = "has only zero vote counts"
    else:
        lacking = f"has no 'votes' feature (it has {keys})"
    name, data_dir = config.dataset.name, config.dataset.data_dir
    how = ("rebuild `dfew` from a DFEW release that has Annotation/annotation.xlsx "
           f"(python -m tfds_dfew.build --manual_dir <DFEW release> --data_dir {data_dir})")
    if name.split("/", 1)[0] == "dfew_features":
        how += ", then extract the features again from it (python -m fer_jax.extract)"
    raise ConfigError(
        f"config.loss.soft_targets={config.loss.soft_targets} needs per-clip vote counts, but dataset {name!r} "
        f"in {data_dir} {lacking}. To train with soft targets, {how}; or set config.loss.soft_targets=0.")


def train_dataset(config, *, split: str | None = None, process_index: int = 0, process_count: int = 1,
                  start_step: int = 0, source=None) -> grain.IterDataset:
    """Infinite, shuffled, augmented training batches of this process, from batch `start_step` on.

    split: the TFDS split string to read (default: the training split of config.dataset.fold).
    config.data.sampler: 'shuffle' (a new permutation of the split each epoch) or 'class_balanced'
    (`ClassBalancedSampler` over the records' labels, with power config.data.balance_power).
    """
    sampler = config.data.get("sampler", "shuffle")
    if sampler not in SAMPLERS:
        raise ConfigError(f"config.data.sampler={sampler!r}: expected one of {list(SAMPLERS)}.")
    if source is None:
        source = open_source(config, split or fold_split(config, "train"))
    if float(config.get("loss", {}).get("soft_targets", 0.0) or 0.0) > 0:
        check_votes(config, source)
    local = _batch_size_per_process(int(config.batch_size), process_count)
    fraction = float(config.data.get("label_fraction", 1.0) or 1.0)
    subset = None  # source indices of the labelled subset, when training on a fraction of the labels
    if fraction < 1.0:
        subset = labelled_subset(read_fields(source, ("label",))["label"], fraction, seed=int(config.seed))
        logging.getLogger(__name__).info("training on %d clips: a class-stratified %g of the split's labels",
                                         len(subset), fraction)
    if sampler == "class_balanced":
        labels = read_fields(source, ("label",))["label"]
        indices = ClassBalancedSampler(labels if subset is None else labels[subset], seed=int(config.seed),
                                       power=float(config.data.get("balance_power", 1.0)),
                                       num_classes=int(config.num_classes))
        positions = indices if subset is None else grain.MapDataset.source(indices).map(lambda i: int(subset[i]))
        records = grain.MapDataset.source(positions).map(source.__getitem__)
    elif subset is not None:
        records = grain.MapDataset.source(subset).shuffle(seed=int(config.seed)).repeat().map(
            lambda i: source[int(i)])
    else:
        records = grain.MapDataset.source(source).shuffle(seed=int(config.seed)).repeat()
    ds = records.random_map(Preprocessor(config, train=True), seed=int(config.seed) + 1)
    # Chunks of `local` consecutive positions; global batch k = chunks kP..kP+P-1 in process order,
    # so every process count sees the same global batches, row for row.
    ds = ds.batch(local, drop_remainder=True)[process_index::process_count][int(start_step):]
    options = grain.ReadOptions(
        num_threads=int(config.data.get("read_threads", 4)), prefetch_buffer_size=int(config.data.get("prefetch", 8))
    )
    return ds.to_iter_dataset(options)


def eval_batches(
    config, split: str | None = None, *, process_index: int = 0, process_count: int = 1, batch_size: int | None = None,
    source=None) -> tuple[Iterator[dict], int]:
    """Padded evaluation batches of this process, and the number of global batches.

    Every clip of the split is in exactly one batch row with mask True; padding rows repeat
    clip 0 with mask False. Global batch b holds clips [b*G, (b+1)*G); process p holds the
    contiguous block [b*G + p*L, b*G + (p+1)*L) of it.
    """
    if source is None:
        source = open_source(config, split or fold_split(config, "test"))
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
