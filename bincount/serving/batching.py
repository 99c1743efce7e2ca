"""Dynamic micro-batching: requests that arrive together share one forward pass.

Inference runs on one dedicated thread, so forward passes never compete for the CPU cores with
each other (torch's intra-op threads already use them all); requests wait on an asyncio future.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger(__name__)


class MicroBatcher(Generic[Item, Result]):
    """Collects up to ``max_batch_size`` items, waiting at most ``max_wait_s`` after the first,
    and runs ``run_batch`` (items -> one result per item) on the inference thread.

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

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, item: Item) -> Result:
        if self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
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
