"""Data-parallel sharding: the batch split over a ``("data",)`` mesh, the state replicated.

The same jitted step runs on one device or many: jit follows the shardings of its inputs, so
placing the state with :func:`replicate` and each batch with :func:`shard_batch` is all it takes.

On several hosts, call ``jax.distributed.initialize()`` (with the coordinator address, the number
of processes and this process's id, or with none of them on a cluster that jax detects) before
anything else touches jax; ``jax.devices()`` then lists every host's devices and
:func:`data_mesh` spans them. Each host feeds its own slice of the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["data_mesh", "replicate", "shard_batch"]


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices`` (all devices when omitted)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("data_mesh: devices must not be empty")
    return Mesh(np.asarray(devs), ("data",))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Splits every leaf of ``batch`` along its first axis over the mesh's ``data`` axis.

    Raises:
      ValueError: a leaf's first dimension is not divisible by the number of devices.
    """
    n = mesh.shape["data"]
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % n:
            raise ValueError(
                f"shard_batch: batch size {leaf.shape[0]} is not divisible by the {n} devices "
                f"of the mesh; choose a batch size that is a multiple of {n}"
            )
    return jax.device_put(batch, NamedSharding(mesh, P("data")))
