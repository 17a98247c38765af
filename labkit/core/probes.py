"""Container probes and the kubelet's restart back-off, as pure decisions.

A `ProbeSpec` is a readinessProbe or livenessProbe reduced to what labkit acts on: the check
(an HTTP GET on a path, or a TCP connect) and Kubernetes' timing fields with their defaults
(initialDelaySeconds 0, periodSeconds 10, timeoutSeconds 1, successThreshold 1,
failureThreshold 3; https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#Probe).
An HTTP check succeeds on a status 200..399 (kubernetes pkg/probe/http, DoHTTPProbe), a TCP
check when the port accepts a connection (pkg/probe/tcp).

A container without a readinessProbe is ready once its port accepts TCP connections: that is
the probe Knative's webhook gives every user container ("Knative will define a default
Readiness probe ... It will check for a TCP socket on the traffic port",
https://knative.dev/docs/serving/services/configure-probing/). For a plain Deployment the
kubelet would call such a container ready as soon as it runs; labkit waits for the port so
that a Service never routes to a process that cannot take a connection yet.

`ProbeCounter` is the kubelet's prober worker bookkeeping (pkg/kubelet/prober/worker.go,
doProbe): a result flips only after `failureThreshold` consecutive failures or
`successThreshold` consecutive successes.

`crash_backoff` is the kubelet's CrashLoopBackOff: "After containers in a Pod exit, the kubelet
restarts them with an exponential backoff delay (10s, 20s, 40s, ...), that is capped at five
minutes. Once a container has executed for 10 minutes without any problems, the kubelet resets
the restart backoff timer" (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-restarts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "BACKOFF_RESET_SECONDS",
    "TCP_READY",
    "ProbeCounter",
    "ProbeSpec",
    "crash_backoff",
    "http_success",
    "probe_spec",
]

BACKOFF_RESET_SECONDS = 600.0
"""A container that ran this long without a problem starts its back-off again at zero."""


@dataclass(frozen=True)
class ProbeSpec:
    """One probe: `action` "http" (GET `path`) or "tcp"; times in seconds."""

    action: Literal["http", "tcp"]
    path: str = "/"
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    def describe(self) -> str:
        """How kubectl describe shows it, e.g. `http-get :PORT/healthz delay=0s timeout=1s ...`."""
        what = f"http-get {self.path}" if self.action == "http" else "tcp-socket"
        return (f"{what} delay={self.initial_delay:g}s timeout={self.timeout:g}s "
                f"period={self.period:g}s #success={self.success_threshold} "
                f"#failure={self.failure_threshold}")


TCP_READY = ProbeSpec("tcp")
"""The readiness check of a container that declares none (Knative's default TCP probe)."""


class _HTTPGet(Protocol):
    path: str


class _Probe(Protocol):
    """The fields of a Kubernetes or Knative Probe model that labkit reads."""

    @property
    def http_get(self) -> _HTTPGet | None: ...
    @property
    def tcp_socket(self) -> object | None: ...
    initial_delay_seconds: int
    period_seconds: int
    timeout_seconds: int
    success_threshold: int
    failure_threshold: int


def probe_spec(probe: _Probe | None, default: ProbeSpec | None = None) -> ProbeSpec | None:
    """The `ProbeSpec` of a Probe model; `default` when the container declares none.

    A periodSeconds of 0 is Knative's default for a readiness probe (the queue-proxy then
    probes aggressively until the container is ready); labkit probes every 1 s after that."""
    if probe is None:
        return default
    path = probe.http_get.path if probe.http_get is not None else "/"
    return ProbeSpec(
        action="http" if probe.http_get is not None else "tcp",
        path=path if path.startswith("/") else "/" + path,
        initial_delay=float(probe.initial_delay_seconds),
        period=float(probe.period_seconds or 1),
        timeout=float(probe.timeout_seconds),
        success_threshold=probe.success_threshold,
        failure_threshold=probe.failure_threshold,
    )


def http_success(status: int) -> bool:
    """Kubernetes' HTTP probe verdict: 200 <= status < 400."""
    return 200 <= status < 400


@dataclass
class ProbeCounter:
    """Consecutive results of one probe; `passing` flips at the thresholds."""

    spec: ProbeSpec
    passing: bool
    _run: int = 0  # consecutive results that disagree with `passing`

    def observe(self, ok: bool) -> bool:
        """Record one result; True when `passing` changed."""
        if ok == self.passing:
            self._run = 0
            return False
        self._run += 1
        needed = self.spec.success_threshold if ok else self.spec.failure_threshold
        if self._run < needed:
            return False
        self.passing, self._run = ok, 0
        return True


def crash_backoff(restarts: int, ran_seconds: float | None,
                  first: float = 10.0, cap: float = 300.0) -> tuple[float, int]:
    """(seconds to wait before the next start, the back-off count to remember).

    `restarts` is the back-off count so far; `ran_seconds` how long the container ran before it
    ended (None: it never got going). The first restart is immediate, then `first` doubling to
    `cap`; a run of BACKOFF_RESET_SECONDS or more starts the sequence again."""
    if ran_seconds is not None and ran_seconds >= BACKOFF_RESET_SECONDS:
        restarts = 0
    delay = 0.0 if restarts == 0 else float(min(first * 2.0 ** (restarts - 1), cap))
    return delay, restarts + 1
