"""Dynamic batching for embeddings.

Inputs from concurrent requests wait in one queue. A collector takes the first, gathers
more until `max_batch_size` inputs or `max_wait_ms` have passed, runs them as one forward
pass on the model's own thread and hands each request its rows. While a pass runs, the
next batch is already gathering.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from modelserver.errors import EngineUnavailable, QueueFull
from modelserver.loading import LoadedModel
from modelserver.metrics import ServingMetrics

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Input:
    token_ids: list[int]
    future: asyncio.Future[torch.Tensor]
    arrival: float = field(default_factory=time.monotonic)


def embed_token_ids(loaded: LoadedModel, batch: list[list[int]]) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings, as sentence-transformers computes them."""
    length = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), length), loaded.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    input_ids, mask = input_ids.to(loaded.device), mask.to(loaded.device)
    with torch.inference_mode():
        hidden = loaded.model(input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled.float(), p=2, dim=1).cpu()


class DynamicBatcher:
    def __init__(
        self,
        loaded: LoadedModel,
        metrics: ServingMetrics,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        parallel_batches: int = 1,
    ) -> None:
        self.loaded = loaded
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.broken: str | None = None
        self._queue: asyncio.Queue[_Input] | None = None
        self._collector: asyncio.Task[None] | None = None
        self.parallel_batches = parallel_batches
        self._slots: asyncio.Semaphore | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._passes = 0  # forward passes under way, on the event loop's count
        # Forward passes run off the event loop, `parallel_batches` at a time, the cores
        # shared out between them: independent passes never wait on each other's threads.
        threads = max(1, (os.cpu_count() or 1) // parallel_batches)
        self._executor = ThreadPoolExecutor(
            max_workers=parallel_batches, thread_name_prefix="embedding-engine", initializer=torch.set_num_threads, initargs=(threads,)
        )

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.parallel_batches)
        self._collector = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
        self._executor.shutdown(wait=True)

    async def embed(self, inputs: list[list[int]]) -> list[torch.Tensor]:
        if self.broken is not None or self._queue is None:
            raise EngineUnavailable(self.broken or "the engine is not running")
        if self._queue.qsize() + len(inputs) > self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} inputs are already waiting")
        loop = asyncio.get_running_loop()
        items = [_Input(token_ids=ids, future=loop.create_future()) for ids in inputs]
        for item in items:
            self._queue.put_nowait(item)
        self.metrics.requests_waiting.set(self._queue.qsize())
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        finally:
            # A caller that went away leaves cancelled futures; the collector skips them.
            for item in items:
                item.future.cancel()

    async def _next_batch(self) -> list[_Input]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [item for item in batch if not item.future.done()]

    async def _collect(self) -> None:
        assert self._slots is not None
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            self.metrics.requests_waiting.set(self._queue.qsize() if self._queue else 0)
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run_batch(self, batch: list[_Input]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        try:
            await self._forward(loop, batch)
        finally:
            self._slots.release()

    async def _forward(self, loop: asyncio.AbstractEventLoop, batch: list[_Input]) -> None:
        if self.broken is not None:
            self._fail(batch)
            return
        started = time.monotonic()
        for item in batch:
            self.metrics.queue_time.observe(started - item.arrival)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.requests_running.inc(len(batch))  # inputs in passes now running (two may overlap)
        self._passes += 1
        self.metrics.busy.set_in_flight(self._passes)
        try:
            vectors = await loop.run_in_executor(self._executor, embed_token_ids, self.loaded, [item.token_ids for item in batch])
        except Exception as error:  # the engine is broken: say so and fail what it was given
            log.exception("embedding engine failed")
            self.broken = f"embedding engine failed: {type(error).__name__}: {error}"
            self._fail(batch)
            return
        finally:
            self.metrics.requests_running.dec(len(batch))
            self._passes -= 1
            self.metrics.busy.set_in_flight(self._passes)
        finished = time.monotonic()
        self.metrics.prompt_tokens.inc(sum(len(item.token_ids) for item in batch))
        for row, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(vectors[row])
            self.metrics.e2e_latency.observe(finished - item.arrival)

    def _fail(self, batch: list[_Input]) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(EngineUnavailable(self.broken or "the engine is broken"))
