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

from fer_jax.errors import ConfigError

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


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "config.batch_size") -> None:
    if global_batch % mesh.size:
        raise ConfigError(
            f"{what}={global_batch} is not divisible by the {mesh.size} devices of the mesh; "
            f"use a multiple of {mesh.size}."
        )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Process-local numpy batch -> dict of global jax.Arrays sharded along the batch axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
