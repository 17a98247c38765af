"""Pods: the running replicas a cluster knows about, and who wants to hear when they change.

Controllers that run processes (Deployments now, Knative revisions later) publish ready pods
here; Services (and later the mesh) select them by labels, like Endpoints in Kubernetes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from labkit.core.prober import PodProber
from labkit.net import ReplicaProcess

__all__ = ["Pod", "PodRegistry", "matches"]


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Equality-based label selection; an empty selector selects nothing (as for Services)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass(eq=False)
class Pod:
    """One replica process with the identity Kubernetes would give it.

    `restarts` counts container restarts, as `kubectl get pods` shows them; `waiting` is the
    reason the container is not running (CrashLoopBackOff) and `message` says more, as the
    container status's state.waiting does; `previous_log` is what the last container wrote
    (`kubectl logs --previous`)."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    owner: str
    replica: ReplicaProcess
    restarts: int = 0
    waiting: str | None = None
    message: str | None = None
    last_exit: int | None = None
    previous_log: str | None = None

    @property
    def prober(self) -> PodProber | None:
        hook = self.replica.readiness
        return hook if isinstance(hook, PodProber) else None

    @property
    def url(self) -> str:
        return self.replica.url

    @property
    def port(self) -> int:
        return self.replica.port

    @property
    def pid(self) -> int | None:
        return self.replica.pid

    @property
    def ready(self) -> bool:
        prober = self.prober
        return (self.replica.startup_seconds is not None and self.replica.running
                and (prober is None or prober.ready))

    @property
    def startup_seconds(self) -> float | None:
        return self.replica.startup_seconds

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "url": self.url,
            "pid": self.pid,
            "ready": self.ready,
            "startSeconds": self.startup_seconds,
            "exitCode": self.replica.returncode,
            "restarts": self.restarts,
            "state": self.waiting or ("Running" if self.replica.running else "Terminated"),
            "message": self.message,
            "lastExitCode": self.last_exit,
        }


class PodRegistry:
    """Ready pods by namespace and labels; listeners are told after every change."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], Pod] = {}
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.RLock()

    def add(self, *pods: Pod) -> None:
        with self._lock:
            for pod in pods:
                self._pods[(pod.namespace, pod.name)] = pod
        self._notify()

    def remove(self, *pods: Pod) -> None:
        with self._lock:
            for pod in pods:
                self._pods.pop((pod.namespace, pod.name), None)
        self._notify()

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        """Ready pods in `namespace` whose labels match `selector`, in name order."""
        with self._lock:
            pods = [p for p in self._pods.values() if p.namespace == namespace]
        return sorted(
            (p for p in pods if p.ready and matches(selector, p.labels)), key=lambda p: p.name
        )

    def changed(self) -> None:
        """A pod's readiness changed in place: listeners recompute what they select."""
        self._notify()

    def contains(self, pod: Pod) -> bool:
        with self._lock:
            return self._pods.get((pod.namespace, pod.name)) is pod

    def all(self) -> list[Pod]:
        with self._lock:
            return sorted(self._pods.values(), key=lambda p: (p.namespace, p.name))

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener()` after each change; returns the function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
