"""From the decider's wish to replicas: the KPA reconciler's bounds and scale-to-zero rules.

The decider (`labkit.serving.kpa`) says how many pods the metrics call for; Knative's
PodAutoscaler reconciler then decides what the Deployment really gets:

- min/max-scale bounds (min-scale no longer holds an unreachable revision), and the initial
  scale as a floor until the revision has reached it once;
- scale-to-zero gating: a revision that was *active* is first held at 1 pod until it has been
  active for a stable window, then marked *inactive* (the activator takes over the route), and
  its last pod goes only after the grace period (or the pod retention period, if longer);
- the activator in or out of the path (SKS mode) and the PA's Active condition.

Pure functions of the PA's state and durations in seconds: the caller keeps the state, the
clock and the timers (``recheck_after`` says when Knative would reconcile again).

Followed: knative/serving ``pkg/reconciler/autoscaling/kpa/{scaler.go,kpa.go}`` and
``scaler_test.go`` (``TestScaler``, ``TestDisableScaleToZero``),
``pkg/apis/autoscaling/v1alpha1/pa_lifecycle.go``, per the reference note
/work/shared/reference/knative-kpa.md (commit 98e5ef90aa7033797aa0a61ef97f3ff7e49a3944).
Own code, no Knative text copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from labkit.serving.autoscaler_config import ACTIVATION_TIMEOUT_BUFFER, RevisionAutoscaling

__all__ = [
    "SCALE_UNKNOWN",
    "Activity",
    "PodAutoscalerState",
    "ReplicaDecision",
    "decide_replicas",
    "min_ready_pods",
    "next_activity",
    "sks_mode",
]

SCALE_UNKNOWN = -1
"""Knative's "no decision yet" scale: leave the Deployment alone."""

PROXY_RECHECK_SECONDS = 3.0
"""Knative re-checks an idle PA this soon when the activator already serves it."""


class Activity(Enum):
    """The PA's Active condition: Unknown while activating, True when active, False when idle."""

    ACTIVATING = "Unknown"
    ACTIVE = "True"
    INACTIVE = "False"


@dataclass(frozen=True)
class PodAutoscalerState:
    """What the reconciler knows about a revision's PA when it scales.

    `activity_for` is how long the PA has been in its current `activity` (seconds since the
    condition last changed); `activator_in_path_for` how long the activator has been serving
    the revision (the SKS in Proxy mode); `activator_probe_ok` whether a probe of the revision's
    public address was answered by the activator.
    """

    activity: Activity
    activity_for: float = 0.0
    scale_target_initialized: bool = True
    activator_in_path_for: float = 0.0
    activator_probe_ok: bool = True


@dataclass(frozen=True)
class ReplicaDecision:
    """The reconciler's outcome.

    `replicas` is the scale Knative reports (``SCALE_UNKNOWN`` = no decision); `apply` says
    whether the Deployment is set to it now; `recheck_after` when to reconcile again (None:
    on the next decider change); `probe_activator` that a background probe must confirm the
    activator is in the path before the last pod may go.
    """

    replicas: int
    apply: bool
    recheck_after: float | None = None
    probe_activator: bool = False


def _bounds(settings: RevisionAutoscaling, state: PodAutoscalerState) -> tuple[int, int]:
    low, high = settings.min_scale, settings.max_scale
    if settings.initial_scale > 1 and not state.scale_target_initialized and settings.reachable:
        low = max(low, settings.initial_scale)
    return low, high


def _scale_to_zero(settings: RevisionAutoscaling, state: PodAutoscalerState) -> ReplicaDecision:
    config = settings.config
    if not config.enable_scale_to_zero:
        return ReplicaDecision(1, True)
    if state.activity is Activity.ACTIVATING:
        timeout = settings.progress_deadline + ACTIVATION_TIMEOUT_BUFFER
        if state.activity_for > timeout:
            return ReplicaDecision(0, True)  # it will never come up: stop trying
        return ReplicaDecision(SCALE_UNKNOWN, False, recheck_after=timeout)
    if state.activity is Activity.ACTIVE:
        if state.activity_for >= settings.stable_window:
            # Report 0 without applying it: the PA becomes inactive and the activator takes
            # over the route before the last pod goes.
            recheck = PROXY_RECHECK_SECONDS if state.activator_in_path_for > 0 else None
            return ReplicaDecision(0, False, recheck_after=recheck)
        return ReplicaDecision(1, True, recheck_after=settings.stable_window - state.activity_for)
    # Inactive: the last pod may go once the activator surely receives the traffic.
    if settings.target_burst_capacity != -1 and not state.activator_probe_ok:
        return ReplicaDecision(0, False, probe_activator=True)
    retention = settings.scale_to_zero_pod_retention
    grace = config.scale_to_zero_grace_period
    if state.activity_for >= max(grace, retention):
        return ReplicaDecision(0, True)
    if retention > 0 and state.activity_for < retention:
        return ReplicaDecision(0, False, recheck_after=retention - state.activity_for)
    remaining = grace - state.activator_in_path_for
    if remaining <= 0:
        return ReplicaDecision(0, True)  # the activator has served it for a whole grace period
    return ReplicaDecision(0, False, recheck_after=remaining)


def decide_replicas(
    desired: int,
    settings: RevisionAutoscaling,
    state: PodAutoscalerState,
    current_replicas: int | None = None,
) -> ReplicaDecision:
    """Turn the decider's `desired` pod count into the Deployment's replicas.

    `current_replicas` is the Deployment's present count: a decision equal to it is not
    applied again (Knative patches only on change).
    """
    if desired < 0 and state.activity is not Activity.ACTIVATING:
        return ReplicaDecision(desired, False)  # no metrics yet
    low, high = _bounds(settings, state)
    if desired < low:
        desired = low
    elif high and desired > high:
        desired = high
    decision = ReplicaDecision(desired, True) if desired != 0 else _scale_to_zero(settings, state)
    if decision.apply and decision.replicas == current_replicas:
        return ReplicaDecision(decision.replicas, False, decision.recheck_after)
    return decision


def min_ready_pods(settings: RevisionAutoscaling, scale_target_initialized: bool) -> int:
    """Ready pods needed to call the revision active: min-scale, and initial scale at first."""
    if not scale_target_initialized:
        return max(settings.min_scale, settings.initial_scale)
    return max(settings.min_scale, 1)


def next_activity(want: int, ready: int, min_ready: int, current: Activity) -> Activity:
    """The PA's Active condition after a reconcile (Knative's ``computeActiveCondition``).

    `want` is the reported scale (-1 before any metric), `ready` the ready pods.
    """
    if want == 0 or min_ready == 0:
        return Activity.INACTIVE
    if ready < min_ready:
        if want > 0 or current is not Activity.INACTIVE:
            return Activity.ACTIVATING
        return Activity.INACTIVE
    if want > 0 or current is not Activity.INACTIVE:
        return Activity.ACTIVE
    return current


def sks_mode(want: int, excess_burst_capacity: int, ready_pods: int,
             activator_ready: bool = True) -> str:
    """``"Serve"`` (requests go straight to the pods) or ``"Proxy"`` (through the activator).

    Serve only when pods are wanted and the revision has spare burst capacity (EBC >= 0);
    never without a ready pod to serve, and always when no activator is ready to proxy.
    """
    if ready_pods == 0:
        return "Proxy"
    if not activator_ready or (want > 0 and excess_burst_capacity >= 0):
        return "Serve"
    return "Proxy"
