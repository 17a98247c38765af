"""The serverless dashboard, driven headless: move a control, check the state it produced."""

from __future__ import annotations

import pytest

from labkit.sim import Prices, break_even_rate, simulate_platform
from labkit.widgets.serverless import PATTERNS, make_workload, serverless_dashboard, simulated_horizon


@pytest.fixture
def dash(headless_dashboard):
    return headless_dashboard(serverless_dashboard, max_requests=20_000)


def test_dashboard_shows_the_simulators_numbers(dash):
    s = dash.settings()
    direct = simulate_platform(
        arrival_rate=s["arrival_rate"], warm_service_time=s["warm_service_time"],
        cold_service_time=s["warm_service_time"] + s["cold_start"], expiration_threshold=s["keep_alive"],
        max_time=dash.result.max_time, seed=1, memory_mb=s["memory_mb"],
    )
    assert dash.result.cold_start_probability == direct.cold_start_probability
    assert dash.result.response_time_p99 == direct.response_time_p99
    assert f"{direct.cold_start_probability:.2%}" in dash.summary.value


def test_shorter_keep_alive_means_more_cold_starts(dash):
    before = dash.result.cold_start_probability
    runs = dash.runs
    dash.controls["keep_alive"].value = 5.0
    assert dash.runs == runs + 1
    assert dash.result.expiration_threshold == 5.0
    assert dash.result.cold_start_probability > 2 * before


def test_higher_rate_means_fewer_cold_starts_and_more_cost(dash):
    dash.controls["keep_alive"].value = 30.0
    low_rate = dash.result
    low_cost = dash.costs["serverless_monthly"]
    dash.controls["arrival_rate"].value = 2.0
    assert dash.result.cold_start_probability < low_rate.cold_start_probability
    assert dash.costs["serverless_monthly"] > low_cost


def test_cold_start_time_moves_the_tail_not_the_median(dash):
    dash.set(keep_alive=60.0)  # cold starts are a few percent: above 1%, so they make the p99
    assert 0.01 < dash.result.cold_start_probability < 0.5
    before = dash.result
    dash.controls["cold_start"].value = 8.0
    assert dash.result.response_time_p99 > before.response_time_p99 + 5
    assert dash.result.response_time_p50 == pytest.approx(before.response_time_p50, rel=0.2)


def test_prices_and_memory_move_the_break_even(dash):
    be = dash.costs["break_even_rate"]
    assert be == break_even_rate(0.2, 512, Prices())
    dash.controls["memory_mb"].value = 2048
    assert dash.costs["break_even_rate"] < be
    dash.controls["always_on_hourly"].value = 2 * Prices().always_on_hourly
    assert dash.costs["always_on_monthly"] == pytest.approx(2 * 9.010025)
    cost_axis = dash.figure.axes[2]
    marked = [line.get_xdata()[0] for line in cost_axis.lines if line.get_label().startswith("break-even")]
    assert marked == [pytest.approx(dash.costs["break_even_rate"])]


def test_set_runs_once_and_rejects_unknown_controls(dash):
    runs = dash.runs
    dash.set(pattern="bursty", arrival_rate=0.2, keep_alive=60.0)
    assert dash.runs == runs + 1 and dash.result.workload.startswith("Bursty(")
    assert dash.result.arrival_rate == pytest.approx(0.2)
    with pytest.raises(KeyError, match="unknown control.*'keepalive'"):
        dash.set(keepalive=3)


def test_bursty_traffic_costs_more_cold_starts_than_poisson_at_the_same_rate(dash):
    dash.set(arrival_rate=0.5, keep_alive=60.0)
    poisson = dash.result.cold_start_probability
    dash.controls["pattern"].value = "bursty"
    assert dash.result.cold_start_probability > poisson


def test_timeline_figure_holds_the_instance_counts(dash):
    timeline = dash.figure.axes[0]
    assert list(timeline.lines[0].get_ydata()) == list(dash.result.timeline_servers)


def test_trace_replay_uses_the_traces_rate(tmp_path, headless_dashboard):
    trace = tmp_path / "trace.csv"
    trace.write_text("# synthetic\ntimestamp\n" + "".join(f"{t}\n" for t in range(0, 3600, 10)))
    dash = headless_dashboard(serverless_dashboard, trace_path=trace, pattern="trace replay")
    assert dash.controls["arrival_rate"].disabled
    assert dash.controls["arrival_rate"].value == pytest.approx(360 / 3591)  # 360 arrivals in [0, 3591) s
    assert dash.result.workload.startswith("TraceReplay(")
    dash.controls["pattern"].value = "Poisson"
    assert not dash.controls["arrival_rate"].disabled


def test_workload_mapping_keeps_the_mean_rate():
    for pattern in PATTERNS[:3]:
        assert make_workload(pattern, 0.3).mean_rate == pytest.approx(0.3)
    with pytest.raises(ValueError, match="pattern: expected one of"):
        make_workload("steady", 1.0)


def test_horizon_covers_a_day_for_diurnal_traffic():
    assert simulated_horizon("Poisson", make_workload("Poisson", 10.0), 100_000) == 10_000
    assert simulated_horizon("diurnal", make_workload("diurnal", 10.0), 100_000) == 86400
    assert simulated_horizon("Poisson", make_workload("Poisson", 1e-3), 100_000) == 7 * 86400


def test_a_missing_trace_is_reported_in_the_dashboard(tmp_path, dash, capsys):
    missing = tmp_path / "nope.csv"
    dash.trace_path = missing
    before = dash.result
    dash.controls["pattern"].value = "trace replay"
    assert dash.error is not None and str(missing) in dash.error and "cannot read trace" in dash.error
    assert str(missing) in dash.summary.value and dash.result is before
    dash.controls["pattern"].value = "Poisson"
    assert dash.error is None and dash.result is not before


def test_prices_cannot_go_negative(dash):
    dash.controls["gb_second"].value = -1.0
    assert dash.controls["gb_second"].value == 0.0
    assert dash.result.prices.gb_second == 0.0
