"""Retries, timeouts, connection-pool limits, outlier detection and load balancing
(labkit.mesh.retries / pool / outlier / balancer) against Istio's and Envoy's documented behaviour."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from labkit.mesh import flags
from labkit.mesh.balancer import (
    ConsistentHash,
    HashKey,
    LeastRequest,
    RandomBalancer,
    RoundRobin,
    balancer_from_spec,
)
from labkit.mesh.destination import DestinationRule
from labkit.mesh.outlier import OutlierDetector, OutlierPolicy
from labkit.mesh.pool import ConnectionPool, Lease, PoolLimits
from labkit.mesh.retries import (
    CONNECT_FAILURE,
    CONNECTION_TERMINATION,
    NO_HEALTHY_UPSTREAM,
    NO_RETRIES,
    OVERFLOW,
    PER_TRY_TIMEOUT,
    REFUSED_STREAM,
    REMOTE_RESET,
    Finish,
    Outcome,
    Retry,
    RetryPolicy,
    RetryState,
    request_timeout,
)
from labkit.mesh.spec import UNLIMITED, SpecError

# --- retry policy -------------------------------------------------------------------------------


def test_istio_default_retry_policy():
    p = RetryPolicy.from_spec(None)
    assert p.attempts == 2
    assert p.retry_on == {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
    assert p.retriable_status_codes == frozenset()   # Istio >= 1.24: 503 no longer retried
    assert p.per_try_timeout is None and p.backoff_base == 0.025 and p.previous_hosts
    assert RetryPolicy.from_spec(None, legacy_503=True).retriable_status_codes == {503}
    assert not RetryPolicy.from_spec(None, consistent_hash=True).previous_hosts


def test_retries_block_without_retry_on_keeps_default_conditions():
    p = RetryPolicy.from_spec({"attempts": 5, "perTryTimeout": "2s"})
    assert (p.attempts, p.per_try_timeout) == (5, 2.0)
    assert p.retry_on == RetryPolicy.from_spec(None).retry_on


def test_numeric_retry_on_becomes_retriable_status_codes():
    p = RetryPolicy.from_spec({"attempts": 3, "retryOn": "503,reset"})
    assert p.retry_on == {"reset", "retriable-status-codes"}
    assert p.retriable_status_codes == {503}


def test_attempts_zero_disables_retries():
    assert RetryPolicy.from_spec({"attempts": 0}) == NO_RETRIES
    assert not NO_RETRIES.retriable(Outcome.of(CONNECT_FAILURE))


def test_explicit_previous_hosts_setting_wins_over_consistent_hash():
    p = RetryPolicy.from_spec({"attempts": 1, "retryIgnorePreviousHosts": True}, consistent_hash=True)
    assert p.previous_hosts
    assert not RetryPolicy.from_spec({"attempts": 1, "retryIgnorePreviousHosts": False}).previous_hosts


@pytest.mark.parametrize("spec, message", [
    ({"attempts": -1}, r"^retries\.attempts: must be >= 0, got -1$"),
    ({"attempts": 2, "retryOn": "5xx,sometimes"}, r"^retries\.retryOn: unknown retryOn condition 'sometimes'"),
    ({"attempts": 2, "retryOn": "5xx,999"}, r"^retries\.retryOn: '999' is not an HTTP status code"),
    ({"attempts": 2, "perTryTimeout": "2"}, r"^retries\.perTryTimeout: invalid duration '2'"),
    ({"attempts": 2, "perTryTimeout": "0.1ms"}, r"^retries\.perTryTimeout: must be at least 1ms"),
    ({"attempts": 0, "retryOn": "5xx"}, r"^retries: perTryTimeout/retryOn/retryRemoteLocalities set while attempts is 0"),
    ({"attempts": 2, "retryOn": "5xx, reset"}, r"^retries\.retryOn: ' reset': write retryOn values comma-separated without spaces"),
    ({"attempts": 2, "retryOn": "599"}, r"^retries\.retryOn: '599' is not an HTTP status code"),
    ({"attempts": "3"}, r"^retries\.attempts: must be an integer"),
    ({"attempt": 3}, r"^retries\.attempt: unknown field"),
])
def test_bad_retry_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        RetryPolicy.from_spec(spec)


R = Outcome.response


@pytest.mark.parametrize("retry_on, outcome, retried", [
    # Istio's default policy: an app's 5xx is not retried, a refused connection is.
    (None, R(503), False),
    (None, R(500), False),
    (None, Outcome.of(CONNECT_FAILURE), True),
    (None, Outcome.of(REFUSED_STREAM), True),
    (None, Outcome.of(CONNECTION_TERMINATION), False),
    (None, Outcome.of(PER_TRY_TIMEOUT), False),
    (None, R(200, {"grpc-status": "14"}), True),          # unavailable
    (None, R(200, {"grpc-status": "1"}), True),           # cancelled
    (None, R(200, {"grpc-status": "13"}), False),
    ("5xx", R(500), True),
    ("5xx", R(503), True),
    ("5xx", R(404), False),
    ("5xx", Outcome.of(REMOTE_RESET), True),
    ("5xx", Outcome.of(CONNECT_FAILURE), True),
    ("5xx", Outcome.of(PER_TRY_TIMEOUT), True),
    ("gateway-error", R(502), True),
    ("gateway-error", R(504), True),
    ("gateway-error", R(500), False),
    ("gateway-error", Outcome.of(PER_TRY_TIMEOUT), True),
    ("reset", R(503), False),
    ("reset", Outcome.of(CONNECTION_TERMINATION), True),
    ("reset", Outcome.of(PER_TRY_TIMEOUT), True),
    ("connect-failure", Outcome.of(CONNECT_FAILURE), True),
    ("connect-failure", Outcome.of(CONNECTION_TERMINATION), False),
    ("connect-failure", Outcome.of(PER_TRY_TIMEOUT), False),
    ("reset-before-request", Outcome.of(CONNECT_FAILURE), True),
    ("reset-before-request", Outcome.of(REMOTE_RESET), False),
    ("refused-stream", Outcome.of(REFUSED_STREAM), True),
    ("retriable-4xx", R(409), True),
    ("retriable-4xx", R(404), False),
    ("503", R(503), True),
    ("503", R(502), False),
    ("503", Outcome.of(CONNECT_FAILURE), False),  # codes match only statuses from upstream
    ("envoy-ratelimited", R(429, {"x-envoy-ratelimited": "true"}), True),
    ("envoy-ratelimited", R(429), False),
    ("5xx,gateway-error,reset", Outcome.of(OVERFLOW), False),            # UO never retried
    ("5xx,gateway-error,reset", Outcome.of(NO_HEALTHY_UPSTREAM), False),
])
def test_retriable(retry_on, outcome, retried):
    spec = None if retry_on is None else {"attempts": 2, "retryOn": retry_on}
    assert RetryPolicy.from_spec(spec).retriable(outcome) is retried


@pytest.mark.parametrize("retry, upper_ms", [(1, 25), (2, 75), (3, 175), (4, 250), (10, 250)])
def test_backoff_is_fully_jittered_exponential_capped_at_10x_base(retry, upper_ms):
    p = RetryPolicy.from_spec(None)
    rng = random.Random(42)
    samples = [p.backoff(retry, rng) for _ in range(3000)]
    assert min(samples) >= 0 and max(samples) < upper_ms / 1000
    assert max(samples) >= 0.9 * (upper_ms - 1) / 1000       # the whole range is used
    assert abs(sum(samples) / len(samples) - upper_ms / 2000) < upper_ms / 2000 * 0.1  # uniform mean


def test_backoff_base_is_configurable():
    p = RetryPolicy.from_spec({"attempts": 3, "backoff": "100ms"})
    rng = random.Random(1)
    assert max(p.backoff(1, rng) for _ in range(500)) < 0.1
    assert max(p.backoff(5, rng) for _ in range(500)) < 1.0
    assert max(p.backoff(5, rng) for _ in range(500)) > 0.5


@pytest.mark.parametrize("route_timeout, header, expected", [
    (None, None, None), (2.0, None, 2.0), (None, "500", 0.5), (2.0, "0", None), (2.0, "abc", 2.0),
])
def test_request_timeout_header_override(route_timeout, header, expected):
    headers = {} if header is None else {"x-envoy-upstream-rq-timeout-ms": header}
    assert request_timeout(route_timeout, headers) == expected


# --- retry state: whole requests ----------------------------------------------------------------

def run(policy: RetryPolicy, outcomes, *, timeout=None, pool=None, hosts=("h1", "h2", "h3")):
    """Drive a RetryState through `outcomes` at 10 ms per try; returns (final, retries, tried hosts)."""
    state = RetryState(policy, start=0.0, timeout=timeout, rng=random.Random(0), retry_slot=pool)
    now = 0.0
    retries: list[Retry] = []
    for outcome in outcomes:
        host = next(h for h in hosts if h not in state.avoid_hosts) if len(state.avoid_hosts) < len(hosts) else hosts[0]
        state.begin(host, now)
        now += 0.01
        decision = state.on_outcome(outcome, now)
        if isinstance(decision, Finish):
            return decision, retries, state.hosts
        retries.append(decision)
        now += decision.delay
    raise AssertionError("outcomes ran out before the request finished")


def test_default_policy_passes_an_app_503_through_without_retry():
    final, retries, _ = run(RetryPolicy.from_spec(None), [R(503)])
    assert retries == [] and final.reply is None and final.status == 503 and final.flags == ()


def test_default_policy_retries_connect_failures_twice_on_other_hosts_then_uf_urx():
    final, retries, hosts = run(RetryPolicy.from_spec(None), [Outcome.of(CONNECT_FAILURE)] * 3)
    assert [r.attempt for r in retries] == [2, 3]           # x-envoy-attempt-count
    assert hosts == ["h1", "h2", "h3"]                       # previous-hosts predicate
    assert final.status == 503 and flags.format_flags(final.flags) == "UF,URX"
    assert final.reply.body == ("upstream connect error or disconnect/reset before headers. "
                                "retried and the latest reset reason: connection failure")
    assert final.attempts == 3


def test_success_after_retries_is_returned_without_flags():
    final, retries, _ = run(RetryPolicy.from_spec({"attempts": 3, "retryOn": "5xx"}), [R(503), R(500), R(200)])
    assert len(retries) == 2 and final.status == 200 and final.flags == () and final.reply is None


def test_exhausted_retries_return_the_last_upstream_response_with_urx():
    final, retries, _ = run(RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx"}), [R(500), R(502), R(503)])
    assert len(retries) == 2
    assert final.reply is None and final.status == 503 and final.flags == ("URX",)


def test_not_retriable_reset_without_retries_uses_reset_reason_wording():
    final, _, _ = run(NO_RETRIES, [Outcome.of(CONNECTION_TERMINATION)])
    assert final.reply.body.endswith(". reset reason: connection termination")
    assert final.reply.flags == ("UC",) and final.status == 503


def test_overflow_is_never_retried_and_answers_uo():
    final, retries, _ = run(RetryPolicy.from_spec({"attempts": 5, "retryOn": "5xx,reset,gateway-error"}),
                            [Outcome.of(OVERFLOW)])
    assert retries == [] and final.reply == flags.OVERFLOW
    assert final.reply.headers == (("x-envoy-overloaded", "true"),) and final.flags == ("UO",)


def test_route_timeout_covers_all_retries():
    # 3 tries of 10 ms plus back-off would need > 25 ms; the 25 ms budget ends it with 504 UT.
    p = RetryPolicy.from_spec({"attempts": 5, "retryOn": "5xx"})
    state = RetryState(p, start=0.0, timeout=0.025, rng=random.Random(0))
    now, decision = 0.0, None
    for _ in range(10):
        until = state.begin("h", now)
        assert until is not None and until <= 0.025 + 1e-12
        now = min(now + 0.01, until)
        decision = state.on_outcome(R(503), now) if now < until else state.expired(now)
        if isinstance(decision, Finish):
            break
        assert isinstance(decision, Retry) and state.deadline is not None
        now += decision.delay
        if now >= state.deadline:
            decision = state.expired(now)
            break
    assert isinstance(decision, Finish) and decision.reply is not None
    assert decision.status == 504 and decision.reply.body == "upstream request timeout"
    assert decision.flags == ("UT",)


def test_response_arriving_after_the_route_deadline_is_a_timeout():
    state = RetryState(RetryPolicy.from_spec(None), start=0.0, timeout=1.0, rng=random.Random(0))
    state.begin("h", 0.0)
    final = state.on_outcome(R(200), 1.5)
    assert isinstance(final, Finish) and final.status == 504 and final.flags == ("UT",)


def test_per_try_timeout_is_retried_and_the_last_one_is_504_ut_urx():
    p = RetryPolicy.from_spec({"attempts": 1, "retryOn": "5xx", "perTryTimeout": "0.1s"})
    state = RetryState(p, start=0.0, timeout=None, rng=random.Random(0))
    until = state.begin("h1", 0.0)
    assert until is not None and until == pytest.approx(0.1)
    outcome = state.expired(until)
    assert outcome == Outcome.of(PER_TRY_TIMEOUT)
    decision = state.on_outcome(outcome, until)
    assert isinstance(decision, Retry)
    until = state.begin("h2", until + decision.delay)
    assert until is not None
    outcome = state.expired(until)
    assert isinstance(outcome, Outcome)
    final = state.on_outcome(outcome, until)
    assert isinstance(final, Finish) and final.status == 504 and flags.format_flags(final.flags) == "UT,URX"


def test_per_try_deadline_never_exceeds_route_deadline():
    p = RetryPolicy.from_spec({"attempts": 1, "perTryTimeout": "5s"})
    state = RetryState(p, start=0.0, timeout=1.0, rng=random.Random(0))
    assert state.begin("h", 0.2) == 1.0
    assert RetryState(NO_RETRIES, start=0.0, timeout=None, rng=random.Random(0)).begin("h", 3.0) is None


def test_max_retries_circuit_breaker_refuses_retries_with_uo():
    pool = ConnectionPool(PoolLimits.from_spec({"http": {"maxRetries": 1}}))
    p = RetryPolicy.from_spec({"attempts": 3, "retryOn": "5xx"})
    first = RetryState(p, start=0.0, timeout=None, rng=random.Random(0), retry_slot=pool)
    second = RetryState(p, start=0.0, timeout=None, rng=random.Random(1), retry_slot=pool)
    first.begin("h", 0.0)
    second.begin("h", 0.0)
    assert isinstance(first.on_outcome(R(503), 0.01), Retry)          # takes the only retry slot
    refused = second.on_outcome(R(503), 0.01)
    assert isinstance(refused, Finish) and refused.status == 503 and refused.flags == ("UO",)
    assert pool.upstream_rq_retry_overflow == 1
    first.begin("h", 0.05)
    released = first.on_outcome(R(200), 0.06)
    assert isinstance(released, Finish) and released.status == 200      # slot released
    assert pool.active_retries == 0


def test_previous_hosts_off_allows_the_same_host():
    p = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx", "retryIgnorePreviousHosts": False})
    state = RetryState(p, start=0.0, timeout=None, rng=random.Random(0))
    state.begin("h1", 0.0)
    state.on_outcome(R(503), 0.01)
    assert state.avoid_hosts == frozenset()


def test_retry_sequence_is_reproducible_with_a_seed():
    def delays(seed):
        state = RetryState(RetryPolicy.from_spec({"attempts": 4, "retryOn": "5xx"}), start=0.0, timeout=None,
                           rng=random.Random(seed))
        out = []
        for _ in range(4):
            state.begin("h", 0.0)
            decision = state.on_outcome(R(503), 0.0)
            assert isinstance(decision, Retry)
            out.append(decision.delay)
        return out
    assert delays(3) == delays(3) and delays(3) != delays(4)


# --- connection pool -----------------------------------------------------------------------------

def test_pool_defaults_are_unlimited_and_zero_means_unset():
    assert PoolLimits.from_spec(None) == PoolLimits()
    limits = PoolLimits.from_spec({"tcp": {"maxConnections": 0}, "http": {"http1MaxPendingRequests": 0}})
    assert limits.max_connections == UNLIMITED and limits.max_pending == UNLIMITED
    assert PoolLimits().max_retries == UNLIMITED   # not Envoy's 3


@pytest.mark.parametrize("spec, message", [
    ({"tcp": {"maxConnections": -1}}, r"^connectionPool\.tcp\.maxConnections: must be >= 0, got -1$"),
    ({"http": {"http1MaxPendingRequests": "1"}}, r"^connectionPool\.http\.http1MaxPendingRequests: must be an integer"),
    ({"tcp": {"connectTimeout": "10"}}, r"^connectionPool\.tcp\.connectTimeout: invalid duration"),
    ({"http": {"maxRequests": 1}}, r"^connectionPool\.http\.maxRequests: unknown field"),
])
def test_bad_pool_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        PoolLimits.from_spec(spec)


def lease(pool: ConnectionPool) -> Lease:
    """A request the pool takes (a refusal fails the test)."""
    got = pool.acquire()
    assert got is not None
    return got


def opened(lease: Lease) -> int:
    """The connection `lease` is waiting on."""
    assert lease.opens is not None
    return lease.opens


def istio_task_pool() -> ConnectionPool:
    # Istio's circuit-breaking task: maxConnections 1, http1MaxPendingRequests 1, maxRequestsPerConnection 1.
    return ConnectionPool(PoolLimits.from_spec({"tcp": {"maxConnections": 1},
                                                "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}))


def test_one_in_flight_one_pending_third_overflows():
    pool = ConnectionPool(PoolLimits.from_spec({"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}))
    a = lease(pool)
    assert a is not None and a.connection is None and a.opens is not None   # must open a connection
    started = pool.connected(opened(a))
    assert started is a and a.connection is not None
    b = lease(pool)
    assert b is not None and b.connection is None and b.opens is None       # queued: connection limit
    assert pool.upstream_cx_overflow == 1 and pool.pending == 1
    assert pool.acquire() is None                                            # pending queue full
    assert pool.upstream_rq_pending_overflow == 1
    conn = a.connection
    assert pool.release(a) is b and b.connection == conn                     # handed over
    assert pool.pending == 0 and pool.active_requests == 1 and pool.connections == 1
    assert pool.release(b) is None
    c = lease(pool)
    assert c.connection is not None                                          # reuses the idle connection


def test_max_requests_per_connection_one_closes_and_reopens():
    pool = istio_task_pool()
    a = lease(pool)
    pool.connected(opened(a))
    b = lease(pool)
    assert b.opens is None
    nxt = pool.release(a)
    assert nxt is b and b.connection is None and b.opens is not None        # open a fresh connection
    assert pool.connections == 1
    assert pool.connected(opened(b)) is b and b.connection is not None
    assert pool.release(b) is None and pool.connections == 0                # no keep-alive


def test_pending_requests_count_towards_their_own_limit_while_connecting():
    pool = ConnectionPool(PoolLimits.from_spec({"http": {"http1MaxPendingRequests": 2}}))
    a, b = lease(pool), lease(pool)
    assert a.opens != b.opens and pool.connections == 2                     # one connection each
    assert pool.acquire() is None                                           # both pending slots taken
    pool.connected(opened(a))
    assert pool.acquire() is not None


def test_http2_max_requests_limits_active_requests():
    pool = ConnectionPool(PoolLimits.from_spec({"http": {"http2MaxRequests": 2}}))
    leases = [lease(pool) for _ in range(2)]
    for each in leases:
        pool.connected(opened(each))
    assert pool.active_requests == 2
    assert pool.acquire() is None
    pool.release(leases[0])
    assert pool.acquire() is not None


def test_connect_failure_fails_the_oldest_pending_request():
    pool = ConnectionPool(PoolLimits.from_spec({"tcp": {"maxConnections": 1}}))
    a = lease(pool)
    assert pool.acquire() is not None          # a second waiter, queued behind the limit
    assert pool.connect_failed(opened(a)) is a
    assert pool.connections == 0 and pool.pending == 1


def test_cancelled_pending_request_frees_its_slot():
    pool = ConnectionPool(PoolLimits.from_spec({"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}))
    a = lease(pool)
    pool.connected(opened(a))
    b = lease(pool)
    pool.cancel(b)
    assert pool.pending == 0 and pool.acquire() is not None
    with pytest.raises(ValueError, match="never got a connection"):
        pool.release(lease(ConnectionPool()))


def test_circuit_breaker_under_concurrency_matches_istio_task_shape():
    # Steady state of the task's pool: 1 request in flight, 1 pending, the other 18 of 20 overflow.
    pool = istio_task_pool()
    first = lease(pool)
    pool.connected(opened(first))
    results = [pool.acquire() for _ in range(19)]
    assert sum(r is None for r in results) == 18
    # Before the first connection is up, its request already holds the only pending slot:
    # the "leeway" of the task, where even a second concurrent request can get a 503.
    cold = istio_task_pool()
    assert sum(cold.acquire() is None for _ in range(20)) == 19


# --- outlier detection -----------------------------------------------------------------------------

def test_outlier_defaults():
    p = OutlierPolicy.from_spec({})
    assert (p.consecutive_5xx, p.consecutive_gateway, p.interval, p.base_ejection_time,
            p.max_ejection_percent, p.min_health_percent) == (5, 0, 10.0, 30.0, 10, 0)
    assert p.max_ejection_time == 300.0


@pytest.mark.parametrize("spec, message", [
    ({"baseEjectionTime": "30"}, r"^outlierDetection\.baseEjectionTime: invalid duration '30'"),
    ({"maxEjectionPercent": 150}, r"^outlierDetection\.maxEjectionPercent: must be <= 100"),
    ({"consecutive5xxErrors": -1}, r"^outlierDetection\.consecutive5xxErrors: must be >= 0"),
    ({"interval": "0s"}, r"^outlierDetection\.interval: must be at least 1ms"),
])
def test_bad_outlier_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        OutlierPolicy.from_spec(spec)


def test_ejection_is_inline_at_the_nth_consecutive_error_and_success_resets():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 3}), ["a", "b"])
    assert [od.record("a", 500, 0.1), od.record("a", 503, 0.2)] == [False, False]
    od.record("a", 200, 0.3)                     # resets the run
    assert [od.record("a", 500, 0.4 + i / 10) for i in range(3)] == [False, False, True]
    assert od.is_ejected("a", 0.7) and not od.is_ejected("b", 0.7)


def test_local_origin_failures_count_as_errors():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 2}), ["a", "b"])
    od.record("a", None, 0.0)
    assert od.record("a", None, 0.1)


def test_gateway_errors_only_when_configured():
    p = OutlierPolicy.from_spec({"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2})
    od = OutlierDetector(p, ["a", "b", "c"])
    assert not od.record("a", 500, 0.0) and not od.record("a", 500, 0.1)   # 500 is not a gateway error
    assert not od.record("a", 502, 0.2) and od.record("a", 504, 0.3)
    off = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 0}), ["a"])
    assert not any(off.record("a", 503, t) for t in range(20))


def test_deprecated_consecutive_errors_is_ignored():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutiveErrors": 1}), ["a", "b"])
    assert not any(od.record("a", 503, i / 10) for i in range(4))
    assert od.record("a", 503, 0.5)    # the default 5 applies


def test_ejection_time_grows_with_count_and_ends_on_an_interval_sweep():
    p = OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "interval": "10s", "baseEjectionTime": "30s",
                                 "maxEjectionPercent": 100})
    od = OutlierDetector(p, ["a", "b"], start=0.0)
    assert od.record("a", 503, 5.0)
    assert od.is_ejected("a", 34.9)          # 30 s served at 35 s, but the next sweep is at 40 s
    assert od.is_ejected("a", 39.9)
    assert not od.is_ejected("a", 40.0)
    assert od.record("a", 503, 41.0)        # second ejection: 2 x 30 s
    assert od.is_ejected("a", 100.0)
    assert not od.is_ejected("a", 110.0)
    assert od.ejection_count("a") == 2


def test_ejection_multiplier_decays_while_healthy_and_is_capped():
    p = OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "200s",
                                 "maxEjectionPercent": 100})
    od = OutlierDetector(p, ["a"], start=0.0)
    od.record("a", 503, 0.5)
    od.advance(201.0)
    assert not od.is_ejected("a", 201.0)
    od.record("a", 503, 201.5)              # 2 x 200 s = 400 s, capped at max(300 s, base) = 300 s
    assert od.is_ejected("a", 501.0) and not od.is_ejected("a", 502.0)
    od.advance(1000.0)                       # many healthy sweeps: multiplier decays to 0
    assert od.ejection_count("a") == 0


def test_max_ejection_percent_allows_at_least_one_host():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1}), ["a", "b", "c"])  # 10 % of 3
    assert od.record("a", 503, 0.0)          # 33 % > 10 %, but nothing was ejected yet
    assert not od.record("b", 503, 0.1)
    assert od.healthy(["a", "b", "c"], 0.2) == ["b", "c"]
    od50 = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "maxEjectionPercent": 50}),
                           ["a", "b", "c", "d"])
    assert [od50.record(h, 503, 0.0) for h in "abcd"] == [True, True, False, False]
    overshoot = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "maxEjectionPercent": 50}),
                                ["a", "b", "c"])
    assert [overshoot.record(h, 503, 0.0) for h in "abc"] == [True, True, False]   # 67 % > 50 %


def test_max_ejection_percent_zero_means_envoy_default():
    assert OutlierPolicy.from_spec({"maxEjectionPercent": 0}).max_ejection_percent == 10


def test_a_refused_ejection_needs_a_whole_new_run_of_errors():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 2}), ["a", "b", "c"])
    assert od.record("a", 503, 0.0) is False and od.record("a", 503, 0.1) is True
    assert od.record("b", 503, 0.2) is False and od.record("b", 503, 0.3) is False   # limit: refused
    assert od.record("b", 503, 0.4) is False          # run restarted at 1 after the refusal


def test_all_hosts_ejected_means_no_healthy_upstream_not_panic():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "maxEjectionPercent": 100,
                                                  "baseEjectionTime": "3m"}), ["only"])
    assert od.record("only", 503, 1.0)
    assert od.healthy(["only"], 2.0) == []
    assert RoundRobin(random.Random(0)).choose([]) is None   # -> flags.NO_HEALTHY
    assert (flags.NO_HEALTHY.status, flags.NO_HEALTHY.body, flags.NO_HEALTHY.flags) == (503, "no healthy upstream", ("UH",))
    assert od.healthy(["only"], 179.0) == [] and od.healthy(["only"], 190.0) == ["only"]


def test_min_health_percent_enables_panic_routing():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "maxEjectionPercent": 100,
                                                  "minHealthPercent": 60}), ["a", "b"])
    od.record("a", 503, 0.0)
    assert od.healthy(["a", "b"], 0.1) == ["a", "b"]      # 50 % healthy < 60 %: panic uses all


def test_set_hosts_keeps_state_of_remaining_hosts():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "maxEjectionPercent": 100}), ["a", "b"])
    od.record("a", 503, 0.0)
    od.set_hosts(["a", "c"])
    assert od.healthy(["a", "c"], 0.1) == ["c"]
    assert not od.record("gone", 503, 0.2)


# --- load balancers ---------------------------------------------------------------------------------

HOSTS = ["h0", "h1", "h2", "h3"]


def test_default_balancer_is_least_request():
    assert isinstance(balancer_from_spec(None, random.Random(0)), LeastRequest)
    assert isinstance(balancer_from_spec({"simple": "UNSPECIFIED"}, random.Random(0)), LeastRequest)
    assert isinstance(balancer_from_spec({"simple": "LEAST_CONN"}, random.Random(0)), LeastRequest)
    assert isinstance(balancer_from_spec({"simple": "ROUND_ROBIN"}, random.Random(0)), RoundRobin)
    assert isinstance(balancer_from_spec({"simple": "RANDOM"}, random.Random(0)), RandomBalancer)


@pytest.mark.parametrize("spec, message", [
    ({"simple": "FASTEST"}, r"^loadBalancer\.simple: unknown load balancer 'FASTEST'"),
    ({"simple": "PASSTHROUGH"}, r"^loadBalancer\.simple: PASSTHROUGH"),
    ({"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}, r"^loadBalancer: set either"),
    ({"consistentHash": {}}, r"^loadBalancer\.consistentHash: set exactly one of"),
    ({"consistentHash": {"httpHeaderName": "x", "useSourceIp": True}}, r"^loadBalancer\.consistentHash: set exactly one"),
    ({"consistentHash": {"httpCookie": {"ttl": "0s"}}}, r"^loadBalancer\.consistentHash\.httpCookie\.name: is required"),
])
def test_bad_balancer_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        balancer_from_spec(spec, random.Random(0))


def test_round_robin_cycles_from_a_random_start():
    lb = RoundRobin(random.Random(5))
    picks = [lb.choose(HOSTS) for _ in range(8)]
    assert picks[4:] == picks[:4] and sorted(p for p in picks[:4] if p is not None) == HOSTS


def test_random_is_uniform():
    lb = RandomBalancer(random.Random(9))
    counts = Counter(lb.choose(HOSTS) for _ in range(4000))
    assert all(abs(counts[h] / 4000 - 0.25) < 0.04 for h in HOSTS)


def test_least_request_prefers_fewer_active_requests_with_two_choices():
    lb = LeastRequest(random.Random(3))
    for _ in range(10):
        lb.started("h0")
    counts = Counter(lb.choose(HOSTS) for _ in range(4000))
    # h0 wins only when both draws land on it: probability 1/16, not 1/4.
    assert abs(counts["h0"] / 4000 - 1 / 16) < 0.02
    for _ in range(10):
        lb.finished("h0")
    counts = Counter(lb.choose(HOSTS) for _ in range(4000))
    assert abs(counts["h0"] / 4000 - 0.25) < 0.04
    with pytest.raises(ValueError, match="without a matching started"):
        lb.finished("h9")


def test_least_request_spreads_concurrent_load():
    lb = LeastRequest(random.Random(1))
    for _ in range(40):
        host = lb.choose(HOSTS)
        assert host is not None
        lb.started(host)
    assert max(lb.active.values()) - min(lb.active.values()) <= 4


def test_consistent_hash_same_key_same_host_and_keys_spread():
    lb = balancer_from_spec({"consistentHash": {"httpHeaderName": "X-User"}}, random.Random(0))
    assert isinstance(lb, ConsistentHash) and lb.key == HashKey(header="x-user")
    for user in ("alice", "bob", "carol"):
        assert len({lb.choose(HOSTS, key=user) for _ in range(10)}) == 1
    spread = Counter(lb.choose(HOSTS, key=f"user-{i}") for i in range(2000))
    assert set(spread) == set(HOSTS) and min(spread.values()) > 250


def test_consistent_hash_mostly_keeps_keys_when_another_host_leaves():
    lb = ConsistentHash(random.Random(0), HashKey(header="x"))
    before = {k: lb.choose(HOSTS, key=k) for k in map(str, range(1000))}
    after = {k: lb.choose(HOSTS[:-1], key=k) for k in before}
    assert all(after[k] != "h3" for k in before)
    kept = [before[k] == after[k] for k in before if before[k] != "h3"]
    # The ring is rebuilt with more points per remaining host (as Envoy's is), so a few keys
    # move between remaining hosts; far fewer than a modulo hash would move (about 3/4).
    assert sum(kept) / len(kept) > 0.85


def test_consistent_hash_without_key_falls_back_to_random():
    lb = ConsistentHash(random.Random(0), HashKey(header="x"))
    assert len({lb.choose(HOSTS, key=None) for _ in range(50)}) > 1


@pytest.mark.parametrize("spec, headers, query, ip, expected", [
    ({"httpHeaderName": "x-user"}, {"x-user": "u1"}, {}, None, "u1"),
    ({"httpQueryParameterName": "id"}, {}, {"id": "7"}, None, "7"),
    ({"useSourceIp": True}, {}, {}, "10.0.0.1", "10.0.0.1"),
    ({"httpCookie": {"name": "user", "ttl": "0s"}}, {"cookie": "a=1; user=zed"}, {}, None, "zed"),
    ({"httpCookie": {"name": "user", "ttl": "0s"}}, {"cookie": "a=1"}, {}, None, None),
])
def test_hash_key_sources(spec, headers, query, ip, expected):
    lb = balancer_from_spec({"consistentHash": spec}, random.Random(0))
    assert isinstance(lb, ConsistentHash) and lb.key.of(headers, query, ip) == expected


def test_avoid_steers_retries_to_other_hosts():
    lb = RandomBalancer(random.Random(2))
    picks = [lb.choose(["a", "b"], avoid=frozenset({"a"})) for _ in range(200)]
    assert picks.count("a") <= 200 / 32 * 3        # only when 5 draws in a row hit "a"
    assert lb.choose(["a"], avoid=frozenset({"a"})) == "a"   # no other host: use it anyway


def test_balancers_skip_ejected_hosts_via_healthy_list():
    od = OutlierDetector(OutlierPolicy.from_spec({"consecutive5xxErrors": 1, "maxEjectionPercent": 50}), HOSTS)
    od.record("h1", 503, 0.0)
    lb = LeastRequest(random.Random(0))
    assert "h1" not in {lb.choose(od.healthy(HOSTS, 1.0)) for _ in range(200)}


# --- DestinationRule: subsets and policy merging ----------------------------------------------------

ENDPOINTS = [("10.0.0.1", {"app": "reviews", "version": "v1"}),
             ("10.0.0.2", {"app": "reviews", "version": "v2"}),
             ("10.0.0.3", {"app": "reviews", "version": "v2", "track": "canary"})]


def reviews_rule(**extra) -> DestinationRule:
    spec = {"host": "reviews",
            "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                        {"name": "v2", "labels": {"version": "v2"}},
                        {"name": "canary", "labels": {"version": "v2", "track": "canary"}},
                        {"name": "v3", "labels": {"version": "v3"}}]}
    spec.update(extra)
    return DestinationRule.from_spec(spec, "default")


def test_subset_endpoints_carry_all_subset_labels():
    dr = reviews_rule()
    assert dr.host == "reviews.default.svc.cluster.local"
    assert dr.hosts("v2", ENDPOINTS) == ["10.0.0.2", "10.0.0.3"]
    assert dr.hosts("canary", ENDPOINTS) == ["10.0.0.3"]
    assert dr.hosts(None, ENDPOINTS) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert dr.hosts("v3", ENDPOINTS) == []          # defined but empty: 503 UH
    assert not dr.has_subset("v9") and dr.has_subset("v1") and dr.has_subset(None)   # undefined: 503 NC
    assert (flags.NO_CLUSTER.status, flags.NO_CLUSTER.flags) == (503, ("NC",))


def test_defaults_without_traffic_policy():
    policy = reviews_rule().policy("v1", 9080)
    assert policy.outlier is None and policy.connection_pool == PoolLimits() and policy.tls_mode is None
    assert isinstance(policy.balancer(random.Random(0)), LeastRequest)


def test_subset_policy_replaces_whole_blocks_not_fields():
    dr = reviews_rule(
        trafficPolicy={"connectionPool": {"tcp": {"maxConnections": 100}, "http": {"http1MaxPendingRequests": 10}},
                       "loadBalancer": {"simple": "ROUND_ROBIN"},
                       "outlierDetection": {"consecutive5xxErrors": 7}},
        subsets=[{"name": "v2", "labels": {"version": "v2"},
                  "trafficPolicy": {"connectionPool": {"http": {"http2MaxRequests": 5}}}}])
    merged = dr.policy("v2")
    assert merged.connection_pool.max_requests == 5
    assert merged.connection_pool.max_connections == UNLIMITED      # not inherited from the DR level
    assert merged.connection_pool.max_pending == UNLIMITED
    assert isinstance(merged.balancer(random.Random(0)), RoundRobin)  # other blocks inherited
    assert merged.outlier is not None and merged.outlier.consecutive_5xx == 7
    assert dr.policy(None).connection_pool.max_connections == 100


def test_port_level_settings_fall_back_to_defaults_not_dr_values():
    dr = reviews_rule(trafficPolicy={
        "loadBalancer": {"simple": "RANDOM"},
        "connectionPool": {"tcp": {"maxConnections": 1}},
        "portLevelSettings": [{"port": {"number": 9080}, "outlierDetection": {"consecutive5xxErrors": 2}}],
    })
    on_port = dr.policy(None, 9080)
    assert on_port.outlier is not None and on_port.outlier.consecutive_5xx == 2
    assert on_port.connection_pool.max_connections == UNLIMITED
    assert isinstance(on_port.balancer(random.Random(0)), LeastRequest)
    other = dr.policy(None, 8080)
    assert other.outlier is None and other.connection_pool.max_connections == 1
    assert isinstance(other.balancer(random.Random(0)), RandomBalancer)


def test_consistent_hash_policy_is_reported():
    dr = reviews_rule(trafficPolicy={"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}})
    assert dr.policy("v1").consistent_hash and not reviews_rule().policy("v1").consistent_hash


@pytest.mark.parametrize("spec, message", [
    ({"subsets": [{"name": "v1"}, {"name": "v1"}]}, r"^subsets\[1\]\.name: subset 'v1' is defined twice"),
    ({"subsets": [{"labels": {"a": "b"}}]}, r"^subsets\[0\]\.name: is required"),
    ({"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": -1}}}},
     r"^trafficPolicy\.connectionPool\.tcp\.maxConnections: must be >= 0"),
    ({"trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}, r"^trafficPolicy\.loadBalancer\.simple: unknown"),
    ({"trafficPolicy": {"outlierDetection": {"interval": "5"}}}, r"^trafficPolicy\.outlierDetection\.interval: invalid"),
    ({"trafficPolicy": {"portLevelSettings": [{"connectionPool": {}}]}},
     r"^trafficPolicy\.portLevelSettings\[0\]\.port\.number: is required"),
    ({"trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}}]}},
     r"^trafficPolicy\.portLevelSettings\[0\]: a port-level setting needs at least one of"),
    ({"subsets": [{"name": "V1"}]}, r"^subsets\[0\]\.name: invalid subset name 'V1'"),
    ({"trafficPolicy": {"tls": {"mode": "MTLS"}}}, r"^trafficPolicy\.tls\.mode: must be one of"),
    ({"trafficPolicy": {"retryBudget": {"minRetryConcurrency": 3}}}, r"^trafficPolicy\.retryBudget: .*not supported"),
    ({"subsets": [{"name": "v1", "trafficPolicy": {"connectionPol": {}}}]},
     r"^subsets\[0\]\.trafficPolicy\.connectionPol: unknown field"),
])
def test_bad_destination_rules(spec, message):
    with pytest.raises(SpecError, match=message):
        DestinationRule.from_spec({"host": "reviews", **spec})


def test_destination_rule_needs_a_host():
    with pytest.raises(SpecError, match="^host: is required"):
        DestinationRule.from_spec({})


def test_policies_compose_retries_and_ejection_hide_a_failing_host():
    # One of three hosts always answers 503. With retries on 5xx to other hosts and outlier
    # detection, every call succeeds and the bad host stops getting traffic after 3 errors.
    dr = DestinationRule.from_spec({"host": "backend", "trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "30s",
                             "maxEjectionPercent": 50}}})
    policy = dr.policy()
    hosts = ["good-1", "bad", "good-2"]
    rng = random.Random(0)
    assert policy.outlier is not None
    lb, detector = policy.balancer(rng), OutlierDetector(policy.outlier, hosts)
    retry = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx"})
    served: Counter[str] = Counter()
    now = 0.0
    for _ in range(300):
        state = RetryState(retry, start=now, timeout=None, rng=rng)
        while True:
            host = lb.choose(detector.healthy(hosts, now), avoid=state.avoid_hosts)
            assert host is not None
            state.begin(host, now)
            served[host] += 1
            status = 503 if host == "bad" else 200
            now += 0.01
            detector.record(host, status, now)
            decision = state.on_outcome(Outcome.response(status), now)
            if isinstance(decision, Finish):
                break
            now += decision.delay
        assert decision.status == 200
    assert served["bad"] == 3 and detector.is_ejected("bad", now)


def test_errors_while_ejected_follow_envoys_exact_threshold_rule():
    # Envoy fires when the run *equals* the threshold. Errors from requests still in flight
    # while the host is ejected pass the threshold without firing, so after the host returns
    # it takes a success (which resets the run) before it can be ejected again.
    policy = OutlierPolicy.from_spec({"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "1s",
                                      "maxEjectionPercent": 100})
    od = OutlierDetector(policy, ["a"], start=0.0)
    assert od.record("a", 503, 0.1) is False and od.record("a", 503, 0.2) is True
    assert od.record("a", 503, 0.3) is False and od.record("a", 503, 0.4) is False  # in flight, ejected
    assert od.is_ejected("a", 1.5) and not od.is_ejected("a", 2.0)   # back on the 2 s sweep
    assert od.record("a", 503, 2.1) is False and od.record("a", 503, 2.2) is False  # run is past 2
    od.record("a", 200, 2.3)
    assert od.record("a", 503, 2.4) is False and od.record("a", 503, 2.5) is True
