"""The kubelet's prober for one container: readiness and liveness checks on a replica process.

`PodProber.wait_ready` is the wait a replica's start does: no check before initialDelaySeconds,
then checks in quick succession until one passes. Quick, not one per periodSeconds, because
both systems labkit models do so at start: Knative's queue-proxy probes "aggressively" to cut
cold starts (https://knative.dev/docs/serving/services/configure-probing/), and the kubelet
triggers an immediate readiness run on every pod status update while a container is not ready
yet (kubernetes pkg/kubelet/prober/prober_manager.go, UpdatePodStatus, manualTriggerCh).

Once ready, a declared readinessProbe runs every periodSeconds: `failureThreshold` failures in a
row take the pod out of its Service's endpoints (the process keeps running), `successThreshold`
passes bring it back. A livenessProbe runs every periodSeconds from the start (not before
initialDelaySeconds), ready or not: `failureThreshold` failures in a row and the container is
killed (SIGTERM, then SIGKILL), and the owner restarts it under the CrashLoopBackOff rules
(labkit.core.probes).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from labkit.core.probes import ProbeCounter, ProbeSpec, http_success
from labkit.net import HOST, ReplicaProcess, ReplicaStartError, http_status, wait_until

__all__ = ["PodProber", "run_probe"]

_WATCH_SLICE = 0.25
"""Longest sleep of the watcher thread, so it notices a stopped pod soon."""
_KILL_GRACE = 2.0


def run_probe(spec: ProbeSpec, port: int, timeout: float | None = None) -> str | None:
    """One check against 127.0.0.1:`port`: None when it passes, else why it failed."""
    seconds = spec.timeout if timeout is None else max(min(spec.timeout, timeout), 0.01)
    if spec.action == "tcp":
        try:
            with socket.create_connection((HOST, port), timeout=seconds):
                return None
        except OSError as exc:
            return f"dial tcp {HOST}:{port}: {exc.strerror or type(exc).__name__}"
    status = http_status(HOST, port, spec.path, seconds)
    if isinstance(status, int):
        return None if http_success(status) else f"HTTP probe failed with statuscode: {status}"
    return f"Get http://{HOST}:{port}{spec.path}: {status}"


class PodProber:
    """Readiness and liveness of one replica process (make one per process start).

    `readiness` is what decides the first readiness (a container's readinessProbe, or the
    default TCP check); `periodic` says whether it keeps running after that (only a declared
    readinessProbe does). `on_change()` is called from the prober's thread when readiness flips
    after the start or the liveness probe kills the container."""

    def __init__(self, readiness: ProbeSpec, liveness: ProbeSpec | None, *, periodic: bool,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.readiness = readiness
        self.liveness = liveness
        self.periodic = periodic
        self.on_change = on_change
        self.ready = False
        """Passing its readiness probe now (False until the first pass)."""
        self.killed: str | None = None
        """Why the liveness probe killed the container, if it did."""
        self.last_failure: str | None = None
        self._replica: ReplicaProcess | None = None

    def wait_ready(self, replica: ReplicaProcess, timeout: float) -> float:
        """Block until the first readiness check passes (ReplicaProcess's `readiness` hook)."""
        self._replica = replica
        if self.liveness is not None or self.periodic:
            threading.Thread(target=self._watch, name=f"labkit-probe-{replica.name}",
                             daemon=True).start()
        spawned = replica.spawned_at or time.monotonic()
        not_before = spawned + self.readiness.initial_delay

        def check(remaining: float) -> str | None:
            if self.killed:
                return self.killed
            if time.monotonic() < not_before:
                return f"initialDelaySeconds={self.readiness.initial_delay:g} not over yet"
            return run_probe(self.readiness, replica.port, remaining)

        what = f"readiness probe ({self.readiness.describe()}) of {replica.name}"
        try:
            waited = wait_until(check, what, timeout, process=replica)
        except ReplicaStartError as exc:
            raise ReplicaStartError(f"{self.killed}: {exc}" if self.killed else str(exc)) from None
        self.ready = True
        return waited

    __call__ = wait_ready  # a PodProber is the `readiness` hook of its ReplicaProcess

    def _watch(self) -> None:
        replica = self._replica
        assert replica is not None
        started = replica.spawned_at or time.monotonic()
        live = ProbeCounter(self.liveness, passing=True) if self.liveness else None
        # The kubelet's worker ticks every periodSeconds from when it was created (with the
        # pod), skipping ticks before initialDelaySeconds: the first check comes up to a period
        # after the start. labkit takes the later of the two, never probing a process at birth.
        next_live = (started + max(self.liveness.initial_delay, self.liveness.period)
                     if self.liveness else float("inf"))
        ready_counter: ProbeCounter | None = None
        next_ready = float("inf")
        while replica.poll() is None:  # ends with the process, however it ends
            now = time.monotonic()
            if self.periodic and self.ready and ready_counter is None:
                ready_counter = ProbeCounter(self.readiness, passing=True)
                next_ready = now + self.readiness.period
            if live is not None and self.liveness is not None and now >= next_live:
                problem = run_probe(self.liveness, replica.port)
                next_live = now + self.liveness.period
                if live.observe(problem is None) and not live.passing:
                    self.killed = (f"Liveness probe failed: {problem}; container will be "
                                   "restarted")
                    self.ready = False
                    replica.stop(grace=_KILL_GRACE)
                    self.on_change()
                    return
            if ready_counter is not None and now >= next_ready:
                problem = run_probe(self.readiness, replica.port)
                next_ready = now + self.readiness.period
                if problem is not None:
                    self.last_failure = f"Readiness probe failed: {problem}"
                if ready_counter.observe(problem is None):
                    self.ready = ready_counter.passing
                    self.on_change()
            wake = min(next_live, next_ready) - time.monotonic()
            time.sleep(min(max(wake, 0.0), _WATCH_SLICE))
