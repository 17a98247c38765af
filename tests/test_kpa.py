"""The KPA decider and reconciler against the cases of Knative's own unit tests.

Ported (own code, same inputs and expected outputs) from knative/serving:
- ``pkg/autoscaler/scaling/autoscaler_test.go`` (OpenTelemetry-era version with
  ``TestAutoscalerScaleDownDelayNotReachable``): every test that states a decision;
- ``pkg/reconciler/autoscaling/kpa/scaler_test.go``: ``TestScaler`` and
  ``TestDisableScaleToZero``;
plus the worked example of /work/shared/reference/knative-kpa.md (commit
98e5ef90aa7033797aa0a61ef97f3ff7e49a3944). Kubernetes' HPA rule: tests/test_hpa.py.

Knative's tests build their decider with a 75 % utilisation (total = target / 0.75), panic at
200 %, rates x10, activator capacity 150 and a 60 s window; `knative_spec` does the same.
Knative accepts the excess burst capacity within +-1; here it is exact (worked out with exact
fractions), since Python floats are the same IEEE doubles as Go's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from labkit.serving.autoscaler_config import (
    AutoscalerConfig,
    RevisionAutoscaling,
    panic_window_seconds,
)
from labkit.serving.kpa import (
    INVALID_SCALE_RESULT,
    Autoscaler,
    DeciderSpec,
    ScaleResult,
    initial_excess_burst_capacity,
    num_activators,
)
from labkit.serving.kpa_scaler import (
    SCALE_UNKNOWN,
    Activity,
    PodAutoscalerState,
    ReplicaDecision,
    decide_replicas,
    min_ready_pods,
    next_activity,
    sks_mode,
)
from labkit.serving.metrics_window import RevisionMetrics


def knative_spec(target: float, tbc: float, metric: str = "concurrency", **changes) -> DeciderSpec:
    """The decider spec of Knative's ``newTestAutoscaler``."""
    spec = DeciderSpec(
        scaling_metric=metric,
        target_value=target,
        total_value=target / 0.75,
        target_burst_capacity=tbc,
        panic_threshold=2.0,
        max_scale_up_rate=10.0,
        max_scale_down_rate=10.0,
        activator_capacity=150.0,
        stable_window=60.0,
        reachable=True,
    )
    return replace(spec, **changes)


def decide(a: Autoscaler, now: float, pods: int, stable: float, panic: float) -> tuple[int, int]:
    result = a.scale(now, pods, stable, panic)
    assert result.scale_valid
    return result.desired_pod_count, result.excess_burst_capacity


# --- TestAutoscalerScale: one decision each ------------------------------------------------

# label, target, tbc, (stable, panic), ready pods, panic state (seconds ago, max pods) or None,
# spec changes, wanted pods, wanted EBC
SINGLE_DECISIONS = [
    ("no data at zero", 10, 100, (0, 0), 1, None, {}, 0, -87),
    ("unlimited TBC", 181, -1, (21, 26), 1, None, {}, 1, -1),
    ("zero TBC", 10, 0, (50, 49), 1, None, {}, 5, 0),
    ("stable no change", 10, 100, (50, 50), 1, None, {}, 5, -137),
    ("panic, stable larger than panic", 1, 100, (50, 30), 5, (5, 5), {}, 50, -124),
    ("panic, stable less than panic", 1, 100, (20, 30), 5, (5, 5), {}, 30, -124),
    ("stable no change, already scaled", 10, 100, (50, 50), 5, None, {}, 5, -84),
    ("small scale-up rate still adds a pod", 1, 1982, (3, 3.1), 2, None,
     {"max_scale_up_rate": 1.1}, 3, -1983),
    ("small scale-down rate", 10, 1982, (1, 1), 100, None, {"max_scale_down_rate": 1.1}, 90, -650),
    ("unreachable drops at once", 10, 1982, (1, 1), 100, None,
     {"max_scale_down_rate": 1.1, "reachable": False}, 1, -650),
    ("panic doubles pod count", 10, 84, (50, 100), 1, None, {}, 10, -171),
    ("metrics test, concurrency", 10, 100, (50, 50), 1, None, {}, 5, -137),
    ("metrics test, rps", 10, 100, (100, 99), 1, None, {"scaling_metric": "rps"}, 10, -186),
    ("no endpoints counts as one pod", 10, 81, (1000, 888), 0, None, {}, 10, -969),
]


@pytest.mark.parametrize(
    "label,target,tbc,observed,pods,panic,changes,want,want_ebc",
    SINGLE_DECISIONS,
    ids=[row[0] for row in SINGLE_DECISIONS],
)
def test_single_decision(label, target, tbc, observed, pods, panic, changes, want, want_ebc):
    a = Autoscaler(knative_spec(target, tbc, **changes), 1, now=1000.0)
    if panic is not None:
        ago, max_pods = panic
        a.panic_time = 1000.0 - ago
        a.max_panic_pods = max_pods
    assert decide(a, 1000.0, pods, *observed) == (want, want_ebc)


# --- multi-step scenarios ---------------------------------------------------------------------

# Each step: (time, ready pods, stable, panic, wanted pods, wanted EBC or None, panicking or None)
# name -> (spec, steps); a step is (now, pods, stable, panic, want, want_ebc, panicking or None)
SCENARIOS: dict[str, tuple[DeciderSpec, list[tuple[Any, ...]]]] = {
    "stable increase, concurrency": (knative_spec(10, 101), [
        (0, 1, 50, 10, 5, -98, False),
        (0, 1, 100, 10, 10, -98, False),
    ]),
    "stable increase, rps": (knative_spec(10, 101, metric="rps"), [
        (0, 1, 50, 50, 5, -138, None),
        (0, 1, 100, 99, 10, -187, None),
    ]),
    "un-panic after slow increase": (knative_spec(1, 98), [
        (0, 10, 11, 25, 25, -110, True),
        (30, 40, 30, 41, 41, -86, True),  # under threshold, but within a window of panic start
        (62, 55, 50, 56, 50, -81, False),  # 60 s + a tick after the panic start: stable again
    ]),
    "panic extended while still surging": (knative_spec(1, 98), [
        (0, 10, 11, 25, 25, -110, True),
        (30, 40, 30, 80, 80, -125, True),
        (89, 80, 1, 1, 80, None, True),  # extended at 30 s: still in panic 59 s later
        (92, 80, 1, 1, 8, None, False),  # ... and out once a window has passed
    ]),
    "stable decrease": (knative_spec(10, 98), [
        (0, 8, 100, 100, 10, -92, False),
        (0, 8, 50, 50, 5, -42, False),
    ]),
    "no traffic scales to zero": (knative_spec(10, 75), [
        (0, 1, 1, 0, 1, -62, False),
        (0, 1, 0, 0, 0, -62, False),
    ]),
    "activation scale": (knative_spec(10, 75, activation_scale=2), [
        (0, 1, 0, 0, 0, -62, False),
        (0, 1, 1, 0, 2, -62, False),
    ]),
    "exponential growth tracked in panic": (knative_spec(1, 101), [
        (0, 1, 6, 6, 6, -106, True),
        (0.5, 6, 36, 36, 36, -129, True),
        (1.5, 36, 216, 216, 216, -269, True),
        (1.5, 216, 1296, 1296, 1296, -1109, True),
        (2.5, 1296, 1296, 1296, 1296, 331, True),
    ]),
    "panic then un-panic scale down": (knative_spec(10, 93), [
        (0, 1, 100, 100, 10, -180, True),  # 10 pods wanted from 1: panic already
        (1, 10, 100, 1000, 100, -960, True),
        (31, 10, 1, 1, 100, 39, True),  # traffic gone, but no scale-down in panic
        (62, 10, 1, 1, 1, 39, False),
    ]),
    "rate limit scale up": (knative_spec(10, 61), [
        (0, 1, 1000, 1001, 10, -1049, None),
        (0, 10, 1000, 1001, 100, -929, None),
    ]),
    "rate limit scale down": (knative_spec(10, 61), [
        (0, 100, 1, 1, 10, 1271, None),
        (0, 10, 1, 1, 1, 71, None),
    ]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    spec, steps = SCENARIOS[name]
    a = Autoscaler(spec, 1)
    for now, pods, stable, panic, want, want_ebc, panicking in steps:
        result = a.scale(now, pods, stable, panic)
        assert result.scale_valid
        assert result.desired_pod_count == want, (name, now)
        if want_ebc is not None:
            assert result.excess_burst_capacity == want_ebc, (name, now)
        if panicking is not None:
            assert a.in_panic is panicking, (name, now)


def test_panic_time_is_refreshed_on_every_tick_over_threshold():
    a = Autoscaler(knative_spec(1, 101), 1)
    a.scale(0.0, 1, 6, 6)
    assert a.panic_time == 0.0
    a.scale(1.0, 6, 36, 36)
    assert a.panic_time == 1.0
    a.scale(2.0, 36, 36, 36)  # 36/36 = 1 < 2: not over, so the panic start stays
    assert a.panic_time == 1.0


def test_update_target():
    a = Autoscaler(knative_spec(10, 77), 1)
    assert decide(a, 0, 1, 100, 101) == (10, -165)
    a.update(DeciderSpec(target_value=1, total_value=1 / 0.75, activator_capacity=21,
                         target_burst_capacity=71, panic_threshold=2, max_scale_down_rate=10,
                         max_scale_up_rate=10, stable_window=60))
    assert decide(a, 0, 10, 100, 101) == (100, -159)


# --- scale-down delay (TestAutoscalerScaleDownDelay*) -----------------------------------------

def delay_spec(delay: float, reachable: bool = True) -> DeciderSpec:
    return DeciderSpec(target_value=10, total_value=0, target_burst_capacity=0,
                       max_scale_down_rate=10, max_scale_up_rate=10, panic_threshold=100,
                       scale_down_delay=delay, reachable=reachable)


def test_scale_down_delay_simple_then_gradual():
    a = Autoscaler(delay_spec(300), 0)
    steps = [
        (2, 40, 4), (300, 0, 4), (302, 0, 0),  # "simple": down only after the whole delay
        (540, 40, 4), (600, 30, 4), (660, 0, 4), (840, 0, 3), (900, 0, 0),  # "gradual"
    ]
    for now, load, want in steps:
        assert a.scale(now, 0, load, load) == ScaleResult(want, 0, 2, True), now


def test_scale_down_delay_is_skipped_when_not_reachable():
    a = Autoscaler(delay_spec(300), 0)
    assert a.scale(2, 0, 40, 40).desired_pod_count == 4
    assert a.scale(60, 0, 0, 0).desired_pod_count == 4
    a.update(delay_spec(300, reachable=False))
    assert a.scale(2, 0, 0, 0).desired_pod_count == 0


def test_zero_delay_scales_down_within_the_same_tick():
    a = Autoscaler(delay_spec(0), 0)
    assert a.scale(0, 0, 40, 40).desired_pod_count == 4
    assert a.scale(0.5, 0, 20, 20).desired_pod_count == 2


def test_delay_window_exists_only_if_created_with_a_delay():
    a = Autoscaler(delay_spec(0), 0)
    a.update(delay_spec(300))  # Knative's Update does not add the window
    assert a.scale(2, 0, 40, 40).desired_pod_count == 4
    assert a.scale(4, 0, 0, 0).desired_pod_count == 0


# --- invalid inputs and start-up ----------------------------------------------------------

@pytest.mark.parametrize("pods,stable,panic", [(1, None, None), (None, 1000, 888)])
def test_missing_metrics_or_pod_count_is_no_decision(pods, stable, panic):
    a = Autoscaler(knative_spec(10, 81), 1)
    assert a.scale(0, pods, stable, panic) == INVALID_SCALE_RESULT
    assert not a.in_panic


@pytest.mark.parametrize("pods,panicking,max_panic", [(0, False, 0), (1, False, 1), (2, True, 2)])
def test_start_in_panic_mode_with_more_than_one_pod(pods, panicking, max_panic):
    spec = DeciderSpec(target_value=100, total_value=120, target_burst_capacity=11,
                       panic_threshold=220, max_scale_up_rate=10, max_scale_down_rate=10)
    a = Autoscaler(spec, pods, now=7.0)
    assert a.in_panic is panicking
    assert a.max_panic_pods == max_panic
    if panicking:
        assert a.panic_time == 7.0


def test_restarted_autoscaler_keeps_its_pods_for_a_window():
    a = Autoscaler(knative_spec(10, 100), 5, now=100.0)
    assert a.scale(102.0, 5, 0, 0).desired_pod_count == 5  # empty history: hold
    assert a.scale(160.0, 5, 0, 0).desired_pod_count == 5
    assert a.scale(162.0, 5, 0, 0).desired_pod_count == 0  # window over: may drop


@pytest.mark.parametrize("field,value", [
    ("target_value", 0), ("scaling_metric", "cpu"), ("target_burst_capacity", -2),
    ("max_scale_down_rate", 0), ("stable_window", float("nan")),
])
def test_bad_spec_is_rejected_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=f"DeciderSpec.{field}"):
        DeciderSpec(**{field: value})


# --- the reference note's worked example (all Knative defaults) ------------------------------

def test_defaults_worked_example():
    a = Autoscaler(DeciderSpec(), 1)
    assert decide(a, 2, 1, 150, 150) == (3, -261)
    assert a.in_panic
    assert decide(a, 4, 3, 150, 150) == (3, -61)
    idle = Autoscaler(DeciderSpec(), 0)
    assert [idle.scale(0, pods, 0, 0).excess_burst_capacity for pods in (1, 2, 3)] == [-111, -11, 89]


# --- activator count and initial burst capacity ---------------------------------------------

@pytest.mark.parametrize("pods,tbc,capacity,want", [
    (0, 200, 100, 2), (1, 200, 100, 3), (15, 200, 100, 17), (5, 0, 100, 2), (0, -1, 100, 2),
    (3, -1, 100, 3), (10, -1, 100, 10), (3, -1, 1, 300),  # unlimited: no burst added
])
def test_num_activators(pods, tbc, capacity, want):
    spec = DeciderSpec(total_value=100, target_burst_capacity=tbc, activator_capacity=capacity)
    assert num_activators(pods, spec) == want
    assert Autoscaler(spec, 0).scale(0, pods, 0, 0).num_activators == want


@pytest.mark.parametrize("tbc,initial,want", [(0, 1, 0), (-1, 1, -1), (211, 1, -111), (211, 3, 89),
                                              (200.5, 2, -0)])
def test_initial_excess_burst_capacity(tbc, initial, want):
    spec = DeciderSpec(total_value=100, target_burst_capacity=tbc)
    assert initial_excess_burst_capacity(spec, initial) == want


# --- the reconciler: TestScaler / TestDisableScaleToZero ---------------------------------------

STABLE, GRACE, CUSTOM_WINDOW = 60.0, 30.0, 45.0
ACTIVATION_TIMEOUT = 630.0  # progress deadline 600 s + 30 s


def settings(min_scale=0, max_scale=0, window=None, reachable=True, config=None, **more):
    anns = {}
    if min_scale:
        anns["autoscaling.knative.dev/min-scale"] = str(min_scale)
    if max_scale:
        anns["autoscaling.knative.dev/max-scale"] = str(max_scale)
    if window:
        anns["autoscaling.knative.dev/window"] = f"{window:g}s"
    anns.update(more)
    return RevisionAutoscaling.resolve(anns, config, reachable=reachable)


ACTIVE, INACTIVE, ACTIVATING = Activity.ACTIVE, Activity.INACTIVE, Activity.ACTIVATING

# label, start replicas, decider's scale, settings kwargs, PA state, wanted replicas,
# wanted apply (a Deployment patch), wanted recheck (seconds or None), wanted probe
SCALER_CASES = [
    ("waits to scale to zero (just before idle period)", 1, 0, {},
     PodAutoscalerState(ACTIVE, STABLE - 1), 1, False, 1.0, False),
    ("waits to scale to zero (just before idle period), custom window", 1, 0,
     {"window": CUSTOM_WINDOW}, PodAutoscalerState(ACTIVE, CUSTOM_WINDOW - 1), 1, False, 1.0, False),
    ("custom window, standard window elapsed", 1, 0, {"window": CUSTOM_WINDOW},
     PodAutoscalerState(ACTIVE, STABLE), 0, False, None, False),
    ("scale to 1 waiting for idle expires", 10, 0, {},
     PodAutoscalerState(ACTIVE, STABLE - 1), 1, True, 1.0, False),
    ("waits to scale to zero after idle period", 1, 0, {},
     PodAutoscalerState(ACTIVE, STABLE), 0, False, None, False),
    ("waits to scale to zero after idle period (custom window)", 1, 0, {"window": CUSTOM_WINDOW},
     PodAutoscalerState(ACTIVE, CUSTOM_WINDOW), 0, False, None, False),
    ("scale to zero after grace period", 1, 0, {},
     PodAutoscalerState(INACTIVE, GRACE), 0, True, None, False),
    ("waits to scale to zero (just before grace period)", 1, 0, {},
     PodAutoscalerState(INACTIVE, GRACE - 1), 0, False, GRACE, False),
    ("waits to scale to zero (just before grace period, activator in path shortly)", 1, 0, {},
     PodAutoscalerState(INACTIVE, GRACE - 1, activator_in_path_for=GRACE - 1), 0, False, 1.0, False),
    ("scales to zero (just before grace period, activator in path long)", 1, 0, {},
     PodAutoscalerState(INACTIVE, GRACE - 1, activator_in_path_for=GRACE), 0, True, None, False),
    ("scale to zero after grace period, but fail prober", 1, 0, {},
     PodAutoscalerState(INACTIVE, GRACE, activator_probe_ok=False), 0, False, None, True),
    ("waits to scale to zero while activating until after deadline exceeded", 1, 0, {},
     PodAutoscalerState(ACTIVATING, ACTIVATION_TIMEOUT / 2), SCALE_UNKNOWN, False,
     ACTIVATION_TIMEOUT, False),
    ("scale to zero while activating after deadline exceeded", 1, 0, {},
     PodAutoscalerState(ACTIVATING, ACTIVATION_TIMEOUT + 1), 0, True, None, False),
    ("scale down to min-scale before grace period", 10, 0, {"min_scale": 2},
     PodAutoscalerState(INACTIVE, GRACE - 1), 2, True, None, False),
    ("scale down to min-scale after grace period", 10, 0, {"min_scale": 2},
     PodAutoscalerState(INACTIVE, GRACE), 2, True, None, False),
    ("ignore min-scale if unreachable", 10, 0, {"min_scale": 2, "reachable": False},
     PodAutoscalerState(INACTIVE, GRACE), 0, True, None, False),
    ("scales up", 1, 10, {}, PodAutoscalerState(ACTIVE, 0), 10, True, None, False),
    ("scales up to max-scale", 1, 10, {"max_scale": 8}, PodAutoscalerState(ACTIVE, 0),
     8, True, None, False),
    ("scale up inactive revision", 1, 10, {}, PodAutoscalerState(INACTIVE, GRACE / 2),
     10, True, None, False),
    ("does not scale up from zero with no metrics", 0, -1, {}, PodAutoscalerState(INACTIVE, 0),
     -1, False, None, False),
    ("scales up from zero to desired one", 0, 1, {}, PodAutoscalerState(ACTIVATING, 0),
     1, True, None, False),
    ("scales up from zero to desired high scale", 0, 10, {}, PodAutoscalerState(ACTIVATING, 0),
     10, True, None, False),
    ("negative scale does not scale", 12, -1, {}, PodAutoscalerState(ACTIVE, 0),
     -1, False, None, False),
    ("pod retention holds the last pod", 1, 0,
     {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "90s"},
     PodAutoscalerState(INACTIVE, GRACE, activator_in_path_for=GRACE), 0, False, 60.0, False),
    ("pod retention over", 1, 0,
     {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "90s"},
     PodAutoscalerState(INACTIVE, 90.0), 0, True, None, False),
    ("initial scale is a floor until reached", 0, 1,
     {"autoscaling.knative.dev/initial-scale": "3"},
     PodAutoscalerState(ACTIVATING, 0, scale_target_initialized=False), 3, True, None, False),
]


@pytest.mark.parametrize(
    "label,start,scale_to,kwargs,state,want,want_apply,want_recheck,want_probe",
    SCALER_CASES,
    ids=[row[0] for row in SCALER_CASES],
)
def test_scaler(label, start, scale_to, kwargs, state, want, want_apply, want_recheck, want_probe):
    decision = decide_replicas(scale_to, settings(**_split(kwargs)[0], **_split(kwargs)[1]),
                               state, current_replicas=start)
    assert decision == ReplicaDecision(want, want_apply, want_recheck, want_probe)


def _split(kwargs: dict) -> tuple[dict, dict]:
    """Separate keyword settings from raw annotations (keys with a '/')."""
    plain = {k: v for k, v in kwargs.items() if "/" not in k}
    return plain, {k: v for k, v in kwargs.items() if "/" in k}


@pytest.mark.parametrize("scale_to,min_scale,want,want_apply", [
    (0, 0, 1, True), (0, 2, 2, True), (-1, 0, -1, False),
])
def test_disable_scale_to_zero(scale_to, min_scale, want, want_apply):
    config = AutoscalerConfig(enable_scale_to_zero=False)
    decision = decide_replicas(scale_to, settings(min_scale, config=config),
                               PodAutoscalerState(ACTIVE, 0), current_replicas=10)
    assert (decision.replicas, decision.apply) == (want, want_apply)


def test_unlimited_burst_capacity_skips_the_activator_probe():
    s = settings(**{"autoscaling.knative.dev/target-burst-capacity": "-1"})
    state = PodAutoscalerState(INACTIVE, GRACE, activator_probe_ok=False)
    assert decide_replicas(0, s, state, current_replicas=1) == ReplicaDecision(0, True)


@pytest.mark.parametrize("want,ebc,ready,activator,mode", [
    (3, 0, 3, True, "Serve"), (3, -1, 3, True, "Proxy"), (0, 5, 1, True, "Proxy"),
    (2, 10, 0, True, "Proxy"), (3, -1, 3, False, "Serve"), (3, -1, 0, False, "Proxy"),
])
def test_sks_mode(want, ebc, ready, activator, mode):
    assert sks_mode(want, ebc, ready, activator) == mode


@pytest.mark.parametrize("want,ready,min_ready,current,expected", [
    (0, 3, 1, ACTIVE, INACTIVE),
    (3, 0, 1, INACTIVE, ACTIVATING),
    (-1, 0, 1, INACTIVE, INACTIVE),  # initial-scale 0, still no metrics
    (3, 1, 1, ACTIVATING, ACTIVE),
    (-1, 1, 1, INACTIVE, INACTIVE),
    (2, 1, 3, ACTIVATING, ACTIVATING),  # initial scale 3 not reached yet
])
def test_next_activity(want, ready, min_ready, current, expected):
    assert next_activity(want, ready, min_ready, current) is expected


def test_min_ready_pods_uses_initial_scale_until_reached():
    s = settings(min_scale=2, **{"autoscaling.knative.dev/initial-scale": "5"})
    assert min_ready_pods(s, scale_target_initialized=False) == 5
    assert min_ready_pods(s, scale_target_initialized=True) == 2
    assert min_ready_pods(settings(), scale_target_initialized=True) == 1


# --- windows and decider together, Knative defaults ----------------------------------------

def test_burst_then_idle_story_with_defaults():
    """150 concurrent requests for a minute, then silence; a decision every 2 s.

    Panic at the first tick (3 pods wanted from 1); held at 3 until a window after the panic
    started; then the stable average falls linearly: 137.5 -> 2 pods, below 70 -> 1 pod, and
    0 pods only when the whole 60 s window is empty (second 120, the last busy one being 59).
    """
    metrics = RevisionMetrics(60, panic_window_seconds(60, 10))
    decider = Autoscaler(DeciderSpec(), 1)
    pods, changes = 1, []
    for second in range(200):
        metrics.record(float(second), 150.0 if second < 60 else 0.0, 0.0)
        if second and second % 2 == 0:
            stable, panic = metrics.stable_and_panic(float(second))
            result = decider.scale(float(second), pods, stable, panic)
            if result.desired_pod_count != pods or second == 2:
                changes.append((second, result.desired_pod_count, decider.in_panic))
            pods = result.desired_pod_count
    assert changes == [(2, 3, True), (64, 2, False), (92, 1, False), (120, 0, False)]
