"""The shared Knative policy steps: the activator's pod pick, the decider tick and the PA
reconcile (`labkit.serving.pod_pick`, `labkit.serving.reconcile`), as pure functions."""

from __future__ import annotations

import random

import pytest
from scipy.stats import binom

from labkit.serving.autoscaler_config import AutoscalerConfig, RevisionAutoscaling
from labkit.serving.kpa import Autoscaler
from labkit.serving.kpa_scaler import PROXY_RECHECK_SECONDS, SCALE_UNKNOWN, Activity
from labkit.serving.metrics_window import RevisionMetrics
from labkit.serving.pod_pick import PodPicker
from labkit.serving.reconcile import (
    PodAutoscalerStatus,
    decide,
    initial_status,
    reconcile,
    record,
    should_poke,
)

# --- the activator's pod pick --------------------------------------------------------------


def test_choice_of_two_draws_two_different_pods():
    # Pod 0 is idle, three are busy: it wins whenever it is one of the two drawn, which for
    # two *different* pods out of 4 is 1 - C(3,2)/C(4,2) = 1/2 (two independent draws, the
    # simulator's old copy, gave 1 - (3/4)^2 = 7/16).
    picker = PodPicker(0, random.Random(7))
    loads = [0, 5, 5, 5]
    n = 8000
    wins = sum(picker.pick(4, loads.__getitem__) == 0 for _ in range(n))
    low, high = binom.interval(0.999, n, 0.5)
    assert low <= wins <= high
    assert not low <= n * 7 / 16 <= high  # the test tells the two rules apart


def test_choice_of_two_prefers_the_less_busy_and_flips_a_coin_on_a_tie():
    picker = PodPicker(0, random.Random(1))
    assert {picker.pick(2, [3, 1].__getitem__) for _ in range(50)} == {1}
    ties = [picker.pick(2, [2, 2].__getitem__) for _ in range(4000)]
    low, high = binom.interval(0.999, 4000, 0.5)
    assert low <= ties.count(0) <= high
    assert picker.pick(1, [99].__getitem__) == 0  # one pod: no choice, even a busy one
    assert picker.pick(0, [].__getitem__) is None


def test_first_available_up_to_cc_3():
    picker = PodPicker(2, random.Random(0))
    assert picker.policy == "first-available"
    assert picker.pick(3, [2, 1, 0].__getitem__) == 1
    assert picker.pick(3, [1, 0, 0].__getitem__) == 0  # always from the first pod
    assert picker.pick(3, [2, 2, 2].__getitem__) is None  # every slot taken: wait


def test_round_robin_above_cc_3_skips_full_pods_and_restarts_when_pods_go():
    picker = PodPicker(4, random.Random(0))
    assert picker.policy == "round-robin"
    free = [0, 0, 0]
    assert [picker.pick(3, free.__getitem__) for _ in range(4)] == [0, 1, 2, 0]
    one_full = [0, 4, 0]
    assert [picker.pick(3, one_full.__getitem__) for _ in range(3)] == [2, 0, 2]
    # The cursor (past pod 2) is beyond a list shrunk to 2 pods: start again from the first.
    assert picker.pick(2, [0, 0].__getitem__) == 0
    with pytest.raises(ValueError, match="containerConcurrency"):
        PodPicker(-1, random.Random(0))


def test_same_seed_same_picks():
    def picks(seed: int) -> list[int | None]:
        picker = PodPicker(0, random.Random(seed))
        loads = [0, 1, 0, 2, 1]
        return [picker.pick(5, loads.__getitem__) for _ in range(100)]

    assert picks(3) == picks(3) != picks(4)


# --- the decider tick and the poke ---------------------------------------------------------

SETTINGS = RevisionAutoscaling.resolve(
    {"autoscaling.knative.dev/target": "10", "autoscaling.knative.dev/window": "6s"},
    AutoscalerConfig(scale_to_zero_grace_period=2.0))


def metrics() -> RevisionMetrics:
    return RevisionMetrics(SETTINGS.stable_window, SETTINGS.panic_window,
                           SETTINGS.aggregation_algorithm)  # type: ignore[arg-type]  # a str the config validated as one of the Literal's


def test_a_tick_without_data_keeps_the_previous_decision():
    decider = Autoscaler(SETTINGS.decider_spec(), 1, 0.0)
    empty = decide(decider, metrics(), 2.0, 1, desired=4, excess_burst_capacity=-5)
    assert empty == (4, -5, None, None)
    window = metrics()
    for t in range(1, 5):
        window.record(float(t), 21.0, 21.0)
    tick = decide(decider, window, 4.0, 1, desired=4, excess_burst_capacity=-5)
    # 21 concurrent requests at 7 per pod (target 10 at 70 %): 3 pods, and panic (3/1 >= 2).
    assert tick.desired == 3 and decider.in_panic
    assert tick.stable == tick.panic == 21.0
    assert tick.excess_burst_capacity == (1 * 10 - 211 - 21)


def test_only_a_revision_wanted_at_zero_is_poked():
    assert should_poke(0, 1.0)
    assert not should_poke(0, 0.0)
    assert not should_poke(SCALE_UNKNOWN, 1.0)  # no decision yet: wait for the tick
    assert not should_poke(2, 5.0)


# --- the PA reconcile ----------------------------------------------------------------------


def active(since: float = 0.0, mode: str = "Proxy", mode_since: float = 0.0,
           want: int = 1) -> PodAutoscalerStatus:
    return PodAutoscalerStatus(Activity.ACTIVE, since, True, mode, mode_since, want)


def test_a_new_revision_activates_when_its_pod_is_ready():
    status = initial_status(SETTINGS, ready=0, now=0.0)
    assert status.activity is Activity.ACTIVATING and not status.scale_target_initialized
    waiting = reconcile(SETTINGS, status, SCALE_UNKNOWN, -200, ready=0, replicas=1, now=0.0)
    assert waiting.replicas is None and waiting.status.activity is Activity.ACTIVATING
    assert waiting.status.want == SCALE_UNKNOWN and waiting.status.mode == "Proxy"
    up = reconcile(SETTINGS, waiting.status, SCALE_UNKNOWN, -200, ready=1, replicas=1, now=1.5)
    assert up.status.activity is Activity.ACTIVE and up.status.activity_since == 1.5
    assert up.status.scale_target_initialized
    assert initial_status(SETTINGS, ready=1, now=0.0).activity is Activity.ACTIVE


def test_scale_up_applies_and_serve_needs_burst_capacity():
    up = reconcile(SETTINGS, active(), 3, -250, ready=1, replicas=1, now=4.0)
    assert up.replicas == 3 and up.status.want == 3 and up.status.mode == "Proxy"
    serve = reconcile(SETTINGS, up.status, 3, 5, ready=3, replicas=3, now=6.0)
    assert serve.replicas is None  # already 3: Knative patches only on change
    assert serve.status.mode == "Serve" and serve.status.mode_since == 6.0


def test_scale_down_counts_the_pods_left_ready():
    down = reconcile(SETTINGS, active(want=4), 2, -100, ready=4, replicas=4, now=30.0)
    assert down.replicas == 2 and down.ready == 2
    line = record(30.0, 2, down)
    assert (line.desired, line.want, line.replicas, line.ready, line.activity, line.mode) == (
        2, 2, 2, 2, "True", "Proxy")


def test_the_road_to_zero_with_its_rechecks():
    # Active for 4 s of a 6 s stable window: hold one pod, come back in 2 s.
    hold = reconcile(SETTINGS, active(since=10.0), 0, -211, ready=1, replicas=1, now=14.0)
    assert hold.replicas is None and hold.status.want == 1
    assert hold.recheck_after == pytest.approx(2.0)
    # At 16 s: report 0 without removing the pod; the PA goes Inactive, the SKS to Proxy
    # (it already was, so Knative looks again 3 s later itself).
    idle = reconcile(SETTINGS, hold.status, 0, -211, ready=1, replicas=1, now=16.0)
    assert idle.replicas is None and idle.status.want == 0
    assert idle.status.activity is Activity.INACTIVE and idle.status.activity_since == 16.0
    assert idle.recheck_after == PROXY_RECHECK_SECONDS
    # Inactive, and the activator has been in the path for longer than the 2 s grace period
    # (since t = 0): the last pod goes at once.
    gone = reconcile(SETTINGS, idle.status, 0, -211, ready=1, replicas=1, now=16.5)
    assert gone.replicas == 0 and gone.ready == 0
    # Had the SKS just switched to Proxy, the pod would wait out the rest of the grace period.
    fresh = PodAutoscalerStatus(Activity.INACTIVE, 16.0, True, "Proxy", 15.5, 0)
    wait = reconcile(SETTINGS, fresh, 0, -211, ready=1, replicas=1, now=16.5)
    assert wait.replicas is None and wait.recheck_after == pytest.approx(1.0)


def test_reconcile_is_a_pure_function():
    status = active(since=10.0)
    first = reconcile(SETTINGS, status, 0, -211, ready=1, replicas=1, now=14.0)
    again = reconcile(SETTINGS, status, 0, -211, ready=1, replicas=1, now=14.0)
    assert first == again and status == active(since=10.0)
