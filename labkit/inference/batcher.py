"""Adaptive batching: concurrent requests share one predict call.

A tree ensemble costs about the same for 32 rows as for 1, so serving requests one by one
wastes most of the model's time. As in KServe's batcher (`spec.predictor.batcher`), a batch is
sent when it holds `max_batch_size` rows or when its first request has waited `max_latency`.
One batch runs at a time, in a worker thread, so the event loop keeps reading requests while the
model works: under load the next batch fills while the current one predicts, and the batch size
follows the load (the "adaptive" part); with a single client a request waits at most
`max_latency`.

`next_send` is the pure decision (times in, a decision out); `Batcher` is the asyncio machine.
If a combined predict fails, each request is retried alone, so one bad request (say a NaN a
linear model refuses) fails only its own caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = ["BatchConfig", "Batched", "Batcher", "next_send"]

PredictFn = Callable[[np.ndarray, str], np.ndarray]


@dataclass(frozen=True)
class BatchConfig:
    """KServe's `batcher` block: maxBatchSize (rows) and maxLatency (milliseconds)."""

    max_batch_size: int = 32
    max_latency_ms: float = 5.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"maxBatchSize must be at least 1, got {self.max_batch_size}")
        if self.max_latency_ms < 0:
            raise ValueError(f"maxLatency must be >= 0 ms, got {self.max_latency_ms}")


def next_send(
    now: float, first_arrival: float | None, rows: int, config: BatchConfig
) -> float | None:
    """When a pending batch should go, asked while the model is free: `now`, later, or None.

    (While the model is busy nothing is sent; the batch keeps filling and this is asked again
    when the running batch finishes.)
    """
    if first_arrival is None or rows == 0:
        return None
    due = first_arrival + config.max_latency_ms / 1000.0
    if rows >= config.max_batch_size or now >= due:
        return now
    return due


@dataclass
class Batched:
    """One caller's share of a batch, with where its time went."""

    predictions: np.ndarray
    queue_seconds: float
    predict_seconds: float
    batch_rows: int


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[Batched]
    submitted: float


class Batcher:
    """Combine `submit()` calls for the same output into one `predict(rows, output)` call."""

    def __init__(self, predict: PredictFn, config: BatchConfig) -> None:
        self.predict = predict
        self.config = config
        self._queues: dict[str, list[_Pending]] = {}
        self._first: dict[str, float] = {}
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.batches = 0
        self.rows = 0

    async def submit(self, rows: np.ndarray, output: str) -> Batched:
        """The predictions for `rows` (a 2-D array), computed in some batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Batched] = loop.create_future()
        self._queues.setdefault(output, []).append(_Pending(rows, future, time.perf_counter()))
        self._first.setdefault(output, loop.time())
        self._schedule(loop)
        return await future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._busy:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = loop.time()
        soonest: tuple[float, str] | None = None
        for output, queue in self._queues.items():
            count = sum(len(p.rows) for p in queue)
            when = next_send(now, self._first.get(output), count, self.config)
            if when is not None and (soonest is None or when < soonest[0]):
                soonest = (when, output)
        if soonest is None:
            return
        when, output = soonest
        if when <= now:
            self._busy = True
            loop.create_task(self._run(output))
        else:
            self._timer = loop.call_at(when, self._schedule, loop)

    async def _run(self, output: str) -> None:
        loop = asyncio.get_running_loop()
        batch = self._take(output, loop)
        try:
            await self._predict_batch(loop, batch, output)
        finally:
            self._busy = False
            self._schedule(loop)

    def _take(self, output: str, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        """Up to max_batch_size rows from the head of the queue (at least one request)."""
        queue = self._queues[output]
        taken: list[_Pending] = []
        count = 0
        while queue and (not taken or count + len(queue[0].rows) <= self.config.max_batch_size):
            item = queue.pop(0)
            taken.append(item)
            count += len(item.rows)
        if queue:
            self._first[output] = loop.time()  # the rest start a fresh wait
        else:
            del self._queues[output]
            del self._first[output]
        return taken

    async def _predict_batch(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], output: str
    ) -> None:
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(self._executor, self.predict, rows, output)
            if len(result) != len(rows):
                raise RuntimeError(
                    f"the model returned {len(result)} predictions for {len(rows)} rows"
                )
        except Exception as exc:  # noqa: BLE001 - any failure of the model: find the culprit below
            if len(batch) == 1:
                _settle(batch[0].future, exc)
                return
            for item in batch:  # find the culprit: each request alone
                await self._predict_batch(loop, [item], output)
            return
        predict_seconds = time.perf_counter() - started
        self.batches += 1
        self.rows += len(rows)
        start = 0
        for item in batch:
            end = start + len(item.rows)
            share = Batched(result[start:end], started - item.submitted, predict_seconds, len(rows))
            _settle(item.future, share)
            start = end


def _settle(future: asyncio.Future[Batched], outcome: Batched | BaseException) -> None:
    if future.done():  # the caller went away (connection closed)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
