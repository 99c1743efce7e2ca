"""Dynamic micro-batching: requests that arrive together share a forward pass; the off switch
gives each its own; a failing batch fails only its own requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from bincount.serving.batching import MicroBatcher


class Recorder:
    """A run_batch that records the batch sizes and the thread it ran on."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.sizes.append(len(items))
        self.threads.add(threading.current_thread().name)
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        return [item * 10 for item in items]


async def _submit_all(batcher: MicroBatcher[int, int], items: Sequence[int]) -> list[int]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(item) for item in items))
    finally:
        await batcher.stop()


def test_requests_that_arrive_together_share_a_batch() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.05)
    results = asyncio.run(_submit_all(batcher, list(range(20))))
    assert results == [item * 10 for item in range(20)]  # each caller gets its own answer
    assert sum(run.sizes) == 20
    assert max(run.sizes) == 8 and len(run.sizes) == 3  # 8 + 8 + 4
    assert len(run.threads) == 1 and next(iter(run.threads)).startswith("inference")


def test_the_off_switch_runs_one_item_per_forward_pass() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=1, max_wait_s=0.0)
    assert asyncio.run(_submit_all(batcher, list(range(6)))) == [0, 10, 20, 30, 40, 50]
    assert run.sizes == [1] * 6


def test_a_lone_request_waits_at_most_max_wait() -> None:
    run = Recorder()

    async def lone() -> float:
        batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.02)
        batcher.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await batcher.submit(3) == 30
        elapsed = loop.time() - start
        await batcher.stop()
        return elapsed

    assert asyncio.run(lone()) < 1.0  # the wait is 20 ms; generous for a loaded machine
    assert run.sizes == [1]


def test_a_failing_batch_fails_its_requests_and_the_next_batch_still_runs() -> None:
    run = Recorder()

    async def scenario() -> tuple[list[object], int]:
        batcher = MicroBatcher(run, max_batch_size=4, max_wait_s=0.05)
        batcher.start()
        first = await asyncio.gather(
            batcher.submit(1), batcher.submit(-1), return_exceptions=True
        )
        after = await batcher.submit(2)
        await batcher.stop()
        return first, after

    first, after = asyncio.run(scenario())
    assert all(isinstance(outcome, ValueError) for outcome in first)
    assert after == 20


def test_a_lone_request_on_an_idle_queue_runs_at_once() -> None:
    """Nothing is on its way, so nothing is waited for, however long max_wait is."""
    run = Recorder()

    async def lone() -> float:
        batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=30.0)
        batcher.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await batcher.submit(3) == 30
        elapsed = loop.time() - start
        await batcher.stop()
        return elapsed

    assert asyncio.run(lone()) < 5.0  # a fixed delay would be 30 s
    assert run.sizes == [1]


def test_a_batch_waits_for_a_request_announced_on_its_way() -> None:
    run = Recorder()

    async def scenario() -> list[int]:
        batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=30.0)
        batcher.start()

        async def slow_decode() -> int:
            with batcher.arriving():
                await asyncio.sleep(0.2)  # decoding its image
                queued = batcher.enqueue(2)
            return await queued

        second = asyncio.create_task(slow_decode())
        await asyncio.sleep(0)  # the announcement is made
        results = [await batcher.submit(1), await second]
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [10, 20]
    assert run.sizes == [2]  # one forward pass for both
