"""The canary dashboard, driven headless: move a control, check what the simulator said."""

from __future__ import annotations

import re

import pytest
import yaml

from labkit.sim.canary import Traffic, run_many, simulate_canary
from labkit.widgets.canary import canary_dashboard
from labkit.widgets.common import COLUMN_WIDTH_PX, label_width_px


@pytest.fixture
def dash(headless_dashboard):
    return headless_dashboard(canary_dashboard, batch=40)


def test_dashboard_shows_the_simulators_numbers(dash):
    run, batch = dash.result
    traffic = Traffic(rate=10.0)
    assert run == simulate_canary(dash.manifest, traffic=traffic, failure="errors", seed=1)
    again = run_many(40, 1, dash.manifest, traffic=traffic, failure="errors")
    assert [r.outcome for r in batch.runs] == [r.outcome for r in again.runs]
    assert f"{batch.rollback_rate:.1%}" in dash.summary.value
    assert f"{run.exposed_users:,}" in dash.summary.value
    assert dash.figure is not None and len(dash.figure.axes) == 2
    assert tuple(dash.figure.get_size_inches()) == (6.5, 4.0)


def test_controls_are_the_canarys_analysis_fields(dash):
    dash.set(interval_s=30, threshold=3, step_weight=20, max_weight=60, min_success_rate=98.5,
             max_p99_ms=800, min_accuracy=86.0)
    analysis = dash.manifest["spec"]["analysis"]
    assert analysis["interval"] == "30s" and analysis["threshold"] == 3
    assert (analysis["stepWeight"], analysis["maxWeight"]) == (20, 60)
    assert analysis["metrics"][0]["thresholdRange"] == {"min": 98.5}
    assert analysis["metrics"][1]["thresholdRange"] == {"max": 800}
    assert analysis["webhooks"][0]["metadata"]["minAccuracy"] == "86"
    assert "stepWeight: 20" in dash.summary.value  # the YAML shown


def test_exported_canary_passes_flaggers_crd(dash, crd_validate):
    dash.set(min_accuracy=86.0)
    report = crd_validate(yaml.safe_dump(dash.manifest, sort_keys=False))
    assert "OK" in report


def test_a_quality_drop_needs_the_quality_gate(dash):
    dash.set(failure="quality")
    assert dash.batch.bad and dash.batch.rollback_rate == 0.0  # HTTP metrics look fine
    dash.set(min_accuracy=86.0)
    assert dash.batch.rollback_rate > 0.5


def test_bigger_steps_expose_more_requests(dash):
    small = dash.batch.exposed_share().mean()
    dash.set(step_weight=25)
    assert dash.batch.exposed_share().mean() > 1.5 * small


def test_good_version_is_promoted_at_the_defaults(dash):
    dash.controls["failure"].value = "none"
    assert dash.run.outcome == "promoted" and dash.batch.rollback_rate <= 0.05
    assert "false rollbacks" in dash.summary.value


def test_a_revisited_setting_is_not_simulated_again(dash):
    first = dash.result
    dash.set(threshold=2)
    dash.set(threshold=5)
    assert dash.result is first and dash.runs == 3


def test_step_larger_than_max_is_refused_and_named(dash):
    before = dash.result
    dash.set(step_weight=40, max_weight=20)
    assert dash.error is not None and "stepWeight 40 is larger than maxWeight 20" in dash.error
    assert dash.result is before and "stepWeight 40" in dash.summary.value


def test_controls_fit_a_laptop_column(dash):
    for control in dash.controls.values():
        assert int(control.layout.width.removesuffix("px")) <= COLUMN_WIDTH_PX - 6
        assert label_width_px(control.description) < int(control.style.description_width.removesuffix("px"))
    assert re.search(r"<details>", dash.summary.value)
    assert dash.title.startswith("Lab 10") and "Run this cell" in dash.fallback()["text/plain"]
