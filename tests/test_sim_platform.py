"""The serverless platform simulator: exact small cases, invariants, extensions, validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from labkit.sim import Bursty, PlatformResult, Poisson, TraceReplay, simulate_platform


def run_trace(times, **kw) -> PlatformResult:
    """A run with given arrival times and deterministic service times, for hand-checked cases."""
    kw.setdefault("service_distribution", "deterministic")
    return simulate_platform(workload=TraceReplay(times), seed=0, **kw)


def test_hand_checked_scale_to_zero_and_time_averages() -> None:
    # 0: cold (2 s), idle 2..5, expires at 5. 10: cold again, idle 12..15, expires at 15.
    r = run_trace([0.0, 10.0], warm_service_time=1.0, cold_service_time=2.0, expiration_threshold=3.0, max_time=20.0)
    assert (r.requests, r.cold_starts, r.warm_starts, r.rejections) == (2, 2, 0, 0)
    assert r.cold_start_probability == 1.0
    assert r.avg_server_count == pytest.approx(10 / 20)
    assert r.avg_running_count == pytest.approx(4 / 20)
    assert r.avg_idle_count == pytest.approx(6 / 20)
    assert r.utilization == pytest.approx(0.4)
    assert (r.instances_created, r.instances_expired) == (2, 2)
    assert r.avg_instance_lifespan == pytest.approx(5.0)
    assert r.busy_instance_seconds == pytest.approx(4.0)


def test_keepalive_counts_from_the_end_of_the_last_request() -> None:
    # 0: cold until 2. 4: warm until 5 (idle since 2 is < 3 s). Expires at 5 + 3 = 8.
    r = run_trace([0.0, 4.0], warm_service_time=1.0, cold_service_time=2.0, expiration_threshold=3.0, max_time=20.0)
    assert (r.cold_starts, r.warm_starts) == (1, 1)
    assert r.avg_instance_lifespan == pytest.approx(8.0)
    assert r.avg_server_count == pytest.approx(8 / 20)


def test_the_newest_idle_instance_serves_a_warm_request() -> None:
    # A (created 0) and B (created 0.5) are both idle at 3. The newest, B, serves: 3..4.
    # A then expires at 2 + 2 = 4, B at 4 + 2 = 6 (reusing A would give 6 and 4.5).
    r = run_trace(
        [0.0, 0.5, 3.0], warm_service_time=1.0, cold_service_time=2.0, expiration_threshold=2.0, max_time=10.0
    )
    assert (r.cold_starts, r.warm_starts) == (2, 1)
    assert r.avg_instance_lifespan == pytest.approx((4.0 + 5.5) / 2)
    assert r.avg_server_count == pytest.approx((4.0 + 5.5) / 10)


def test_a_request_ending_as_another_arrives_frees_its_instance_for_it() -> None:
    # integer timestamps and 1 s service times: each request ends exactly when the next arrives
    r = run_trace([0.0, 1.0, 2.0, 3.0], warm_service_time=1.0, cold_service_time=1.0, max_time=10.0)
    assert (r.cold_starts, r.warm_starts, r.instances_created) == (1, 3, 1)
    # and an instance whose keep-alive ends as a request arrives has expired (SimFaaS's order)
    r = run_trace([0.0, 3.0], warm_service_time=1.0, cold_service_time=1.0, expiration_threshold=2.0, max_time=10.0)
    assert (r.cold_starts, r.warm_starts) == (2, 0)


def test_rejection_when_maximum_concurrency_is_running() -> None:
    # one instance busy 0..5: the arrivals at 1 and 2 are rejected, the one at 6 is warm
    r = run_trace(
        [0.0, 1.0, 2.0, 6.0], warm_service_time=5.0, cold_service_time=5.0, maximum_concurrency=1, max_time=50.0
    )
    assert (r.requests, r.cold_starts, r.warm_starts, r.rejections) == (4, 1, 1, 2)
    assert r.rejection_probability == 0.5
    assert r.cold_start_probability == 0.25  # cold / all requests, rejected ones included
    assert r.busy_instance_seconds == pytest.approx(10.0)


def test_rejections_under_poisson_overload_respect_the_cap() -> None:
    r = simulate_platform(
        arrival_rate=3.0, warm_service_time=1.0, cold_service_time=1.5, maximum_concurrency=2, max_time=5000.0, seed=1
    )
    assert 0.2 < r.rejection_probability < 0.8
    assert r.timeline_servers.max() <= 2 + 1e-9
    assert r.avg_running_count <= 2


def test_no_arrivals() -> None:
    r = run_trace([50.0], max_time=10.0)
    assert (r.requests, r.cold_starts, r.rejections) == (0, 0, 0)
    assert r.cold_start_probability == 0.0 and r.rejection_probability == 0.0
    assert r.avg_server_count == 0.0 and r.utilization == 0.0
    assert math.isnan(r.response_time_p50) and math.isnan(r.avg_instance_lifespan)
    assert r.monthly_cost == 0.0


def test_min_warm_pool_exists_from_the_start_and_never_expires() -> None:
    r = run_trace([50.0], max_time=100.0, min_instances=2, expiration_threshold=1.0)
    assert r.avg_server_count == pytest.approx(2.0)
    assert r.cold_starts == 0 and r.warm_starts == 1
    pooled = simulate_platform(arrival_rate=0.01, expiration_threshold=30.0, max_time=2e5, seed=4, min_instances=3)
    assert pooled.timeline_servers.min() >= 3 - 1e-9
    assert pooled.instances_created == 3 + pooled.cold_starts
    bare = simulate_platform(arrival_rate=0.01, expiration_threshold=30.0, max_time=2e5, seed=4)
    assert bare.cold_start_probability > 0.5 > 10 * pooled.cold_start_probability


def test_pool_instances_above_the_minimum_still_expire() -> None:
    # pool of 1 (id 0) serves 10..12; the arrival at 11 needs a second instance, which expires
    r = run_trace(
        [10.0, 11.0],
        warm_service_time=2.0,
        cold_service_time=2.0,
        expiration_threshold=1.0,
        max_time=100.0,
        min_instances=1,
    )
    assert (r.cold_starts, r.warm_starts, r.instances_expired) == (1, 1, 1)
    assert r.timeline_servers[-1] == pytest.approx(1.0)


def test_concurrency_above_one_reduces_cold_starts_and_instances() -> None:
    workload = Bursty(8.0, 0.05, mean_high_duration=30.0, mean_low_duration=600.0)
    kw: dict[str, Any] = {"workload": workload, "expiration_threshold": 60.0, "max_time": 1e5, "seed": 3}
    one = simulate_platform(**kw)
    four = simulate_platform(**kw, concurrency=4)
    assert four.cold_starts < one.cold_starts / 2
    assert four.avg_server_count < one.avg_server_count
    assert four.avg_in_flight == pytest.approx(one.avg_in_flight, rel=0.05)
    assert 0 < four.utilization <= 1


def test_a_starting_instance_takes_no_second_request() -> None:
    # concurrency 4, but the request at 1 arrives while the first instance is still cold
    r = run_trace([0.0, 1.0, 5.0], warm_service_time=1.0, cold_service_time=3.0, concurrency=4, max_time=20.0)
    assert (r.cold_starts, r.warm_starts) == (2, 1)


@pytest.mark.parametrize("kw", [{}, {"concurrency": 3}, {"min_instances": 2}], ids=["c1", "c3", "pool2"])
def test_servers_are_running_plus_idle_at_all_times(kw) -> None:
    workload = Bursty(5.0, 0.2, mean_high_duration=20.0, mean_low_duration=200.0)
    r = simulate_platform(workload=workload, expiration_threshold=45.0, max_time=3e4, seed=9, timeline_points=300, **kw)
    # the three counters are kept separately, so this checks the bookkeeping at 300 instants
    np.testing.assert_array_equal(r.timeline_servers, r.timeline_running + r.timeline_idle)
    assert np.all(r.timeline_servers >= kw.get("min_instances", 0))
    assert np.all(r.timeline_running * kw.get("concurrency", 1) >= 0)
    assert r.timeline_servers.mean() == pytest.approx(r.avg_server_count, rel=0.1)
    assert r.timeline_time[0] == 0.0 and r.timeline_time.size == 300
    assert r.requests == r.cold_starts + r.warm_starts + r.rejections
    assert r.instances_created - r.instances_expired >= kw.get("min_instances", 0)


def reference_simulation(arrivals, warm, cold, threshold, max_time, capacity, max_instances, min_instances, grid):
    """A slow, plain re-statement of the model (scan every instance at every step), for
    differential testing of the fast engine. Service times are deterministic."""
    inst: list[dict[str, Any]] = [
        {"created": 0.0, "deps": [], "ready": 0.0, "last_end": 0.0, "pinned": True, "alive": True}
        for _ in range(min_instances)
    ]
    tot = {
        "requests": 0,
        "cold": 0,
        "warm": 0,
        "rejected": 0,
        "expired": 0,
        "lifespan": 0.0,
        "servers": 0.0,
        "running": 0.0,
        "flight": 0.0,
    }
    samples, t, queue = [], 0.0, list(arrivals)

    def state():
        live = [x for x in inst if x["alive"]]
        return len(live), sum(1 for x in live if x["deps"]), sum(len(x["deps"]) for x in live)

    def next_instance_event():
        best: tuple[float, int | None] = (math.inf, None)
        for x in inst:
            if not x["alive"]:
                continue
            if x["deps"]:
                best = min(best, (min(x["deps"]), id(x)), key=lambda p: p[0])
            elif not x["pinned"]:
                best = min(best, (x["last_end"] + threshold, id(x)), key=lambda p: p[0])
        return best

    while True:
        te, xid = next_instance_event()
        ta = queue[0] if queue else math.inf
        now = min(te, ta)
        now = min(max_time, now)
        servers, running, flight = state()
        while (grid and grid[0] < now) or (grid and now == max_time):
            samples.append((servers, running, servers - running))
            grid = grid[1:]
        tot["servers"] += servers * (now - t)
        tot["running"] += running * (now - t)
        tot["flight"] += flight * (now - t)
        t = now
        if now == max_time:
            return tot, samples
        if ta < te:  # on a tie the instance event goes first, as in SimFaaS
            queue.pop(0)
            tot["requests"] += 1
            ready = [x for x in inst if x["alive"] and x["ready"] <= t and len(x["deps"]) < capacity]
            if ready:
                x = max(ready, key=lambda x: (x["created"], inst.index(x)))
                x["deps"].append(t + warm)
                x["pinned"] = False
                tot["warm"] += 1
            elif servers < max_instances:
                inst.append(
                    {"created": t, "deps": [t + cold], "ready": t + cold, "last_end": t, "pinned": False, "alive": True}
                )
                tot["cold"] += 1
            else:
                tot["rejected"] += 1
            continue
        x = next(x for x in inst if id(x) == xid)
        if x["deps"]:
            x["deps"].remove(min(x["deps"]))
            if not x["deps"]:
                x["last_end"] = t
        elif servers > min_instances:
            x["alive"] = False
            tot["expired"] += 1
            tot["lifespan"] += t - x["created"]
        else:
            x["pinned"] = True


@pytest.mark.parametrize(
    "capacity, max_instances, min_instances, threshold",
    [(1, 1000, 0, 8.0), (1, 3, 0, 5.0), (3, 1000, 0, 8.0), (2, 4, 2, 3.0), (1, 1000, 2, 0.0)],
)
def test_fast_engine_matches_a_plain_reference(capacity, max_instances, min_instances, threshold) -> None:
    arrivals = Bursty(3.0, 0.1, mean_high_duration=15.0, mean_low_duration=40.0).arrival_times(4, 400.0)
    points = 40
    grid = list(np.arange(points) * (400.0 / points))
    ref, samples = reference_simulation(
        arrivals, 1.0, 1.7, threshold, 400.0, capacity, max_instances, min_instances, grid
    )
    r = simulate_platform(
        workload=TraceReplay(arrivals),
        warm_service_time=1.0,
        cold_service_time=1.7,
        expiration_threshold=threshold,
        max_time=400.0,
        seed=0,
        maximum_concurrency=max_instances,
        concurrency=capacity,
        min_instances=min_instances,
        service_distribution="deterministic",
        timeline_points=points,
    )
    assert ref["cold"] > 5 and ref["warm"] > 5
    assert (r.requests, r.cold_starts, r.warm_starts, r.rejections, r.instances_expired) == (
        ref["requests"],
        ref["cold"],
        ref["warm"],
        ref["rejected"],
        ref["expired"],
    )
    assert r.avg_server_count == pytest.approx(ref["servers"] / 400.0, rel=1e-9)
    assert r.avg_running_count == pytest.approx(ref["running"] / 400.0, rel=1e-9)
    assert r.avg_in_flight == pytest.approx(ref["flight"] / 400.0, rel=1e-9)
    if ref["expired"]:
        assert r.avg_instance_lifespan == pytest.approx(ref["lifespan"] / ref["expired"], rel=1e-9)
    np.testing.assert_array_equal(np.c_[r.timeline_servers, r.timeline_running, r.timeline_idle], samples)


def test_compacting_the_heap_of_idle_instances_changes_nothing(monkeypatch) -> None:
    import heapq

    import labkit.sim.platform as engine

    kw: dict[str, Any] = {
        "workload": Bursty(30.0, 0.1, mean_high_duration=15.0, mean_low_duration=40.0),
        "warm_service_time": 1.0,
        "cold_service_time": 1.7,
        "expiration_threshold": 3.0,
        "max_time": 2000.0,
        "seed": 4,
    }
    usual = simulate_platform(**kw)
    rebuilds: list[int] = []
    monkeypatch.setattr(engine, "_COMPACT_MIN", 1)
    monkeypatch.setattr(engine, "heapify", lambda heap: rebuilds.append(len(heap)) or heapq.heapify(heap))  # type: ignore[func-returns-value]  # record, then rebuild
    eager = simulate_platform(**kw)
    assert len(rebuilds) > 10
    assert eager.summary() == usual.summary()
    np.testing.assert_array_equal(eager.timeline_servers, usual.timeline_servers)


def test_same_seed_same_result_and_seed_none_is_recorded() -> None:
    kw: dict[str, Any] = {"arrival_rate": 2.0, "expiration_threshold": 20.0, "max_time": 2e4}
    a = simulate_platform(**kw, seed=5)
    b = simulate_platform(**kw, seed=5)
    c = simulate_platform(**kw, seed=6)
    assert a.summary() == b.summary()
    np.testing.assert_array_equal(a.timeline_servers, b.timeline_servers)
    assert a.summary() != c.summary()
    assert simulate_platform(**kw).seed == 1  # the default, as every simulator's
    fresh = simulate_platform(**kw, seed=None)
    assert fresh.seed is not None
    assert simulate_platform(**kw, seed=fresh.seed).summary() == fresh.summary()


def test_arrival_rate_is_poisson_workload() -> None:
    a = simulate_platform(arrival_rate=0.9, max_time=1e4, seed=2)
    b = simulate_platform(workload=Poisson(0.9), max_time=1e4, seed=2)
    assert a.summary() == b.summary()


def test_response_time_percentiles() -> None:
    # deterministic: every warm request takes exactly 1 s, the few cold ones 3 s
    r = simulate_platform(
        arrival_rate=1.0,
        warm_service_time=1.0,
        cold_service_time=3.0,
        max_time=1e4,
        seed=1,
        service_distribution="deterministic",
    )
    assert r.response_time_p50 == 1.0 and r.response_time_p99 == 1.0
    # exponential warm times with mean 2: median 2 ln 2, p95 2 ln 20
    r = simulate_platform(arrival_rate=1.0, warm_service_time=2.0, cold_service_time=2.0, max_time=2e4, seed=1)
    assert r.response_time_p50 == pytest.approx(2 * math.log(2), rel=0.05)
    assert r.response_time_p95 == pytest.approx(2 * math.log(20), rel=0.05)
    assert r.response_time_mean == pytest.approx(2.0, rel=0.03)
    # a bounded sample gives the same answer within sampling error
    capped = simulate_platform(
        arrival_rate=1.0, warm_service_time=2.0, cold_service_time=2.0, max_time=2e4, seed=1, response_time_samples=2000
    )
    assert capped.response_time_p50 == pytest.approx(r.response_time_p50, rel=0.1)


def test_cold_requests_weigh_in_the_percentiles() -> None:
    # keep-alive 0: every request is cold, so the percentiles are those of the cold times
    r = simulate_platform(
        arrival_rate=0.5,
        warm_service_time=1.0,
        cold_service_time=5.0,
        expiration_threshold=0.0,
        max_time=1e4,
        seed=1,
        service_distribution="deterministic",
    )
    assert r.cold_start_probability == 1.0 and r.response_time_p50 == 5.0


def test_lognormal_service_times_have_the_requested_mean() -> None:
    r = simulate_platform(
        arrival_rate=1.0,
        warm_service_time=2.0,
        cold_service_time=2.0,
        max_time=2e4,
        seed=1,
        service_distribution="lognormal",
        service_cv=0.5,
    )
    assert r.response_time_mean == pytest.approx(2.0, rel=0.03)
    assert r.response_time_p99 < 2.0 * 4  # much lighter tail than exponential's 9.2


def test_infinite_keepalive_never_scales_down() -> None:
    r = simulate_platform(arrival_rate=1.0, expiration_threshold=math.inf, max_time=1e4, seed=1)
    assert r.instances_expired == 0
    assert np.all(np.diff(r.timeline_servers) >= -1e-9)


def test_progress_bar_runs(capsys) -> None:
    r = simulate_platform(arrival_rate=1.0, max_time=1e3, seed=1, progress=True)
    assert r.requests > 0


def test_cost_follows_memory() -> None:
    small = simulate_platform(arrival_rate=1.0, max_time=1e4, seed=1, memory_mb=128)
    big = simulate_platform(arrival_rate=1.0, max_time=1e4, seed=1, memory_mb=1024)
    assert 0 < small.monthly_cost < big.monthly_cost < 8 * small.monthly_cost


@pytest.mark.parametrize(
    "kw, error, message",
    [
        ({}, ValueError, "give arrival_rate"),
        ({"arrival_rate": -1.0}, ValueError, r"arrival_rate must be a number in the range \(0, inf\), got -1.0"),
        ({"arrival_rate": "fast"}, TypeError, "arrival_rate must be a number"),
        ({"arrival_rate": 1.0, "workload": Poisson(1.0)}, ValueError, "not both"),
        ({"workload": [1.0, 2.0]}, TypeError, "workload must be"),
        ({"arrival_rate": 1.0, "warm_service_time": 0.0}, ValueError, "warm_service_time must be"),
        ({"arrival_rate": 1.0, "cold_service_time": -2.0}, ValueError, "cold_service_time must be"),
        (
            {"arrival_rate": 1.0, "warm_service_time": 3.0, "cold_service_time": 2.0},
            ValueError,
            "must be >= warm_service_time",
        ),
        ({"arrival_rate": 1.0, "expiration_threshold": -1.0}, ValueError, "expiration_threshold must be"),
        ({"arrival_rate": 1.0, "max_time": math.inf}, ValueError, r"max_time must be a number in the range \(0, inf\), got inf"),
        ({"arrival_rate": 1.0, "maximum_concurrency": 0}, ValueError, r"maximum_concurrency must be an integer in the range \[1, inf\), got 0"),
        ({"arrival_rate": 1.0, "maximum_concurrency": 2.5}, TypeError, "maximum_concurrency must be an integer"),
        ({"arrival_rate": 1.0, "concurrency": True}, TypeError, "concurrency must be an integer"),
        (
            {"arrival_rate": 1.0, "min_instances": 5, "maximum_concurrency": 2},
            ValueError,
            "exceeds maximum_concurrency",
        ),
        ({"arrival_rate": 1.0, "service_distribution": "uniform"}, ValueError, "service_distribution must be one of"),
        ({"arrival_rate": 1.0, "memory_mb": 0}, ValueError, "memory_mb must be"),
        ({"arrival_rate": 1.0, "seed": -3}, ValueError, r"seed must be an integer in the range \[0, inf\), got -3"),
        ({"arrival_rate": 1.0, "timeline_points": 0}, ValueError, r"timeline_points must be an integer in the range \[1, inf\)"),
    ],
)
def test_bad_parameters_are_named(kw, error, message) -> None:
    with pytest.raises(error, match=message):
        simulate_platform(**{"max_time": 10.0, **kw})
