"""labkit.mesh.router: the one host-pick / judge / back-off / retry loop, driven by hand with
the real policy objects (balancers, outlier detector, pool) and made-up times."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from labkit.mesh import flags
from labkit.mesh.balancer import Balancer, LeastRequest, RoundRobin
from labkit.mesh.outlier import OutlierDetector, OutlierPolicy
from labkit.mesh.pool import ConnectionPool, PoolLimits
from labkit.mesh.retries import (
    CONNECT_FAILURE,
    CONNECTION_TERMINATION,
    OVERFLOW,
    PER_TRY_TIMEOUT,
    REFUSED_STREAM,
    REMOTE_RESET,
    Finish,
    Outcome,
    Retry,
    RetryPolicy,
    RetryState,
)
from labkit.mesh.router import Router, Try, choose_host

HOSTS = ["h0", "h1", "h2"]
RETRY_5XX = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx"})
EJECT_AT_ONCE = OutlierPolicy(consecutive_5xx=1, interval=1.0, base_ejection_time=30.0,
                              max_ejection_percent=100)


@dataclass
class Cluster:
    """What a router needs of a cluster: hosts, a balancer and maybe an outlier detector."""

    hosts: list[str]
    balancer: Balancer = field(default_factory=lambda: LeastRequest(random.Random(1)))
    outlier: OutlierDetector | None = None


def router(policy: RetryPolicy, cluster: Cluster, *, timeout: float | None = None,
           pool: ConnectionPool | None = None, start: float = 0.0, seed: int = 0) -> Router:
    state = RetryState(policy, start=start, timeout=timeout, rng=random.Random(seed), retry_slot=pool)
    return Router(state, cluster)


def drive(r: Router, outcomes: list[Outcome], *, step: float = 0.01) -> tuple[Finish, list[Try]]:
    """Answer each try with the next outcome, `step` seconds after it began; back-offs are
    waited in full. Returns the final decision and the tries asked for."""
    now = 0.0
    tries: list[Try] = []
    for outcome in outcomes:
        move = r.next_try(now)
        if isinstance(move, Finish):
            return move, tries
        tries.append(move)
        now += step
        decision = r.on_result(outcome, now)
        if isinstance(decision, Finish):
            return decision, tries
        now += decision.delay
    raise AssertionError("the router still wants tries after the outcomes ran out")


R = Outcome.response


# -- retries and what the caller finally gets ---------------------------------------------------


def test_a_5xx_is_retried_on_other_hosts_with_the_attempt_count() -> None:
    final, tries = drive(router(RETRY_5XX, Cluster(HOSTS)), [R(503), R(500), R(200)])
    assert [t.attempt for t in tries] == [1, 2, 3]          # x-envoy-attempt-count
    assert len({t.host for t in tries}) == 3                # previous hosts are avoided
    assert (final.status, final.flags, final.attempts, final.reply) == (200, (), 3, None)


def test_retries_exhausted_keep_the_last_answer_and_add_urx() -> None:
    final, tries = drive(router(RETRY_5XX, Cluster(HOSTS)), [R(503), R(503), R(502)])
    assert (final.status, final.flags, final.attempts, len(tries)) == (502, ("URX",), 3, 3)


def test_a_response_retry_on_does_not_cover_is_passed_on_at_once() -> None:
    final, tries = drive(router(RETRY_5XX, Cluster(HOSTS)), [R(404)])
    assert (final.status, final.flags, len(tries)) == (404, (), 1)
    # Istio's default policy does not retry an app's 503 (since 1.24)
    final, tries = drive(router(RetryPolicy.from_spec(None), Cluster(HOSTS)), [R(503)])
    assert (final.status, final.flags, len(tries)) == (503, (), 1)


@pytest.mark.parametrize("kind, flag", [(CONNECT_FAILURE, "UF"), (CONNECTION_TERMINATION, "UC"),
                                        (REMOTE_RESET, "UR"), (REFUSED_STREAM, "UR")])
def test_resets_are_retried_under_5xx_and_end_as_envoys_local_reply(kind: str, flag: str) -> None:
    final, tries = drive(router(RETRY_5XX, Cluster(HOSTS)), [Outcome.of(kind)] * 3)
    assert len(tries) == 3 and final.status == 503 and final.flags == (flag, "URX")
    assert final.reply is not None and final.reply.body.startswith(flags.RESET_BEFORE_HEADERS)


def test_connect_failure_alone_and_retriable_status_codes() -> None:
    policy = RetryPolicy.from_spec({"attempts": 1, "retryOn": "connect-failure,409"})
    final, tries = drive(router(policy, Cluster(HOSTS)), [Outcome.of(CONNECT_FAILURE), R(200)])
    assert (final.status, len(tries)) == (200, 2)
    final, tries = drive(router(policy, Cluster(HOSTS)), [R(409), R(409)])
    assert (final.status, final.flags, len(tries)) == (409, ("URX",), 2)
    final, tries = drive(router(policy, Cluster(HOSTS)), [Outcome.of(REMOTE_RESET)])
    assert (final.status, final.flags, len(tries)) == (503, ("UR",), 1)  # not covered: no retry


def test_retries_disabled_means_one_try() -> None:
    final, tries = drive(router(RetryPolicy.from_spec({"attempts": 0}), Cluster(HOSTS)), [R(503)])
    assert (final.status, final.flags, len(tries)) == (503, (), 1)


def test_back_offs_are_envoys_jittered_exponential_from_the_states_rng() -> None:
    r = router(RetryPolicy.from_spec({"attempts": 3, "retryOn": "5xx"}), Cluster(HOSTS), seed=7)
    expected = random.Random(7)
    now = 0.0
    for retry_number in (1, 2, 3):
        assert isinstance(r.next_try(now), Try)
        decision = r.on_result(R(503), now)
        assert isinstance(decision, Retry) and decision.attempt == retry_number + 1
        assert decision.delay == RETRY_5XX.backoff(retry_number, expected)
        now += decision.delay


# -- per-try timeout and the route timeout ------------------------------------------------------


def test_per_try_timeout_bounds_each_try_and_is_retried() -> None:
    policy = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx", "perTryTimeout": "100ms"})
    r = router(policy, Cluster(HOSTS))
    first = r.next_try(5.0)
    assert isinstance(first, Try) and first.until == pytest.approx(5.1)
    assert isinstance(r.on_result(Outcome.of(PER_TRY_TIMEOUT), 5.1), Retry)
    final, tries = drive(router(policy, Cluster(HOSTS)), [Outcome.of(PER_TRY_TIMEOUT)] * 3)
    assert (final.status, final.flags, len(tries)) == (504, ("UT", "URX"), 3)


def test_per_try_timeout_not_covered_by_retry_on_ends_with_504_ut() -> None:
    policy = RetryPolicy.from_spec({"attempts": 2, "retryOn": "connect-failure",
                                    "perTryTimeout": "100ms"})
    final, tries = drive(router(policy, Cluster(HOSTS)), [Outcome.of(PER_TRY_TIMEOUT)])
    assert (final.status, final.flags, len(tries)) == (504, ("UT",), 1)


def test_a_try_is_abandoned_at_the_earlier_of_route_deadline_and_per_try_timeout() -> None:
    policy = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx", "perTryTimeout": "100ms"})
    r = router(policy, Cluster(HOSTS), timeout=0.25)
    first = r.next_try(0.0)
    assert isinstance(first, Try) and first.until == pytest.approx(0.1)
    r.on_result(R(503), 0.2)
    second = r.next_try(0.2)
    assert isinstance(second, Try) and second.until == pytest.approx(0.25)
    # the timer at the route deadline is the route timeout: 504 UT, no retry, no URX
    final = r.on_result(Outcome.of(PER_TRY_TIMEOUT), 0.25)
    assert isinstance(final, Finish) and (final.status, final.flags, final.attempts) == (504, ("UT",), 2)


def test_an_answer_after_the_route_deadline_is_a_504() -> None:
    r = router(RETRY_5XX, Cluster(HOSTS), timeout=1.0)
    r.next_try(0.0)
    final = r.on_result(R(200), 1.5)
    assert isinstance(final, Finish) and (final.status, final.flags) == (504, ("UT",))


def test_a_back_off_past_the_route_deadline_is_cut_there_and_ends_with_504_ut() -> None:
    policy = RetryPolicy.from_spec({"attempts": 5, "retryOn": "5xx", "backoff": "1s"})
    seed = next(s for s in range(100) if policy.backoff(1, random.Random(s)) > 0.5)
    r = router(policy, Cluster(HOSTS), timeout=0.5, seed=seed)
    r.next_try(0.0)
    cut = r.on_result(R(503), 0.1)
    assert isinstance(cut, Retry) and cut.delay == pytest.approx(0.4)  # waits until the deadline
    final = r.next_try(0.5)
    assert isinstance(final, Finish)
    assert (final.status, final.flags, final.attempts) == (504, ("UT",), 1)
    assert final.reply == flags.UPSTREAM_TIMEOUT


def test_a_back_off_that_ends_before_the_deadline_is_waited_in_full() -> None:
    policy = RetryPolicy.from_spec({"attempts": 1, "retryOn": "5xx"})  # back-off < 25 ms
    r = router(policy, Cluster(HOSTS), timeout=10.0, seed=3)
    r.next_try(0.0)
    decision = r.on_result(R(503), 0.1)
    assert isinstance(decision, Retry)
    assert decision.delay == policy.backoff(1, random.Random(3))
    assert isinstance(r.next_try(0.1 + decision.delay), Try)


# -- no healthy host ----------------------------------------------------------------------------


def test_no_host_at_all_is_503_uh_never_attempted() -> None:
    r = router(RETRY_5XX, Cluster([]))
    final = r.next_try(0.0)
    assert isinstance(final, Finish)
    assert (final.status, final.flags, final.reply) == (503, ("UH",), flags.NO_HEALTHY)
    assert final.attempts == 0  # Envoy answers UH before it counts an attempt
    assert r.host is None


def test_no_healthy_host_on_a_retry_counts_the_retry_and_is_not_retried() -> None:
    cluster = Cluster(["a", "b"], outlier=OutlierDetector(EJECT_AT_ONCE, ["a", "b"]))
    r = router(RETRY_5XX, cluster)
    for now in (0.0, 0.01):
        assert isinstance(r.next_try(now), Try)
        assert isinstance(r.on_result(R(503), now), Retry)  # each 503 ejects its host
    final = r.next_try(0.02)
    assert isinstance(final, Finish) and (final.status, final.flags) == (503, ("UH",))
    assert final.attempts == 3  # Envoy's doRetry counts the attempt before looking for a host


# -- the host pick ------------------------------------------------------------------------------


def test_one_healthy_host_is_taken_without_asking_the_balancer() -> None:
    balancer = RoundRobin(random.Random(4))
    before = balancer.rng.getstate()
    assert choose_host(Cluster(["only"], balancer), 0.0) == "only"
    assert balancer.rng.getstate() == before
    assert choose_host(Cluster(["a", "b"], balancer), 0.0) in ("a", "b")
    assert balancer.rng.getstate() != before


def test_next_try_picks_as_choose_host_does_and_adopt_is_next_try_without_the_pick() -> None:
    one, two = Cluster(HOSTS, LeastRequest(random.Random(9))), Cluster(HOSTS, LeastRequest(random.Random(9)))
    r = router(RETRY_5XX, one)
    first = r.next_try(0.0)
    host = choose_host(two, 0.0, attempts=RETRY_5XX.host_selection_attempts)
    assert isinstance(first, Try) and first.host == host
    adopted = router(RETRY_5XX, two)
    adopted.adopt(host, 0.0)
    assert adopted.state.attempts == 1 and adopted.state.avoid_hosts == {host} == r.state.avoid_hosts


def test_consistent_hash_keeps_the_previous_host_when_previous_hosts_is_off() -> None:
    policy = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx"}, consistent_hash=True)
    final, tries = drive(router(policy, Cluster(HOSTS, RoundRobin(random.Random(0)))),
                         [R(503)] * 3)
    assert not policy.previous_hosts and len(tries) == 3 and final.flags == ("URX",)


# -- outlier detection --------------------------------------------------------------------------


def test_every_try_that_reached_a_host_is_recorded_and_ejected_hosts_are_skipped() -> None:
    cluster = Cluster(HOSTS, outlier=OutlierDetector(EJECT_AT_ONCE, HOSTS))
    assert cluster.outlier is not None
    r = router(RETRY_5XX, cluster)
    first = r.next_try(0.0)
    assert isinstance(first, Try)
    r.on_result(Outcome.of(PER_TRY_TIMEOUT), 0.1)  # a timeout is a local-origin failure
    assert cluster.outlier.is_ejected(first.host, 0.1)
    picks = {choose_host(cluster, 0.2) for _ in range(50)}
    assert first.host not in picks and len(picks) == 2


def test_overflow_and_a_try_given_up_while_pending_are_not_recorded() -> None:
    cluster = Cluster(HOSTS, outlier=OutlierDetector(EJECT_AT_ONCE, HOSTS))
    assert cluster.outlier is not None
    r = router(RETRY_5XX, cluster)
    r.next_try(0.0)
    final = r.on_result(Outcome.of(OVERFLOW), 0.0)
    assert isinstance(final, Finish) and (final.status, final.flags, final.attempts) == (503, ("UO",), 1)
    r = router(RETRY_5XX, cluster)
    r.next_try(0.0)
    assert isinstance(r.on_result(Outcome.of(PER_TRY_TIMEOUT), 0.1, reached_host=False), Retry)
    assert cluster.outlier.ejections_total == 0


def test_ejection_then_all_hosts_ejected_gives_uh() -> None:
    cluster = Cluster(["a", "b"], outlier=OutlierDetector(EJECT_AT_ONCE, ["a", "b"]))
    no_retries = RetryPolicy.from_spec({"attempts": 0})
    codes = [drive(router(no_retries, cluster), [R(503)])[0].flags for _ in range(3)]
    assert codes == [(), (), ("UH",)]


# -- the retry budget (circuit breaker maxRetries) ----------------------------------------------


def test_retry_budget_refuses_a_concurrent_retry_with_uo_and_frees_the_slot() -> None:
    pool = ConnectionPool(PoolLimits(max_retries=1))
    one, two = (router(RETRY_5XX, Cluster(HOSTS), pool=pool) for _ in range(2))
    one.next_try(0.0)
    two.next_try(0.0)
    assert isinstance(one.on_result(R(503), 0.01), Retry)  # holds the only retry slot
    refused = two.on_result(R(503), 0.01)
    assert isinstance(refused, Finish) and (refused.status, refused.flags) == (503, ("UO",))
    one.next_try(0.05)
    assert isinstance(one.on_result(R(200), 0.06), Finish)
    assert pool.active_retries == 0 and pool.upstream_rq_retry_overflow == 1


def test_a_cut_back_off_still_frees_its_retry_slot() -> None:
    pool = ConnectionPool(PoolLimits(max_retries=1))
    policy = RetryPolicy.from_spec({"attempts": 2, "retryOn": "5xx", "backoff": "1s"})
    seed = next(s for s in range(100) if policy.backoff(1, random.Random(s)) > 0.5)
    r = router(policy, Cluster(HOSTS), timeout=0.5, pool=pool, seed=seed)
    r.next_try(0.0)
    assert isinstance(r.on_result(R(503), 0.1), Retry) and pool.active_retries == 1
    assert isinstance(r.next_try(0.5), Finish) and pool.active_retries == 0
