"""Data parallelism: one ``data`` mesh axis over every device, batch sharded, params replicated.

The same code runs on one CPU, N GPUs and several hosts. ``jax.jit`` with ``NamedSharding`` in and
out shardings does the rest: gradients of the mean loss over the sharded batch are all-reduced by
XLA. Tests force several CPU devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.

Several hosts: every process joins first (:func:`tiefjax.distributed.start`); each then reads only
its own slice of every global batch (:meth:`DataMesh.put_batch`), and checkpoints are written
cooperatively by orbax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tiefjax.errors import TiefjaxError

DATA_AXIS = "data"


@dataclass(frozen=True)
class DataMesh:
    """A 1-D device mesh over all devices with the shardings the training loop needs."""

    mesh: Mesh

    @property
    def n_devices(self) -> int:
        return self.mesh.devices.size

    @property
    def process_count(self) -> int:
        return jax.process_count()

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def batch_sharding(self) -> NamedSharding:
        """Leading (batch) axis split over the ``data`` axis."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        """A full copy on every device (parameters, optimiser state, scalars)."""
        return NamedSharding(self.mesh, PartitionSpec())

    def state_sharding(self, tree: Any) -> Any:
        """Shardings for parameters and optimiser state: each array split over the ``data``
        axis along its largest dimension the device count divides, replicated when none does.

        Sharded state (ZeRO/FSDP style) means each device updates only its slice: with every
        array replicated, each of N devices ran the whole AdamW update (an 11x11x256x512 head
        layer is 32M parameters), N times the work on shared cores and N times the memory.
        XLA gathers the slices for the forward pass and reduce-scatters the gradients.
        """
        n = self.n_devices

        def one(leaf: Any) -> NamedSharding:
            dims = [d for d, size in enumerate(leaf.shape) if size >= n and size % n == 0]
            if n == 1 or not dims:
                return self.replicated
            spec: list[str | None] = [None] * len(leaf.shape)
            spec[max(dims, key=lambda d: leaf.shape[d])] = DATA_AXIS
            return NamedSharding(self.mesh, PartitionSpec(*spec))

        return jax.tree.map(one, tree)

    def check_batch_size(self, global_batch: int) -> int:
        """The per-process batch size; a clear error when the devices can't share the batch."""
        n = self.n_devices
        if global_batch <= 0 or global_batch % n:
            lo = max(n, global_batch // n * n)
            raise TiefjaxError(
                f"batch size {global_batch} cannot be split evenly over {n} devices; "
                f"use a multiple of {n} (e.g. --batch-size {lo} or {lo + n})."
            )
        return global_batch // self.process_count

    def put_batch(self, local: Mapping[str, np.ndarray], global_batch: int) -> dict[str, jax.Array]:
        """This process's rows of a global batch -> global arrays sharded on ``data``."""
        local_n = self.check_batch_size(global_batch)
        out = {}
        for key, value in local.items():
            value = np.asarray(value)
            if value.shape[0] != local_n:
                raise ValueError(f"{key}: expected {local_n} local rows, got {value.shape[0]}")
            shape = (global_batch, *value.shape[1:])
            out[key] = jax.make_array_from_process_local_data(self.batch_sharding, value, shape)
        return out


def make_mesh(devices: Sequence[jax.Device] | None = None) -> DataMesh:
    """A ``data`` mesh over ``devices`` (default: every device of every process)."""
    devs = np.asarray(list(devices) if devices is not None else jax.devices())
    return DataMesh(Mesh(devs, (DATA_AXIS,)))


def to_host(x: jax.Array) -> np.ndarray:
    """A global array as numpy on every process, also in multi-host runs (sharded arrays are
    gathered from every process)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
