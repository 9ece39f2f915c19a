"""What a run keeps in its workdir besides checkpoints: config.json, metrics.jsonl, TensorBoard events.

A workdir belongs to one config: rerunning with the same config resumes; a different config is
refused (except for keys that do not change the run's numbers, `RESUMABLE_KEYS`).
"""

from __future__ import annotations

import json
import os

import ml_collections

from fer_jax.errors import ConfigError, MissingError, WorkdirConflictError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# Keys that may differ between the run in a workdir and the command resuming it.
RESUMABLE_KEYS = (
    "dataset.data_dir",
    "dataset.source",  # the build cached features come from: only what messages suggest
    "data.read_threads",
    "data.prefetch",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "stop_check_s",
    "async_checkpointing",
    "keep_checkpoints",
    "progress_bar",
)

# Keys added to the configs after runs already existed, with the value that reproduces what those
# runs did: a run whose config.json lacks such a key (or holds the old form) resumes under it.
ADDED_KEYS = {
    "data.sampler": ("shuffle",),
    "data.balance_power": (1.0,),
    "loss.soft_targets": (0.0,),
    "loss.class_weights": ("", None),  # was a list field, None = no weights
    "data.label_fraction": (1.0,),
    "data.num_frames": (0, None, 16),  # T the model reads; 0 = as the dataset stores (16 before it was a key)
    "dataset.group_by": ("", None),  # a per-clip field evaluation also reports by (FERV39k's scene)
    "num_classes": (0, 7, None),  # 0 = the dataset's; runs before datasets were data said 7 (DFEW)
    # the pose modality's dataset key, `keypoints` in DFEW builds before 1.2.0 (both read the same array)
    "modalities.pose.input": ("keypoints", "pose"),
    "modalities.omnivec.inputs.pose": ("keypoints", "pose"),
}


def flatten(d, prefix="") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_to_dict(config) -> dict:
    return json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise MissingError(
            f"{path} not found: {workdir!r} is not a training run's workdir (python -m fer_jax.train writes it)."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_classifier_config(workdir: str, data_dir: str | None = None) -> ml_collections.ConfigDict:
    """The config of a classifier run (train/cross_validate), optionally pointed at another data_dir.

    Refuses an OmniVec pretraining run, which has no classifier to evaluate or predict with.
    """
    config = load_config(workdir)
    if "pretrain" in config:
        raise ConfigError(f"{workdir} is an OmniVec pretraining run: it has no classifier (its reconstruction "
                          "loss is in metrics.jsonl). Use a fusion run that uses it.")
    if data_dir:
        config.dataset.data_dir = data_dir
    return config


def check_claim(workdir: str, config) -> None:
    """Refuses a workdir that holds a run of another config (keys in RESUMABLE_KEYS may differ); writes nothing.

    A workdir whose run never reached its first step (config.json but no checkpoint, e.g. a command
    that failed before training) holds nothing to resume: any config may take it over.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path) or not _has_checkpoint(workdir):
        return
    with open(path) as f:
        saved = json.load(f)
    a, b = flatten(saved), flatten(config_to_dict(config))

    def same(k):
        if a.get(k) == b.get(k) or k in RESUMABLE_KEYS:
            return True
        neutral = ADDED_KEYS.get(k, ())
        return (k not in a or a[k] in neutral) and b.get(k) in neutral

    diff = sorted(k for k in set(a) | set(b) if not same(k))
    if diff:
        shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
        raise WorkdirConflictError(
            f"{workdir} holds a run with another config ({shown}). Resume it with its own config "
            f"({path}), or train into a new --workdir."
        )


def _has_checkpoint(workdir: str) -> bool:
    """Whether the run in `workdir` saved any checkpoint (a finished one or one being written)."""
    folder = os.path.join(workdir, "checkpoints")
    return os.path.isdir(folder) and any(name[:1].isdigit() or "tmp" in name for name in os.listdir(folder))


def claim(workdir: str, config) -> None:
    """Checks the workdir (`check_claim`) and writes config.json into it: the run starts now."""
    check_claim(workdir, config)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
    os.replace(tmp, path)


class MetricsLog:
    """Appends metrics as JSON lines and TensorBoard scalars (process 0 only; a no-op elsewhere)."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if not enabled:
            return
        try:  # TensorBoard event files when tensorboardX is installed
            from tensorboardX import SummaryWriter  # lazy: optional, only for process 0's event files

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:
            self._tb = None

    def drop_after(self, step: int) -> None:
        """Drops lines a crashed run wrote after its last checkpoint (`step`), before it resumes there."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(self.path, "w") as f:
            f.writelines(keep)

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "dtype") else v)
                       for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, float):
                    self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
