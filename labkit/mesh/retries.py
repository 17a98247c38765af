"""Retries and the route timeout: which attempt outcomes are retried, when, and what the caller
finally sees. Pure: the caller reports outcomes and the time; this module decides.

Sources:
- Istio `HTTPRetry`: https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRetry
  and istiod's translation (istio/istio `pilot/pkg/networking/core/route/retry/retry.go`).
- Envoy retry semantics: https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/router_filter
  (`x-envoy-retry-on`, back-off, `x-envoy-upstream-rq-timeout-ms`).

Facts this module encodes:
- No `retries` block ⇒ Istio's default policy: 2 retries on
  `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with an
  **empty** status list since Istio 1.24 (`EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`), so an app's
  503 is not retried; `legacy_503=True` gives the pre-1.24 default (`[503]`).
- `attempts` counts *re*tries (tries = 1 + attempts); `attempts: 0` disables retries.
  A `retries` block without `retryOn` keeps the default conditions. Bare integers in `retryOn`
  become `retriable-status-codes` and only match statuses received from upstream.
- Retries prefer a host not tried before (`previous_hosts`), except under consistent-hash LB
  unless `retryIgnorePreviousHosts: true` is explicit.
- Back-off: fully jittered exponential, documented by Envoy as uniform in
  `[0, (2^N - 1) * base)` for retry N, base 25 ms, interval capped at 10 × base.
- The route `timeout` (none by default) covers all tries and back-offs; when it fires the
  caller gets 504 `upstream request timeout` (UT) and nothing is retried. `perTryTimeout`
  bounds one try and is retriable under `5xx`, `gateway-error` and `reset`.
- Retries exhausted ⇒ the last upstream response as it is, flag URX. A retry refused by the
  cluster's retry circuit breaker (`maxRetries`) ⇒ the last response, flag UO. Circuit-breaker
  overflow and "no healthy upstream" are never retried. Injected faults never get here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

from labkit.mesh import flags, spec

__all__ = [
    "CONNECTION_TERMINATION",
    "CONNECT_FAILURE",
    "DEFAULT_RETRIES",
    "NO_HEALTHY_UPSTREAM",
    "NO_RETRIES",
    "OVERFLOW",
    "PER_TRY_TIMEOUT",
    "REFUSED_STREAM",
    "REMOTE_RESET",
    "RESPONSE",
    "RETRY_ON_CONDITIONS",
    "Finish",
    "Outcome",
    "Retry",
    "RetryPolicy",
    "RetrySlot",
    "RetryState",
    "request_timeout",
]

# Outcome kinds: what one try produced.
RESPONSE = "response"                    # upstream answered with a status
CONNECT_FAILURE = "connect_failure"      # TCP connect refused / timed out (UF)
CONNECTION_TERMINATION = "connection_termination"  # upstream closed before answering (UC)
REMOTE_RESET = "remote_reset"            # upstream reset the stream (UR)
REFUSED_STREAM = "refused_stream"        # HTTP/2 REFUSED_STREAM (UR)
PER_TRY_TIMEOUT = "per_try_timeout"      # perTryTimeout fired (UT)
OVERFLOW = "overflow"                    # connection-pool limit hit (UO), local
NO_HEALTHY_UPSTREAM = "no_healthy_upstream"  # no host to send to (UH), local

_RESETS = {CONNECT_FAILURE, CONNECTION_TERMINATION, REMOTE_RESET, REFUSED_STREAM}
_GATEWAY_ERRORS = {502, 503, 504}
_GRPC_RETRY_ON = {"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8,
                  "internal": 13, "unavailable": 14}

RETRY_ON_CONDITIONS = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", *_GRPC_RETRY_ON,
})
"""Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` values that Istio's validation accepts."""

_LOCAL_REPLIES = {
    CONNECT_FAILURE: (503, "connection failure", flags.UPSTREAM_CONNECTION_FAILURE),
    CONNECTION_TERMINATION: (503, "connection termination", flags.UPSTREAM_CONNECTION_TERMINATION),
    REMOTE_RESET: (503, "remote reset", flags.UPSTREAM_REMOTE_RESET),
    REFUSED_STREAM: (503, "remote refused stream reset", flags.UPSTREAM_REMOTE_RESET),
}


@dataclass(frozen=True)
class Outcome:
    """The result of one try. `status`/`headers` only for RESPONSE (headers lower-case)."""

    kind: str
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def response(status: int, headers: Mapping[str, str] | None = None) -> Outcome:
        return Outcome(RESPONSE, status, headers or {})

    @staticmethod
    def of(kind: str) -> Outcome:
        if kind == RESPONSE or kind not in _ALL_KINDS:
            raise ValueError(f"Outcome.of needs a non-response kind, one of {sorted(_ALL_KINDS - {RESPONSE})}; "
                             f"use Outcome.response(status) for {kind!r}")
        return Outcome(kind)

    def local_reply(self, *, retried: bool = False) -> flags.LocalReply | None:
        """The reply Envoy writes for this outcome, or None when upstream's response is passed on."""
        if self.kind == RESPONSE:
            return None
        if self.kind == PER_TRY_TIMEOUT:
            return flags.UPSTREAM_TIMEOUT
        if self.kind == OVERFLOW:
            return flags.OVERFLOW
        if self.kind == NO_HEALTHY_UPSTREAM:
            return flags.NO_HEALTHY
        status, reason, flag = _LOCAL_REPLIES[self.kind]
        return flags.LocalReply(status, flags.reset_body(reason, retried=retried), (flag,))


_ALL_KINDS = frozenset({RESPONSE, CONNECT_FAILURE, CONNECTION_TERMINATION, REMOTE_RESET,
                        REFUSED_STREAM, PER_TRY_TIMEOUT, OVERFLOW, NO_HEALTHY_UPSTREAM})

_DEFAULT_RETRY_ON = frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                               "retriable-status-codes"})


@dataclass(frozen=True)
class RetryPolicy:
    """An Envoy route retry policy as istiod builds it. Times in seconds."""

    attempts: int = 2
    retry_on: frozenset[str] = _DEFAULT_RETRY_ON
    retriable_status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    backoff_base: float = 0.025
    previous_hosts: bool = True
    host_selection_attempts: int = 5

    @classmethod
    def from_spec(cls, value: Mapping[str, Any] | None, path: str = "retries", *,
                  consistent_hash: bool = False, legacy_503: bool = False) -> RetryPolicy:
        """Build from a route's `retries` dict, or Istio's default policy when it is None.

        Shape: `{attempts: 3, perTryTimeout: "2s", retryOn: "gateway-error,connect-failure,503",
        retryIgnorePreviousHosts: true, retryRemoteLocalities: false, backoff: "25ms"}`.
        `consistent_hash`: the destination uses consistentHash LB (drops the previous-hosts
        predicate unless set explicitly). `legacy_503`: Istio < 1.24 default (retry 503).
        """
        default = cls(retriable_status_codes=frozenset({503}) if legacy_503 else frozenset(),
                      previous_hosts=not consistent_hash)
        if value is None:
            return default
        r = spec.mapping(value, path)
        spec.check_keys(r, ("attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities",
                            "retryIgnorePreviousHosts", "backoff"), path)
        attempts = spec.integer(r.get("attempts"), spec.join(path, "attempts"), default=0, minimum=0)
        per_try = spec.duration(r.get("perTryTimeout"), spec.join(path, "perTryTimeout"),
                                minimum=0.001)
        retry_on_text = spec.string(r.get("retryOn"), spec.join(path, "retryOn"), default="")
        if attempts == 0:
            if per_try is not None or retry_on_text or r.get("retryRemoteLocalities") is not None:
                raise spec.SpecError(path, "perTryTimeout/retryOn/retryRemoteLocalities set while attempts "
                                           "is 0 (retries disabled)")
            return NO_RETRIES
        retry_on, codes = default.retry_on, default.retriable_status_codes
        if retry_on_text:
            retry_on, codes = _parse_retry_on(retry_on_text, spec.join(path, "retryOn"))
        ignore_previous = spec.boolean(r.get("retryIgnorePreviousHosts"),
                                       spec.join(path, "retryIgnorePreviousHosts"))
        spec.boolean(r.get("retryRemoteLocalities"), spec.join(path, "retryRemoteLocalities"))
        backoff = spec.duration(r.get("backoff"), spec.join(path, "backoff"),
                                default=default.backoff_base, minimum=0.001)
        return cls(attempts, retry_on, codes, per_try, backoff,
                   default.previous_hosts if ignore_previous is None else ignore_previous)

    @property
    def backoff_max(self) -> float:
        """Envoy's default max back-off interval: 10 × base."""
        return 10 * self.backoff_base

    def retriable(self, outcome: Outcome) -> bool:
        """Whether `retryOn` covers this outcome (ignoring how many tries are left)."""
        on = self.retry_on
        if outcome.kind == PER_TRY_TIMEOUT:
            return bool(on & {"5xx", "gateway-error", "reset"})
        if outcome.kind in _RESETS:
            if on & {"5xx", "gateway-error", "reset"}:
                return True
            if outcome.kind == CONNECT_FAILURE and on & {"connect-failure", "reset-before-request"}:
                return True
            return outcome.kind == REFUSED_STREAM and "refused-stream" in on
        if outcome.kind != RESPONSE:  # overflow, no healthy upstream: local, never retried
            return False
        return self.retriable_response(outcome.status or 0, outcome.headers)

    def retriable_response(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether `retryOn` covers a response with this status and these (lower-case)
        headers: `retriable` for a RESPONSE outcome, without making one."""
        on = self.retry_on
        if "5xx" in on and status >= 500:
            return True
        if "gateway-error" in on and status in _GATEWAY_ERRORS:
            return True
        if "retriable-4xx" in on and status == 409:
            return True
        if "retriable-status-codes" in on and status in self.retriable_status_codes:
            return True
        if "envoy-ratelimited" in on and "x-envoy-ratelimited" in headers:
            return True
        grpc = headers.get("grpc-status")
        return grpc is not None and any(
            name in on and grpc == str(code) for name, code in _GRPC_RETRY_ON.items())

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry `retry_number` (1 for the first retry)."""
        if retry_number < 1:
            raise ValueError(f"retry_number counts from 1, got {retry_number}")
        base_ms = max(1, round(self.backoff_base * 1000))
        interval_ms = min((2 ** min(retry_number, 32) - 1) * base_ms, 10 * base_ms)
        return rng.randrange(interval_ms) / 1000.0


NO_RETRIES = RetryPolicy(attempts=0, retry_on=frozenset(), previous_hosts=False)
DEFAULT_RETRIES = RetryPolicy()
"""Istio's default policy (>= 1.24) for a route without `retries`."""


_KNOWN_STATUS = frozenset(int(s) for s in HTTPStatus)


def _parse_retry_on(text: str, path: str) -> tuple[frozenset[str], frozenset[int]]:
    conditions: set[str] = set()
    codes: set[int] = set()
    for part in text.split(","):
        if part != part.strip():
            raise spec.SpecError(path, f"{part!r}: write retryOn values comma-separated without spaces "
                                       "(Istio's validation rejects the spaces)")
        if not part:
            continue
        if part.isdigit():
            if int(part) not in _KNOWN_STATUS:
                raise spec.SpecError(path, f"{part!r} is not an HTTP status code")
            codes.add(int(part))
        elif part in RETRY_ON_CONDITIONS:
            conditions.add(part)
        else:
            raise spec.SpecError(path, f"unknown retryOn condition {part!r}; known: "
                                       f"{', '.join(sorted(RETRY_ON_CONDITIONS))} or a status code")
    if codes:
        conditions.add("retriable-status-codes")
    return frozenset(conditions), frozenset(codes)


def request_timeout(route_timeout: float | None, headers: Mapping[str, str]) -> float | None:
    """The route timeout after the app's `x-envoy-upstream-rq-timeout-ms` override (0 = none).

    A malformed header value is ignored, as Envoy ignores it.
    """
    raw = headers.get("x-envoy-upstream-rq-timeout-ms")
    if raw is None or not raw.strip().isdigit():
        return route_timeout
    ms = int(raw)
    return None if ms == 0 else ms / 1000.0


@dataclass(frozen=True)
class Retry:
    """Try again after `delay` seconds; `attempt` is the next try's number (x-envoy-attempt-count)."""

    delay: float
    attempt: int


@dataclass(frozen=True)
class Finish:
    """The request is over. `reply` None ⇒ send the upstream response of `outcome` as it is."""

    outcome: Outcome
    reply: flags.LocalReply | None
    flags: tuple[str, ...]
    attempts: int

    @property
    def status(self) -> int:
        return self.reply.status if self.reply is not None else int(self.outcome.status or 0)


class RetrySlot(Protocol):
    """A retry circuit breaker (`pool.ConnectionPool` is one): `maxRetries` outstanding at once."""

    def try_retry(self) -> bool: ...

    def retry_done(self) -> None: ...


class RetryState:
    """One request's retry bookkeeping, from the first try to the final answer.

    Loop for a caller (live proxy or simulator):

        state = RetryState(policy, start=now, timeout=route_timeout, rng=rng, retry_slot=pool)
        while True:
            host = lb.choose(healthy, avoid=state.avoid_hosts,
                             attempts=policy.host_selection_attempts)  # None -> NO_HEALTHY_UPSTREAM
            until = state.begin(host, now)            # give up on this try at `until` (None: never)
            ... send; if `until` passes first: outcome = state.expired(now) (maybe Finish: route timeout)
            decision = state.on_outcome(outcome, now)
            if isinstance(decision, Finish): break
            wait decision.delay, but call state.expired(now) if state.deadline passes meanwhile

    `retry_slot` is the cluster's retry circuit breaker; a refused retry ends the request with
    the last outcome and flag UO.
    """

    def __init__(self, policy: RetryPolicy, *, start: float, timeout: float | None,
                 rng: random.Random, retry_slot: RetrySlot | None = None) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else start + timeout
        self.attempts = 0
        self.hosts: list[str] = []
        self._rng = rng
        self._slot = retry_slot
        self._holding_slot = False

    @property
    def avoid_hosts(self) -> frozenset[str]:
        """Hosts the previous-hosts predicate steers away from (empty when it is off)."""
        return frozenset(self.hosts) if self.policy.previous_hosts else frozenset()

    def begin(self, host: str | None, now: float) -> float | None:
        """Start a try on `host`; returns the absolute time this try must be abandoned."""
        self.attempts += 1
        if host is not None:
            self.hosts.append(host)
        ends = [t for t in (self.deadline,
                            None if self.policy.per_try_timeout is None else now + self.policy.per_try_timeout)
                if t is not None]
        return min(ends) if ends else None

    def expired(self, now: float) -> Outcome | Finish:
        """The timer returned by `begin` (or the route deadline during back-off) fired at `now`.

        Route deadline reached ⇒ the final 504 UT; otherwise a per-try timeout outcome to feed
        to `on_outcome`.
        """
        if self.deadline is not None and now >= self.deadline:
            return self._finish(Outcome(PER_TRY_TIMEOUT), flags.UPSTREAM_TIMEOUT, ())
        return Outcome(PER_TRY_TIMEOUT)

    def on_outcome(self, outcome: Outcome, now: float) -> Retry | Finish:
        """Decide what follows a try's outcome."""
        self._release_slot()
        if self.deadline is not None and now >= self.deadline:
            return self._finish(outcome, flags.UPSTREAM_TIMEOUT, ())
        if not self.policy.retriable(outcome):
            return self._finish(outcome, outcome.local_reply(retried=self.attempts > 1), ())
        if self.attempts > self.policy.attempts:
            return self._finish(outcome, outcome.local_reply(retried=self.attempts > 1),
                                (flags.UPSTREAM_RETRY_LIMIT_EXCEEDED,))
        if self._slot is not None:
            if not self._slot.try_retry():
                return self._finish(outcome, outcome.local_reply(retried=self.attempts > 1),
                                    (flags.UPSTREAM_OVERFLOW,))
            self._holding_slot = True
        return Retry(self.policy.backoff(self.attempts, self._rng), self.attempts + 1)

    def _release_slot(self) -> None:
        if self._holding_slot and self._slot is not None:
            self._slot.retry_done()
            self._holding_slot = False

    def _finish(self, outcome: Outcome, reply: flags.LocalReply | None,
                extra: tuple[str, ...]) -> Finish:
        self._release_slot()
        reply_flags = reply.flags if reply is not None else ()
        return Finish(outcome, reply, reply_flags + extra, self.attempts)
