"""What Kubernetes' HPA says about itself: its status conditions, and a warning at apply time.

After each sync the HPA controller writes three conditions into ``status.conditions``
(``kubectl describe hpa`` shows them): *AbleToScale* (it could read and write the target's
scale), *ScalingActive* (its metric gave a replica count) and *ScalingLimited* (min/max or a
scaling rate held the count back). A sync sets some of them and the others keep what an
earlier sync wrote, so `hpa_conditions` folds every sync's decision in order. The reasons
and messages are Kubernetes' own.

A CPU HPA over containers without ``resources.requests.cpu`` is valid config: the API server
takes it, the HPA is created, and at every sync it fails with ``ScalingActive False
FailedGetResourceMetric: the HPA was unable to compute the replica count: missing request
for cpu in container C of Pod P`` (and a Warning event ``FailedGetResourceMetric``): it never
scales. Knative's HPA class creates such an HPA (named after the revision) and does not copy
its conditions into the PodAutoscaler, Revision or Service, which stay Ready
(knative/serving ``pkg/reconciler/autoscaling/hpa/hpa.go``, ``ReconcileKind``: only
``DesiredScale``/``ActualScale`` are propagated). `missing_cpu_request` says so when the
manifest is applied, as `labkit.mesh.analysis` does for Istio config (Kubernetes has no such
analyzer: this is labkit's early notice of what the HPA's status will say).

Followed: kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal.go``
(``reconcileAutoscaler``, ``computeReplicasForMetrics``, ``getUnableComputeReplicaCountCondition``,
``normalizeDesiredReplicas``, ``normalizeDesiredReplicasWithBehaviors``,
``stabilizeRecommendationWithBehaviors``, ``convertDesiredReplicasWithRules``,
``convertDesiredReplicasWithBehaviorRate``) and ``replica_calculator.go``
(``calculatePodRequests``). Pure. Own code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from labkit.serving.hpa_sync import HPADecision

__all__ = ["HPACondition", "hpa_conditions", "missing_cpu_request"]

_METRIC_NAME = "cpu resource utilization (percentage of request)"
"""``computeStatusForResourceMetric``'s metric name for a Utilization target."""

_LIMITS = {
    "TooManyReplicas": "the desired replica count is more than the maximum replica count",
    "TooFewReplicas": "the desired replica count is less than the minimum replica count",
    "ScaleUpLimit": "the desired replica count is increasing faster than the maximum scale rate",
    "ScaleDownLimit": "the desired replica count is decreasing faster than the maximum scale rate",
}
_STABILIZED = {
    "ScaleUpStabilized": "recent recommendations were lower than current one, applying the lowest "
                         "recent recommendation",
    "ScaleDownStabilized": "recent recommendations were higher than current one, applying the highest "
                           "recent recommendation",
}


@dataclass(frozen=True)
class HPACondition:
    """One ``HorizontalPodAutoscalerCondition`` (without its transition time)."""

    type: str
    status: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _sync_conditions(decision: HPADecision) -> list[HPACondition]:
    """The conditions one sync sets, in the order the controller sets them."""
    able = HPACondition("AbleToScale", "True", "SucceededGetScale",
                        "the HPA controller was able to get the target's current scale")
    rescaled = HPACondition("AbleToScale", "True", "SucceededRescale",
                            f"the HPA controller was able to update the target scale to {decision.desired}")
    if decision.reason == "ScalingDisabled":
        return [able, HPACondition("ScalingActive", "False", "ScalingDisabled",
                                   "scaling is disabled since the replica count of the target is zero")]
    if decision.proposal is None:
        if decision.scaled:  # outside [min, max]: moved back inside without reading a metric
            return [rescaled]
        return [able, HPACondition("ScalingActive", "False", "FailedGetResourceMetric",
                                   f"the HPA was unable to compute the replica count: {decision.reason}")]
    active = HPACondition("ScalingActive", "True", "ValidMetricFound",
                          f"the HPA was able to successfully calculate a replica count from {_METRIC_NAME}")
    if decision.stabilized is not None and decision.stabilized != decision.proposal:
        # Both of Kubernetes' paths: a lower recent recommendation held a rise back, a higher
        # one a fall (without spec.behavior only the latter can happen).
        why = "ScaleUpStabilized" if decision.stabilized < decision.proposal else "ScaleDownStabilized"
        stable = HPACondition("AbleToScale", "True", why, _STABILIZED[why])
    else:
        stable = HPACondition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
    if decision.reason in _LIMITS:
        limited = HPACondition("ScalingLimited", "True", decision.reason, _LIMITS[decision.reason])
    else:
        limited = HPACondition("ScalingLimited", "False", "DesiredWithinRange",
                               "the desired count is within the acceptable range")
    return [able, active, stable, limited] + ([rescaled] if decision.scaled else [])


def hpa_conditions(decisions: Iterable[HPADecision]) -> list[HPACondition]:
    """``status.conditions`` after these syncs (oldest first): each condition type as the
    latest sync that set it left it (``setCondition``), in the order the types first appeared."""
    conditions: dict[str, HPACondition] = {}
    for decision in decisions:
        for condition in _sync_conditions(decision):
            conditions[condition.type] = condition
    return list(conditions.values())


def missing_cpu_request(hpa: str, target: str, container: str, request_millis: int | None) -> str | None:
    """The apply-time warning for HPA `hpa` scaling `target` on CPU utilisation when its
    `container` sets no CPU request (`request_millis` None), else None."""
    if request_millis:
        return None
    return (f"{hpa}: container {container!r} of {target} has no resources.requests.cpu, so the HPA "
            "cannot compute CPU utilisation and will never scale it (its status: ScalingActive False, "
            "FailedGetResourceMetric: the HPA was unable to compute the replica count: missing request "
            f"for cpu in container {container} of Pod <pod>). Set resources.requests.cpu (e.g. 100m).")
