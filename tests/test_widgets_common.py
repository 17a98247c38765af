"""What every dashboard shares (labkit.widgets.common), checked on each of them."""

from __future__ import annotations

import pytest

from labkit.widgets.autoscaling import autoscaling_dashboard
from labkit.widgets.dataflow import dataflow_dashboard
from labkit.widgets.eventing import delivery_dashboard
from labkit.widgets.mesh import mesh_dashboard
from labkit.widgets.serverless import serverless_dashboard

SMALL_RUNS = [
    (autoscaling_dashboard, {"duration": 400.0}),
    (dataflow_dashboard, {"duration": 600.0}),
    (delivery_dashboard, {"events": 3000}),
    (mesh_dashboard, {"duration": 10.0}),
    (serverless_dashboard, {"max_requests": 20_000}),
]


@pytest.mark.parametrize(("factory", "kwargs"), SMALL_RUNS, ids=[f.__name__ for f, _ in SMALL_RUNS])
def test_sliders_do_not_rerun_while_dragging(headless_dashboard, factory, kwargs):
    dash = headless_dashboard(factory, **kwargs)
    sliders = [c for c in dash.controls.values() if hasattr(c, "continuous_update")]
    assert sliders and all(not c.continuous_update for c in sliders)

