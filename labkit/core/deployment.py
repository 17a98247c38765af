"""The Deployment controller: one replica process per pod, replaced as a set on template change.

Scaling starts or stops single pods. A new template is rolled out by starting a complete new
set of pods, waiting until all answer, and only then switching the endpoints and stopping the
old set; if any new pod fails, the new set is stopped and the old one keeps serving. (Kubernetes
rolls pod by pod; all-at-once keeps "nothing half-applied" simple while never dropping service.)

A pod whose process exits leaves the Service endpoints at once and is restarted as the kubelet
does for restartPolicy Always: the first time at once, then after an exponential back-off
(CrashLoopBackOff: 10 s doubling to 5 min by default). Unlike the kubelet, the back-off does
not reset after 10 minutes of good running.

Each container starts with the kubelet's service environment variables for the Services in its
namespace at that moment (unless the pod sets `enableServiceLinks: false`), and pods are only
created once their ServiceAccount exists, as ServiceAccount admission requires.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Mapping

from labkit.core.controller import ObjectStatus, register_controller
from labkit.core.images import container_command
from labkit.core.models import Deployment, PodTemplateSpec
from labkit.core.pods import Pod
from labkit.core.service import service_links
from labkit.core.serviceaccount import missing_service_account
from labkit.net import ReplicaProcess, free_port
from labkit.runs import Workload

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["DeploymentController", "make_replica", "restart_delay", "template_hash"]


def template_hash(template: PodTemplateSpec) -> str:
    """Stable short hash of a pod template, like the pod-template-hash label."""
    return hashlib.sha256(template.model_dump_json().encode()).hexdigest()[:10]


def make_replica(
    obj: Deployment, pod_name: str, service_env: Mapping[str, str] | None = None
) -> ReplicaProcess:
    """The process for one pod of `obj`: its container's command, env and probe path.
    `service_env` (the kubelet's Service variables) comes first, so the container's own env
    wins on a clash, as in Kubernetes."""
    container = obj.container
    port = free_port()
    env = {**(service_env or {}), **{var.name: var.value for var in container.env}}
    env["HOSTNAME"] = pod_name  # as in a pod; PORT is set by ReplicaProcess
    # $(PORT) in command/args refers to this replica's port, as in a Knative container.
    command = container_command(
        container.image, container.command, container.args, {**env, "PORT": str(port)}
    )
    return ReplicaProcess(
        command,
        env=env,
        cwd=container.working_dir,
        ready_path=container.ready_path,
        name=pod_name,
        port=port,
        workload=Workload("Deployment", obj.metadata.name, obj.metadata.namespace),
    )


def restart_delay(restarts: int, backoff: tuple[float, float] | None) -> float | None:
    """Seconds before restart number `restarts + 1`, like the kubelet: the first at once,
    then backoff[0], doubling up to backoff[1]. None when pods are not restarted."""
    if backoff is None:
        return None
    first, cap = backoff
    return 0.0 if restarts == 0 else float(min(first * 2.0 ** (restarts - 1), cap))


class DeploymentController:
    def __init__(self, cluster: "LocalCluster", obj: Deployment) -> None:
        self.cluster = cluster
        self.obj: Deployment | None = None
        self.pods: list[Pod] = []
        self._serial = itertools.count(1)
        self._made_by: dict[str, Deployment] = {}  # pod name -> the spec it runs
        self._restart_due: dict[str, float] = {}
        self._restarting: dict[str, ReplicaProcess] = {}

    def apply(self, obj: Deployment) -> None:
        old = self.obj
        if old is not None and old.spec.selector != obj.spec.selector:
            raise ValueError(
                "spec.selector is immutable in apps/v1 (Kubernetes refuses the change): "
                "delete the Deployment and apply it again"
            )
        if old is not None and old.spec.template == obj.spec.template:
            self._scale(obj, obj.spec.replicas)
        else:
            replacement = self._start_pods(obj, obj.spec.replicas)
            retired, self.pods = self.pods, replacement
            self.cluster.pods.add(*replacement)
            self._stop(retired)
        self.obj = obj

    def _service_env(self, obj: Deployment) -> dict[str, str] | None:
        """The kubelet computes the Service variables at each container start (restarts too)."""
        if not obj.spec.template.spec.enable_service_links:
            return None
        return service_links(self.cluster, obj.metadata.namespace)

    def _scale(self, obj: Deployment, replicas: int) -> None:
        if replicas > len(self.pods):
            added = self._start_pods(obj, replicas - len(self.pods))
            self.pods += added
            self.cluster.pods.add(*added)
        elif replicas < len(self.pods):
            # Like a ReplicaSet: remove pods that are not ready first, then the youngest.
            ordered = sorted(self.pods, key=lambda pod: not pod.ready)
            keep = set(ordered[:replicas])
            surplus = [pod for pod in self.pods if pod not in keep]
            self.pods = [pod for pod in self.pods if pod in keep]
            self._stop(surplus)

    def _start_pods(self, obj: Deployment, count: int) -> list[Pod]:
        """Start `count` pods in parallel (each timed on its own); all ready, or none left."""
        if count == 0:
            return []
        pod_spec = obj.spec.template.spec
        if refused := missing_service_account(
            self.cluster, obj.metadata.namespace, pod_spec.service_account
        ):
            raise RuntimeError(refused)
        service_env = self._service_env(obj)  # the same for pods started together
        pods = []
        for _ in range(count):
            name = f"{obj.metadata.name}-{template_hash(obj.spec.template)}-{next(self._serial)}"
            pods.append(
                Pod(
                    name,
                    obj.metadata.namespace,
                    dict(obj.spec.template.metadata.labels),
                    f"Deployment/{obj.metadata.name}",
                    make_replica(obj, name, service_env),
                )
            )
            self._made_by[name] = obj
        timeout = self.cluster.start_timeout
        # Each start is timed from its own spawn, so capping parallelism keeps the
        # measurements honest while a laptop is not asked to fork fifty programs at once.
        pool = ThreadPoolExecutor(max_workers=min(count, 8), thread_name_prefix="labkit-start")
        try:
            outcomes = list(pool.map(lambda pod: _try_start(pod.replica, timeout), pods))
        except BaseException:
            # Interrupted (Ctrl-C in a notebook, SIGTERM to `labkit up`): stopping the
            # replicas ends the waits in the pool at once instead of at their timeout.
            self._stop(pods)
            raise
        finally:
            pool.shutdown(wait=True)
        failures = [f"pod {pod.name}: {error}" for pod, error in zip(pods, outcomes) if error]
        if failures:
            self._stop(pods)
            raise RuntimeError("; ".join(failures))
        return pods

    def _stop(self, pods: list[Pod]) -> None:
        """Take pods out of the endpoints first (no new connections), then terminate them."""
        if not pods:
            return
        self.cluster.pods.remove(*pods)
        replicas = [pod.replica for pod in pods]
        for pod in pods:
            self._made_by.pop(pod.name, None)
            self._restart_due.pop(pod.name, None)
            if (restarting := self._restarting.pop(pod.name, None)) is not None:
                replicas.append(restarting)
        with ThreadPoolExecutor(
            max_workers=len(replicas), thread_name_prefix="labkit-stop"
        ) as pool:
            list(pool.map(lambda replica: replica.stop(), replicas))

    def reconcile(self) -> None:
        """Take exited pods out of the endpoints; restart each when its back-off is over."""
        now = time.monotonic()
        for pod in self.pods:
            if pod.replica.returncode is None or pod.name in self._restarting:
                continue
            if self.cluster.pods.contains(pod):
                self.cluster.pods.remove(pod)
            delay = self._backoff(pod.restarts)
            if delay is None:
                continue
            if now >= self._restart_due.setdefault(pod.name, now + delay):
                made_by = self._made_by[pod.name]
                replica = make_replica(made_by, pod.name, self._service_env(made_by))
                self._restarting[pod.name] = replica
                threading.Thread(
                    target=self._restart,
                    args=(pod, replica),
                    name=f"labkit-restart-{pod.name}",
                    daemon=True,
                ).start()

    def _backoff(self, restarts: int) -> float | None:
        return restart_delay(restarts, self.cluster.restart_backoff)

    def _restart(self, pod: Pod, replica: ReplicaProcess) -> None:
        """Runs on its own thread so a slow start holds up nothing else."""
        error = _try_start(replica, self.cluster.start_timeout)
        with self.cluster.lock:
            if self._restarting.get(pod.name) is not replica:  # pod deleted meanwhile
                replica.stop()
                return
            del self._restarting[pod.name]
            pod.restarts += 1
            pod.replica = replica  # even if it failed: status shows the latest exit and log
            if error is None:
                self._restart_due.pop(pod.name, None)
                self.cluster.pods.add(pod)
            else:
                self._restart_due.pop(pod.name, None)  # reconcile schedules the next try

    def delete(self) -> None:
        pods, self.pods = self.pods, []
        self._stop(pods)

    def status(self) -> ObjectStatus:
        assert self.obj is not None
        wanted = self.obj.spec.replicas
        ready = sum(pod.ready for pod in self.pods)
        return ObjectStatus(
            kind="Deployment",
            name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace,
            ready=ready == wanted,
            urls=tuple(pod.url for pod in self.pods),
            message=f"{ready}/{wanted} ready",
            detail={
                "replicas": wanted,
                "readyReplicas": ready,
                "pods": [pod.describe() for pod in self.pods],
            },
        )


def _try_start(replica: ReplicaProcess, timeout: float) -> str | None:
    """Start one replica; the error text, or None when it answered."""
    try:
        replica.start(timeout)
    except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
        return str(exc)
    return None


register_controller("apps/v1", "Deployment", DeploymentController)
