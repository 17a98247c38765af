"""Adaptive batching: the pure send decision, and the asyncio batcher with a real predict."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from labkit.inference.batcher import BatchConfig, Batcher, next_send

CONFIG = BatchConfig(max_batch_size=4, max_latency_ms=10)


def test_next_send_rules() -> None:
    assert next_send(0.0, None, 0, CONFIG) is None
    assert next_send(0.001, 0.0, 1, CONFIG) == pytest.approx(0.010)  # wait for more
    assert next_send(0.001, 0.0, 4, CONFIG) == 0.001  # full: go now
    assert next_send(0.011, 0.0, 1, CONFIG) == 0.011  # waited long enough


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="maxBatchSize"):
        BatchConfig(0, 1)
    with pytest.raises(ValueError, match="maxLatency"):
        BatchConfig(1, -1)


class Model:
    """Sums each row; records the batch sizes it saw; blocks until released if asked."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def predict(self, rows: np.ndarray, output: str) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        if np.isnan(rows).any():
            raise ValueError("Input contains NaN")
        self.batches.append(len(rows))
        return rows.sum(axis=1) * (10 if output == "x10" else 1)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_share_a_predict_and_get_their_own_rows() -> None:
    model = Model()

    async def go() -> list[np.ndarray]:
        batcher = Batcher(model.predict, BatchConfig(max_batch_size=64, max_latency_ms=50))
        rows = [np.full((k, 2), float(k)) for k in (1, 2, 3)]
        shares = await asyncio.gather(*(batcher.submit(r, "predict") for r in rows))
        batcher.close()
        return [s.predictions for s in shares]

    results = run(go())
    assert model.batches == [6]
    assert [r.tolist() for r in results] == [[2.0], [4.0, 4.0], [6.0, 6.0, 6.0]]


def test_a_full_batch_goes_without_waiting_for_max_latency() -> None:
    model = Model()

    async def go() -> None:
        batcher = Batcher(model.predict, BatchConfig(max_batch_size=2, max_latency_ms=60_000))
        await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(np.ones((1, 1)), "predict") for _ in range(4))), 10
        )
        batcher.close()

    run(go())
    assert model.batches == [2, 2]


def test_requests_queue_while_the_model_is_busy() -> None:
    model = Model()

    async def go() -> None:
        batcher = Batcher(model.predict, BatchConfig(max_batch_size=32, max_latency_ms=0))
        model.gate.clear()
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 1)), "predict"))
        await asyncio.wait_for(asyncio.to_thread(model.entered.wait, 10), 10)  # model is busy
        others = [asyncio.ensure_future(batcher.submit(np.ones((1, 1)), "predict")) for _ in range(5)]
        await asyncio.sleep(0)
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *others), 10)
        batcher.close()

    run(go())
    assert model.batches == [1, 5]


def test_outputs_are_batched_separately() -> None:
    model = Model()

    async def go() -> list[list[float]]:
        batcher = Batcher(model.predict, BatchConfig(max_batch_size=8, max_latency_ms=20))
        shares = await asyncio.gather(
            batcher.submit(np.ones((1, 2)), "predict"), batcher.submit(np.ones((1, 2)), "x10")
        )
        batcher.close()
        return [s.predictions.tolist() for s in shares]

    assert run(go()) == [[2.0], [20.0]]


def test_one_bad_request_fails_only_its_caller() -> None:
    model = Model()

    async def go() -> list[Any]:
        batcher = Batcher(model.predict, BatchConfig(max_batch_size=8, max_latency_ms=20))
        rows = [np.ones((1, 2)), np.array([[np.nan, 1.0]]), np.full((1, 2), 2.0)]
        out = await asyncio.gather(*(batcher.submit(r, "predict") for r in rows),
                                   return_exceptions=True)
        batcher.close()
        return out

    good, bad, other = run(go())
    assert isinstance(bad, ValueError) and "NaN" in str(bad)
    assert good.predictions.tolist() == [2.0] and other.predictions.tolist() == [4.0]


def test_a_model_returning_the_wrong_count_fails_every_caller() -> None:
    async def go() -> list[Any]:
        batcher = Batcher(lambda rows, output: np.zeros(1), BatchConfig(8, 20))
        out = await asyncio.gather(*(batcher.submit(np.ones((2, 1)), "p") for _ in range(2)),
                                   return_exceptions=True)
        batcher.close()
        return out

    for result in run(go()):
        assert isinstance(result, RuntimeError) and "1 predictions for 2 rows" in str(result)
