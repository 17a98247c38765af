"""The inference data-flow simulator: per-hop times on top of the autoscaling simulation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labkit.sim import simulate_dataflow
from labkit.sim.dataflow import HOPS, MODEL_PRESETS


def test_same_seed_same_run_and_hops_add_up() -> None:
    a = simulate_dataflow(arrival_rate=2.0, duration=300, seed=3)
    b = simulate_dataflow(arrival_rate=2.0, duration=300, seed=3)
    assert np.array_equal(a.latency_ms, b.latency_ms)
    assert set(a.hops) == set(HOPS)
    assert np.allclose(sum(a.hops[h] for h in HOPS), a.latency_ms)
    assert a.requests == a.autoscaling.served > 400


def test_scale_to_zero_makes_cold_requests_that_min_replicas_one_avoids() -> None:
    sparse: dict[str, Any] = {"arrival_rate": 0.01, "duration": 3600, "seed": 1}
    zero = simulate_dataflow(min_replicas=0, **sparse)
    warm = simulate_dataflow(min_replicas=1, **sparse)
    assert zero.cold.sum() >= 5 and not warm.cold.any()
    assert zero.dominant_hop("cold") == "cold_start_model_load"
    assert zero.p99 > 500 and warm.p99 < 10
    cold = zero.breakdown("cold")
    assert cold["cold_start_process"] + cold["cold_start_model_load"] > 900  # ~0.95 s start-up


def test_mtls_off_removes_only_the_mtls_hop() -> None:
    on = simulate_dataflow(arrival_rate=5, duration=200, min_replicas=1)
    off = simulate_dataflow(arrival_rate=5, duration=200, min_replicas=1, mtls=False)
    assert on.breakdown()["mtls"] > 0 and off.breakdown()["mtls"] == 0
    assert off.breakdown()["predict"] == pytest.approx(on.breakdown()["predict"], rel=0.1)


def test_a_larger_model_loads_and_predicts_longer() -> None:
    small = simulate_dataflow(arrival_rate=0.01, duration=3600, model="iris-logistic-regression")
    large = simulate_dataflow(arrival_rate=0.01, duration=3600, model="large-model-2GB")
    assert large.breakdown("cold")["cold_start_model_load"] > 10 * small.breakdown("cold")["cold_start_model_load"]
    assert large.breakdown("warm")["predict"] > small.breakdown("warm")["predict"]


def test_batching_adds_a_wait_and_fewer_predict_calls_per_row() -> None:
    plain = simulate_dataflow(arrival_rate=200, duration=60, min_replicas=1, model="digits-random-forest")
    batched = simulate_dataflow(arrival_rate=200, duration=60, min_replicas=1, model="digits-random-forest",
                                max_batch_size=8, max_latency_ms=20)
    assert plain.breakdown()["batch_wait"] == 0 and batched.breakdown()["batch_wait"] > 1
    assert batched.batch_rows > 4
    # the model server is busy for less time per request: less queueing at the pod
    assert batched.breakdown()["queue_wait"] <= plain.breakdown()["queue_wait"]


def test_a_transformer_adds_its_time_and_a_queue_proxy() -> None:
    base = simulate_dataflow(arrival_rate=2, duration=200, min_replicas=1)
    with_t = simulate_dataflow(arrival_rate=2, duration=200, min_replicas=1, transformer_ms=3.0)
    assert with_t.breakdown()["transformer"] == pytest.approx(3.0, rel=0.1)
    assert with_t.breakdown()["queue_proxy"] > 1.5 * base.breakdown()["queue_proxy"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": "gpt"}, "model must be one of"),
    ({"min_replicas": -1}, r"min_replicas must be an integer in the range \[0, inf\), got -1"),
    ({"min_replicas": 3, "max_replicas": 2}, "min_replicas .3. must be <= max_replicas"),
    ({"proxy_ms": "fast"}, "proxy_ms must be a number"),
    ({"max_batch_size": 0}, r"max_batch_size must be an integer in the range \[1, inf\)"),
    ({"stable_window": 2.0}, r"stable_window must be a number in the range \[6, 3600\], got 2.0"),
])
def test_bad_parameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_dataflow(duration=10, **kwargs)


def test_breakdown_views() -> None:
    r = simulate_dataflow(arrival_rate=0.05, duration=1800)
    assert set(r.breakdown("p99")) == set(HOPS)
    assert sum(r.breakdown("cold").values()) > sum(r.breakdown("warm").values())
    with pytest.raises(ValueError, match="which must be"):
        r.breakdown("p42")
    assert set(MODEL_PRESETS) >= {"iris-logistic-regression", "digits-random-forest"}
    assert r.summary()["requests"] == r.requests
