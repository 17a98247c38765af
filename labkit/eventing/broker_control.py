"""Broker and Trigger controllers: the cluster side of the broker process.

A Broker becomes one `python -m labkit.eventing.broker` process (a ReplicaProcess) with its own
loopback URL, a private folder holding its JSON config and its SQLite log. A Trigger resolves its
subscriber and dead-letter sink to URLs and is pushed to its broker's process (PUT /-/config),
with no restart. Triggers may be applied before their broker (they wait, not Ready) and before
their subscriber exists (they are re-resolved on every reconcile).

The process is not restarted behind the student's back: `BrokerHandle.kill()` is a real SIGKILL
and `restart()` starts a new process on the same port and store file, which is how lab 06 and
the tests show that nothing accepted is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.core.controller import ObjectStatus
from labkit.eventing.metrics import parse_metrics
from labkit.eventing.models import Broker, Trigger
from labkit.eventing.registry import (
    ControllerRegistry,
    Registered,
    registry_of,
    try_resolve,
)
from labkit.files import write_atomic
from labkit.net import HOST, ReplicaProcess, free_port, python_command
from labkit.runs import Workload

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["BrokerController", "TriggerController", "broker_handle"]

_ADMIN_TIMEOUT = 10.0


@dataclass(eq=False)
class _Registry(ControllerRegistry):
    """Brokers and triggers of one cluster, so each can find the other in any apply order."""

    brokers: dict[tuple[str, str], BrokerController] = field(default_factory=dict)
    triggers: dict[tuple[str, str], TriggerController] = field(default_factory=dict)


def _registry(cluster: LocalCluster) -> _Registry:
    return registry_of(cluster, _Registry)


def _admin(url: str, method: str = "GET", body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=_ADMIN_TIMEOUT) as answer:
        return bytes(answer.read())


class BrokerController(Registered):
    def __init__(self, cluster: LocalCluster, obj: Broker) -> None:
        self.cluster = cluster
        self.obj: Broker = obj
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"labkit-broker-{obj.metadata.name}-"))
        self.store_path = self.folder / "events.db"
        self.config_path = self.folder / "broker.json"
        self.process: ReplicaProcess | None = None
        self.dead_letter_uri: str | None = None
        self.problem: str | None = None
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- controller contract ------------------------------------------------------------------

    def apply(self, obj: Broker) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            body_limit = self.obj.max_body_bytes
            self.obj = obj
            registry.brokers[self.key] = self
            sink = obj.spec.delivery.dead_letter_sink if obj.spec.delivery else None
            self.dead_letter_uri, self.problem = try_resolve(self.cluster, sink,
                                                             obj.metadata.namespace)
            if self.process is None:
                try:
                    self.restart()
                except BaseException:
                    registry.brokers.pop(self.key, None)
                    raise
            elif self.process.running and body_limit != obj.max_body_bytes:
                # The limit is enforced before a body is read, by the listener itself: a new
                # limit needs a new process (same port and log, so nothing accepted is lost).
                self.process.stop()
                self.restart()
            else:
                self.sync()

    def delete(self) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            registry.brokers.pop(self.key, None)
        with self._lock:
            if self.process is not None:
                self.process.stop(grace=5.0)
        shutil.rmtree(self.folder, ignore_errors=True)

    def reconcile(self) -> None:
        sink = self.obj.spec.delivery.dead_letter_sink if self.obj.spec.delivery else None
        if sink is None or self.process is None or not self.process.running:
            return
        before = self.dead_letter_uri
        self.dead_letter_uri, self.problem = try_resolve(self.cluster, sink,
                                                         self.obj.metadata.namespace)
        if self.dead_letter_uri != before:
            try:
                self.sync()
            except (OSError, urllib.error.URLError) as err:  # retried on the next reconcile
                self.dead_letter_uri = None
                self.problem = f"could not update the broker process: {err}"

    def status(self) -> ObjectStatus:
        running = self.process is not None and self.process.running
        if running:
            message = f"pid {self.process.pid}" if self.process else ""
        elif self.process is not None:
            message = f"broker process exited (code {self.process.returncode}); call restart()"
        else:
            message = "not started"
        if self.problem:
            message += f"; dead-letter sink: {self.problem}"
        return ObjectStatus(
            kind="Broker", name=self.obj.metadata.name, namespace=self.obj.metadata.namespace,
            ready=running, url=self.url,
            urls=(self.url, f"{self.url}/{self.key[0]}/{self.key[1]}"), message=message,
            detail={"pid": self.process.pid if self.process else None,
                    "store": str(self.store_path), "metricsUrl": self.url + "/-/metrics",
                    "deadLetterSinkUri": self.dead_letter_uri,
                    "triggers": [t.obj.metadata.name for t in self._triggers()]})

    # -- config -------------------------------------------------------------------------------

    def _triggers(self) -> list[TriggerController]:
        registry = _registry(self.cluster)
        with registry.lock:
            return [t for t in registry.triggers.values()
                    if (t.obj.metadata.namespace, t.obj.spec.broker) == self.key]

    def config(self) -> dict[str, Any]:
        """The data-plane config: the process's view of this broker and its triggers."""
        delivery = self.obj.spec.delivery
        return {
            "namespace": self.key[0], "name": self.key[1],
            "maxBodyBytes": self.obj.max_body_bytes,
            "delivery": (delivery.model_dump(by_alias=True, exclude_none=True)
                         if delivery else None),
            "deadLetterUri": self.dead_letter_uri,
            "triggers": [t.route() for t in sorted(self._triggers(),
                                                    key=lambda t: t.obj.metadata.name)],
        }

    def _write_config(self) -> bytes:
        body = json.dumps(self.config(), indent=1).encode()
        write_atomic(self.config_path, body)  # a restart never reads half a file
        return body

    def sync(self) -> None:
        """Write the config (for restarts) and push it to the running process."""
        with self._lock:
            body = self._write_config()
            if self.process is not None and self.process.running:
                _admin(self.url + "/-/config", "PUT", body)

    # -- the process --------------------------------------------------------------------------

    def restart(self, timeout: float | None = None) -> float:
        """Start the broker process (again) on the same port and log; seconds until ready."""
        with self._lock:
            if self.process is not None and self.process.running:
                raise RuntimeError(f"broker {self.key[1]} is running (pid {self.process.pid}); "
                                   "kill() or stop it first")
            self._write_config()
            self.process = ReplicaProcess(
                python_command("labkit.eventing.broker", "--config", str(self.config_path),
                               "--store", str(self.store_path)),
                ready_path="/-/ready", name=f"broker-{self.key[1]}", port=self.port,
                workload=Workload("Broker", self.key[1], self.key[0]))
            return self.process.start(timeout or self.cluster.start_timeout)

    def kill(self) -> int:
        """SIGKILL the broker process (a crash: no clean-up at all); returns the old pid."""
        with self._lock:
            if self.process is None or not self.process.running:
                raise RuntimeError(f"broker {self.key[1]} is not running")
            pid = self.process.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            self.process.stop(grace=0.0)  # reaps it; the signal has already done the work
            return pid

    # -- observability ------------------------------------------------------------------------

    def metrics_text(self) -> str:
        return _admin(self.url + "/-/metrics").decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return parse_metrics(self.metrics_text())

    def event_log(self, since: int = 0) -> list[dict[str, Any]]:
        return list(json.loads(_admin(f"{self.url}/-/log?since={since}")))

    def state(self) -> dict[str, Any]:
        return dict(json.loads(_admin(self.url + "/-/state")))


class TriggerController(Registered):
    def __init__(self, cluster: LocalCluster, obj: Trigger) -> None:
        self.cluster = cluster
        self.obj: Trigger = obj
        self.subscriber_uri: str | None = None
        self.dead_letter_uri: str | None = None
        self.problem: str | None = None

    def apply(self, obj: Trigger) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            if registry.triggers.get(self.key) is self and obj.spec.broker != self.obj.spec.broker:
                raise ValueError("spec.broker is immutable (Knative refuses the change): "
                                 "delete the Trigger and apply it again")
            self.obj = obj
            self._resolve()
            registry.triggers[self.key] = self
            self._sync_broker()

    def _resolve(self) -> bool:
        """Resolve subscriber and dead-letter sink; True if anything changed."""
        namespace = self.obj.metadata.namespace
        before = (self.subscriber_uri, self.dead_letter_uri)
        self.subscriber_uri, problem = try_resolve(self.cluster, self.obj.spec.subscriber,
                                                   namespace)
        sink = self.obj.spec.delivery.dead_letter_sink if self.obj.spec.delivery else None
        self.dead_letter_uri, sink_problem = try_resolve(self.cluster, sink, namespace)
        problems = [p for p in (problem and f"subscriber: {problem}",
                                sink_problem and f"dead-letter sink: {sink_problem}") if p]
        self.problem = "; ".join(problems) or None
        return before != (self.subscriber_uri, self.dead_letter_uri)

    def _broker(self) -> BrokerController | None:
        return _registry(self.cluster).brokers.get((self.obj.metadata.namespace,
                                                     self.obj.spec.broker))

    def _sync_broker(self) -> None:
        broker = self._broker()
        if broker is not None:
            broker.sync()

    def route(self) -> dict[str, Any]:
        """This trigger in the broker process's config."""
        delivery = self.obj.spec.delivery
        return {"name": self.obj.metadata.name, "spec": self.obj.filter_spec(),
                "subscriberUri": self.subscriber_uri,
                "delivery": (delivery.model_dump(by_alias=True, exclude_none=True)
                             if delivery else None),
                "deadLetterUri": self.dead_letter_uri}

    def reconcile(self) -> None:
        """Re-resolve: a subscriber may appear, or move (a Deployment's pod restarted)."""
        if self._resolve():
            try:
                self._sync_broker()
            except (OSError, urllib.error.URLError) as err:  # retried on the next reconcile
                self.subscriber_uri = None
                self.problem = f"could not update the broker process: {err}"

    def delete(self) -> None:
        registry = _registry(self.cluster)
        with registry.lock:
            registry.triggers.pop(self.key, None)
        broker = self._broker()
        if broker is not None and broker.process is not None and broker.process.running:
            try:
                broker.sync()
            except (OSError, urllib.error.URLError):
                pass  # the broker is going away too (cluster.close); nothing to tell it

    def status(self) -> ObjectStatus:
        broker = self._broker()
        problems = []
        if broker is None:
            problems.append(f"broker {self.obj.spec.broker!r} does not exist (yet)")
        if self.problem:
            problems.append(self.problem)
        return ObjectStatus(
            kind="Trigger", name=self.obj.metadata.name, namespace=self.obj.metadata.namespace,
            ready=not problems, url=None, message="; ".join(problems) or
            f"-> {self.subscriber_uri}",
            detail={"subscriberUri": self.subscriber_uri,
                    "deadLetterSinkUri": self.dead_letter_uri, "broker": self.obj.spec.broker})


def broker_handle(cluster: LocalCluster, name: str, namespace: str = "default") -> BrokerController:
    """The running broker's controller: url, kill(), restart(), metrics(), event_log()."""
    return cluster.controller("eventing.knative.dev/v1/Broker", name, namespace, of=BrokerController)

