"""The data-flow dashboard, driven headless: move a control, check the state it produced."""

from __future__ import annotations

import numpy as np
import pytest

from labkit.sim import simulate_dataflow
from labkit.widgets.dataflow import dataflow_dashboard


@pytest.fixture
def dash(headless_dashboard):
    return headless_dashboard(dataflow_dashboard, duration=600.0)


def test_dashboard_shows_the_simulators_numbers(dash):
    direct = simulate_dataflow(duration=600.0, seed=1, **dash.settings())
    assert np.array_equal(dash.result.latency_ms, direct.latency_ms)
    assert f"{direct.p99:.2f} ms" in dash.summary.value
    assert dash.figure is not None and len(dash.figure.axes) == 2


def test_min_replicas_one_removes_cold_requests(dash):
    runs = dash.runs
    dash.set(arrival_rate=0.05, min_replicas=0)
    assert dash.result.cold.any()
    dash.controls["min_replicas"].value = 1
    assert dash.runs == runs + 2 and not dash.result.cold.any()


def test_compute_names_a_bad_setting(dash):
    with pytest.raises(ValueError, match="arrival_rate"):
        dash.compute({**dash.settings(), "arrival_rate": 0.0})
