"""What a run keeps in its workdir besides checkpoints: config.json, metrics.jsonl, TensorBoard events.

A workdir belongs to one config: rerunning with the same config resumes; a different config is
refused (except for keys that do not change the run's numbers, `RESUMABLE_KEYS`).
"""

from __future__ import annotations

import json
import tempfile

import ml_collections

from fer_jax import paths
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
    "allow_transductive": (False, None),  # runs before the inductive check (fer_jax.inductive)
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
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(path):
        raise MissingError(
            f"{path} not found: {workdir!r} is not a training run's workdir (python -m fer_jax.train writes it)."
        )
    return ml_collections.ConfigDict(json.loads(paths.read_text(path)))


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
    path = paths.join(workdir, CONFIG_FILE)
    if not paths.exists(path) or not _has_checkpoint(workdir):
        return
    saved = json.loads(paths.read_text(path))
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
    """Whether the run in `workdir` saved any checkpoint (a finished one or one being written: locally a
    temporary folder, on an object store a step folder without its commit file)."""
    return any(name[:1].isdigit() or "tmp" in name for name in paths.listdir(paths.join(workdir, "checkpoints")))


def claim(workdir: str, config) -> None:
    """Checks the workdir (`check_claim`) and writes config.json into it: the run starts now."""
    check_claim(workdir, config)
    paths.write_text(paths.join(workdir, CONFIG_FILE), json.dumps(config_to_dict(config), indent=2, sort_keys=True))


class MetricsLog:
    """Appends metrics as JSON lines and TensorBoard scalars (process 0 only; a no-op elsewhere).

    On local disk each record is appended. An object store has no append: the log is kept in memory
    and written whole after each record, and the TensorBoard event files are written to a local
    folder and uploaded after each flush (TensorBoard reads every event file in the folder, so a run
    resumed on another machine adds its own).
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = paths.join(workdir, METRICS_FILE)
        self._remote = paths.is_url(workdir)
        self._lines: list[str] | None = None
        self._tb = None
        self._tb_local = self._tb_remote = None
        if not enabled:
            return
        try:  # TensorBoard event files when tensorboardX is installed
            from tensorboardX import SummaryWriter  # lazy: optional, only for process 0's event files
        except ImportError:
            return
        self._tb_remote = paths.join(workdir, "tensorboard")
        self._tb_local = tempfile.mkdtemp(prefix="fer_jax-tensorboard-") if self._remote else self._tb_remote
        self._tb = SummaryWriter(self._tb_local)

    def _read(self) -> list[str]:
        if self._lines is None:
            self._lines = [line + "\n" for line in paths.read_text(self.path).splitlines() if line.strip()] \
                if paths.exists(self.path) else []
        return self._lines

    def drop_after(self, step: int) -> None:
        """Drops lines a crashed run wrote after its last checkpoint (`step`), before it resumes there."""
        if not self.enabled or not paths.exists(self.path):
            return
        self._lines = [line for line in self._read() if json.loads(line).get("step", 0) <= step]
        paths.write_text(self.path, "".join(self._lines))

    def write(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        record.update({k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "dtype") else v)
                       for k, v in values.items()})
        line = json.dumps(record) + "\n"
        if self._remote:
            self._read().append(line)
            paths.write_text(self.path, "".join(self._lines))
        else:
            with open(self.path, "a") as f:
                f.write(line)
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, float):
                    self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()
            self._upload_events()

    def _upload_events(self) -> None:
        if self._remote and self._tb_local:
            paths.copy_tree(self._tb_local, self._tb_remote)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._upload_events()
            if self._remote:
                paths.remove(self._tb_local)
            self._tb = None


def read_metrics(workdir: str) -> list[dict]:
    path = paths.join(workdir, METRICS_FILE)
    if not paths.exists(path):
        return []
    return [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]
