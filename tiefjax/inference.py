"""The one inference path: a jitted ``fn(params, batch)``, data-parallel on this process's devices.

Every place that runs a model on many inputs (the training feature cache, box extraction,
catalog encoding, the supervised projection, ``score`` and uploads) goes through
:class:`ShardedApply`: the parameters are placed once on every local device, each batch is padded
(:func:`padded_rows`, :func:`pad_rows`) to a power of two rounded up to a multiple of the device
count and split over a ``data`` mesh axis, and each device runs ``fn`` on its rows
(``jax.shard_map``: the per-device program is exactly the one-device program, so results do
not depend on the device count). In a multi-process run each process feeds its own devices
with its own share of the inputs (:func:`tiefjax.distributed.shard`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
Pending = tuple[Any, int]


def padded_rows(n: int, cap: int, multiple: int = 1) -> int:
    """Rows a batch of ``n`` is padded to: the next power of two (at most ``cap``), rounded up to
    a multiple of the device count. Few compiled shapes, and a lone input is never padded to a
    whole batch."""
    size = min(max(1, cap), 1 << max(0, n - 1).bit_length())
    return -(-size // multiple) * multiple


def power_of_two_parts(n: int, cap: int) -> list[int]:
    """Split ``n`` items into batches of power-of-two sizes at most ``cap``, largest first
    (13, cap 16 -> 8, 4, 1): few compiled shapes and no blank padding to compute."""
    cap = 1 << (max(1, cap).bit_length() - 1)  # the largest power of two <= cap
    parts = [cap] * (n // cap)
    rest = n % cap
    parts += [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]
    return parts


def pad_rows(batch: np.ndarray, rows: int) -> np.ndarray:
    """``batch`` with zero rows appended up to ``rows``."""
    batch = np.asarray(batch)
    if len(batch) == rows:
        return batch
    out = np.zeros((rows, *batch.shape[1:]), batch.dtype)
    out[: len(batch)] = batch
    return out


class ShardedApply:
    """``fn(params, batch) -> array or pytree of arrays`` over every local device.

    ``cap`` is the most rows per device call (a multiple of the device count is used); longer
    inputs go in parts. ``start(batch)`` dispatches asynchronously and returns a handle,
    ``fetch(handle)`` waits and returns NumPy rows (padding removed); ``__call__`` does both.
    """

    def __init__(
        self,
        fn: Callable[[Any, jax.Array], Any],
        params: Any,
        *,
        cap: int = 32,
        compiler_options: dict[str, Any] | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        devs = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.asarray(devs), (DATA_AXIS,))
        self.n_devices = len(devs)
        self.cap = -(-max(1, cap) // self.n_devices) * self.n_devices
        self.rows = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.params = jax.device_put(params, replicated)
        per_device = jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS)),
            out_specs=PartitionSpec(DATA_AXIS),
            check_vma=False,
        )
        self._compiled = jax.jit(per_device, compiler_options=compiler_options)

    def padded(self, n: int) -> int:
        """Rows a call with ``n`` inputs computes."""
        return padded_rows(n, self.cap, self.n_devices)

    def start(self, batch: np.ndarray) -> Pending:
        """Dispatch ``batch`` (at most ``cap`` rows) without waiting for the result."""
        n = len(batch)
        if not 0 < n <= self.cap:
            raise ValueError(f"a call takes 1..{self.cap} rows, got {n}")
        x = jax.device_put(pad_rows(batch, self.padded(n)), self.rows)
        return self._compiled(self.params, x), n

    @staticmethod
    def fetch(handle: Pending) -> Any:
        out, n = handle
        return jax.tree.map(lambda a: np.asarray(a)[:n], out)

    def __call__(self, batch: np.ndarray) -> Any:
        """Outputs for every row of ``batch``, ``cap`` rows per device call, one call in flight
        while the next is dispatched."""
        parts, pending = [], None
        for s in range(0, len(batch), self.cap):
            handle = self.start(batch[s : s + self.cap])
            if pending is not None:
                parts.append(self.fetch(pending))
            pending = handle
        if pending is not None:
            parts.append(self.fetch(pending))
        if not parts:
            raise ValueError("nothing to compute: the batch is empty")
        return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
