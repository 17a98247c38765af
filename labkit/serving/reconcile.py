"""One step of Knative's PodAutoscaler reconciler, and the decider tick that feeds it.

Knative splits the work in two loops, and so does labkit:

- every 2 s the *decider* turns the metric windows into a desired pod count and the excess
  burst capacity (`decide`, around `labkit.serving.kpa.Autoscaler.scale`); a request for a
  revision the decider wants at zero *pokes* it to decide at once (`should_poke`);
- the *PA reconciler* (`reconcile`) runs after each decision, whenever the revision's pods
  change (its ServerlessService's endpoints), and when it asked to be called again
  (``recheck_after``, Knative's ``enqueueAfter``): it turns the desired count into the
  Deployment's replicas (`labkit.serving.kpa_scaler.decide_replicas`), marks the PA Active,
  Activating or Inactive, and puts the activator in the request path (Proxy) or takes it out
  (Serve).

`reconcile` is a pure function of the settings, the PA's status, the decider's output, the
pod counts and the time: the live `labkit.serving.autoscaler_loop.AutoscalerLoop` (wall clock)
and the simulator `labkit.sim.autoscaling` (simulated clock) both call it and only carry out
what it returns (set the replicas, arm a timer), so they make the same decisions in the same
order for the same inputs.

Followed: knative/serving ``pkg/reconciler/autoscaling/kpa/kpa.go`` (``ReconcileKind``: scale,
SKS mode, scale target initialised, ``computeActiveCondition``), ``kpa/scaler.go`` (the
re-enqueues) and ``pkg/autoscaler/scaling/multiscaler.go`` (tick, ``Poke``), per
/work/shared/reference/knative-kpa.md (commit 98e5ef90aa7033797aa0a61ef97f3ff7e49a3944).
Own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from labkit.serving.autoscaler_config import RevisionAutoscaling
from labkit.serving.kpa import Autoscaler
from labkit.serving.kpa_scaler import (
    SCALE_UNKNOWN,
    Activity,
    PodAutoscalerState,
    decide_replicas,
    min_ready_pods,
    next_activity,
    sks_mode,
)
from labkit.serving.metrics_window import NoData, RevisionMetrics

__all__ = [
    "Decision",
    "PodAutoscalerStatus",
    "ReconcileRecord",
    "Reconciled",
    "decide",
    "initial_status",
    "reconcile",
    "record",
    "should_poke",
]


class Decision(NamedTuple):
    """The decider's state after a tick: desired pods and EBC (the previous ones when the tick
    had no valid result), and the window averages it saw (None without data)."""

    desired: int
    excess_burst_capacity: int
    stable: float | None
    panic: float | None


def decide(decider: Autoscaler, metrics: RevisionMetrics, now: float, ready: int,
           desired: int, excess_burst_capacity: int) -> Decision:
    """One decider tick at `now` with `ready` pods; `desired`/`excess_burst_capacity` are the
    previous decision, kept when this one is invalid (no data), as Knative's multiscaler does."""
    stable: float | None
    panic: float | None
    try:
        stable, panic = metrics.stable_and_panic(now, decider.spec.scaling_metric)
    except NoData:
        stable = panic = None
    result = decider.scale(now, ready, stable, panic)
    if result.scale_valid:
        desired, excess_burst_capacity = result.desired_pod_count, result.excess_burst_capacity
    return Decision(desired, excess_burst_capacity, stable, panic)


def should_poke(desired: int, concurrency: float) -> bool:
    """Whether an activator stat makes the decider run now instead of at its next tick:
    only for a revision it wants at zero (not -1, no decision yet) that has traffic again."""
    return desired == 0 and concurrency > 0


@dataclass(frozen=True)
class PodAutoscalerStatus:
    """What the PA reconciler keeps between calls (the PA's and its SKS's status).

    `activity_since` and `mode_since` are when the Active condition and the SKS mode last
    changed (clock seconds); `want` the scale reported last (-1: none yet).
    """

    activity: Activity
    activity_since: float
    scale_target_initialized: bool
    mode: str = "Proxy"
    mode_since: float = 0.0
    want: int = SCALE_UNKNOWN


def initial_status(settings: RevisionAutoscaling, ready: int, now: float) -> PodAutoscalerStatus:
    """A new PA: Active if its revision already has its initial pods ready, else Activating;
    the SKS starts in Proxy (the activator in the path), as Knative creates it."""
    if ready > 0 and ready >= min_ready_pods(settings, False):
        return PodAutoscalerStatus(Activity.ACTIVE, now, True, "Proxy", now)
    return PodAutoscalerStatus(Activity.ACTIVATING, now, False, "Proxy", now)


class Reconciled(NamedTuple):
    """What one reconcile decided: the new status; `replicas` to set the Deployment to (None:
    leave it); `recheck_after` seconds until the reconciler wants to run again (None: only on
    the next change); `ready` the pods ready once the replicas are set."""

    status: PodAutoscalerStatus
    replicas: int | None
    recheck_after: float | None
    ready: int


class ReconcileRecord(NamedTuple):
    """One reconcile, as the live loop and the simulator log it (for plots and for comparing
    the two): the decider's `desired` it was given, the `want` it reported, the `replicas` it
    set (-1: left alone), the `ready` pods after it, the Active condition and the SKS mode."""

    time: float
    desired: int
    want: int
    replicas: int
    ready: int
    activity: str
    mode: str


def reconcile(settings: RevisionAutoscaling, status: PodAutoscalerStatus, desired: int,
              excess_burst_capacity: int, ready: int, replicas: int,
              now: float) -> Reconciled:
    """One PA reconcile at `now`: `desired` and `excess_burst_capacity` from the decider,
    `ready` pods and the Deployment's `replicas` before it."""
    state = PodAutoscalerState(
        activity=status.activity,
        activity_for=now - status.activity_since,
        scale_target_initialized=status.scale_target_initialized,
        activator_in_path_for=now - status.mode_since if status.mode == "Proxy" else 0.0,
    )
    decision = decide_replicas(desired, settings, state, replicas)
    if decision.apply:
        # Scaling down removes pods that are not ready first, then the newest ready ones.
        ready = min(ready, decision.replicas)
    want = decision.replicas
    # Knative marks the scale target initialised once the initial scale was ready, then
    # judges the Active condition against the threshold that applies from then on.
    initialized = (status.scale_target_initialized
                   or ready >= min_ready_pods(settings, False))
    activity = next_activity(want, ready, min_ready_pods(settings, initialized), status.activity)
    mode = sks_mode(want, excess_burst_capacity, ready)
    new = PodAutoscalerStatus(
        activity=activity,
        activity_since=status.activity_since if activity is status.activity else now,
        scale_target_initialized=initialized,
        mode=mode,
        mode_since=status.mode_since if mode == status.mode else now,
        want=want,
    )
    return Reconciled(new, decision.replicas if decision.apply else None,
                      decision.recheck_after, ready)


def record(now: float, desired: int, result: Reconciled) -> ReconcileRecord:
    """The log line of one reconcile at `now`, given the decider's `desired`."""
    status = result.status
    return ReconcileRecord(now, desired, status.want,
                           -1 if result.replicas is None else result.replicas, result.ready,
                           status.activity.value, status.mode)
