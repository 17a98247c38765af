"""Kubernetes' HorizontalPodAutoscaler (autoscaling/v2): its spec and its replica calculator.

With the class ``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev`` Knative hands a
revision to a Kubernetes HPA scaling on CPU utilisation instead of request concurrency: no
panic mode, no activator in the path once a pod is ready, no scale to zero. This module holds
what the HPA is given and the first half of one sync, the *replica calculator*: from each
pod's CPU use against its CPU request to a proposed replica count. The second half (the
stabilisation windows and scaling policies of ``spec.behavior``) is `labkit.serving.hpa_sync`.

The calculator, as Kubernetes' ``GetResourceReplicas`` does it:

- utilisation = sum(usage) * 100 // sum(requests) over the pods that have a metric, an
  *integer* percentage (so 100m of 300m is 33 %, not 33.3 %); ratio = utilisation / target;
- within the tolerance (|1 - ratio| <= 0.1) nothing changes; otherwise
  ``ceil(ratio * ready pods)``;
- pods that are not ready are left out; on a scale-up they count as using 0 % (so a burst
  of starting pods does not double the count again); ready pods without a metric yet
  count as 0 % on a scale-up and as max(100 %, target) of their request on a scale-down;
  if these fill-ins flip the direction or land within the tolerance, nothing changes.

Simplified on purpose: the 5-minute CPU initialisation period and the 30-s readiness delay
(``groupPods``) are reduced to "a pod that is not ready is unready, a ready pod measured for
less than a sync period has no metric yet" (`PodReading`); one metric (CPU), as Knative's
HPA class creates it.

Followed: kubernetes/kubernetes ``pkg/controller/podautoscaler/replica_calculator.go``
(``GetResourceReplicas``, ``groupPods``), ``metrics/utilization.go``
(``GetResourceUtilizationRatio``), ``pkg/apis/autoscaling/v2/defaults.go`` (the default
behaviour), and kubernetes.io "Horizontal Pod Autoscaling" (algorithm details, configurable
scaling behavior); knative/serving ``pkg/reconciler/autoscaling/hpa/resources/hpa.go``
(``MakeHPA``: min/max from the scale bounds, the target rounded up, the ``window`` annotation
as both stabilisation windows). Own code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from labkit.serving.autoscaler_config import WINDOW, RevisionAutoscaling, parse_go_duration
from labkit.serving.constants import USER_CONTAINER

__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DOWNSCALE_STABILIZATION_SECONDS",
    "HPA_TOLERANCE",
    "MAX_REPLICAS_UNBOUNDED",
    "Behavior",
    "HPASpec",
    "PodReading",
    "ReplicaProposal",
    "ScalingPolicy",
    "ScalingRules",
    "cpu_readings",
    "knative_hpa_spec",
    "resource_replicas",
]

HPA_TOLERANCE = 0.1
"""Kubernetes' default ``--horizontal-pod-autoscaler-tolerance``."""

DOWNSCALE_STABILIZATION_SECONDS = 300
"""kube-controller-manager ``--horizontal-pod-autoscaler-downscale-stabilization`` (5 min): the
scale-down window when ``behavior`` is absent or leaves it unset."""

MAX_REPLICAS_UNBOUNDED = 2**31 - 1
"""Knative's maxReplicas for a revision without max-scale (``math.MaxInt32``)."""

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    """One ``HPAScalingPolicy``: change by at most `value` pods (or percent) per `period_seconds`."""

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"policy type must be Pods or Percent, got {self.type!r}")
        if self.value < 1:
            raise ValueError(f"policy value must be > 0, got {self.value}")
        if not 0 < self.period_seconds <= 1800:
            raise ValueError(f"periodSeconds must be in (0, 1800], got {self.period_seconds}")


@dataclass(frozen=True)
class ScalingRules:
    """One direction of ``spec.behavior`` (``HPAScalingRules``), defaults filled in."""

    stabilization_window_seconds: int
    policies: tuple[ScalingPolicy, ...]
    select_policy: SelectPolicy = "Max"

    def __post_init__(self) -> None:
        # The API server's rules (pkg/apis/autoscaling/validation: validateScalingRules).
        if not 0 <= self.stabilization_window_seconds <= 3600:
            raise ValueError("stabilizationWindowSeconds must be in [0, 3600], got "
                             f"{self.stabilization_window_seconds}")
        if not self.policies:
            raise ValueError("policies: must specify at least one Policy")
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ValueError(f"selectPolicy must be Max, Min or Disabled, got {self.select_policy!r}")


DEFAULT_SCALE_UP = ScalingRules(0, (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)))
"""``GenerateHPAScaleUpRules``: no stabilisation; add 4 pods or double, whichever is more, per 15 s."""

DEFAULT_SCALE_DOWN = ScalingRules(DOWNSCALE_STABILIZATION_SECONDS, (ScalingPolicy("Percent", 100, 15),))
"""``GenerateHPAScaleDownRules`` with the controller's 5-minute window: remove any number per 15 s."""


@dataclass(frozen=True)
class Behavior:
    """``spec.behavior`` after the API server's defaulting (each direction complete)."""

    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass(frozen=True)
class HPASpec:
    """What one HPA scales by: a CPU utilisation target (percent of the pods' CPU request).

    `behavior` None is an HPA without ``spec.behavior``: Kubernetes then takes its older path
    (a 5-minute scale-down window, scale-up capped at max(2 x current, 4) per sync).
    """

    target_utilization: int = 80
    min_replicas: int = 1
    max_replicas: int = MAX_REPLICAS_UNBOUNDED
    behavior: Behavior | None = None
    tolerance: float = HPA_TOLERANCE

    def __post_init__(self) -> None:
        if self.target_utilization < 1:
            raise ValueError(f"target averageUtilization must be >= 1 percent, got {self.target_utilization}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= minReplicas <= maxReplicas, got {self.min_replicas} and {self.max_replicas}")


@dataclass(frozen=True)
class PodReading:
    """One pod of the scale target at a sync: ready or not, its CPU use over the last metric
    window (millicores; None: no metric yet) and its `container`'s CPU request (millicores;
    None: unset)."""

    name: str
    ready: bool
    usage_millis: int | None
    request_millis: int | None
    container: str = USER_CONTAINER


@dataclass(frozen=True)
class ReplicaProposal:
    """The calculator's answer: `replicas` (None when no count can be computed), the average
    `utilization` (integer percent of request, before fill-ins) and, without a count, why."""

    replicas: int | None
    utilization: int | None = None
    reason: str = ""
    pods: Mapping[str, str] = field(default_factory=dict)
    """Each pod's group: ready, unready or missing (a metric)."""


CpuMarks = Mapping[str, tuple[float, float]]
"""Per pod: its CPU seconds and the time they were read, at the last sync."""


def cpu_readings(pods: Sequence[tuple[str, bool, float | None]], marks: CpuMarks, now: float,
                 request_millis: int | None, container: str = USER_CONTAINER,
                 ) -> tuple[list[PodReading], dict[str, tuple[float, float]]]:
    """Turn (name, ready, CPU seconds used so far) per pod into this sync's readings.

    A pod's usage is its CPU time since the previous sync over the time between them (the
    metrics pipeline's window, about one sync period as metrics-server's resolution). A ready
    pod first seen at this sync, or not ready at the last one, has no metric yet. Returns the
    readings and the marks to pass next time. Live CPU seconds and simulated ones go through
    this same step. `container` names the pods' container (Knative's ``user-container`` by
    default), for the calculator's error when it has no CPU request.
    """
    readings: list[PodReading] = []
    new_marks: dict[str, tuple[float, float]] = {}
    for name, ready, cpu in pods:
        usage = None
        if ready and cpu is not None:
            new_marks[name] = (cpu, now)
            if name in marks and now > marks[name][1]:
                before, then = marks[name]
                usage = int(max(0.0, cpu - before) / (now - then) * 1000)
        readings.append(PodReading(name, ready, usage, request_millis, container))
    return readings, new_marks


def _utilization(usage: Mapping[str, int], requests: Mapping[str, int]) -> int:
    """``GetResourceUtilizationRatio``'s current utilisation: integer division, as in Go."""
    return sum(usage.values()) * 100 // sum(requests[name] for name in usage)


def resource_replicas(pods: Sequence[PodReading], target_utilization: int, current_replicas: int,
                      tolerance: float = HPA_TOLERANCE) -> ReplicaProposal:
    """Kubernetes' ``GetResourceReplicas`` for CPU: the replicas `pods` call for.

    `current_replicas` is the target's ``spec.replicas`` (returned when within tolerance).
    """
    if not pods:
        return ReplicaProposal(None, reason="no pods returned by selector while calculating replica count")
    missing_request = [p for p in pods if not p.request_millis]
    if missing_request:
        # calculatePodRequests' error, word for word (replica_calculator.go).
        first = missing_request[0]
        return ReplicaProposal(None, reason=f"missing request for cpu in container {first.container} "
                                            f"of Pod {first.name}")
    requests = {p.name: int(p.request_millis or 0) for p in pods}
    groups: dict[str, str] = {}
    usage: dict[str, int] = {}
    for pod in pods:
        if not pod.ready:
            groups[pod.name] = "unready"
        elif pod.usage_millis is None:
            groups[pod.name] = "missing"
        else:
            groups[pod.name] = "ready"
            usage[pod.name] = pod.usage_millis
    if not usage:
        return ReplicaProposal(None, reason="did not receive metrics for targeted pods (pods might be unready)",
                               pods=groups)
    utilization = _utilization(usage, requests)
    ratio = utilization / target_utilization
    unready = [n for n, g in groups.items() if g == "unready"]
    missing = [n for n, g in groups.items() if g == "missing"]
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return ReplicaProposal(current_replicas, utilization, pods=groups)
        return ReplicaProposal(math.ceil(ratio * len(usage)), utilization, pods=groups)
    filled = dict(usage)
    if missing and ratio < 1.0:
        # On a scale-down a pod without a metric counts as busy (100 % or the target, if higher).
        fallback = max(100, target_utilization)
        filled.update({name: requests[name] * fallback // 100 for name in missing})
    elif missing and ratio > 1.0:
        filled.update(dict.fromkeys(missing, 0))  # on a scale-up, as idle
    if scale_up_with_unready:
        filled.update(dict.fromkeys(unready, 0))
    new_ratio = _utilization(filled, requests) / target_utilization
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return ReplicaProposal(current_replicas, utilization, pods=groups)  # too small, or direction flips
    replicas = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and replicas > current_replicas) or (new_ratio > 1.0 and replicas < current_replicas):
        return ReplicaProposal(current_replicas, utilization, pods=groups)
    return ReplicaProposal(replicas, utilization, pods=groups)


def knative_hpa_spec(settings: RevisionAutoscaling, annotations: Mapping[str, str]) -> HPASpec:
    """The HPA Knative creates for a revision of the HPA class (``MakeHPA``).

    minReplicas: min-scale if above 0, else Kubernetes' default 1 (no scale to zero);
    maxReplicas: max-scale, unbounded at 0; target: the ``target`` annotation rounded up
    (default 80 %); ``autoscaling.knative.dev/window``, when set, becomes both stabilisation
    windows (the policies keep their defaults); otherwise no ``behavior`` at all.
    """
    if settings.metric != "cpu":
        raise ValueError(f"autoscaling.knative.dev/metric: {settings.metric!r}: labkit's HPA class "
                         "scales on cpu only")
    behavior = None
    window = annotations.get(WINDOW)
    if window is not None:
        seconds = int(parse_go_duration(window))
        behavior = Behavior(
            scale_up=ScalingRules(seconds, DEFAULT_SCALE_UP.policies),
            scale_down=ScalingRules(seconds, DEFAULT_SCALE_DOWN.policies))
    return HPASpec(
        target_utilization=math.ceil(settings.target),
        min_replicas=max(settings.min_scale, 1),
        max_replicas=settings.max_scale or MAX_REPLICAS_UNBOUNDED,
        behavior=behavior,
    )
