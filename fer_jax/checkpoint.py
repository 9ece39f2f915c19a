"""Orbax checkpoints of a run's train state.

Saves may be asynchronous (`async_save`; training's `config.async_checkpointing`, on by default):
the step goes on while Orbax writes, and the loop waits for a save in flight before it returns,
stops or raises.

Layout: <workdir>/checkpoints/<step>/state (runs made before 2026-11 also hold an unread `meta`). The data position is not stored: the
training stream is a function of (seed, step), so the step restores it. Orbax writes each checkpoint to a
temporary folder and renames it when complete (on an object store, which has no rename, it writes
the step's folder and a `commit_success.txt` in it last), so a run killed mid-save never leaves a
checkpoint that looks complete; `latest_step()` only sees finished ones. The workdir goes to Orbax as
given (a `gs://` URL untouched; a local path made absolute).

A finished checkpoint can still be unreadable (a truncated or corrupted array file, a disk that
filled up). `restore_latest` tells that apart from a checkpoint of another model: Orbax reports a
tree or shape that differs from the state it restores into as ValueError / KeyError / TypeError
with readable metadata (CheckpointMismatchError: nothing is touched); any other failure to read
moves the checkpoint aside to `<step>.unreadable-<time>` (so the next save of that step cannot
collide with it), names it in a one-line warning, and tries the previous one.
"""

from __future__ import annotations

import logging
import time

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from fer_jax import paths
from fer_jax.errors import CheckpointMismatchError

log = logging.getLogger(__name__)
COMMIT_FILE = "commit_success.txt"  # Orbax's mark of a finished checkpoint on an object store


class RunCheckpoints:
    """Saves and restores the `state` item with an Orbax CheckpointManager."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, read_only: bool = False,
                 async_save: bool = False):
        self.directory = paths.join(paths.resolve(workdir), "checkpoints")
        self.async_save = bool(async_save) and not read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=self.async_save,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state) -> None:
        """Saves `state` as checkpoint `step`. With async_save, returns once Orbax has copied the arrays off
        the devices (so the next step may donate their buffers) and writes them in the background; a save
        still in flight is finished by the next save, `wait()` or `close()`."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
        if not self.async_save:
            self.manager.wait_until_finished()

    def wait(self) -> None:
        """Returns when no save is in flight (the checkpoint is then complete on disk)."""
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state):
        """Restores state into the structure and shardings of `abstract_state`.

        Raises CheckpointMismatchError when the saved tree differs.
        """
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except (ValueError, KeyError, TypeError) as e:
            raise self._mismatch(step, e) from None
        return restored["state"]

    def _mismatch(self, step: int, e: BaseException) -> CheckpointMismatchError:
        return CheckpointMismatchError(
            f"checkpoint {paths.join(self.directory, str(step))} does not fit this model: "
            f"{str(e).splitlines()[0][:400]}. It was probably written by a run with another model "
            "config; use that run's config, or a fresh --workdir.")

    def _metadata_readable(self, step: int) -> bool:
        try:
            self.manager.item_metadata(step)
            return True
        except Exception:  # noqa: BLE001  (whatever reading the metadata raises: unreadable)
            return False

    def _move_aside(self, step: int) -> str:
        """Renames checkpoint `step` to <step>.unreadable-<time> (process 0; the others wait) and reloads
        (on an object store: copied there, then deleted)."""
        src = paths.join(self.directory, str(step))
        dst = f"{src}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            paths.move(src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"fer_jax: checkpoint {step} moved aside")
        self.manager.reload()
        return dst

    def restore_latest(self, abstract_state) -> tuple[int, object] | None:
        """(step, state) of the newest checkpoint that fits and can be read, or None when there is none.

        A checkpoint of another model raises CheckpointMismatchError; one that fits but cannot be read
        is moved aside with a warning, and the one before it is tried.
        """
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
            except Exception as e:  # noqa: BLE001  (TensorStore raises a bare Exception for a truncated file)
                # Orbax reports a tree or shape that differs from this model's as ValueError / KeyError /
                # TypeError; reading a damaged file fails otherwise (or the metadata itself cannot be read).
                if isinstance(e, (ValueError, KeyError, TypeError)) and self._metadata_readable(step):
                    raise self._mismatch(step, e) from None
                moved = self._move_aside(step)
                reason = str(e).splitlines()[0][:200] if str(e) else ""
                log.warning("checkpoint %s cannot be read (%s: %s); moved it to %s and resuming from the one "
                            "before it.", paths.join(self.directory, str(step)), type(e).__name__, reason, moved)
                continue
            return step, restored["state"]
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def has_finished(workdir: str) -> bool:
    """Whether `workdir` holds a finished checkpoint (a run that resumes, whose restore overwrites the whole
    state: pretrained weights need not be loaded first). Orbax gives a checkpoint its step's name only
    once it is complete; on an object store, once its commit file is written."""
    directory = paths.join(workdir, "checkpoints")
    steps = [name for name in paths.listdir(directory) if name.isdigit()]
    if not paths.is_url(directory):
        return bool(steps)
    return any(paths.exists(paths.join(directory, name, COMMIT_FILE)) for name in steps)


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding` (the target of a restore)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
