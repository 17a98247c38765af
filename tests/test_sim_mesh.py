"""labkit.sim.mesh: properties of retries, circuit breaking and ejection under failures."""

from __future__ import annotations

import math
from typing import Any

import pytest

from labkit.mesh import spec
from labkit.mesh.retries import RetryPolicy
from labkit.sim import simulate_mesh

SHORT: dict[str, Any] = {"duration": 20.0, "arrival_rate": 100.0}
RETRY_5XX = {"attempts": 2, "retryOn": "5xx"}
EJECT = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}


def test_same_seed_same_result_and_seed_matters() -> None:
    a = simulate_mesh(**SHORT, seed=3)
    b = simulate_mesh(**SHORT, seed=3)
    c = simulate_mesh(**SHORT, seed=4)
    assert a == b
    assert a.status_counts != c.status_counts


def test_without_retries_the_failure_rate_shows_through() -> None:
    r = simulate_mesh(**SHORT, hosts=3, failing_hosts=3, failure_rate=0.3, retries={"attempts": 0})
    assert r.mean_tries == 1.0
    assert r.success_rate == pytest.approx(0.7, abs=0.03)
    assert set(r.status_counts) == {200, 503} and r.flag_counts == {}


def test_istio_default_retry_policy_does_not_retry_503() -> None:
    none = simulate_mesh(**SHORT, failure_rate=0.5, retries={"attempts": 0})
    default = simulate_mesh(**SHORT, failure_rate=0.5, retries=None)
    assert default.status_counts == none.status_counts and default.tries == none.tries


def test_retries_raise_success_under_independent_failures() -> None:
    p = 0.3
    once = simulate_mesh(**SHORT, hosts=3, failing_hosts=3, failure_rate=p, retries={"attempts": 0})
    retried = simulate_mesh(**SHORT, hosts=3, failing_hosts=3, failure_rate=p, retries=RETRY_5XX)
    assert retried.success_rate > once.success_rate + 0.2
    assert retried.success_rate == pytest.approx(1 - p ** 3, abs=0.02)  # three independent tries
    assert retried.mean_tries == pytest.approx(1 + p + p * p, abs=0.05)
    # exhausted retries keep the last answer and add URX
    assert retried.count_flag("URX") == retried.status_counts.get(503, 0) > 0


def test_retries_cost_latency() -> None:
    once = simulate_mesh(**SHORT, failure_rate=0.5, retries={"attempts": 0})
    retried = simulate_mesh(**SHORT, failure_rate=0.5, retries=RETRY_5XX)
    assert retried.mean_latency > once.mean_latency
    assert retried.tries > once.tries


def test_pool_limits_cap_in_flight_load_and_overflow_with_uo() -> None:
    pool = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}
    r = simulate_mesh(**SHORT, failing_hosts=0, connection_pool=pool)
    free = simulate_mesh(**SHORT, failing_hosts=0)
    assert r.max_active_requests == 1 < free.max_active_requests
    assert all(n <= 1 for n in r.max_in_service.values())
    assert r.overflows == r.count_flag("UO") == r.status_counts[503] > 0
    assert free.overflows == 0 and free.success_rate == 1.0
    # every request either got through (200) or was refused at once (503 UO): nothing else
    assert set(r.status_counts) == {200, 503}


def test_a_host_queues_what_its_workers_cannot_take() -> None:
    # One worker, exponential service of 10 ms, Poisson arrivals at 50/s: an M/M/1 queue, whose
    # mean time in the system is 1 / (mu - lambda) = 20 ms; with 8 workers nobody waits (10 ms).
    common: dict[str, Any] = {"hosts": 1, "failing_hosts": 0, "arrival_rate": 50.0, "duration": 200.0, "connect_time": 0.0}
    queued = simulate_mesh(**common, host_concurrency=1)
    free = simulate_mesh(**common, host_concurrency=8)
    assert queued.max_in_service == {"backend-0": 1} and queued.success_rate == 1.0
    assert queued.mean_latency == pytest.approx(0.020, rel=0.1)
    assert free.mean_latency == pytest.approx(0.010, rel=0.1)


def test_http2_max_requests_caps_active_requests() -> None:
    r = simulate_mesh(**SHORT, failing_hosts=0, connection_pool={"http": {"http2MaxRequests": 2}})
    assert r.max_active_requests <= 2 and r.overflows > 0


def test_overflow_is_never_retried() -> None:
    pool = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}
    r = simulate_mesh(**SHORT, failing_hosts=0, connection_pool=pool, retries=RETRY_5XX)
    assert r.mean_tries <= 1.0 and r.count_flag("URX") == 0


def test_ejection_takes_load_off_the_failing_host() -> None:
    kept = simulate_mesh(**SHORT, failure_rate=1.0, retries={"attempts": 0})
    ejected = simulate_mesh(**SHORT, failure_rate=1.0, retries={"attempts": 0}, outlier_detection=EJECT)
    assert kept.failing_share == pytest.approx(1 / 3, abs=0.05)
    assert ejected.failing_share < 0.05
    assert ejected.failing_load < kept.failing_load / 5
    assert ejected.success_rate > 0.95 and kept.success_rate < 0.7
    assert ejected.ejections >= 1 and max(ejected.series_ejected) == 1


def test_ejected_host_returns_after_its_ejection_time() -> None:
    od = {**EJECT, "baseEjectionTime": "2s"}
    r = simulate_mesh(duration=30.0, arrival_rate=50.0, failure_rate=1.0, retries={"attempts": 0},
                      outlier_detection=od)
    # it comes back, fails at once, and is ejected again: several ejections, each longer
    assert r.ejections >= 3
    assert 0 in r.series_ejected and 1 in r.series_ejected


def test_all_hosts_ejected_gives_503_uh() -> None:
    r = simulate_mesh(**SHORT, hosts=2, failing_hosts=2, failure_rate=1.0, retries={"attempts": 0},
                      outlier_detection=EJECT)
    assert r.count_flag("UH") > 0.9 * r.requests
    assert r.status_counts == {503: r.requests}


def test_max_ejection_percent_keeps_hosts_in() -> None:
    od = {**EJECT, "maxEjectionPercent": 10}
    r = simulate_mesh(**SHORT, hosts=4, failing_hosts=2, failure_rate=1.0, retries={"attempts": 0},
                      outlier_detection=od)
    assert max(r.series_ejected) == 1  # 10 % of 4 hosts: only one may be out at a time
    assert r.failing_share > 0.2


def test_route_timeout_gives_504_ut() -> None:
    r = simulate_mesh(**SHORT, failing_hosts=0, service_time=0.05, timeout=0.02)
    assert r.count_flag("UT") == r.status_counts[504] > 0
    assert r.latency_p99 <= 0.02 + 1e-9


def test_per_try_timeout_is_retried() -> None:
    r = simulate_mesh(**SHORT, failing_hosts=0, service_time=0.05,
                      retries={"attempts": 2, "retryOn": "5xx", "perTryTimeout": "30ms"})
    assert r.mean_tries > 1.2
    assert r.success_rate > simulate_mesh(**SHORT, failing_hosts=0, service_time=0.05,
                                          retries={"attempts": 0, }, timeout=0.03).success_rate


def test_policy_objects_and_series_shapes() -> None:
    r = simulate_mesh(duration=10.0, arrival_rate=20.0, retries=RetryPolicy(attempts=1, retry_on=frozenset({"5xx"})),
                      bin_seconds=2.0)
    assert len(r.series_time) == len(r.series_success) == len(r.series_ejected) == 5
    assert r.series_time == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert all(math.isnan(s) or 0 <= s <= 1 for s in r.series_success)
    assert "requests in 10 s" in str(r)
    summary = r.summary()
    assert summary["requests"] == r.requests and summary["status_200"] == r.status_counts[200]
    assert summary["latency_p99"] == r.latency_p99


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        simulate_mesh(failure_rate=1.5)
    with pytest.raises(ValueError, match="failing_hosts"):
        simulate_mesh(hosts=2, failing_hosts=3)
    with pytest.raises(spec.SpecError, match="retries.attempts"):
        simulate_mesh(retries={"attempts": -1})
    with pytest.raises(spec.SpecError, match="outlierDetection.interval"):
        simulate_mesh(outlier_detection={"interval": "10"})
