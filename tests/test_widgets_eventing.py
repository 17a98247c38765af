"""The delivery dashboard, driven headless: move a control, check the state it produced."""

from __future__ import annotations

import pytest

from labkit.sim import simulate_delivery
from labkit.widgets.eventing import delivery_dashboard


@pytest.fixture
def dash(headless_dashboard):
    return headless_dashboard(delivery_dashboard, events=3000)


def test_dashboard_shows_the_simulators_numbers(dash):
    s = dash.settings()
    direct = simulate_delivery(failure_probability=s["failure_probability"], retry=s["retry"],
                               backoff_policy=s["backoff_policy"], backoff_delay=s["backoff_delay"],
                               events=3000, seed=1)
    assert dash.result.dead_lettered == direct.dead_lettered
    assert f"{direct.dead_letter_rate:.2%}" in dash.summary.value


def test_more_retries_fewer_dead_letters_longer_tail(dash):
    dash.set(retry=0)
    none = dash.result
    dash.controls["retry"].value = 6
    assert dash.runs >= 2
    assert dash.result.dead_letter_rate < none.dead_letter_rate
    assert dash.result.latency_p99 > none.latency_p99


def test_an_outage_is_ridden_out_only_with_enough_backoff(dash):
    dash.set(failure_probability=0.0, outage_seconds=20.0, retry=3, backoff_policy="linear",
             backoff_delay=0.1)
    assert dash.result.dead_letter_rate > 0
    dash.set(retry=8, backoff_policy="exponential", backoff_delay=0.2)
    assert dash.result.dead_letter_rate == 0


def test_unknown_control_is_refused(dash):
    with pytest.raises(KeyError, match="unknown control"):
        dash.set(retries=3)
