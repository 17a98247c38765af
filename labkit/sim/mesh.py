"""A client sidecar in front of a partly failing service: retries, circuit breaking, ejection.

What it models (one client proxy, one destination cluster, in simulated time):

- Requests arrive as a Poisson process at `arrival_rate` per second.
- The destination has `hosts` endpoints; the first `failing_hosts` of them answer 503 with
  probability `failure_rate` (the others with `base_failure_rate`). Each host serves
  `host_concurrency` requests at once (more wait in its queue), each taking an exponential
  `service_time`.
- Every decision is made by the same policy code the live sidecar runs
  (`labkit.mesh.router` over `retries`, `pool`, `outlier`, `balancer`; the router is the very
  loop the sidecar drives, so the decisions come in the same order), configured with Istio's own spec
  dicts: a VirtualService route's `retries` and `timeout`, a DestinationRule's
  `connectionPool`, `outlierDetection` and `loadBalancer`. `retries=None` is Istio's default
  policy (which does not retry a 503), `{"attempts": 0}` disables retries.
- Per request: the router picks a healthy host (steering retries away from hosts already
  tried), the pool admits the try or overflows (503 UO), the try waits for a connection
  (opening one takes `connect_time`), the host answers or the per-try timeout fires, outlier
  detection records the result, and the router decides to retry (after a jittered
  back-off) or finish. All hosts ejected ⇒ 503 UH.

Time comes from a `SimClock` over a simpy Environment; randomness from separate seeded streams
for arrivals, service times, failures, balancing and back-off, so two runs that differ only in
policy see the same traffic and the same host behaviour (common random numbers).
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import simpy

from labkit.clock import SimClock
from labkit.mesh import flags as envoy_flags
from labkit.mesh.balancer import Balancer, balancer_from_spec
from labkit.mesh.outlier import OutlierDetector, OutlierPolicy
from labkit.mesh.pool import ConnectionPool, Lease, PoolLimits
from labkit.mesh.retries import (
    OVERFLOW,
    PER_TRY_TIMEOUT,
    Finish,
    Outcome,
    RetryPolicy,
    RetryState,
)
from labkit.mesh.router import Router
from labkit.params import check_range, check_seed
from labkit.sim.results import Scalar, SimResult
from labkit.stats import percentiles

__all__ = ["MeshSimResult", "simulate_mesh"]


@dataclass(frozen=True)
class MeshSimResult(SimResult):
    """What the client saw and what the hosts got. Times in seconds.

    `series_*` are per `bin_seconds` window starting at `series_time`: the share of requests
    finished in the window that succeeded, the request rate, the tries per second that reached
    the failing hosts, and how many hosts were ejected at the window's end.
    """

    requests: int
    duration: float
    status_counts: dict[int, int]
    flag_counts: dict[str, int]
    latency_p50: float
    latency_p90: float
    latency_p99: float
    mean_latency: float
    tries: int
    tries_per_host: dict[str, int]
    failing_hosts: tuple[str, ...]
    max_active_requests: int
    max_in_service: dict[str, int]
    ejections: int
    overflows: int
    series_time: list[float] = field(repr=False)
    series_success: list[float] = field(repr=False)
    series_rate: list[float] = field(repr=False)
    series_failing_load: list[float] = field(repr=False)
    series_ejected: list[int] = field(repr=False)

    @property
    def successes(self) -> int:
        return sum(n for code, n in self.status_counts.items() if 200 <= code < 300)

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else math.nan

    @property
    def mean_tries(self) -> float:
        """Tries that reached a host per request (1 = no retries happened)."""
        return self.tries / self.requests if self.requests else math.nan

    @property
    def failing_tries(self) -> int:
        return sum(self.tries_per_host.get(h, 0) for h in self.failing_hosts)

    @property
    def failing_share(self) -> float:
        """Share of all tries that went to the failing hosts."""
        return self.failing_tries / self.tries if self.tries else 0.0

    @property
    def failing_load(self) -> float:
        """Tries per second that reached the failing hosts."""
        return self.failing_tries / self.duration

    def count_flag(self, flag: str) -> int:
        return self.flag_counts.get(flag, 0)

    def summary(self) -> dict[str, Scalar]:
        """Counts, rates and latencies (s); one ``status_<code>`` and ``flag_<flag>`` per one seen."""
        return {
            "requests": self.requests, "duration": self.duration, "success_rate": self.success_rate,
            **{f"status_{code}": n for code, n in self.status_counts.items()},
            **{f"flag_{flag}": n for flag, n in self.flag_counts.items()},
            "latency_p50": self.latency_p50, "latency_p90": self.latency_p90, "latency_p99": self.latency_p99,
            "mean_latency": self.mean_latency, "tries": self.tries, "mean_tries": self.mean_tries,
            "failing_share": self.failing_share, "failing_load": self.failing_load,
            "ejections": self.ejections, "overflows": self.overflows,
            "max_active_requests": self.max_active_requests,
        }

    def __str__(self) -> str:
        flags = ", ".join(f"{f} {n}" for f, n in sorted(self.flag_counts.items())) or "none"
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(self.status_counts.items()))
        return "\n".join([
            f"{self.requests} requests in {self.duration:g} s: success {self.success_rate:.1%} ({codes})",
            f"response flags: {flags}",
            (f"latency p50 / p90 / p99: {self.latency_p50 * 1000:.1f} / {self.latency_p90 * 1000:.1f} / "
             f"{self.latency_p99 * 1000:.1f} ms"),
            (f"tries per request {self.mean_tries:.2f}; failing host(s) got {self.failing_share:.1%} of tries "
             f"({self.failing_load:.1f}/s); ejections {self.ejections}"),
        ])


_Spec = TypeVar("_Spec", PoolLimits, OutlierPolicy)


def _as(kind: type[_Spec], value: _Spec | Mapping[str, Any], path: str) -> _Spec:
    """`value` as `kind`: already one, or its manifest form (a DestinationRule's field)."""
    return kind.from_spec(value, path) if isinstance(value, Mapping) else value


class _Model:
    """The simpy processes of one run; read `simulate_mesh` for the parameters."""

    def __init__(self, env: simpy.Environment, *, hosts: int, failing_hosts: int, failure_rate: float,
                 base_failure_rate: float, service_time: float, host_concurrency: int, connect_time: float,
                 retry: RetryPolicy, timeout: float | None, limits: PoolLimits,
                 outlier: OutlierPolicy | None, load_balancer: Mapping[str, Any] | None, seed: int) -> None:
        self.env = env
        self.clock = SimClock(env)
        streams = random.Random(seed)
        self.rng_service, self.rng_fail, self.rng_backoff = (random.Random(streams.random()) for _ in range(3))
        self.balancer: Balancer = balancer_from_spec(load_balancer, random.Random(streams.random()))
        self.hosts = [f"backend-{i}" for i in range(hosts)]
        self.failing = tuple(self.hosts[:failing_hosts])
        self.fail_p = {h: failure_rate if h in self.failing else base_failure_rate for h in self.hosts}
        self.host_concurrency = host_concurrency
        self.host_queue: dict[str, deque[simpy.Event]] = {h: deque() for h in self.hosts}
        self.service_time, self.connect_time = service_time, connect_time
        self.retry, self.timeout = retry, timeout
        self.pool = ConnectionPool(limits)
        self.outlier = None if outlier is None else OutlierDetector(outlier, self.hosts, start=0.0)
        self.waiting: dict[int, simpy.Event] = {}
        self.records: list[tuple[float, float, int, tuple[str, ...]]] = []  # arrival, end, status, flags
        self.try_log: list[tuple[float, str]] = []
        self.in_service: Counter[str] = Counter()
        self.max_in_service: Counter[str] = Counter()
        self.max_active = 0

    # -- the connection pool's waiting room ---------------------------------------------------

    def _wake(self, lease: Lease | None) -> None:
        """The pool handed `lease` a connection, or asked for one to be opened for it."""
        if lease is None:
            return
        if lease.connection is not None:
            event = self.waiting.pop(lease.id, None)
            if event is not None:
                event.succeed()
        elif lease.opens is not None:
            self.env.process(self._connect(lease.opens))

    def _connect(self, conn: int) -> Any:
        yield self.env.timeout(self.connect_time)
        self._wake(self.pool.connected(conn))

    # -- one try on one host ----------------------------------------------------------------

    def _serve(self, host: str) -> Any:
        # The host's workers, first come first served (what simpy.Resource does, without an event
        # for a try that finds a worker free: this loop runs for every try of every dashboard change).
        if self.in_service[host] < self.host_concurrency:
            self.in_service[host] += 1
            self.max_in_service[host] = max(self.max_in_service[host], self.in_service[host])
        else:
            turn = self.env.event()
            self.host_queue[host].append(turn)
            yield turn  # a finishing try hands its worker over
        yield self.env.timeout(self.rng_service.expovariate(1.0 / self.service_time))
        if self.host_queue[host]:
            self.host_queue[host].popleft().succeed()
        else:
            self.in_service[host] -= 1
        return 503 if self.rng_fail.random() < self.fail_p[host] else 200

    def _try(self, router: Router) -> Any:
        """One try, judged by the router: returns its `Retry` or `Finish`."""
        step = router.next_try(self.clock.now())
        if isinstance(step, Finish):
            return step
        host, until = step.host, step.until
        lease = self.pool.acquire()
        if lease is None:
            return router.on_result(Outcome.of(OVERFLOW), self.clock.now())
        self.balancer.started(host)
        try:
            if lease.connection is None:
                ready = self.waiting[lease.id] = self.env.event()
                self._wake(lease)  # open the connection the pool asked for, if any
                if lease.connection is None:
                    yield ready if until is None else ready | self.env.timeout(max(until - self.clock.now(), 0.0))
                if lease.connection is None:  # gave up while pending
                    self.waiting.pop(lease.id, None)
                    self.pool.cancel(lease)
                    return router.on_result(Outcome.of(PER_TRY_TIMEOUT), self.clock.now(), reached_host=False)
            self.max_active = max(self.max_active, self.pool.active_requests)
            self.try_log.append((self.clock.now(), host))
            if until is None:  # nothing can interrupt the try: serve it in this process, no event for it
                status = yield from self._serve(host)
            else:
                answer = self.env.process(self._serve(host))
                yield answer | self.env.timeout(max(until - self.clock.now(), 0.0))
                status = answer.value if answer.triggered else None  # _serve's return: the host's status
            if status is not None:
                self._wake(self.pool.release(lease))
                return router.on_result(Outcome.response(status), self.clock.now())
            # Timed out: the stream is reset, and an HTTP/1.1 connection cannot be reused.
            self._wake(self.pool.release(lease, reusable=False))
            return router.on_result(Outcome.of(PER_TRY_TIMEOUT), self.clock.now())
        finally:
            self.balancer.finished(host)

    def request(self) -> Any:
        arrival = self.clock.now()
        router = Router(RetryState(self.retry, start=arrival, timeout=self.timeout, rng=self.rng_backoff,
                                   retry_slot=self.pool), self)
        while True:
            decision = yield from self._try(router)
            if isinstance(decision, Finish):
                break
            yield self.env.timeout(decision.delay)
        self.records.append((arrival, self.clock.now(), decision.status, decision.flags))

    def arrivals(self, rate: float, horizon: float, rng: random.Random) -> Any:
        while True:
            yield self.env.timeout(rng.expovariate(rate))
            if self.clock.now() >= horizon:
                return
            self.env.process(self.request())

    def sample_ejections(self, bin_seconds: float, out: list[int]) -> Any:
        while True:
            yield self.env.timeout(bin_seconds)
            now = self.clock.now()
            out.append(sum(self.outlier.is_ejected(h, now) for h in self.hosts) if self.outlier else 0)


def simulate_mesh(*, hosts: int = 3, failing_hosts: int = 1, failure_rate: float = 0.5,
                  base_failure_rate: float = 0.0, arrival_rate: float = 100.0, service_time: float = 0.01,
                  host_concurrency: int = 8, duration: float = 60.0, connect_time: float = 0.0005,
                  retries: Mapping[str, Any] | RetryPolicy | None = None, timeout: float | None = None,
                  connection_pool: Mapping[str, Any] | PoolLimits | None = None,
                  outlier_detection: Mapping[str, Any] | OutlierPolicy | None = None,
                  load_balancer: Mapping[str, Any] | None = None, seed: int = 1,
                  bin_seconds: float = 1.0) -> MeshSimResult:
    """Simulate `duration` seconds of traffic through one client sidecar.

    Policy arguments take Istio's camelCase spec dicts, e.g.
    `retries={"attempts": 3, "retryOn": "5xx", "perTryTimeout": "100ms"}`,
    `connection_pool={"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}`,
    `outlier_detection={"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "30s",
    "maxEjectionPercent": 100}`, `load_balancer={"simple": "ROUND_ROBIN"}` (default
    LEAST_REQUEST); `timeout` is the route timeout in seconds (None: no timeout, Istio's default).
    """
    hosts = check_range("hosts", hosts, 1, 1000, integer=True)
    failing_hosts = check_range("failing_hosts", failing_hosts, 0, hosts, integer=True)
    check_range("failure_rate", failure_rate, 0, 1)
    check_range("base_failure_rate", base_failure_rate, 0, 1)
    check_range("arrival_rate", arrival_rate, 0, closed="neither")
    check_range("service_time", service_time, 0, closed="neither")
    host_concurrency = check_range("host_concurrency", host_concurrency, 1, integer=True)
    check_range("duration", duration, 0, closed="neither")
    check_range("connect_time", connect_time, 0, closed="left")
    check_range("bin_seconds", bin_seconds, 0, duration, closed="right")
    if timeout is not None:
        check_range("timeout", timeout, 0, closed="neither")
    seed = check_seed(seed)
    env = simpy.Environment()
    model = _Model(
        env, hosts=hosts, failing_hosts=failing_hosts, failure_rate=failure_rate,
        base_failure_rate=base_failure_rate, service_time=service_time, host_concurrency=host_concurrency,
        connect_time=connect_time,
        retry=retries if isinstance(retries, RetryPolicy) else RetryPolicy.from_spec(retries),
        timeout=timeout,
        limits=PoolLimits() if connection_pool is None else _as(PoolLimits, connection_pool, "connectionPool"),
        outlier=None if outlier_detection is None else _as(OutlierPolicy, outlier_detection, "outlierDetection"),
        load_balancer=load_balancer, seed=seed,
    )
    ejected: list[int] = []
    env.process(model.arrivals(arrival_rate, duration, random.Random(seed)))
    env.process(model.sample_ejections(bin_seconds, ejected))
    # Let requests in flight at the horizon finish (bounded: a route timeout or the hosts' queues).
    env.run(until=duration)
    sampler_bins = len(ejected)
    env.run(until=duration + max(60.0, 10 * (timeout or 0)))
    return _result(model, duration, bin_seconds, ejected[:sampler_bins])


def _result(model: _Model, duration: float, bin_seconds: float, ejected: list[int]) -> MeshSimResult:
    records = model.records
    latencies = [end - start for start, end, _, _ in records]
    p50, p90, p99 = percentiles(latencies, (50, 90, 99)).tolist()
    n_bins = max(1, round(duration / bin_seconds))
    done, ok, failing = [0] * n_bins, [0] * n_bins, [0] * n_bins
    for start, _, status, _ in records:
        i = min(int(start / bin_seconds), n_bins - 1)
        done[i] += 1
        ok[i] += 200 <= status < 300
    for when, host in model.try_log:
        if host in model.failing and when < duration:
            failing[min(int(when / bin_seconds), n_bins - 1)] += 1
    flag_counts: Counter[str] = Counter(f for _, _, _, fl in records for f in fl)
    return MeshSimResult(
        requests=len(records), duration=duration,
        status_counts=dict(sorted(Counter(status for _, _, status, _ in records).items())),
        flag_counts=dict(sorted(flag_counts.items())),
        latency_p50=p50, latency_p90=p90, latency_p99=p99,
        mean_latency=sum(latencies) / len(latencies) if latencies else math.nan,
        tries=len(model.try_log), tries_per_host=dict(sorted(Counter(h for _, h in model.try_log).items())),
        failing_hosts=model.failing, max_active_requests=model.max_active,
        max_in_service=dict(model.max_in_service),
        ejections=model.outlier.ejections_total if model.outlier else 0,
        overflows=flag_counts.get(envoy_flags.UPSTREAM_OVERFLOW, 0),
        series_time=[i * bin_seconds for i in range(n_bins)],
        series_success=[ok[i] / done[i] if done[i] else math.nan for i in range(n_bins)],
        series_rate=[done[i] / bin_seconds for i in range(n_bins)],
        series_failing_load=[failing[i] / bin_seconds for i in range(n_bins)],
        series_ejected=(ejected + [ejected[-1] if ejected else 0] * n_bins)[:n_bins],
    )
