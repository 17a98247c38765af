"""One sync of Kubernetes' HorizontalPodAutoscaler: a pure function of (spec, history, pods, now).

Every sync period (15 s, ``--horizontal-pod-autoscaler-sync-period``) the HPA controller
(``reconcileAutoscaler``):

1. outside [minReplicas, maxReplicas] moves the target back inside, without metrics; a
   target at 0 replicas (with minReplicas > 0) is left alone: autoscaling is off for it;
2. asks the replica calculator (`labkit.serving.hpa.resource_replicas`) what the metric calls
   for; without an answer (no metric, no CPU request) it does nothing this sync;
3. *stabilises* the proposal: it keeps every recent proposal, and never goes above the lowest
   one of the scale-up window nor below the highest one of the scale-down window (defaults:
   0 s up, 300 s down, so a burst is answered at once and its end only after 5 minutes);
4. *rate-limits* it by the scaling policies: for each policy, the replicas at the start of
   its period (now minus the changes made within it) plus `value` pods or percent; the most
   permissive policy wins (``selectPolicy: Max``), or the least (``Min``), or none
   (``Disabled``: that direction never scales);
5. scales, and remembers the change (to rate-limit the next syncs).

An HPA without ``spec.behavior`` takes Kubernetes' older path instead: a scale-down window of
5 minutes (the highest recent proposal), no scale-up window, and a scale-up cap of
max(2 x current, 4) replicas per sync.

`hpa_sync` returns the decision and the new history (immutable); the live autoscaler
(`labkit.serving.autoscaler_loop`) and the simulator (`labkit.sim.autoscaling`) both call it
every sync, so for the same readings they make the same decisions. Times are the caller's
clock in seconds; a recommendation or scale event counts while it is *strictly* younger than
its window or period, as Go's ``timestamp.After(cutoff)``.

Followed: kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal.go``
(``reconcileAutoscaler``, ``normalizeDesiredReplicas``, ``stabilizeRecommendation``,
``normalizeDesiredReplicasWithBehaviors``, ``stabilizeRecommendationWithBehaviors``,
``convertDesiredReplicasWithBehaviorRate``, ``calculateScaleUpLimitWithScalingRules``,
``calculateScaleDownLimitWithBehaviors``, ``storeScaleEvent``, ``convertDesiredReplicasWithRules``)
and kubernetes.io "Horizontal Pod Autoscaling", "Configurable scaling behavior". Own code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from labkit.serving.hpa import (
    DOWNSCALE_STABILIZATION_SECONDS,
    HPASpec,
    PodReading,
    ScalingRules,
    resource_replicas,
)

__all__ = ["HPADecision", "HPAHistory", "Recommendation", "ScaleEvent", "hpa_sync"]


@dataclass(frozen=True)
class Recommendation:
    """A proposal of the calculator, before stabilisation, and when it was made."""

    time: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    """A scaling the HPA made: `change` pods (always > 0) added or removed at `time`.
    `outdated`: older than the direction's longest policy period when the last event was
    stored, so its slot is reused by the next one (it still counts while within a period)."""

    time: float
    change: int
    outdated: bool = False


@dataclass(frozen=True)
class HPAHistory:
    """What the controller remembers of one HPA between syncs."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True)
class HPADecision:
    """One sync: the replicas it found (`current`) and set (`desired`; equal: no scaling),
    the calculator's proposal and utilisation (None without metrics), and why it stopped
    where it did (a ScalingActive/ScalingLimited reason of Kubernetes' HPA status).
    `stabilized`: the proposal after the stabilisation window, before the limits (None
    without a proposal)."""

    time: float
    current: int
    desired: int
    proposal: int | None
    utilization: int | None
    reason: str
    history: HPAHistory
    stabilized: int | None = None

    @property
    def scaled(self) -> bool:
        return self.desired != self.current


def hpa_sync(spec: HPASpec, history: HPAHistory, current_replicas: int,
             pods: Sequence[PodReading], now: float) -> HPADecision:
    """One sync of the HPA `spec` over a target at `current_replicas` (its ``spec.replicas``)
    whose pods read `pods`, at `now`. Returns the decision, with the history to pass next."""
    if current_replicas < 0:
        raise ValueError(f"current_replicas must be >= 0, got {current_replicas}")
    proposal: int | None = None
    utilization: int | None = None
    stabilized: int | None = None
    if current_replicas == 0 and spec.min_replicas != 0:
        return HPADecision(now, 0, 0, None, None, "ScalingDisabled", history)
    if current_replicas > spec.max_replicas:
        desired, reason = spec.max_replicas, "TooManyReplicas"
    elif current_replicas < spec.min_replicas:
        desired, reason = spec.min_replicas, "TooFewReplicas"
    else:
        answer = resource_replicas(pods, spec.target_utilization, current_replicas, spec.tolerance)
        if answer.replicas is None:  # FailedGetResourceMetric: no scaling this sync
            return HPADecision(now, current_replicas, current_replicas, None, answer.utilization,
                               answer.reason, history)
        proposal, utilization = answer.replicas, answer.utilization
        if spec.behavior is None:
            desired, reason, history, stabilized = _normalize_legacy(spec, history, current_replicas,
                                                                     proposal, now)
        else:
            desired, reason, history, stabilized = _normalize_with_behavior(spec, history, current_replicas,
                                                                            proposal, now)
    if desired != current_replicas and spec.behavior is not None:
        history = _store_scale_event(spec, history, current_replicas, desired, now)
    return HPADecision(now, current_replicas, desired, proposal, utilization, reason, history, stabilized)


# --- without spec.behavior ----------------------------------------------------------------

def _normalize_legacy(spec: HPASpec, history: HPAHistory, current: int, proposal: int,
                      now: float) -> tuple[int, str, HPAHistory, int]:
    # stabilizeRecommendation: the highest proposal not older than the window (Before(cutoff)
    # is old, so one exactly at the cutoff still counts), the oldest slot reused.
    cutoff = now - DOWNSCALE_STABILIZATION_SECONDS
    stabilized = max([proposal] + [r.replicas for r in history.recommendations if r.time >= cutoff])
    old = [i for i, r in enumerate(history.recommendations) if r.time < cutoff]
    history = replace(history, recommendations=_put(history.recommendations, old,
                                                    Recommendation(now, proposal)))
    # convertDesiredReplicasWithRules: at most max(2 x current, 4), within min/max.
    scale_up_limit = max(2 * current, 4)
    most, why = ((scale_up_limit, "ScaleUpLimit") if spec.max_replicas > scale_up_limit
                 else (spec.max_replicas, "TooManyReplicas"))
    if stabilized < spec.min_replicas:
        return spec.min_replicas, "TooFewReplicas", history, stabilized
    if stabilized > most:
        return most, why, history, stabilized
    reason = "ScaleDownStabilized" if stabilized != proposal else "DesiredWithinRange"
    return stabilized, reason, history, stabilized


# --- with spec.behavior -------------------------------------------------------------------

def _normalize_with_behavior(spec: HPASpec, history: HPAHistory, current: int, proposal: int,
                             now: float) -> tuple[int, str, HPAHistory, int]:
    behavior = spec.behavior
    assert behavior is not None
    up, down = behavior.scale_up, behavior.scale_down
    up_cutoff = now - up.stabilization_window_seconds
    down_cutoff = now - down.stabilization_window_seconds
    # The lowest proposal of the up window caps a rise, the highest of the down window a fall.
    up_limit = min([proposal] + [r.replicas for r in history.recommendations if r.time > up_cutoff])
    down_limit = max([proposal] + [r.replicas for r in history.recommendations if r.time > down_cutoff])
    stabilized = min(max(current, up_limit), down_limit)
    old = [i for i, r in enumerate(history.recommendations) if r.time < up_cutoff and r.time < down_cutoff]
    history = replace(history, recommendations=_put(history.recommendations, old,
                                                    Recommendation(now, proposal)))
    reason = "DesiredWithinRange"
    if stabilized != proposal:
        reason = "ScaleUpStabilized" if proposal >= current else "ScaleDownStabilized"
    desired = stabilized
    if stabilized > current:
        limit = max(_scale_up_limit(current, history, up, now), current)
        most, why = (limit, "ScaleUpLimit") if spec.max_replicas > limit else (spec.max_replicas, "TooManyReplicas")
        if stabilized > most:
            desired, reason = most, why
    elif stabilized < current:
        limit = min(_scale_down_limit(current, history, down, now), current)
        least, why = (limit, "ScaleDownLimit") if spec.min_replicas < limit else (spec.min_replicas, "TooFewReplicas")
        if stabilized < least:
            desired, reason = least, why
    return desired, reason, history, stabilized


def _changed_within(events: Sequence[ScaleEvent], period: int, now: float) -> int:
    """``getReplicasChangePerPeriod``: pods changed by events strictly younger than `period`."""
    return sum(e.change for e in events if e.time > now - period)


def _period_start(current: int, history: HPAHistory, period: int, now: float) -> int:
    return (current - _changed_within(history.scale_up_events, period, now)
            + _changed_within(history.scale_down_events, period, now))


def _scale_up_limit(current: int, history: HPAHistory, rules: ScalingRules, now: float) -> int:
    """The most replicas the scale-up policies allow now (``calculateScaleUpLimitWithScalingRules``)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, history, policy.period_seconds, now)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:  # rounded up, or a small percentage of few pods would never add one
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def _scale_down_limit(current: int, history: HPAHistory, rules: ScalingRules, now: float) -> int:
    """The fewest replicas the scale-down policies allow now (``calculateScaleDownLimitWithBehaviors``)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, history, policy.period_seconds, now)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:  # Go's int32() truncates: 72 pods at 10 % may go to 64 (8 removed, "rounded up")
            proposals.append(int(start * (1 - policy.value / 100)))
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def _store_scale_event(spec: HPASpec, history: HPAHistory, before: int, after: int,
                       now: float) -> HPAHistory:
    """``storeScaleEvent``: mark the direction's events older than its longest policy period
    outdated, and put the new one in the last outdated slot (or append it)."""
    assert spec.behavior is not None
    up = after > before
    rules = spec.behavior.scale_up if up else spec.behavior.scale_down
    longest = max((p.period_seconds for p in rules.policies), default=0)
    events = history.scale_up_events if up else history.scale_down_events
    events = tuple(replace(e, outdated=True) if e.time < now - longest else e for e in events)
    old = [i for i, e in enumerate(events) if e.outdated]
    events = _put(events, old, ScaleEvent(now, abs(after - before)))
    if up:
        return replace(history, scale_up_events=events)
    return replace(history, scale_down_events=events)


def _put(items: tuple, old: list[int], item: object) -> tuple:
    """Put `item` in the last old slot, as the controller reuses one, or append it."""
    if old:
        return items[:old[-1]] + (item,) + items[old[-1] + 1:]
    return items + (item,)
