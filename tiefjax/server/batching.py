"""Micro-batching: concurrent requests share one device call instead of queueing one by one.

On an accelerator an encoder pass over 16 images costs little more than a pass over one, so the
server does not run a search per upload. :class:`MicroBatcher` collects requests until the batch
is full (``max_batch``), or no new one arrived for ``max_wait_ms``, or ``max_delay_ms`` passed
since the first; it groups them by key (e.g. the search mode) and hands each group to one call
of ``fn`` in a worker thread, off the event loop. Requests arriving while that call runs gather
for the next batch.

The wait is only worth it under load: a batch goes at once when as many requests wait as were
active around the last batch (the ones it held, which tend to come back together, plus those that
arrived while it ran). A lone client thus never waits for company that is not coming (after a
burst, its first request waits once), while 16 busy clients share full batches rather than
settling into two half batches that alternate.

Requests may carry a cost (e.g. how many normal photos' worth of pixels an upload is): a batch
takes the cheapest waiting requests first, up to ``max_cost`` in all (one costlier request still
goes alone) and none more than twice as costly as its cheapest, so cheap requests are neither
held behind a queue of expensive ones nor slowed by one in their batch, and no batch costs more
than ``max_cost`` unless a single request does.

Errors stay per request: ``fn`` may return an exception for one item, and when ``fn`` raises
for a whole group, each item is retried alone so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")

log = logging.getLogger(__name__)

#: ``fn(key, items) -> results``: one result (or exception instance) per item, in order.
BatchFn = Callable[[Hashable, list[Q]], Sequence["R | BaseException"]]


@dataclass
class _Pending(Generic[Q]):
    key: Hashable
    item: Q
    future: asyncio.Future[Any]
    cost: float = 1.0


class MicroBatcher(Generic[Q, R]):
    """Group concurrent :meth:`submit` calls into batched calls of ``fn`` in a worker thread."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        executor: Executor | None = None,
        max_delay_ms: float | None = None,
        max_cost: float | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_cost = float(max_batch if max_cost is None else max_cost)
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        delay = 4 * float(max_wait_ms) if max_delay_ms is None else float(max_delay_ms)
        self.max_delay_s = max(self.max_wait_s, delay / 1000.0)
        self._gather_start: float | None = None
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="tiefjax-batch")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Pending[Q]] = []
        self._timer: asyncio.Handle | None = None
        self._running: asyncio.Task[None] | None = None
        self._expected = 1  # requests active around the last batch: how many to wait for
        #: Sizes of the batches run so far (for tests and benchmarks).
        self.batch_sizes: list[int] = []

    async def submit(self, item: Q, key: Hashable = None, cost: float = 1.0) -> R:
        """Queue ``item`` and wait for its own result (or exception)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (e.g. a new test client)
            self._loop, self._pending, self._timer, self._running = loop, [], None, None
            self._gather_start, self._expected = None, 1
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Pending(key, item, future, float(cost)))
        if self._running is None:
            self._go_or_wait()
        return await future

    def _go_or_wait(self) -> None:
        """Start a batch (on the next loop turn, so requests arriving in this one join it) when
        enough requests wait, else (re)arm the wait for more."""
        assert self._loop is not None
        if len(self._pending) >= self._expected or self.max_wait_s == 0:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_soon(self._kick)
        else:
            self._arm()

    def _arm(self) -> None:
        """(Re)start the wait: go when no request came for max_wait, at most max_delay after
        the wait began (the first arrival, or the end of the batch that ran meanwhile)."""
        assert self._loop is not None
        now = self._loop.time()
        if self._gather_start is None:
            self._gather_start = now
        when = min(now + self.max_wait_s, self._gather_start + self.max_delay_s)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._kick)

    def _kick(self) -> None:
        """Start a batch now unless one is running (it starts the next one when it ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None or not self._pending or self._loop is None:
            return
        self._gather_start = None
        batch = self._cheapest()
        self._expected = len(batch)
        self._running = self._loop.create_task(self._process(batch))

    def _cheapest(self) -> list[_Pending[Q]]:
        """Take the next batch out of the queue: cheapest first (in arrival order among equal
        costs), at most ``max_batch`` requests and ``max_cost`` in all, at least one, and none
        more than twice as costly as the cheapest (a cheap request never waits for a costly one
        that shares its batch)."""
        order = sorted(range(len(self._pending)), key=lambda i: self._pending[i].cost)
        taken: list[int] = []
        total = 0.0
        for i in order:
            cost = self._pending[i].cost
            full = len(taken) == self.max_batch or total + cost > self.max_cost
            if taken and (full or cost > 2 * self._pending[taken[0]].cost):
                break
            taken.append(i)
            total += cost
        chosen = set(taken)
        batch = [self._pending[i] for i in sorted(taken)]
        self._pending = [p for i, p in enumerate(self._pending) if i not in chosen]
        return batch

    async def _process(self, batch: list[_Pending[Q]]) -> None:
        live = [p for p in batch if not p.future.done()]  # skip requests already cancelled
        try:
            if live:
                self.batch_sizes.append(len(live))
                groups: dict[Hashable, list[_Pending[Q]]] = {}
                for p in live:
                    groups.setdefault(p.key, []).append(p)
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(
                    self.executor, self._run_groups, list(groups.items())
                )
                for p, outcome in outcomes:
                    if p.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        p.future.set_exception(outcome)
                    else:
                        p.future.set_result(outcome)
        except BaseException as err:  # noqa: BLE001 - every waiter must hear about it
            for p in live:
                if not p.future.done():
                    p.future.set_exception(err if isinstance(err, Exception) else RuntimeError())
            if not isinstance(err, Exception):
                raise
        finally:
            self._running = None
            if self._loop is not None:
                self._expected = min(self.max_batch, self._expected + len(self._pending))
                if self._pending:
                    self._gather_start = None  # the wait for the next batch starts now
                    self._go_or_wait()

    def _run_groups(
        self, groups: list[tuple[Hashable, list[_Pending[Q]]]]
    ) -> list[tuple[_Pending[Q], Any]]:
        """In the worker thread: one ``fn`` call per key; retry items alone if a call fails."""
        outcomes: list[tuple[_Pending[Q], Any]] = []
        for key, members in groups:
            outcomes.extend(zip(members, self._call(key, members), strict=True))
        return outcomes

    def _call(self, key: Hashable, members: list[_Pending[Q]]) -> list[Any]:
        try:
            results = list(self.fn(key, [p.item for p in members]))
            if len(results) != len(members):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(members)} items"
                )
            return results
        except Exception as err:
            if len(members) == 1:
                return [err]
            log.info("batch of %d failed (%s); retrying one by one", len(members), err)
            return [self._call(key, [p])[0] for p in members]

    def close(self) -> None:
        """Stop the worker thread (when this batcher created it)."""
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
