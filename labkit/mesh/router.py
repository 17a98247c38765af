"""The router of one request on one cluster: pick a host, judge each try, back off, retry.
Pure: no I/O and no clock reads; the caller says what happened and when.

Both sidecar paths (`labkit.mesh.proxy`) and the mesh simulator (`labkit.sim.mesh`) drive it,
so a live request and a simulated one make the same decisions in the same order:

    router = Router(RetryState(policy, start=now, timeout=route_timeout, rng=rng, retry_slot=pool),
                    cluster)
    while True:
        step = router.next_try(now)               # a Try on a host, or Finish (UH, or UT)
        if isinstance(step, Finish): answer step; stop
        admit to the pool (overflow: router.on_result(Outcome.of(OVERFLOW), now) -> Finish);
        balancer.started(step.host); send with x-envoy-attempt-count step.attempt;
        abandon it at step.until (then the outcome is Outcome.of(PER_TRY_TIMEOUT));
        balancer.finished(step.host)
        decision = router.on_result(outcome, now)  # Retry(delay) or Finish
        if isinstance(decision, Finish): answer decision; stop
        wait decision.delay

Envoy facts this encodes (envoyproxy/envoy source/common/router/router.cc, `Filter::decodeHeaders`
and `Filter::doRetry`; retry_state_impl.cc):
- With one healthy host there is nothing to choose: the balancer is not asked (and draws no
  random number).
- No healthy host ⇒ 503 `no healthy upstream` (UH), never retried. The attempt count is
  Envoy's `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`: `decodeHeaders` answers UH before it sets the
  count (0: "omitted when the request was never attempted upstream"), while `doRetry`
  increments it before it looks for a host, so a retry that finds none is counted.
- A back-off that would end at or after the route timeout is not waited out in full: the
  request ends with 504 UT when the timeout fires (the route timer covers back-offs).
- A per-try timeout at the route deadline is the route timeout (504 UT, not retried).
- Outlier detection hears of every try that reached a host (a per-try timeout counts as a
  local-origin failure); circuit-breaker overflow and "no healthy upstream" never reach one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from labkit.mesh.balancer import Balancer
from labkit.mesh.outlier import OutlierDetector
from labkit.mesh.retries import (
    NO_HEALTHY_UPSTREAM,
    OVERFLOW,
    PER_TRY_TIMEOUT,
    RESPONSE,
    Finish,
    Outcome,
    Retry,
    RetryState,
)

__all__ = ["Router", "Try", "Upstreams", "choose_host"]

_NEVER_SENT = frozenset({OVERFLOW, NO_HEALTHY_UPSTREAM})
_NO_HEALTHY = Outcome(NO_HEALTHY_UPSTREAM)


class Upstreams(Protocol):
    """One cluster's hosts and the policy state shared by its requests (the live sidecar's
    `_Cluster` and the simulator's model are both one)."""

    @property
    def hosts(self) -> Sequence[str]: ...

    @property
    def balancer(self) -> Balancer: ...

    @property
    def outlier(self) -> OutlierDetector | None: ...


def choose_host(upstreams: Upstreams, now: float, *, avoid: frozenset[str] = frozenset(),
                key: str | None = None, attempts: int = 5) -> str | None:
    """The host for a try: among the hosts outlier detection has not ejected, the only one or
    the balancer's pick (steered away from `avoid`); None when none is healthy."""
    outlier = upstreams.outlier
    healthy = upstreams.hosts if outlier is None else outlier.healthy(upstreams.hosts, now)
    if len(healthy) == 1:
        return healthy[0]
    return upstreams.balancer.choose(healthy, avoid=avoid, key=key, attempts=attempts)


class Try(NamedTuple):
    """Send try number `attempt` (x-envoy-attempt-count) to `host`; abandon it at clock time
    `until` (None: never) and report `Outcome.of(PER_TRY_TIMEOUT)`. (A tuple: made once per
    try on the sidecar's hot path, where a frozen dataclass costs twice as much.)"""

    host: str
    until: float | None
    attempt: int


class Router:
    """One request's decisions, from the first host pick to the final answer.

    `state` holds the retry policy, the route deadline and the retry budget; `key` is the
    request's consistent-hash key, if any. `host` is the host of the current try (None after
    "no healthy upstream").
    """

    __slots__ = ("_deadline_reached", "host", "key", "state", "upstreams")

    def __init__(self, state: RetryState, upstreams: Upstreams, key: str | None = None) -> None:
        self.state = state
        self.upstreams = upstreams
        self.key = key
        self.host: str | None = None
        self._deadline_reached = False

    def next_try(self, now: float) -> Try | Finish:
        """The next try, or the end: no healthy host (503 UH), or a back-off that ran into the
        route deadline (504 UT)."""
        state = self.state
        if self._deadline_reached:
            assert state.deadline is not None
            final = state.expired(state.deadline)
            assert isinstance(final, Finish)
            return final
        host = choose_host(self.upstreams, now, avoid=state.avoid_hosts, key=self.key,
                           attempts=state.policy.host_selection_attempts)
        self.host = host
        if host is None:
            if state.attempts:
                state.begin(None, now)  # Envoy's doRetry counts the attempt before the pick
            done = state.on_outcome(_NO_HEALTHY, now)
            assert isinstance(done, Finish)
            return done
        return Try(host, state.begin(host, now), state.attempts)

    def adopt(self, host: str, now: float) -> None:
        """The first try already went to `host` at `now` (the sidecar's fast path picked it
        with `choose_host`, as `next_try` would have)."""
        self.host = host
        self.state.begin(host, now)

    def on_result(self, outcome: Outcome, now: float, *, reached_host: bool = True) -> Retry | Finish:
        """Judge the current try's `outcome` at `now`: retry after `delay`, or finish.

        `reached_host` False: the try was abandoned before a connection to the host was
        ready (it timed out while pending in the pool), so outlier detection does not hear
        of it. A returned `Retry.delay` is cut at the route deadline; `next_try` then ends
        the request with 504 UT.
        """
        state = self.state
        expired = state.expired(now) if outcome.kind == PER_TRY_TIMEOUT else outcome
        outlier = self.upstreams.outlier
        if outlier is not None and reached_host and outcome.kind not in _NEVER_SENT:
            assert self.host is not None
            outlier.record(self.host, outcome.status if outcome.kind == RESPONSE else None, now)
        if isinstance(expired, Finish):
            return expired
        decision = state.on_outcome(expired, now)
        if isinstance(decision, Finish):
            return decision
        deadline = state.deadline
        if deadline is not None and now + decision.delay >= deadline:
            self._deadline_reached = True
            return Retry(max(deadline - now, 0.0), decision.attempt)
        return decision
