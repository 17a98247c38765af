"""The HorizontalPodAutoscaler controller: Kubernetes' HPA over a Deployment's real processes.

Every sync period (15 s, kube-controller-manager ``--horizontal-pod-autoscaler-sync-period``;
`configure_hpa` changes it for one cluster) the controller reads the CPU each pod of the
target Deployment has used since the last sync (its processes', `labkit.serving.hpa_cpu`),
against the container's ``resources.requests.cpu``, runs one pure HPA sync
(`labkit.serving.hpa_sync.hpa_sync`, the code the Knative HPA class and the simulator run)
and, when it wants another count, sets the Deployment's ``spec.replicas`` through the cluster
(as the HPA writes the scale subresource; re-applying the Deployment's own manifest with a
``replicas`` field resets it, as ``kubectl apply`` does). Every sync is kept in `decisions`;
`status()` shows the utilisation against the target and the replicas, like
``kubectl get hpa``, and ``detail["conditions"]`` the conditions ``kubectl describe hpa`` lists
(`labkit.serving.hpa_status`). A target whose container has no ``resources.requests.cpu`` is
applied (Kubernetes takes it) with a `ConfigWarning`: that HPA never scales.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING

from labkit.core.controller import ObjectStatus, register_controller
from labkit.core.hpa_models import HorizontalPodAutoscaler
from labkit.core.models import Deployment
from labkit.serving.constants import HPA_SYNC_SECONDS
from labkit.serving.hpa import cpu_readings
from labkit.serving.hpa_cpu import process_cpu_seconds
from labkit.serving.hpa_status import hpa_conditions, missing_cpu_request
from labkit.serving.hpa_sync import HPADecision, HPAHistory, hpa_sync

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["HorizontalPodAutoscalerController", "configure_hpa", "horizontal_pod_autoscaler"]

_SYNC_SECONDS: weakref.WeakKeyDictionary[LocalCluster, float] = weakref.WeakKeyDictionary()


def configure_hpa(cluster: LocalCluster, sync_seconds: float) -> None:
    """The HPA sync period of `cluster` for HPAs applied from now on (Kubernetes: 15 s)."""
    if not sync_seconds > 0:
        raise ValueError(f"sync_seconds must be > 0, got {sync_seconds!r}")
    _SYNC_SECONDS[cluster] = sync_seconds


def horizontal_pod_autoscaler(cluster: LocalCluster, name: str,
                              namespace: str = "default") -> HorizontalPodAutoscalerController:
    """The live side of an applied HorizontalPodAutoscaler (its `decisions`)."""
    return cluster.controller("autoscaling/v2/HorizontalPodAutoscaler", name, namespace,
                              of=HorizontalPodAutoscalerController)


class HorizontalPodAutoscalerController:
    def __init__(self, cluster: LocalCluster, obj: HorizontalPodAutoscaler) -> None:
        self.cluster = cluster
        self.obj = obj
        self.sync_seconds = _SYNC_SECONDS.get(cluster, HPA_SYNC_SECONDS)
        self.history = HPAHistory()
        self.decisions: list[HPADecision] = []
        self._marks: dict[str, tuple[float, float]] = {}
        self._due = time.monotonic() + self.sync_seconds

    def apply(self, obj: HorizontalPodAutoscaler) -> None:
        if obj.spec.scale_target_ref.name != self.obj.spec.scale_target_ref.name:
            self.history, self._marks = HPAHistory(), {}  # another target: nothing to remember
        self.obj = obj

    def delete(self) -> None:
        """Nothing to stop: the HPA runs only in reconcile(), which ends with the object."""

    def _target(self) -> Deployment | None:
        from labkit.cluster import NotFoundError
        try:
            found = self.cluster.get("apps/v1/Deployment", self.obj.spec.scale_target_ref.name,
                                     self.obj.metadata.namespace)
        except NotFoundError:
            return None
        return found.object if isinstance(found.object, Deployment) else None

    def reconcile(self) -> None:
        """Called often by the cluster (under its lock): sync when the period is over."""
        now = time.monotonic()
        if now < self._due:
            return
        self._due = max(self._due + self.sync_seconds, now)  # no catching up on missed syncs
        self.sync(now)

    def sync(self, now: float) -> HPADecision | None:
        """One HPA sync at `now` (monotonic seconds); None while the target does not exist."""
        target = self._target()
        if target is None:
            return None
        pods = self.cluster.pods.select(target.metadata.namespace, target.spec.selector.match_labels)
        resources = target.container.resources
        request = resources.cpu_request_millis() if resources else None
        counters = [(pod.name, pod.ready, process_cpu_seconds(pod.pid) if pod.ready else None) for pod in pods]
        readings, self._marks = cpu_readings(counters, self._marks, now, request, target.container.name)
        decision = hpa_sync(self.obj.to_spec(), self.history, target.spec.replicas, readings, now)
        self.history = decision.history
        self.decisions.append(decision)
        if decision.scaled:
            scaled = target.model_copy(deep=True)
            scaled.spec.replicas = decision.desired
            self.cluster.apply(scaled)
        return decision

    def _warnings(self) -> tuple[str, ...]:
        target = self._target()
        if target is None:
            return ()
        resources = target.container.resources
        warning = missing_cpu_request(
            f"HorizontalPodAutoscaler {self.obj.metadata.namespace}/{self.obj.metadata.name}",
            f"Deployment {target.metadata.name}", target.container.name,
            resources.cpu_request_millis() if resources else None)
        return (warning,) if warning else ()

    def status(self) -> ObjectStatus:
        spec, last = self.obj.spec, (self.decisions[-1] if self.decisions else None)
        utilization = "<unknown>" if last is None or last.utilization is None else f"{last.utilization}%"
        message = (f"cpu: {utilization}/{self.obj.target_utilization}%, replicas "
                   f"{last.desired if last else '-'} (min {spec.min_replicas}, max {spec.max_replicas})")
        able = last is not None and last.proposal is not None
        if last is not None and not able:
            message += f": {last.reason}"
        return ObjectStatus(
            kind="HorizontalPodAutoscaler", name=self.obj.metadata.name,
            namespace=self.obj.metadata.namespace, ready=able, message=message,
            detail={"currentReplicas": last.current if last else None,
                    "desiredReplicas": last.desired if last else None,
                    "currentCPUUtilizationPercentage": last.utilization if last else None,
                    "reason": last.reason if last else "", "syncs": len(self.decisions),
                    "conditions": [c.as_dict() for c in hpa_conditions(self.decisions)]},
            warnings=self._warnings())


register_controller("autoscaling/v2", "HorizontalPodAutoscaler", HorizontalPodAutoscalerController)
