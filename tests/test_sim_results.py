"""Every simulator's result shares one interface: `summary()` a flat dict of scalars, a
readable `str`, an HTML table for notebooks; every simulator's `seed` defaults to 1."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from labkit.sim import (
    Deploy,
    Poisson,
    burst_workload,
    simulate_autoscaling,
    simulate_dataflow,
    simulate_delivery,
    simulate_mesh,
    simulate_platform,
    simulate_revisions,
)
from labkit.sim.canary import run_many, simulate_canary
from labkit.sim.results import SimResult, format_scalar
from labkit.sim.sidecars import sidecar_cost

HOP_MS = np.linspace(0.1, 1.0, 201)

RUNS: dict[str, Callable[[], SimResult]] = {
    "platform": lambda: simulate_platform(arrival_rate=1.0, max_time=300.0),
    "mesh": lambda: simulate_mesh(duration=2.0, arrival_rate=20.0),
    "canary": lambda: simulate_canary(failure="errors"),
    "canary batch": lambda: run_many(5, failure="errors"),
    "autoscaling": lambda: simulate_autoscaling(Poisson(5.0), duration=60.0),
    "dataflow": lambda: simulate_dataflow(duration=60.0),
    "delivery": lambda: simulate_delivery(failure_probability=0.3, retry=2, events=200),
    "sidecars": lambda: sidecar_cost(HOP_MS, depth=2, fanout=2, app_ms=1.0, rate=10.0, cpu_ms_per_hop=0.1),
    "revisions": lambda: simulate_revisions([Deploy(0), Deploy(600)], horizon=3600.0, workload=Poisson(1.0)),
}

SIMULATORS = [simulate_platform, simulate_mesh, simulate_canary, run_many, simulate_autoscaling,
              simulate_dataflow, simulate_delivery, sidecar_cost, burst_workload, simulate_revisions]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_result_has_one_summary_kind(name: str) -> None:
    result = RUNS[name]()
    assert isinstance(result, SimResult)
    summary = result.summary()
    assert summary and all(isinstance(k, str) for k in summary)
    bad = {k: v for k, v in summary.items() if not (v is None or isinstance(v, (int, float, str)))}
    assert bad == {}, f"{name}: summary values must be scalars, got {bad}"
    assert str(result).strip() and "<table>" in result._repr_html_()


@pytest.mark.parametrize("name", ["platform", "autoscaling", "dataflow", "delivery", "sidecars"])
def test_default_str_is_the_summary_one_line_each(name: str) -> None:
    result = RUNS[name]()
    lines = str(result).splitlines()
    assert len(lines) == len(result.summary())
    for line, (key, value) in zip(lines, result.summary().items()):
        assert line.split()[0] == key and line.endswith(format_scalar(value))


def test_percentiles_in_summaries_are_numpys_linear_ones() -> None:
    auto = simulate_autoscaling(Poisson(5.0), duration=60.0)
    assert auto.summary()["latency_p99"] == pytest.approx(np.percentile(auto.latency, 99), rel=0, abs=0)
    delivery = simulate_delivery(failure_probability=0.3, retry=2, events=200)
    assert delivery.summary()["latency_p99"] == np.percentile(delivery.latencies, 99)
    assert delivery.latency_percentile(50) == np.percentile(delivery.latencies, 50)
    cost = sidecar_cost(HOP_MS, depth=2, fanout=2, app_ms=1.0, rate=10.0, cpu_ms_per_hop=0.1)
    assert cost.summary()["meshed_p99_ms"] == np.percentile(cost.meshed_ms, 99)


@pytest.mark.parametrize("simulator", SIMULATORS, ids=lambda f: f.__name__)
def test_every_seed_defaults_to_1(simulator: Callable[..., object]) -> None:
    assert inspect.signature(simulator).parameters["seed"].default == 1


def test_a_default_run_repeats_and_a_bad_seed_is_named() -> None:
    assert simulate_delivery(events=50).summary() == simulate_delivery(events=50, seed=1).summary()
    not_an_int: Any = 1.5
    for run in (lambda: simulate_mesh(duration=1.0, seed=-1), lambda: simulate_delivery(seed=not_an_int),
                lambda: simulate_canary(seed=-2), lambda: simulate_dataflow(seed=-1)):
        with pytest.raises(ValueError, match=r"seed must be an integer in the range \[0, inf\)"):
            run()


def test_format_scalar_reads_like_a_report() -> None:
    assert [format_scalar(v) for v in (12345, 0.000123456, 86400.0, 0.5, None, "promoted", True, math.nan)] == [
        "12,345", "0.0001235", "86,400.0", "0.5", "None", "promoted", "True", "nan"]
