"""Orbax checkpoints of a run: train state, data-iterator position and run metadata.

Layout: <workdir>/checkpoints/<step>/{state, data, meta}. Orbax writes each checkpoint to a
temporary folder and renames it when complete, so a run killed mid-save never leaves a
checkpoint that looks complete; `latest_step()` only sees finished ones.
"""

from __future__ import annotations

import logging
import os

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model/optimizer it is restored into."""


class RunCheckpoints:
    """Saves and restores {state, data, meta} items with an Orbax CheckpointManager."""

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

    def save(self, step: int, state, *, data_iterator=None, meta: dict | None = None) -> None:
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta or {})}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state, *, data_iterator=None):
        """Restores state (into the structure and shardings of `abstract_state`) and the iterator.

        Returns (state, meta). Raises CheckpointMismatchError when the saved tree differs.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"checkpoint {os.path.join(self.directory, str(step))} does not fit this model: "
                f"{str(e).splitlines()[0][:400]}. It was probably written by a run with another model "
                "config; use that run's config, or a fresh --workdir."
            ) from None
        return restored["state"], restored["meta"]

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state, sharding):
    """ShapeDtypeStructs of `state` placed with `sharding` (the target of a restore)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
