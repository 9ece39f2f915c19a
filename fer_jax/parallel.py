"""Data parallelism: the ('data',) mesh, shardings, global batches, multi-host start-up.

Parameters and optimizer state are replicated; batches are sharded along their first axis over
every device of every process. Each process feeds only its own rows
(`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Starts multi-process JAX when asked (flags) or when the environment says so.

    Explicit flags win; otherwise `jax.distributed.initialize()` auto-detects TPU pods, SLURM and
    similar clusters when FER_JAX_DISTRIBUTED=1 is set. A single process needs nothing.
    """
    if coordinator_address:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    elif os.environ.get("FER_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    else:
        return
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
    """A 1-D mesh named 'data' over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def pad_rows(local_batch: dict, multiple: int) -> dict:
    """Pads every array to a multiple of `multiple` rows by repeating row 0, with mask False there.

    A batch that does not divide over the devices is padded instead of dropped or refused: the
    loss, accuracy and confusion matrix ignore rows whose `mask` is False. (BatchNorm's batch
    statistics would see the repeated row, so training refuses such a batch for BatchNorm models;
    evaluation uses running statistics and is unaffected.)
    """
    n = len(local_batch["mask"])
    target = -(-n // multiple) * multiple
    if target == n:
        return local_batch
    out = {k: np.concatenate([np.asarray(v), np.repeat(np.asarray(v)[:1], target - n, axis=0)])
           for k, v in local_batch.items()}
    out["mask"][n:] = False
    return out


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Process-local numpy batch -> dict of global jax.Arrays sharded along the batch axis.

    Rows are padded (mask False) to a multiple of this process's devices in the mesh.
    """
    sharding = batch_sharding(mesh)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    local_batch = pad_rows(local_batch, local_devices)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
