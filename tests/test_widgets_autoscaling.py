"""The autoscaling dashboard, driven headless: move a control, check the state it produced."""

from __future__ import annotations

import pytest

from labkit.serving.autoscaler_config import RevisionAutoscaling
from labkit.sim.autoscaling import simulate_autoscaling
from labkit.widgets.autoscaling import PATTERNS, autoscaling_dashboard, make_workload


@pytest.fixture
def dash(headless_dashboard):
    return headless_dashboard(autoscaling_dashboard, duration=400.0)


def test_dashboard_shows_the_simulators_numbers(dash):
    s = dash.settings()
    direct = simulate_autoscaling(
        make_workload(s["pattern"], s["rate"], s["burst_rate"], s["burst_seconds"], 400.0, seed=1),
        dash.annotations(), config=dash.config(), duration=400.0, seed=1, service_time=s["service_time"],
        cold_start=s["cold_start"], container_concurrency=s["container_concurrency"],
    )
    assert dash.result.summary() == direct.summary()
    assert f"{direct.latency_percentile(99):.2f}" in dash.summary.value


def test_annotations_are_what_knative_reads(dash):
    dash.set(target=2.0, window=30, min_scale=1, panic_threshold_percentage=300)
    settings = RevisionAutoscaling.resolve(dash.annotations())
    assert settings.target == pytest.approx(2.0 * 0.7)
    assert settings.stable_window == 30.0 and settings.panic_window == 3.0
    assert settings.min_scale == 1 and settings.panic_threshold == 3.0
    assert dash.result.settings == settings


def test_a_lower_target_means_more_pods(dash):
    before = dash.result.max_ready_pods
    runs = dash.runs
    dash.controls["target"].value = 1.0
    assert dash.runs == runs + 1
    assert dash.result.max_ready_pods > 2 * before


def test_a_high_panic_threshold_keeps_the_burst_out_of_panic(dash):
    assert dash.result.panic_periods
    dash.set(panic_threshold_percentage=1000)
    assert dash.result.panic_periods == []


def test_scale_to_zero_brings_cold_starts_and_min_scale_removes_them(dash):
    dash.set(rate=0.0, window=20)
    assert dash.result.cold_starts >= 1 and dash.result.requests_cold > 0
    dash.set(min_scale=1)
    assert dash.result.cold_starts == 0
    assert dash.result.timeline["ready"].min() >= 1


def test_bad_settings_are_shown_and_keep_the_last_result(dash):
    good = dash.result
    dash.set(min_scale=5, max_scale=2)
    assert "min-scale" in dash.error and "max-scale" in dash.error
    assert dash.result is good
    dash.set(max_scale=0)
    assert dash.error is None


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_runs(dash, pattern):
    dash.set(pattern=pattern)
    assert dash.error is None and dash.result.requests > 0
    assert dash.figure is not None
