"""The Deployment controller: one replica process per pod, replaced as a set on template change.

Scaling starts or stops single pods. A new template is rolled out by starting a complete new
set of pods, waiting until all answer, and only then switching the endpoints and stopping the
old set; if any new pod fails, the new set is stopped and the old one keeps serving. (Kubernetes
rolls pod by pod; all-at-once keeps "nothing half-applied" simple while never dropping service.)

A pod whose process exits (or is killed by its livenessProbe) leaves the Service endpoints at
once and is restarted as the kubelet does for restartPolicy Always: the first time at once,
then after an exponential back-off (CrashLoopBackOff: 10 s doubling to 5 min by default), reset
once a container ran 10 minutes (labkit.core.probes.crash_backoff). Readiness and liveness
probes run as labkit.core.prober describes; a pod failing its readinessProbe leaves the
endpoints while its process keeps running.

Each container starts with the kubelet's service environment variables for the Services in its
namespace at that moment (unless the pod sets `enableServiceLinks: false`), and pods are only
created once their ServiceAccount exists, as ServiceAccount admission requires.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from labkit.core.controller import ObjectStatus, register_controller
from labkit.core.images import container_command
from labkit.core.models import Deployment, PodTemplateSpec
from labkit.core.podlogs import drop_previous, keep_previous
from labkit.core.pods import Pod
from labkit.core.prober import PodProber
from labkit.core.probes import crash_backoff
from labkit.core.service import service_links
from labkit.core.serviceaccount import missing_service_account
from labkit.net import ReplicaProcess, free_port
from labkit.runs import Workload

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["DeploymentController", "make_replica", "template_hash"]


def template_hash(template: PodTemplateSpec) -> str:
    """Stable short hash of a pod template, like the pod-template-hash label."""
    return hashlib.sha256(template.model_dump_json().encode()).hexdigest()[:10]


def make_replica(
    obj: Deployment, pod_name: str, service_env: Mapping[str, str] | None = None,
    on_probe_change: Callable[[], None] = lambda: None,
) -> ReplicaProcess:
    """The process for one pod of `obj`: its container's command, env and probes.
    `service_env` (the kubelet's Service variables) comes first, so the container's own env
    wins on a clash, as in Kubernetes. `on_probe_change` is called when a probe changes the
    pod's readiness or kills it after the start."""
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
        name=pod_name,
        port=port,
        workload=Workload("Deployment", obj.metadata.name, obj.metadata.namespace),
        readiness=PodProber(container.readiness, container.liveness,
                            periodic=container.readiness_probe is not None,
                            on_change=on_probe_change),
    )


class DeploymentController:
    def __init__(self, cluster: LocalCluster, obj: Deployment) -> None:
        self.cluster = cluster
        self.obj: Deployment | None = None
        self.pods: list[Pod] = []
        self._serial = itertools.count(1)
        self._made_by: dict[str, Deployment] = {}  # pod name -> the spec it runs
        self._restart_due: dict[str, float] = {}
        self._backoff: dict[str, int] = {}  # pod name -> the kubelet's back-off count
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
                    make_replica(obj, name, service_env, self.cluster.pods.changed),
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
            drop_previous(pod.namespace, pod.name)
            self._made_by.pop(pod.name, None)
            self._restart_due.pop(pod.name, None)
            self._backoff.pop(pod.name, None)
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
            code = pod.replica.returncode
            if code is None:
                pod.replica.trim_log()
            if code is None or pod.name in self._restarting:
                continue
            if self.cluster.pods.contains(pod):
                self.cluster.pods.remove(pod)
            if pod.name not in self._restart_due:
                self._container_ended(pod, code, now)
            if now >= self._restart_due[pod.name]:
                made_by = self._made_by[pod.name]
                replica = make_replica(made_by, pod.name, self._service_env(made_by),
                                       self.cluster.pods.changed)
                self._restarting[pod.name] = replica
                threading.Thread(
                    target=self._restart,
                    args=(pod, replica),
                    name=f"labkit-restart-{pod.name}",
                    daemon=True,
                ).start()

    def _container_ended(self, pod: Pod, code: int, now: float) -> None:
        """Record how the container ended and when the kubelet would start it again."""
        replica = pod.replica
        replica.stop()  # already ended: reaps it and keeps its log's tail, the file goes
        pod.last_exit = code
        pod.previous_log = replica.log_tail(None)
        keep_previous(pod.namespace, pod.name, pod.previous_log)
        prober = pod.prober
        why = prober.killed if prober is not None and prober.killed else f"exited with code {code}"
        if self.cluster.restart_backoff is None:  # left down: watch the failure
            pod.waiting, pod.message = "Error", f"{why}; not restarted"
            self._restart_due[pod.name] = float("inf")
            return
        ran = (now - replica.spawned_at
               if replica.startup_seconds is not None and replica.spawned_at is not None
               else None)
        delay, self._backoff[pod.name] = crash_backoff(
            self._backoff.get(pod.name, 0), ran, *self.cluster.restart_backoff)
        self._restart_due[pod.name] = now + delay
        if delay > 0:
            # The kubelet's waiting state: reason CrashLoopBackOff, message "back-off 40s
            # restarting failed container=NAME pod=POD" (pkg/kubelet/kuberuntime).
            pod.waiting = "CrashLoopBackOff"
            pod.message = (f"back-off {delay:g}s restarting failed container="
                           f"{self._made_by[pod.name].container.name} pod={pod.name}: {why}")
        else:
            pod.waiting, pod.message = "ContainerCreating", why

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
            self._restart_due.pop(pod.name, None)  # on failure reconcile schedules the next
            if error is None:
                pod.waiting = pod.message = None
                self.cluster.pods.add(pod)

    def logs(self, previous: bool = False) -> str:
        """What the first pod's container wrote (`previous`: the container before the last
        restart), as `kubectl logs deployment/NAME` picks one pod."""
        if not self.pods:
            raise ValueError("the Deployment has no pods")
        pod = self.pods[0]
        if not previous:
            return pod.replica.log_tail(None)
        if pod.previous_log is None:
            container = self._made_by[pod.name].container.name
            raise ValueError(f'previous terminated container "{container}" in pod "{pod.name}" '
                             "not found")
        return pod.previous_log

    def delete(self) -> None:
        pods, self.pods = self.pods, []
        self._stop(pods)

    def status(self) -> ObjectStatus:
        assert self.obj is not None
        wanted = self.obj.spec.replicas
        ready = sum(pod.ready for pod in self.pods)
        troubles = [f"pod {pod.name}: {pod.waiting} (restarts {pod.restarts}): {pod.message}"
                    for pod in self.pods if pod.waiting]
        return ObjectStatus(
            kind="Deployment",
            name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace,
            ready=ready == wanted,
            urls=tuple(pod.url for pod in self.pods),
            message="; ".join([f"{ready}/{wanted} ready", *troubles]),
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
