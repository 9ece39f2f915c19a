"""Orbax checkpoints of a run's train state.

Layout: <workdir>/checkpoints/<step>/state (runs made before 2026-11 also hold an unread `meta`). The data position is not stored: the
training stream is a function of (seed, step), so the step restores it. Orbax writes each checkpoint to a
temporary folder and renames it when complete, so a run killed mid-save never leaves a
checkpoint that looks complete; `latest_step()` only sees finished ones.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

from fer_jax.errors import CheckpointMismatchError

log = logging.getLogger(__name__)


class RunCheckpoints:
    """Saves and restores the `state` item with an Orbax CheckpointManager."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=False,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state):
        """Restores state into the structure and shardings of `abstract_state`.

        Raises CheckpointMismatchError when the saved tree differs.
        """
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"checkpoint {os.path.join(self.directory, str(step))} does not fit this model: "
                f"{str(e).splitlines()[0][:400]}. It was probably written by a run with another model "
                "config; use that run's config, or a fresh --workdir."
            ) from None
        return restored["state"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding` (the target of a restore)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
