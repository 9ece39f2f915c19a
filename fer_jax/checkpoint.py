"""Orbax checkpoints of a run: train state and run metadata.

Layout: <workdir>/checkpoints/<step>/{state, meta}. The data position is not stored: the
training stream is a function of (seed, step), so the step restores it. Orbax writes each checkpoint to a
temporary folder and renames it when complete, so a run killed mid-save never leaves a
checkpoint that looks complete; `latest_step()` only sees finished ones.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model/optimizer it is restored into."""


class RunCheckpoints:
    """Saves and restores {state, meta} items with an Orbax CheckpointManager."""

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

    def save(self, step: int, state, *, meta: dict | None = None) -> None:
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta or {})}
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state):
        """Restores state into the structure and shardings of `abstract_state`.

        Returns (state, meta). Raises CheckpointMismatchError when the saved tree differs.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"checkpoint {os.path.join(self.directory, str(step))} does not fit this model: "
                f"{str(e).splitlines()[0][:400]}. It was probably written by a run with another model "
                "config; use that run's config, or a fresh --workdir."
            ) from None
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding` (the target of a restore)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
