"""A live Revision: replica processes, each behind its queue-proxy, scaled by the autoscaler.

`LiveRevision.scale_to(n)` is what Knative's KPA reconciler does to the revision's Deployment:
it starts or stops pods and returns at once (the autoscaler tick must not wait for a cold
start). A new pod is a real process: spawned, probed on its readiness path until it answers
(that time is its cold start, recorded in `cold_starts`), then given a queue-proxy and added
to the ready set. Scaling down removes pods that are not ready first, then the newest, and
drains each (no new requests; in-flight ones finish, up to the revision timeout) before the
process is stopped.

A pod that fails to start marks the revision with its exit code and log tail; a revision
that never became ready is not Ready, and the Route keeps sending traffic elsewhere. One that
has not reached its initial scale within its progress deadline (`labkit.serving.progress_deadline`)
has failed with Knative's ``ProgressDeadlineExceeded``; its PodAutoscaler stops activating it 30 s
later (`labkit.serving.kpa_scaler`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from labkit.core.images import container_command
from labkit.core.podlogs import drop_previous, keep_previous
from labkit.core.prober import PodProber
from labkit.core.probes import crash_backoff
from labkit.net import ReplicaProcess, free_port
from labkit.runs import Workload
from labkit.serving.autoscaler_config import RevisionAutoscaling
from labkit.serving.metrics import LatencyHistogram
from labkit.serving.models import (
    Condition,
    RevisionSpec,
    RevisionStatus,
    RevisionTemplate,
)
from labkit.serving.progress_deadline import (
    PROGRESS_DEADLINE_MESSAGE,
    PROGRESS_DEADLINE_REASON,
    deadline_exceeded,
)
from labkit.serving.queue_proxy import QueueProxy

if TYPE_CHECKING:
    from labkit.core.loop import BackgroundLoop

__all__ = ["ColdStart", "LiveRevision", "Sample", "ServingPod", "condition"]

_DRAIN_CAP_SECONDS = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_START_BACKOFF = (2.0, 30.0)
"""After a failed start, wait this long (doubling) before trying again: a crash loop. Shorter
than the kubelet's 10 s .. 5 min because here each try is a new pod, which the autoscaler asks
for again, not a container restart."""


@dataclass(frozen=True)
class ColdStart:
    """One replica start: when (wall clock, `time.time()`), how long until it answered."""

    revision: str
    pod: str
    at: float
    seconds: float | None
    from_zero: bool
    error: str | None = None


def condition(kind: str, ok: bool | None, reason: str = "", message: str = "") -> Condition:
    """A Knative status condition; `ok` None is "Unknown"."""
    status: Literal["True", "False", "Unknown"] = (
        "Unknown" if ok is None else ("True" if ok else "False"))
    return Condition(type=kind, status=status, reason=reason or None, message=message or None)


class PodState:
    STARTING = "starting"
    READY = "ready"
    TERMINATING = "terminating"


class ServingPod:
    """One replica process and its queue-proxy."""

    def __init__(self, name: str, replica: ReplicaProcess, created: float) -> None:
        self.name = name
        self.replica = replica
        self.created = created
        self.state = PodState.STARTING
        self.proxy: QueueProxy | None = None

    @property
    def ready(self) -> bool:
        prober = self.replica.readiness
        probe_ok = prober.ready if isinstance(prober, PodProber) else True
        return self.state == PodState.READY and self.replica.running and probe_ok

    @property
    def url(self) -> str | None:
        """The queue-proxy's address (the pod's serving port, 8012 in Knative)."""
        return self.proxy.url if self.proxy else None

    @property
    def pid(self) -> int | None:
        return self.replica.pid

    def cpu_seconds(self) -> float | None:
        """CPU time the replica has used (user + system), or None where /proc is missing."""
        pid = self.replica.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "url": self.url,
            "userPort": self.replica.port,
            "inFlight": self.proxy.in_flight if self.proxy else 0,
            "startSeconds": self.replica.startup_seconds,
        }


class Sample(NamedTuple):
    """One autoscaler tick of a revision: what a notebook plots."""

    t: float
    """Seconds since the revision was created."""
    desired: int
    replicas: int
    ready: int
    observed_concurrency: float
    stable_concurrency: float
    panic_concurrency: float
    rps: float
    panic: bool
    mode: str
    excess_burst_capacity: int


class LiveRevision:
    """The running side of one Revision."""

    def __init__(
        self,
        loop: BackgroundLoop,
        *,
        service: str,
        namespace: str,
        name: str,
        generation: int,
        template: RevisionTemplate,
        settings: RevisionAutoscaling,
        start_timeout: float,
        on_change: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.service = service
        self.namespace = namespace
        self.name = name
        self.generation = generation
        self.template = template
        self.settings = settings
        self.start_timeout = start_timeout
        self._on_change = on_change
        self.created = time.monotonic()
        self.pods: list[ServingPod] = []
        self.cold_starts: list[ColdStart] = []
        self.latency = LatencyHistogram()
        self.samples: list[Sample] = []
        self.failure: str | None = None
        self.previous_log: str | None = None
        """What the last pod that crashed or failed to start wrote (`kubectl logs --previous`)."""
        self._previous_pods: list[str] = []  # whose kept logs go when the revision does
        # A revision allowed to start at zero is Ready with no pod, as in Knative.
        self.ever_ready = settings.initial_scale == 0
        self.reachable = True
        self.routing_changed: float | None = None
        """When `reachable` last changed (Knative's routingStateModified), monotonic."""
        self.mode = "Proxy"
        self.desired = -1
        self.excess_burst_capacity = 0
        self.in_panic = False
        self.active: bool | None = None
        """The PodAutoscaler's Active condition: None while activating, False when idle."""
        self._serial = itertools.count(1)
        self._failures = 0
        self._next_start = 0.0
        self._lock = threading.RLock()
        self._settled = threading.Condition(self._lock)
        self._closed = False

    # -- views ------------------------------------------------------------------------------

    @property
    def spec(self) -> RevisionSpec:
        return self.template.spec

    @property
    def container_concurrency(self) -> int:
        return self.template.spec.concurrency_limit

    @property
    def replica_count(self) -> int:
        """Pods running or starting (what the Deployment's replicas are)."""
        with self._lock:
            return sum(p.state != PodState.TERMINATING for p in self.pods)

    @property
    def ready_count(self) -> int:
        return len(self.ready_pods())

    def ready_pods(self) -> list[ServingPod]:
        with self._lock:
            return [p for p in self.pods if p.ready]

    @property
    def ready(self) -> bool:
        """Knative's Revision Ready: its first pods came up (it stays ready at zero scale)."""
        return self.ever_ready

    @property
    def progress_deadline_exceeded(self) -> bool:
        """Never ready, and its progress deadline has passed: Knative has given up on it."""
        return deadline_exceeded(self.created, time.monotonic(), self.settings.progress_deadline,
                                 self.ever_ready)

    @property
    def failure_message(self) -> str | None:
        """Why the revision failed to come up (Knative's message), or None."""
        if self.progress_deadline_exceeded:
            return PROGRESS_DEADLINE_MESSAGE
        return self.failure if not self.ever_ready else None

    @property
    def knative_status(self) -> RevisionStatus:
        """The Revision's status as Knative reports it (replicas and four conditions)."""
        exited = self.failure is not None and not self.ever_ready
        healthy = None if not self.ever_ready and not exited else not exited
        reason = "ExitCode" if exited else ""
        message = (self.failure or "").splitlines()[0] if exited else ""
        resources_ok, resources_reason, resources_message = healthy, reason, message
        if self.progress_deadline_exceeded:
            resources_ok, resources_reason, resources_message = (
                False, PROGRESS_DEADLINE_REASON, PROGRESS_DEADLINE_MESSAGE)
        # Ready is False as soon as any of its dependents is (Knative's condition set).
        ready = False if False in (healthy, resources_ok) else healthy
        ready_reason, ready_message = ((resources_reason, resources_message)
                                       if resources_ok is False else (reason, message))
        return RevisionStatus(
            actual_replicas=self.ready_count,
            desired_replicas=self.desired if self.desired >= 0 else None,
            conditions=[
                condition("Active", self.active, "NoTraffic" if self.active is False else ""),
                condition("ContainerHealthy", healthy, reason, message),
                condition("Ready", ready, ready_reason, ready_message),
                condition("ResourcesAvailable", resources_ok, resources_reason,
                          resources_message),
            ],
        )

    def history(self) -> list[Sample]:
        """One `Sample` per autoscaler tick since creation (pandas.DataFrame(history()))."""
        with self._lock:
            return list(self.samples)

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                "name": self.name,
                "ready": self.ready,
                "replicas": self.replica_count,
                "readyReplicas": self.ready_count,
                "desired": self.desired,
                "mode": self.mode,
                "panic": self.in_panic,
                "reachable": self.reachable,
                "failure": self.failure,
                "pods": [p.describe() for p in self.pods],
                "coldStarts": len(self.cold_starts),
            }

    # -- scaling ----------------------------------------------------------------------------

    def scale_to(self, replicas: int) -> None:
        """Start or stop pods so that `replicas` run; returns without waiting."""
        with self._lock:
            if self._closed:
                return
            live = [p for p in self.pods if p.state != PodState.TERMINATING]
            if replicas > len(live):
                if time.monotonic() < self._next_start:
                    return  # crash-loop back-off
                from_zero = not any(p.ready for p in live)
                for _ in range(replicas - len(live)):
                    self._start_pod(from_zero)
            elif replicas < len(live):
                # Like a ReplicaSet: not-ready pods go first, then the youngest.
                order = sorted(live, key=lambda p: (p.ready, -p.created))
                for pod in order[: len(live) - replicas]:
                    self._retire(pod)

    def _start_pod(self, from_zero: bool) -> None:
        container = self.template.spec.container
        pod_name = f"{self.name}-deployment-{next(self._serial)}"
        port = free_port()
        env = {var.name: var.value for var in container.env}
        # Knative's container contract: PORT plus the K_* variables naming the revision.
        env.update({"HOSTNAME": pod_name, "K_SERVICE": self.service,
                    "K_CONFIGURATION": self.service, "K_REVISION": self.name})
        command = container_command(
            container.image, container.command, container.args, {**env, "PORT": str(port)})
        # Knative's queue-proxy runs the readiness probe (the default one too); the kubelet
        # runs the livenessProbe (https://knative.dev/docs/serving/services/configure-probing/).
        prober = PodProber(container.readiness, container.liveness,
                           periodic=container.readiness_probe is not None,
                           on_change=self._on_change)
        replica = ReplicaProcess(command, env=env, cwd=container.working_dir, name=pod_name,
                                 port=port, readiness=prober,
                                 workload=Workload("Revision", self.name, self.namespace))
        pod = ServingPod(pod_name, replica, time.monotonic())
        self.pods.append(pod)
        threading.Thread(target=self._run_start, args=(pod, from_zero),
                         name=f"labkit-start-{pod_name}", daemon=True).start()

    def _run_start(self, pod: ServingPod, from_zero: bool) -> None:
        at = time.time()
        error: str | None = None
        try:
            pod.replica.start(self.start_timeout)
        except (OSError, RuntimeError) as exc:
            error = str(exc)
        with self._lock:
            if pod.state == PodState.TERMINATING or self._closed:
                pod.replica.stop(grace=1.0)
                self._forget(pod)
                return
            if error is not None:
                self._failures += 1
                delay, _ = crash_backoff(self._failures, None, *_START_BACKOFF)
                self._next_start = time.monotonic() + delay
                self.failure = f"pod {pod.name} failed to start: {error}"
                self._keep_previous(pod)
                self.cold_starts.append(ColdStart(self.name, pod.name, at, None, from_zero,
                                                  error))
                self._forget(pod)
                self._settled.notify_all()
        if error is not None:
            self._on_change()
            return
        proxy = QueueProxy(
            self.loop, pod.replica.port, revision=self.name,
            container_concurrency=self.container_concurrency,
            timeouts=self.template.spec.timeouts,
            observe=self.latency.observe,
        )
        proxy.start()
        with self._lock:
            if pod.state == PodState.TERMINATING or self._closed:
                proxy.close()
                pod.replica.stop(grace=1.0)
                self._forget(pod)
                return
            pod.proxy = proxy
            pod.state = PodState.READY
            self._failures = 0
            self.failure = None  # healthy again (Knative's ContainerHealthy recovers too)
            self.ever_ready = True
            self.cold_starts.append(ColdStart(self.name, pod.name, at,
                                              pod.replica.startup_seconds, from_zero))
            self._settled.notify_all()
        self._on_change()

    def _forget(self, pod: ServingPod) -> None:
        if pod in self.pods:
            self.pods.remove(pod)

    def _retire(self, pod: ServingPod) -> None:
        """Out of the ready set now; stopped once its in-flight requests are done."""
        was_ready = pod.state == PodState.READY
        pod.state = PodState.TERMINATING
        if not was_ready:
            # Still starting: stopping ends its readiness wait; the start thread forgets it.
            threading.Thread(target=pod.replica.stop, kwargs={"grace": 1.0},
                             name=f"labkit-stop-{pod.name}", daemon=True).start()
            return
        threading.Thread(target=self._drain_and_stop, args=(pod,),
                         name=f"labkit-drain-{pod.name}", daemon=True).start()
        self._on_change()

    def _drain_and_stop(self, pod: ServingPod) -> None:
        deadline = time.monotonic() + min(float(self.template.spec.timeout), _DRAIN_CAP_SECONDS)
        proxy = pod.proxy
        while proxy is not None and proxy.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a counter owned by the event loop
        if proxy is not None:
            proxy.close()
        pod.replica.stop(grace=2.0)
        with self._lock:
            self._forget(pod)

    def check_pods(self) -> bool:
        """Drop ready pods whose process exited (a crash); True if any did."""
        crashed = []
        with self._lock:
            for pod in self.pods:
                pod.replica.trim_log()
                if pod.state == PodState.READY and not pod.replica.running:
                    crashed.append(pod)
                    code = pod.replica.returncode
                    tail = pod.replica.log_tail(10)
                    prober = pod.replica.readiness
                    killed = prober.killed if isinstance(prober, PodProber) else None
                    self.failure = f"pod {pod.name} exited with code {code}" + (
                        f" ({killed})" if killed else "") + (
                        f"\n--- last output lines ---\n{tail}" if tail.strip() else "")
                    pod.state = PodState.TERMINATING
                    self._keep_previous(pod)
        for pod in crashed:
            if pod.proxy is not None:
                pod.proxy.close()
            pod.replica.stop(grace=0.5)
            with self._lock:
                self._forget(pod)
        if crashed:
            self._on_change()
        return bool(crashed)

    def _keep_previous(self, pod: ServingPod) -> None:
        self.previous_log = pod.replica.log_tail(None)
        keep_previous(self.namespace, pod.name, self.previous_log)
        self._previous_pods.append(pod.name)

    def logs(self, previous: bool = False) -> str:
        """The first running pod's output; `previous`: the last pod that crashed."""
        if previous:
            if self.previous_log is None:
                raise ValueError(f"revision {self.name} has no crashed pod")
            return self.previous_log
        with self._lock:
            pods = [p for p in self.pods if p.state != PodState.TERMINATING]
        if not pods:
            raise ValueError(f"revision {self.name} has no pods (scaled to zero?)")
        return pods[0].replica.log_tail(None)

    def wait_settled(self, pods: int, timeout: float) -> bool:
        """Block until `pods` pods are ready, a start failed or the progress deadline passed;
        True when ready."""
        until = time.monotonic() + timeout
        given_up = self.created + self.settings.progress_deadline
        with self._lock:
            while self.ready_count < pods and self.failure_message is None:
                now = time.monotonic()
                if now >= until:
                    return False
                # Nothing notifies when the deadline passes: wake up for it.
                self._settled.wait((given_up if now < given_up < until else until) - now)
            return self.ready_count >= pods

    def record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def close(self) -> None:
        """Stop every pod now (no draining: the revision is being deleted)."""
        with self._lock:
            self._closed = True
            pods, self.pods = list(self.pods), []
            for name in self._previous_pods:
                drop_previous(self.namespace, name)
            for pod in pods:
                pod.state = PodState.TERMINATING
        for pod in pods:
            if pod.proxy is not None:
                pod.proxy.close()
        threads = [threading.Thread(target=p.replica.stop, kwargs={"grace": 2.0}) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
