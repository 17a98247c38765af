"""The HPA class (``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev``).

With this class Knative hands the revision to a Kubernetes HorizontalPodAutoscaler scaling on
CPU (or memory) utilisation instead of request concurrency: no panic mode, no activator, no
scale to zero. Kubernetes' rule is ``desired = ceil(current_replicas * current / target)``
utilisation, left unchanged while the ratio is within a tolerance (10 %) of 1, then clamped
to the min/max replicas. (Kubernetes also smooths scale-downs over a 5-minute stabilisation
window; the lab does not model it.)

Followed: Kubernetes ``pkg/controller/podautoscaler/replica_calculator.go`` (the documented
algorithm at kubernetes.io, "Horizontal Pod Autoscaling", algorithm details). Own code.
"""

from __future__ import annotations

import math

__all__ = ["HPA_TOLERANCE", "hpa_desired_replicas"]

HPA_TOLERANCE = 0.1
"""Kubernetes' default ``--horizontal-pod-autoscaler-tolerance``."""


def hpa_desired_replicas(
    current_replicas: int,
    current_utilization: float,
    target_utilization: float,
    min_replicas: int = 1,
    max_replicas: int = 0,
    tolerance: float = HPA_TOLERANCE,
) -> int:
    """The replica count Kubernetes' HPA wants for a utilisation (both in percent of request).

    `max_replicas` 0 means no upper bound (Knative's max-scale 0).
    """
    if current_replicas < 0:
        raise ValueError(f"current_replicas must be >= 0, got {current_replicas!r}")
    if not target_utilization > 0:
        raise ValueError(f"target_utilization must be > 0 percent, got {target_utilization!r}")
    if not current_utilization >= 0:
        raise ValueError(f"current_utilization must be >= 0 percent, got {current_utilization!r}")
    ratio = current_utilization / target_utilization
    if current_replicas == 0 or abs(1.0 - ratio) <= tolerance:
        desired = current_replicas
    else:
        desired = math.ceil(ratio * current_replicas)
    desired = max(desired, min_replicas)
    return min(desired, max_replicas) if max_replicas else desired
