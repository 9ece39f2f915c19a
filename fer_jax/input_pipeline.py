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
from collections.abc import Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds

from fer_jax import feature_checks, hints, modalities, paths
from fer_jax.data.samplers import ClassBalancedSampler, labelled_subset  # noqa: F401  (part of this module's API)
from fer_jax.errors import ConfigError, DatasetNotFoundError, FeatureSetupError  # noqa: F401  (re-exported)
from fer_jax.feature_checks import check_setup as check_feature_setup  # noqa: F401  (part of this module's API)
from fer_jax.modalities.features import AUDIO_FEATURE_PREFIX  # noqa: F401  (part of this module's API)
from tfds_dfew import datasets
from tfds_dfew import description as description_lib
from tfds_dfew import features as features_lib


def fold_split(config, part: str, description: description_lib.DatasetDescription | None = None) -> str:
    """The TFDS split string for `part` ('train' | 'test') of config.dataset.fold, by the dataset's split scheme.

    description: the dataset's (default: read from config.dataset's build).
    """
    description = description or dataset_description(config)
    try:
        train, test = description.scheme.splits(config.dataset.get("fold", 1) or 1)
    except ValueError as e:
        raise ConfigError(f"config.dataset.fold={config.dataset.get('fold')!r}: {description.title} has "
                          f"{description.scheme.describe()}; {e}.") from None
    return {"train": train, "test": test}[part]


def dataset_description(config) -> description_lib.DatasetDescription:
    """The description of config.dataset (class names, split scheme, frames per clip), from its build; when it
    is not built (a model built from a config alone: benchmarks, shape checks), its dataset's registered one."""
    try:
        return datasets.description_of(open_builder(config, check=False))
    except DatasetNotFoundError:
        name = features_lib.parse_name(str(config.dataset.name))
        try:
            return datasets.description(name[0] if name else str(config.dataset.name))
        except KeyError:
            raise DatasetNotFoundError(f"config.dataset.name={config.dataset.name!r}: no such dataset is built in "
                                       f"{config.dataset.data_dir} or known ({', '.join(datasets.names())}).") from None


def num_classes(config) -> int:
    """config.num_classes, or (0: the dataset's) its dataset's class count."""
    return int(config.get("num_classes", 0) or 0) or dataset_description(config).num_classes


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


def extract_hint(setup: str, data_dir: str, dataset: str = "dfew") -> str:
    """The commands that make cached features `<dataset>_features/<setup>` in `data_dir` (as extract names them)."""
    return hints.extract_command(setup, data_dir, dataset)


def open_builder(config, *, check: bool = True):
    """The built dataset of config.dataset (checked to exist; cached features checked against the config)."""
    name = dataset_name(config)
    data_dir = paths.expand(config.dataset.data_dir)
    features = features_lib.parse_name(name)
    base = features[0] if features else description_lib.base_name(name)
    source = str(config.dataset.get("source", "") or "")  # the clip build cached features come from
    if not paths.isdir(data_dir):
        make = hints.build_command(f"{base}/{source}" if features and source else name, config.dataset.data_dir)
        if features:
            make += (f", then {hints.extract_command(features[1], config.dataset.data_dir, features[0], source or None)}")
        raise DatasetNotFoundError(
            f"config.dataset.data_dir={config.dataset.data_dir!r} does not exist. If that is a typo, point it at "
            f"the folder that holds the built datasets (the demo's is data/tfds); to make it there: {make}")
    builder = _cached_builder(data_dir, name)
    if builder is None:
        if features:
            from_build = (f" (from {base}/{source}; if that is not built either: "
                          f"{hints.build_command(f'{base}/{source}', data_dir)})") if source else ""
            raise DatasetNotFoundError(
                f"cached features {name!r} are not in {data_dir}. Extract them first: "
                f"{hints.extract_command(features[1], data_dir, features[0], source or None)}{from_build}")
        if base not in datasets.names():
            raise DatasetNotFoundError(f"config.dataset.name={name!r} is not a known dataset; known: "
                                       f"{', '.join(datasets.names())} (their builds, e.g. dfew/frames112, or "
                                       "<dataset>_features/<setup> for cached features).")
        raise DatasetNotFoundError(f"dataset {name!r} is not built in {data_dir}. Build it first: "
                                   f"{hints.build_command(name, data_dir)}")
    if features and check:
        feature_checks.check_setup(config, builder)
        feature_checks.check_fresh(config, builder, lambda name: _cached_builder(data_dir, name))
    return builder


_BUILDERS: dict = {}


def _cached_builder(data_dir: str, name: str):
    """datasets.open_built, once per (folder, name, version folder) in a process."""
    path = datasets.version_dir(data_dir, name)
    if path is None:
        return None
    stamp = paths.mtime(paths.join(path, "dataset_info.json"))
    key = (path, stamp)
    if key not in _BUILDERS:
        _BUILDERS[key] = datasets.open_built(data_dir, name)
    return _BUILDERS[key]


def _split_source(builder, split, name, data_dir):
    try:
        return builder.as_data_source(split=split)
    except ValueError as e:  # e.g. an unknown split name
        raise DatasetNotFoundError(f"dataset {name!r} in {data_dir} has no split {split!r} ({e}).") from None


class Preprocessor:
    """Record -> example dict, each modality read by its spec (fer_jax.modalities): frames get a random crop
    and horizontal flip in training (centre crop in evaluation), pose is normalised, sound fitted, ...

    The flip (config.data.flip, half of the clips) mirrors everything of a clip that can be mirrored:
    all its frames and its OpenPose keypoints (x negated, left and right points swapped), so the two
    stay consistent; cached features cannot be mirrored and are left as they are. A dataset storing
    more frames per clip than the model reads (config.data.num_frames, 0 = as stored) gives T
    uniformly spaced ones, the same for every modality of the clip.
    """

    def __init__(self, config, *, train: bool):
        # modality -> dataset key, or {part: dataset key} for a tokenizer that reads several
        # (an OmniVec tokenizer: its parts come out as '<modality>/<part>' keys).
        self.config = config
        self.modalities = {name: (dict(spec.inputs) if spec.get("inputs") else spec.input)
                           for name, spec in config.modalities.items()}
        self.specs = {name: spec for name, spec in config.modalities.items()}
        self.flip = bool(config.data.get("flip", True)) and train
        self.train = train
        self.num_frames = int(config.data.get("num_frames", 0) or 0)
        self.votes = train and float(config.get("loss", {}).get("soft_targets", 0.0) or 0.0) > 0
        self.group_by = str(config.dataset.get("group_by", "") or "")

    def _read(self, record, name: str, key: str, ctx: modalities.ReadContext, out: dict, spec=None) -> None:
        """Puts modality `name` (dataset feature `key`) of `record` into `out`, with its frame mask if any."""
        kind = modalities.spec_for(spec) if spec is not None and not isinstance(spec, dict) else modalities.for_key(key)
        needed = kind.keys(key)
        if needed and not any(k in record for k in needed):
            raise ConfigError(
                f"modality {name!r} reads dataset feature {key!r}, which this dataset lacks "
                f"(it has {sorted(record)}). Fix config.modalities.{name.split('/')[0]}.input or the dataset."
                + feature_checks.sound_hint(key))
        kind.read(record, name, key, ctx, out)

    def __call__(self, record, rng: np.random.Generator | None = None) -> dict:
        out = {}
        mirror = bool(self.flip and rng is not None and rng.random() < 0.5)  # one decision per clip
        ctx = modalities.ReadContext(train=self.train, rng=rng, mirror=mirror, num_frames=self.num_frames,
                                     config=self.config)
        for name, key in self.modalities.items():
            if isinstance(key, dict):
                for part, part_key in key.items():
                    self._read(record, f"{name}/{part}", part_key, ctx, out)
            else:
                self._read(record, name, key, ctx, out, self.specs[name])
        out["label"] = np.int32(record["label"])
        out["mask"] = np.bool_(True)
        if self.group_by and self.group_by in record:  # e.g. FERV39k's scene, for per-group evaluation
            out["group"] = np.int32(record[self.group_by])
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
    if not len(source):
        raise DatasetNotFoundError(f"split {split!r} of {config.dataset.name} holds no clip to read the input "
                                   "shapes from.")
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
        """The stored splits ('fold1'..'fold5' or 'train', 'test'; and 'unlabelled' when built with it)."""
        return sorted(self.builder.info.splits.keys())

    @property
    def description(self) -> description_lib.DatasetDescription:
        """The dataset's description: class names, split scheme, frames per clip (tfds_dfew.description)."""
        return datasets.description_of(self.builder)

    def split_of(self, part: str) -> str:
        """The split string of `part` ('train' | 'test') for config.dataset.fold."""
        return fold_split(self.config, part, self.description)

    def class_counts(self, split: str) -> np.ndarray:
        """int64[C]: labelled clips of each class in `split` (read without decoding frames)."""
        labels = read_fields(self.source(split), ("label",))["label"]
        return np.bincount(labels[labels >= 0], minlength=self.description.num_classes)


def open_run_data(config, *, shapes_split: str | None = None) -> RunData:
    """Opens config.dataset once; input shapes are read from one clip of `shapes_split` (default the test fold)."""
    data = RunData(config=config, builder=open_builder(config), input_shapes={})
    split = shapes_split or data.split_of("test")
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
    how = ("rebuild the dataset from a release with annotator votes (DFEW: Annotation/annotation.xlsx; "
           f"{hints.build_command(name, data_dir)})")
    if features_lib.parse_name(name):
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
                                       num_classes=num_classes(config))
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
