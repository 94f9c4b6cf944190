"""The micro-batcher groups concurrent requests into one call and keeps errors per request."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tiefjax.server.batching import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_call():
    calls: list[tuple[object, list[int]]] = []

    def fn(key, items):
        calls.append((key, list(items)))
        return [i * 10 for i in items]

    async def main():
        batcher = MicroBatcher(fn, max_batch=8, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.submit(i, key="m") for i in range(8)))
        batcher.close()
        return results

    assert run(main()) == [i * 10 for i in range(8)]
    assert len(calls) == 1 and calls[0] == ("m", list(range(8)))


def test_max_batch_splits_and_keys_group():
    calls: list[tuple[object, list[int]]] = []

    def fn(key, items):
        calls.append((key, list(items)))
        return [(key, i) for i in items]

    async def main():
        batcher = MicroBatcher(fn, max_batch=4, max_wait_ms=20)
        jobs = [batcher.submit(i, key="a" if i % 2 else "b") for i in range(10)]
        results = await asyncio.gather(*jobs)
        batcher.close()
        return results, batcher.batch_sizes

    results, sizes = run(main())
    assert results == [("a" if i % 2 else "b", i) for i in range(10)]
    assert max(sizes) <= 4 and sum(sizes) == 10
    for key, items in calls:  # every call holds one key only
        assert all((i % 2 == 1) == (key == "a") for i in items)


def test_requests_arriving_while_busy_form_the_next_batch():
    started = threading.Event()
    release = threading.Event()
    sizes: list[int] = []

    def fn(key, items):
        sizes.append(len(items))
        if len(sizes) == 1:
            started.set()
            release.wait(5)
        return list(items)

    async def main():
        batcher = MicroBatcher(fn, max_batch=16, max_wait_ms=1)
        first = asyncio.ensure_future(batcher.submit(0))
        while not started.is_set():
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.02)
        release.set()
        out = await asyncio.gather(first, *rest)
        batcher.close()
        return out

    assert run(main()) == list(range(6))
    assert sizes == [1, 5]


def test_errors_stay_with_their_request():
    def fn(key, items):
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [i + 1 for i in items]

    async def main():
        batcher = MicroBatcher(fn, max_batch=8, max_wait_ms=30)
        out = await asyncio.gather(
            *(batcher.submit(i) for i in (1, -1, 2, 3)), return_exceptions=True
        )
        batcher.close()
        return out

    out = run(main())
    assert out[0] == 2 and out[2] == 3 and out[3] == 4
    assert isinstance(out[1], ValueError)


def test_per_item_exception_results():
    def fn(key, items):
        return [KeyError(i) if i == 2 else i for i in items]

    async def main():
        batcher = MicroBatcher(fn, max_batch=4, max_wait_ms=20)
        out = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        batcher.close()
        return out

    out = run(main())
    assert out[:2] == [0, 1] and out[3] == 3 and isinstance(out[2], KeyError)


def test_a_cancelled_request_does_not_break_the_batch():
    def fn(key, items):
        time.sleep(0.05)
        return list(items)

    async def main():
        batcher = MicroBatcher(fn, max_batch=4, max_wait_ms=10)
        doomed = asyncio.ensure_future(batcher.submit(99))
        keep = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        doomed.cancel()
        result = await keep
        again = await batcher.submit(2)  # still working afterwards
        batcher.close()
        return result, again

    assert run(main()) == (1, 2)


def test_works_across_event_loops():
    batcher = MicroBatcher(lambda key, items: list(items), max_batch=2, max_wait_ms=1)
    assert run(batcher.submit(1)) == 1
    assert run(batcher.submit(2)) == 2  # a new loop (e.g. a new test client) is fine
    batcher.close()


def test_rejects_bad_max_batch():
    with pytest.raises(ValueError):
        MicroBatcher(lambda k, i: i, max_batch=0)


async def _trickle(batcher, n, gap_s):
    jobs = []
    for i in range(n):
        jobs.append(asyncio.ensure_future(batcher.submit(i)))
        await asyncio.sleep(gap_s)
    return await asyncio.gather(*jobs)


def _sizes_fn():
    sizes: list[int] = []

    def fn(key, items):
        sizes.append(len(items))
        return list(items)

    return fn, sizes


def test_a_lone_request_does_not_wait_for_company():
    fn, sizes = _sizes_fn()

    async def main():
        batcher = MicroBatcher(fn, max_batch=16, max_wait_ms=5000)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await batcher.submit(7) == 7
        first = loop.time() - t0
        await asyncio.sleep(0.05)  # a client that waits for its answer, then asks again
        assert await batcher.submit(8) == 8
        batcher.close()
        return first, loop.time() - t0

    first, both = run(main())
    assert sizes == [1, 1]
    assert first < 2.5 and both < 2.5, (first, both)  # the 5 s wait was never taken


def test_after_a_batch_the_next_waits_for_as_many_as_it_held_then_goes_at_once():
    starts: list[tuple[int, float]] = []

    def fn(key, items):
        starts.append((len(items), time.monotonic()))
        return list(items)

    async def main():
        # 5 at once, then 5 arriving 20 ms apart: the clients of a batch of 5 are expected
        # back, so the trickle is held (a 200 ms quiet gap would not end it) until the fifth
        # arrives, and then it goes at once instead of waiting out the gap
        batcher = MicroBatcher(fn, max_batch=16, max_wait_ms=200, max_delay_ms=1000)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == list(range(5))
        jobs = []
        for i in range(5):
            jobs.append(asyncio.ensure_future(batcher.submit(i)))
            fifth_sent = time.monotonic()
            await asyncio.sleep(0.02)
        assert await asyncio.gather(*jobs) == list(range(5))
        batcher.close()
        return fifth_sent

    fifth_sent = run(main())
    assert [n for n, _ in starts] == [5, 5]
    assert starts[1][1] - fifth_sent < 0.1, starts[1][1] - fifth_sent  # not after the 200 ms


def test_a_held_batch_goes_after_max_delay():
    fn, sizes = _sizes_fn()

    async def main():
        batcher = MicroBatcher(fn, max_batch=16, max_wait_ms=60, max_delay_ms=70)
        await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        await _trickle(batcher, 8, 0.02)  # never 8 waiting: max_delay cuts the wait
        batcher.close()

    run(main())
    assert sizes[0] == 8
    assert len(sizes) >= 3 and sum(sizes[1:]) == 8 and max(sizes[1:]) < 8


def test_after_a_burst_a_lone_client_waits_once_then_goes_at_once_again():
    fn, sizes = _sizes_fn()

    async def main():
        batcher = MicroBatcher(fn, max_batch=16, max_wait_ms=400, max_delay_ms=400)
        await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        loop = asyncio.get_running_loop()
        times = []
        for i in range(3):
            t0 = loop.time()
            await batcher.submit(i)
            times.append(loop.time() - t0)
        batcher.close()
        return times

    times = run(main())
    assert sizes == [8, 1, 1, 1]
    assert times[0] >= 0.35, times  # 8 were expected back: the wait ran out once
    assert max(times[1:]) < 0.3, times  # then one is expected, and goes at once


def test_cheap_requests_go_first_and_a_batch_stays_within_its_cost():
    """A queue of costly requests does not hold back cheap ones, nor joins their batch; one
    request costlier than max_cost still runs (alone), and no batch exceeds max_cost otherwise."""
    calls: list[list[str]] = []

    def fn(key, items):
        calls.append(list(items))
        return items

    async def main():
        batcher = MicroBatcher(fn, max_batch=4, max_wait_ms=50, max_cost=5)
        heavy = [batcher.submit(f"heavy{i}", cost=3) for i in range(3)]
        huge = batcher.submit("huge", cost=9)
        cheap = [batcher.submit(f"cheap{i}") for i in range(2)]
        return await asyncio.gather(*heavy, huge, *cheap)

    assert asyncio.run(main()) == ["heavy0", "heavy1", "heavy2", "huge", "cheap0", "cheap1"]
    # the cheap ones arrived last but went first, without a heavy one (cost 1 + 1 + 3 <= 5)
    assert calls[0] == ["cheap0", "cheap1"]
    assert calls[1:] == [["heavy0"], ["heavy1"], ["heavy2"], ["huge"]]
