"""Cost model: pay per use vs always-on, and the break-even rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labkit.sim import (
    HOURS_PER_MONTH,
    SECONDS_PER_MONTH,
    Prices,
    always_on_monthly_cost,
    break_even_rate,
    serverless_monthly_cost,
    serverless_monthly_cost_for_rate,
    simulate_platform,
)


def test_default_prices_are_the_published_list_prices() -> None:
    p = Prices()
    assert p.gb_second == 0.0000166667
    assert p.per_request == pytest.approx(0.20 / 1e6)
    assert p.always_on_hourly == pytest.approx(0.25 * 0.04048 + 0.5 * 0.004445)


def test_hand_computed_monthly_costs() -> None:
    # 1 req/s, 0.5 s, 1024 MB: 0.5 GB-s and one request per second for a 730-hour month
    expected = SECONDS_PER_MONTH * (0.5 * 0.0000166667 + 0.2e-6)
    assert serverless_monthly_cost_for_rate(1.0, 0.5, 1024) == pytest.approx(expected)
    assert always_on_monthly_cost(3) == pytest.approx(3 * HOURS_PER_MONTH * Prices().always_on_hourly)


@pytest.mark.parametrize("duration, memory, instances", [(0.1, 128, 1), (2.0, 512, 1), (0.05, 2048, 4)])
def test_break_even_rate_matches_a_brute_force_search(duration, memory, instances) -> None:
    closed = break_even_rate(duration, memory, instances=instances)
    rates = np.linspace(0, 10 * closed, 200_001)
    gap = [serverless_monthly_cost_for_rate(r, duration, memory) - always_on_monthly_cost(instances) for r in rates]
    first_dearer = rates[np.argmax(np.array(gap) > 0)]
    assert first_dearer == pytest.approx(closed, rel=1e-3)


def test_break_even_moves_the_right_way() -> None:
    base = break_even_rate(0.2, 256)
    assert break_even_rate(0.4, 256) < base  # longer requests cost more each
    assert break_even_rate(0.2, 256, instances=2) == pytest.approx(2 * base)
    assert break_even_rate(0.2, 256, Prices(always_on_hourly=0.0)) == 0.0
    assert break_even_rate(0.2, 256, Prices(gb_second=0.0, per_million_requests=0.0)) == math.inf


def test_cost_of_a_simulation_matches_the_closed_form_on_a_steady_load() -> None:
    r = simulate_platform(
        arrival_rate=2.0, warm_service_time=0.5, cold_service_time=0.5, max_time=5e4, seed=1, memory_mb=512
    )
    assert serverless_monthly_cost(r) == pytest.approx(serverless_monthly_cost_for_rate(2.0, 0.5, 512), rel=0.03)
    assert r.monthly_cost == serverless_monthly_cost(r)
    custom = Prices(gb_second=0.0, per_million_requests=1e6)  # $1 a request
    assert serverless_monthly_cost(r, custom) == pytest.approx(r.requests * SECONDS_PER_MONTH / r.max_time)


@pytest.mark.parametrize("field", ["gb_second", "per_million_requests", "always_on_hourly"])
def test_bad_prices_are_named(field) -> None:
    with pytest.raises(ValueError, match=f"Prices.{field} must be"):
        Prices(**{field: -1.0})


def test_bad_cost_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="memory_mb must be"):
        break_even_rate(0.1, 0)
    with pytest.raises(ValueError, match="rate must be"):
        serverless_monthly_cost_for_rate(-1.0, 0.1, 128)
    with pytest.raises(ValueError, match="instances must be"):
        always_on_monthly_cost(-2)
