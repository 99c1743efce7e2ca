"""Dynamic micro-batching: requests that arrive together share one forward pass.

Inference runs on one dedicated thread, so forward passes never compete for the CPU cores with
each other (the runtime's intra-op threads already use them all); requests wait on an asyncio
future. A batch takes whatever is queued when the inference thread is free, and waits (at most
``max_wait_s``) only for requests already announced (:meth:`MicroBatcher.arriving`, e.g. being
decoded): a lone request on an idle queue runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)


class MicroBatcher(Generic[Item, Result]):
    """Collects up to ``max_batch_size`` items and runs ``run_batch`` (items -> one result per
    item) on the inference thread. After the first item it takes every queued one; it waits for
    more (at most ``max_wait_s`` after the first) only while announced items are still on their
    way.

    ``max_batch_size=1`` is the off switch: every request gets its own forward pass. The values
    are checked where they are read (:class:`bincount.serving.settings.ServeSettings`).
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        max_batch_size: int,
        max_wait_s: float,
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="inference", initializer=thread_setup
        )
        self._task: asyncio.Task[None] | None = None
        self._arriving = 0  # announced items not yet submitted
        self._announced: asyncio.Event | None = None  # set when an announced item is done

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Announce an item that this block will :meth:`enqueue` (say, once its image is
        decoded): a batch being collected may wait for it. Use on the event loop's thread."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if self._announced is not None:
                self._announced.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    def enqueue(self, item: Item) -> asyncio.Future[Result]:
        """Queue ``item`` now (on the event loop's thread); its result arrives on the future.
        Inside an :meth:`arriving` block, queue before the block ends."""
        if self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return future

    async def submit(self, item: Item) -> Result:
        return await self.enqueue(item)

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if self._arriving == 0 or remaining <= 0:
                break  # nothing is on its way (or the wait is over): run what we have
            self._announced = self._announced or asyncio.Event()
            self._announced.clear()
            # An announced item either lands in the queue or gives up; both end its block.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._announced.wait(), remaining)
        return [(item, future) for item, future in batch if not future.done()]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(f"{len(items)} items gave {len(results)} results")
            except Exception as err:  # delivered to every request of the batch
                log.exception("inference failed for a batch of %d", len(items))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), value in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(value)
