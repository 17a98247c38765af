"""autoscaling/v2 HorizontalPodAutoscaler: the manifest, validated as the API server does.

What labkit honours: a Deployment as ``scaleTargetRef``, one ``Resource`` metric on ``cpu``
with a ``Utilization`` target (Knative's HPA class and most tutorials use exactly that; the
default when ``metrics`` is empty is cpu at 80 %), ``minReplicas`` (default 1), ``maxReplicas``
and ``behavior`` with the API server's defaulting (``GenerateHPAScaleUpRules``,
``GenerateHPAScaleDownRules``: a direction left out, or a field of it left out, takes the
default; the scale-down window defaults to the controller's 5 minutes). Memory, Pods,
Object, External and ContainerResource metrics are refused with a message saying so, not
ignored. `to_spec()` gives the pure `labkit.serving.hpa.HPASpec` the controller syncs with.

Followed: https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/horizontal-pod-autoscaler-v2/,
kubernetes/kubernetes ``pkg/apis/autoscaling/validation/validation.go``
(``validateHorizontalPodAutoscalerSpec``, ``validateScalingRules``, ``validateScalingPolicy``)
and ``pkg/apis/autoscaling/v2/defaults.go``. Own code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from labkit.manifests import FieldPath, KubeModel, KubeObject, register_kind
from labkit.serving.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Behavior,
    HPASpec,
    ScalingPolicy,
    ScalingRules,
)

__all__ = ["HorizontalPodAutoscaler"]

DEFAULT_CPU_UTILIZATION = 80
"""``autoscaling.DefaultCPUUtilization``: the metric of an HPA that names none."""


class CrossVersionObjectReference(KubeModel):
    api_version: str | None = None
    kind: str
    name: str


class MetricTarget(KubeModel):
    type: Literal["Utilization", "Value", "AverageValue"]
    average_utilization: int | None = None
    average_value: str | int | float | None = None
    value: str | int | float | None = None


class ResourceMetricSource(KubeModel):
    name: str
    target: MetricTarget


class MetricSpec(KubeModel):
    type: Literal["Resource", "Pods", "Object", "External", "ContainerResource"]
    resource: ResourceMetricSource | None = None
    pods: dict | None = None
    object: dict | None = None
    external: dict | None = None
    container_resource: dict | None = None


class HPAScalingPolicy(KubeModel):
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


class HPAScalingRules(KubeModel):
    stabilization_window_seconds: int | None = None
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = None

    def problems(self, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= 3600:
            yield path + ("stabilizationWindowSeconds",), \
                f"Invalid value: {window}: must be less than or equal to 3600 and greater than or equal to 0"
        if self.policies is not None and not self.policies:
            yield path + ("policies",), "Required value: must specify at least one Policy"
        for i, policy in enumerate(self.policies or []):
            at = path + ("policies", i)
            if policy.value <= 0:
                yield at + ("value",), f"Invalid value: {policy.value}: must be greater than zero"
            if not 0 < policy.period_seconds <= 1800:
                yield at + ("periodSeconds",), (f"Invalid value: {policy.period_seconds}: must be greater "
                                                "than zero and less than or equal to 1800")

    def complete(self, default: ScalingRules) -> ScalingRules:
        """``copyHPAScalingRules``: each field left out takes the default's."""
        return ScalingRules(
            default.stabilization_window_seconds if self.stabilization_window_seconds is None
            else self.stabilization_window_seconds,
            default.policies if self.policies is None
            else tuple(ScalingPolicy(p.type, p.value, p.period_seconds) for p in self.policies),
            self.select_policy or default.select_policy)


class HorizontalPodAutoscalerBehavior(KubeModel):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


class HorizontalPodAutoscalerSpec(KubeModel):
    scale_target_ref: CrossVersionObjectReference
    min_replicas: int = 1
    max_replicas: int
    metrics: list[MetricSpec] = Field(default_factory=list)
    behavior: HorizontalPodAutoscalerBehavior | None = None


class HorizontalPodAutoscaler(KubeObject):
    """autoscaling/v2 HorizontalPodAutoscaler of a Deployment, on CPU utilisation."""

    api_version: Literal["autoscaling/v2"] = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    spec: HorizontalPodAutoscalerSpec

    @property
    def target_utilization(self) -> int:
        for metric in self.spec.metrics:
            if metric.resource and metric.resource.target.average_utilization:
                return metric.resource.target.average_utilization
        return DEFAULT_CPU_UTILIZATION

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        spec = self.spec
        ref = spec.scale_target_ref
        if (ref.api_version, ref.kind) != ("apps/v1", "Deployment"):
            yield ("spec", "scaleTargetRef"), (
                f"labkit scales an apps/v1 Deployment, got {ref.api_version or '(no apiVersion)'} {ref.kind} "
                "(a Knative Service scales itself: use autoscaling.knative.dev/class: hpa.autoscaling.knative.dev)")
        if spec.min_replicas < 1:
            yield ("spec", "minReplicas"), (f"Invalid value: {spec.min_replicas}: must be greater than or "
                                            "equal to 1 (0 needs the HPAScaleToZero feature gate)")
        if spec.max_replicas < spec.min_replicas:
            yield ("spec", "maxReplicas"), (f"Invalid value: {spec.max_replicas}: must be greater than or "
                                            "equal to `minReplicas`")
        if len(spec.metrics) > 1:
            yield ("spec", "metrics"), "labkit's HPA takes one metric (cpu Utilization)"
        for i, metric in enumerate(spec.metrics):
            yield from _metric_problems(metric, ("spec", "metrics", i))
        if spec.behavior:
            for field, rules in (("scaleUp", spec.behavior.scale_up), ("scaleDown", spec.behavior.scale_down)):
                if rules is not None:
                    yield from rules.problems(("spec", "behavior", field))

    def to_spec(self) -> HPASpec:
        """The pure spec the controller syncs with, defaults filled in as the API server does."""
        behavior = None
        if self.spec.behavior is not None:
            up, down = self.spec.behavior.scale_up, self.spec.behavior.scale_down
            behavior = Behavior(scale_up=up.complete(DEFAULT_SCALE_UP) if up else DEFAULT_SCALE_UP,
                                scale_down=down.complete(DEFAULT_SCALE_DOWN) if down else DEFAULT_SCALE_DOWN)
        return HPASpec(target_utilization=self.target_utilization, min_replicas=self.spec.min_replicas,
                       max_replicas=self.spec.max_replicas, behavior=behavior)


def _metric_problems(metric: MetricSpec, path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if metric.type != "Resource" or metric.resource is None:
        yield path + ("type",), (f"labkit's HPA scales on a Resource metric (cpu Utilization), got "
                                 f"{metric.type!r}: labkit has no metrics API for it")
        return
    source = metric.resource
    if source.name != "cpu":
        yield path + ("resource", "name"), (f"labkit measures cpu only, got {source.name!r} "
                                            "(memory is not measured)")
    if source.target.type != "Utilization":
        yield path + ("resource", "target", "type"), (
            f"labkit's HPA takes a Utilization target, got {source.target.type!r}")
    elif source.target.average_utilization is None:
        yield path + ("resource", "target", "averageUtilization"), \
            "Required value: must set either a target raw value or a target utilization"
    elif source.target.average_utilization < 1:
        yield path + ("resource", "target", "averageUtilization"), \
            f"Invalid value: {source.target.average_utilization}: must be greater than 0"


register_kind("autoscaling/v2", "HorizontalPodAutoscaler", HorizontalPodAutoscaler)
