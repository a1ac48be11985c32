import asyncio
import threading

import pytest

from shared.worker.batching import Batcher
from tests.support.waiting import async_wait_for


async def test_concurrent_submissions_share_batches_within_the_limit() -> None:
    seen: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [2 * i for i in items]

    b: Batcher[int, int] = Batcher(double, max_batch_size=4, max_batch_delay_ms=0)
    results = await asyncio.gather(*(b.submit(i) for i in range(10)))
    assert [r.value for r in results] == [2 * i for i in range(10)]
    sizes = [len(s) for s in seen]
    assert sum(sizes) == 10
    assert max(sizes) > 1
    assert all(s <= 4 for s in sizes)
    assert all(r.batch_size == len(next(s for s in seen if i in s)) for i, r in enumerate(results))
    await b.close()


async def test_items_arriving_during_a_batch_form_the_next_one() -> None:
    release = threading.Event()
    started = threading.Event()
    seen: list[list[int]] = []

    def slow(items: list[int]) -> list[int]:
        seen.append(list(items))
        started.set()
        if items[0] == 0:
            release.wait(10)
        return items

    b: Batcher[int, int] = Batcher(slow, max_batch_size=8, max_batch_delay_ms=0)
    first = asyncio.create_task(b.submit(0))
    assert await asyncio.to_thread(started.wait, 10)  # the idle runner took it at once
    rest = [asyncio.create_task(b.submit(i)) for i in range(1, 6)]
    await async_wait_for(lambda: b.queued == 5, what="the rest queued")
    assert b.queued == 5 and b.running == 1
    release.set()
    done = await asyncio.gather(first, *rest)
    assert seen == [[0], [1, 2, 3, 4, 5]]
    assert [d.batch_size for d in done] == [1, 5, 5, 5, 5, 5]
    await b.close()


async def test_a_single_item_does_not_wait_for_the_delay() -> None:
    b: Batcher[int, int] = Batcher(lambda xs: xs, max_batch_size=8, max_batch_delay_ms=600_000)
    r = await asyncio.wait_for(b.submit(7), timeout=30)
    assert (r.value, r.batch_size) == (7, 1)
    await b.close()


async def test_announced_items_are_waited_for() -> None:
    seen: list[list[int]] = []

    def record(items: list[int]) -> list[int]:
        seen.append(list(items))
        return items

    b: Batcher[int, int] = Batcher(record, max_batch_size=8, max_batch_delay_ms=600_000)
    b.announce()
    b.announce()
    first = asyncio.create_task(b.submit(1, announced=True))
    await asyncio.sleep(0.05)
    assert seen == []  # waits: one more item is on its way
    second = asyncio.create_task(b.submit(2, announced=True))
    await asyncio.wait_for(asyncio.gather(first, second), timeout=30)
    assert seen == [[1, 2]]
    # A withdrawn announcement stops the wait as well.
    b.announce()
    b.announce()
    third = asyncio.create_task(b.submit(3, announced=True))
    await async_wait_for(lambda: b.queued == 1, what="the third queued")
    b.withdraw()
    assert (await asyncio.wait_for(third, timeout=30)).batch_size == 1
    await b.close()


async def test_exceptions_reach_every_submitter_of_the_batch() -> None:
    def boom(items: list[int]) -> list[int]:
        raise ValueError(f"bad batch of {len(items)}")

    b: Batcher[int, int] = Batcher(boom, max_batch_size=4)
    results = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    await b.close()


async def test_wrong_result_count_is_an_error() -> None:
    b: Batcher[int, int] = Batcher(lambda xs: xs[:-1], max_batch_size=4)
    with pytest.raises(RuntimeError, match="results"):
        await b.submit(1)
    await b.close()


async def test_concurrency_runs_batches_side_by_side() -> None:
    inside = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=10)

    def work(items: list[int]) -> list[int]:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        gate.wait()  # only passes when two batches run at the same time
        with lock:
            inside -= 1
        return items

    b: Batcher[int, int] = Batcher(work, max_batch_size=1, concurrency=2)
    await asyncio.gather(b.submit(1), b.submit(2))
    assert peak == 2
    await b.close()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(lambda xs: xs, max_batch_size=0)
