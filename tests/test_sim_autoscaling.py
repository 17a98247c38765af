"""The KPA simulation: direction and size of its decisions, and agreement with Knative's formula."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from labkit.serving.autoscaler_config import AnnotationError, AutoscalerConfig
from labkit.sim import Poisson, Prices
from labkit.sim.autoscaling import (
    burst_workload,
    clients_workload,
    simulate_autoscaling,
)

TARGET = "autoscaling.knative.dev/target"
WINDOW = "autoscaling.knative.dev/window"


def _at(result, key: str, t: float) -> float:
    """The per-second value at time t (the timeline starts at t = 1)."""
    return float(result.timeline[key][int(t) - 1])


def _burst(**kw):
    """1 req/s of 1-second requests, then 30 req/s for 30 s from t = 100: concurrency 1 -> 30."""
    workload = burst_workload(1.0, 30.0, 100.0, 30.0, 400.0, seed=4)
    kw.setdefault("service_distribution", "deterministic")
    return simulate_autoscaling(workload, {TARGET: "10", **kw.pop("annotations", {})}, duration=400.0,
                                seed=1, service_time=1.0, **kw)


def test_a_burst_triggers_panic_and_scale_up_in_the_first_ticks():
    r = _burst()
    assert r.spec.target_value == pytest.approx(7.0)  # target 10 at 70 % utilisation
    panics = r.panic_periods
    assert panics and 100 <= panics[0][0] <= 104, panics  # within two ticks of the burst
    assert _at(r, "desired", 104) >= 2
    assert max(r.timeline["desired"][99:130]) >= math.ceil(30 / 7)  # 30 in flight / 7 per pod
    assert _at(r, "ready", 120) >= 4
    assert all(r.timeline["in_panic"][:99] == 0)  # no panic on the calm 1 req/s before


def test_never_scales_down_in_panic_and_then_by_at_most_the_down_rate():
    # A burst of 30 req/s into an idle revision, then nothing; a 6 s stable window lets the
    # metric fall faster than the rate limit, so the limit shows.
    annotations = {TARGET: "1", WINDOW: "6s"}

    def run(rate: float):
        return simulate_autoscaling(burst_workload(0.0, 30.0, 100.0, 30.0, 300.0, seed=4), annotations,
                                    duration=300.0, seed=1, service_time=1.0, service_distribution="deterministic",
                                    config=AutoscalerConfig(max_scale_down_rate=rate))

    for rate in (2.0, 4.0):
        ticks = run(rate).ticks
        for i in range(1, len(ticks["time"])):
            before, after = ticks["desired"][i - 1], ticks["desired"][i]
            if ticks["in_panic"][i] and ticks["in_panic"][i - 1]:
                assert after >= before, f"scaled down in panic at t={ticks['time'][i]}"
            if after < before:  # Knative's floor(ready / rate), from the pods the decision saw
                assert after >= math.floor(max(1, ticks["ready"][i]) / rate), (rate, ticks["time"][i])
    slow, fast = run(2.0), run(10.0)

    def down_to_one(r) -> float:
        t, ready = r.timeline["time"], r.timeline["ready"]
        return float(t[(t > 110) & (ready <= 1)][0])

    assert max(slow.timeline["ready"]) > 20
    assert down_to_one(fast) < down_to_one(slow)


def _idle(annotations: dict[str, str], **kw):
    return simulate_autoscaling(Poisson(1e-6), {WINDOW: "60s", **annotations}, duration=200.0, seed=1, **kw)


def _zero_time(r) -> float:
    t, replicas = r.timeline["time"], r.timeline["replicas"]
    return float(t[replicas == 0][0])


def test_an_idle_revision_scales_to_zero_after_the_window_and_the_grace_period():
    # Burst capacity 0: the activator leaves the path while pods serve, so the last pod waits
    # the 30 s grace period once the revision goes inactive at the end of the stable window.
    r = _idle({"autoscaling.knative.dev/target-burst-capacity": "0"})
    assert 60 + 30 <= _zero_time(r) <= 60 + 30 + 4
    # Default burst capacity 211: the activator has been in the path for longer than the grace
    # period when the revision goes inactive, so the last pod goes at once.
    fast = _idle({})
    assert 60 <= _zero_time(fast) <= 64
    # A longer grace period in config-autoscaler delays it.
    slow = _idle({"autoscaling.knative.dev/target-burst-capacity": "0"},
                 config=AutoscalerConfig(scale_to_zero_grace_period=60.0))
    assert 60 + 60 <= _zero_time(slow) <= 60 + 60 + 4
    assert all(slow.timeline["ready"][int(_zero_time(slow)) + 2:] == 0)


def test_min_and_max_scale_are_respected():
    idle = _idle({"autoscaling.knative.dev/min-scale": "2"})
    assert all(idle.timeline["replicas"][2:] == 2)
    assert all(idle.timeline["ready"][10:] == 2)
    capped = _burst(annotations={"autoscaling.knative.dev/max-scale": "2"})
    assert capped.max_ready_pods == 2
    assert max(capped.timeline["replicas"]) == 2
    assert capped.latency_percentile(99) >= _burst().latency_percentile(99)


def test_initial_scale_starts_that_many_pods_and_waits_for_them():
    r = simulate_autoscaling(Poisson(1e-6), {"autoscaling.knative.dev/initial-scale": "3", WINDOW: "10s"},
                             duration=100.0, seed=1, initially_ready=False, cold_start=3.0,
                             cold_start_distribution="deterministic")
    assert r.pods_started == 3
    assert _at(r, "ready", 1) == 0 and _at(r, "ready", 3) == 3
    # Once all three were up, initial-scale no longer holds: idle, it goes to 1, then to zero.
    assert _at(r, "replicas", 6) == 1
    assert _at(r, "replicas", 100) == 0


def test_rps_metric_ignores_service_time_while_concurrency_follows_it():
    def pods(metric: str, target: str, service_time: float) -> float:
        r = simulate_autoscaling(Poisson(50.0), {TARGET: target, "autoscaling.knative.dev/metric": metric},
                                 duration=240.0, seed=2, service_time=service_time,
                                 service_distribution="deterministic")
        return float(np.median(r.timeline["ready"][150:]))

    # 50 req/s at 7 req/s per pod: 8 pods, whatever the service time.
    assert pods("rps", "10", 0.1) == pods("rps", "10", 0.5) == math.ceil(50 / 7)
    # Concurrency = rate x service time: 5 or 25 in flight at 0.7 per pod.
    assert pods("concurrency", "1", 0.1) == pytest.approx(math.ceil(5 / 0.7), abs=1)
    assert pods("concurrency", "1", 0.5) == pytest.approx(math.ceil(25 / 0.7), abs=2)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    def run(seed: int):
        return simulate_autoscaling(burst_workload(2.0, 40.0, 30.0, 20.0, 150.0, seed=seed), {TARGET: "5"},
                                    duration=150.0, seed=seed, cold_start=2.0)

    a, b, c = run(7), run(7), run(8)
    for key in a.timeline:
        assert np.array_equal(a.timeline[key], b.timeline[key])
    assert np.array_equal(a.latency, b.latency)
    assert a.summary() == b.summary()
    assert not np.array_equal(a.latency, c.latency)


def test_desired_pods_match_a_hand_computation_of_knatives_formula():
    """Rebuild every steady stable-mode decision from the recorded per-second concurrency."""
    r = simulate_autoscaling(Poisson(20.0), {TARGET: "2"}, duration=400.0, seed=3, service_time=0.5)
    target = 2 * 0.7
    conc = r.timeline["concurrency"]
    checked = 0
    ticks = r.ticks
    for t, ready, stable, desired, panic in zip(ticks["time"], ticks["ready"], ticks["stable"],
                                                 ticks["desired"], ticks["in_panic"]):
        if t < 100 or panic or t != int(t):
            continue
        window = conc[int(t) - 60:int(t)]  # the 60 one-second buckets up to and including t
        assert stable == pytest.approx(window.mean(), abs=1e-5)
        pods = max(1.0, ready)
        expected = min(max(math.ceil(stable / target), math.floor(pods / 2)), math.ceil(1000 * pods))
        assert desired == expected, t
        checked += 1
    assert checked > 100
    assert 20 * 0.5 / target - 2 <= np.median(ticks["desired"][50:]) <= 20 * 0.5 / target + 2


def test_scale_from_zero_is_a_cold_start_the_first_requests_wait_for():
    workload = burst_workload(0.0, 10.0, 100.0, 10.0, 200.0, seed=1)
    r = simulate_autoscaling(workload, {WINDOW: "10s"}, duration=200.0, seed=1, cold_start=2.0,
                             cold_start_distribution="deterministic", service_time=0.1)
    assert _at(r, "ready", 99) == 0
    assert r.cold_starts == 1
    assert r.requests_cold > 0
    cold_waits = r.queue_delay[r.cold]
    assert cold_waits.min() > 0 and cold_waits.max() <= 2.0 + 1e-9
    assert np.all(r.queue_delay[~r.cold] == 0)  # containerConcurrency 0: nobody else waits
    assert r.served == r.requests


def test_container_concurrency_queues_and_times_out_at_the_activator():
    r = simulate_autoscaling(Poisson(5.0), {"autoscaling.knative.dev/max-scale": "1"}, duration=120.0,
                             seed=1, container_concurrency=1, service_time=1.0, timeout=10.0)
    assert r.timed_out > 0
    assert r.queue_delay.max() <= 10.0 + 1e-9
    assert r.queue_delay_percentile(50) > 1.0
    assert r.served + r.timed_out + r.rejected <= r.requests


def test_pod_seconds_are_priced_and_cover_the_ready_pods():
    r = _burst()
    assert r.pod_seconds >= r.timeline["ready"].sum() - r.max_ready_pods
    prices = Prices(always_on_hourly=3.6)
    priced = _burst(prices=prices)
    assert priced.cost == pytest.approx(priced.pod_seconds / 1000)
    assert priced.monthly_cost > priced.cost


def test_bad_input_is_named():
    with pytest.raises(AnnotationError, match="autoscaling.knative.dev/target"):
        simulate_autoscaling(Poisson(1.0), {TARGET: "lots"}, duration=10.0)
    with pytest.raises(TypeError, match=r"annotations\['autoscaling.knative.dev/target'\].*quote"):
        simulate_autoscaling(Poisson(1.0), {TARGET: 10}, duration=10.0)  # type: ignore[dict-item]  # the wrong type is the test
    with pytest.raises(ValueError, match="service_distribution"):
        simulate_autoscaling(Poisson(1.0), service_distribution="pareto", duration=10.0)
    with pytest.raises(ValueError, match="burst"):
        burst_workload(1.0, 10.0, 90.0, 20.0, 100.0)


def test_the_activator_pokes_the_decider_at_once_when_a_request_finds_zero_pods():
    workload = burst_workload(0.0, 5.0, 100.0, 5.0, 150.0, seed=2)
    first = float(workload.timestamps[0])
    r = simulate_autoscaling(workload, {TARGET: "1", WINDOW: "6s"}, duration=150.0, seed=1)
    assert _at(r, "replicas", 99) == 0
    poke = np.flatnonzero(r.ticks["time"] == first)
    assert poke.size == 1, "a decision at the very arrival, not at the next 2 s tick"
    # The activator's immediate stat (1 in flight) alone asks for ceil(1 / 0.7) = 2 pods.
    assert r.ticks["desired"][poke[0]] == 2


def test_burst_capacity_decides_whether_the_activator_stays_in_the_path():
    load = Poisson(5.0)

    def share_in_path(tbc: str) -> float:
        r = simulate_autoscaling(load, {TARGET: "10", "autoscaling.knative.dev/target-burst-capacity": tbc},
                                 duration=120.0, seed=1)
        return float(r.timeline["activator_in_path"][10:].mean())

    assert share_in_path("0") == 0.0  # pods serve: straight to them
    assert share_in_path("-1") == 1.0  # unlimited burst capacity: always through the activator
    assert share_in_path("211") == 1.0  # 1 pod x 10 - 211 < 0: too little spare capacity


def test_the_queue_proxy_answers_503_beyond_ten_times_container_concurrency():
    # Burst capacity 0 keeps the activator out of the path, so pods take requests directly.
    r = simulate_autoscaling(Poisson(20.0), {"autoscaling.knative.dev/max-scale": "1",
                                             "autoscaling.knative.dev/target-burst-capacity": "0"},
                             duration=60.0, seed=1, container_concurrency=1, service_time=1.0,
                             service_distribution="deterministic")
    assert r.rejected > 0
    assert r.queue_delay.max() <= 10 * 1.0 + 1.0  # at most 10 queued ahead plus the one in service


def test_clients_workload_keeps_that_many_requests_in_flight():
    workload = clients_workload(8, 1.0, 5.0, 10.0, 30.0)
    times = workload.timestamps
    assert times.size == 80 and times[0] == 5.0 and times[-1] == 14.0
    r = simulate_autoscaling(workload, {}, duration=30.0, seed=1, service_time=1.0,
                             service_distribution="deterministic")
    assert np.allclose(r.timeline["concurrency"][6:14], 8.0)


def test_pod_parallelism_queues_inside_the_pod_and_counts_as_concurrency():
    # containerConcurrency 0 lets every request into the pod; an app that serves one at a time
    # then queues them itself, and the queue-proxy still counts them in flight.
    anns = {"autoscaling.knative.dev/max-scale": "1"}
    kw: dict[str, Any] = {"duration": 120.0, "seed": 1, "service_time": 0.5, "service_distribution": "deterministic"}
    free = simulate_autoscaling(Poisson(1.5), anns, **kw)
    single = simulate_autoscaling(Poisson(1.5), anns, pod_parallelism=1, **kw)
    assert free.queue_delay.max() == 0
    assert single.queue_delay_percentile(99) > 0.5
    assert single.timeline["concurrency"].mean() > free.timeline["concurrency"].mean()
