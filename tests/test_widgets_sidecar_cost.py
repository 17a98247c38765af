"""Lab 03's sidecar-cost dashboard and the call-tree model under it."""

from __future__ import annotations

import numpy as np
import pytest

from labkit.sim.sidecars import hop_quantiles, sidecar_cost
from labkit.widgets.sidecar_cost import sidecar_cost_dashboard

CONSTANT_HOP = np.full(201, 0.5)  # every hop adds exactly 0.5 ms


def test_hop_quantiles_split_the_added_latency_over_the_hops() -> None:
    direct = [0.001] * 100
    through = [0.002] * 100
    assert np.allclose(hop_quantiles(direct, through, hops=2), 0.0005)
    assert np.all(hop_quantiles(through, direct, hops=1) == 0)  # never below zero
    with pytest.raises(ValueError, match="hops"):
        hop_quantiles(direct, through, hops=0)


def test_a_chain_adds_two_hops_per_call() -> None:
    cost = sidecar_cost(CONSTANT_HOP, depth=3, fanout=1, app_ms=2.0, rate=100, cpu_ms_per_hop=0.2)
    assert cost.calls == 3 and cost.sidecars == 4
    assert np.allclose(cost.meshed_ms - cost.bare_ms, 3 * 2 * 0.5)
    assert cost.sidecar_cpu_cores == pytest.approx(100 * 6 * 0.2 / 1000)


def test_fan_out_adds_the_slowest_branch_not_the_sum() -> None:
    cost = sidecar_cost(CONSTANT_HOP, depth=2, fanout=4, app_ms=0.0, rate=10, cpu_ms_per_hop=0.2)
    assert cost.calls == 20
    assert np.allclose(cost.meshed_ms, 2 * 2 * 0.5)  # two levels deep, whatever the width


def test_too_wide_a_tree_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="fanout\\*\\*depth <= 1024"):
        sidecar_cost(CONSTANT_HOP, depth=6, fanout=4, app_ms=1, rate=1, cpu_ms_per_hop=0.1)


def test_dashboard_controls_change_the_cost() -> None:
    rng = np.random.default_rng(3)
    mtls, plain = np.sort(rng.gamma(3, 0.2, 201)), np.sort(rng.gamma(3, 0.1, 201))
    d = sidecar_cost_dashboard(mtls, plain, depth=1, fanout=1)
    assert d.result is not None
    shallow = d.result.added(50)
    d.set(depth=4, fanout=3)
    assert d.result.added(50) > 3 * shallow
    assert [c.depth for c in d.by_depth] == [1, 2, 3, 4]
    deep_mtls = d.result.added(50)
    d.set(mtls=False)
    assert d.result.added(50) < deep_mtls
    cpu = d.result.sidecar_cpu_cores
    d.set(rate=1000.0)
    assert d.result.sidecar_cpu_cores > 5 * cpu
    again = sidecar_cost_dashboard(mtls, plain, depth=4, fanout=3, mtls=False, rate=1000.0)
    assert again.result is not None
    assert np.array_equal(again.result.meshed_ms, d.result.meshed_ms)
