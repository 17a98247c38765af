"""Lab 01's dashboard: traffic, keep-alive, cold start and prices -> cold starts, latency, cost.

Thin on purpose: every number comes from :func:`labkit.sim.simulate_platform` and
:mod:`labkit.sim.cost`; this module only maps controls to their arguments and draws.
:func:`serverless_dashboard` returns a :class:`ServerlessDashboard` that exposes its
controls, the latest simulation result, the cost figures and the figure, so a notebook
cell (or a test, with no kernel) can move a control and assert on what changed. The loop of
controls, runs and redraws is :class:`labkit.widgets.common.Dashboard`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from labkit.sim import (
    Bursty,
    Diurnal,
    PlatformResult,
    Poisson,
    Prices,
    TraceReplay,
    Workload,
    always_on_monthly_cost,
    break_even_rate,
    serverless_monthly_cost_for_rate,
    simulate_platform,
)
from labkit.widgets.common import Dashboard, new_figure, slider

TRACE_PATH = Path(__file__).resolve().parents[2] / "data" / "traces" / "synthetic_trace.csv"
PATTERNS = ("Poisson", "bursty", "diurnal", "trace replay")
MEMORY_SIZES_MB = (128, 256, 512, 1024, 2048, 4096)
DAY = 86400.0

# Bursty traffic: on for a minute, off for ten (on average), so the on-rate is 11x the mean.
BURST_ON_SECONDS, BURST_OFF_SECONDS = 60.0, 600.0
# Diurnal traffic: the busiest hour sees 10x the quietest, a typical business-hours profile.
DIURNAL_PEAK_TO_TROUGH = 10.0


def make_workload(pattern: str, rate: float, trace_path: Path = TRACE_PATH) -> Workload:
    """The arrival process for a dashboard setting, with mean rate ``rate`` (req/s).

    A trace replays its own timestamps, so its rate is the trace's, not ``rate``.
    """
    if pattern == "Poisson":
        return Poisson(rate)
    if pattern == "bursty":
        on_share = BURST_ON_SECONDS / (BURST_ON_SECONDS + BURST_OFF_SECONDS)
        return Bursty(rate / on_share, 0.0, mean_high_duration=BURST_ON_SECONDS, mean_low_duration=BURST_OFF_SECONDS)
    if pattern == "diurnal":
        return Diurnal(rate, DIURNAL_PEAK_TO_TROUGH)
    if pattern == "trace replay":
        return TraceReplay(trace_path, loop=True)
    raise ValueError(f"pattern: expected one of {PATTERNS}, got {pattern!r}")


def simulated_horizon(pattern: str, workload: Workload, max_requests: int) -> float:
    """Seconds to simulate: about ``max_requests`` requests, between one hour and one week.

    Diurnal traffic and traces need at least one full cycle to mean anything, so they get
    at least a day (or the trace's length).
    """
    horizon = min(max(max_requests / workload.mean_rate, 3600.0), 7 * DAY)
    if pattern == "diurnal":
        horizon = max(horizon, DAY)
    if isinstance(workload, TraceReplay):
        horizon = max(horizon, workload.duration)
    return horizon


PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def _controls(prices: Prices) -> dict[str, widgets.Widget]:
    return {
        "pattern": widgets.Dropdown(options=PATTERNS, value="Poisson", description="traffic pattern"),
        "arrival_rate": slider(widgets.FloatLogSlider, "arrival rate (req/s)", 0.05, base=10, min=-3, max=1.3,
                               readout_format=".3g"),
        "keep_alive": slider(widgets.FloatLogSlider, "keep-alive (s)", 600.0, base=10, min=0, max=math.log10(3600),
                             readout_format=".0f"),
        "cold_start": slider(widgets.FloatSlider, "cold start (s)", 1.0, min=0.0, max=10.0, step=0.1),
        "warm_service_time": slider(widgets.FloatLogSlider, "warm service (s)", 0.2, base=10, min=-2, max=1,
                                    readout_format=".3g"),
        "memory_mb": slider(widgets.SelectionSlider, "memory (MB)", 512, options=MEMORY_SIZES_MB),
        # Bounded at 0: a negative price is meaningless, so the field cannot hold one.
        "gb_second": widgets.BoundedFloatText(value=prices.gb_second, min=0, max=1, description="$ per GB-second"),
        "per_million_requests": widgets.BoundedFloatText(value=prices.per_million_requests, min=0, max=1000,
                                                         description="$ per 1M requests"),
        "always_on_hourly": widgets.BoundedFloatText(value=prices.always_on_hourly, min=0, max=1000,
                                                     description="always-on $/hour"),
    }


SECTIONS = {
    "traffic and the function": ["pattern", "arrival_rate", "keep_alive", "cold_start", "warm_service_time"],
    "prices": ["memory_mb", "gb_second", "per_million_requests", "always_on_hourly"],
}


class ServerlessDashboard(Dashboard):
    """Controls -> :func:`simulate_platform` + cost model -> summary table and figure.

    Attributes a notebook or test reads, besides the shared ones of
    :class:`~labkit.widgets.common.Dashboard`: ``result`` is the latest
    :class:`~labkit.sim.PlatformResult` and ``costs`` its monthly dollars and break-even rate.

    The break-even rate prices warm requests only (the cost line); the simulated point also
    bills cold starts, so it sits slightly above the line when cold starts are frequent.
    """

    title = "Lab 01: the serverless dashboard"
    about = ("cold-start probability, response-time percentiles, instances over time and the monthly cost "
             "of serverless against one always-on instance, for the traffic, keep-alive, cold start, "
             "service time, memory and prices you choose.")

    def __init__(self, *, seed: int = 1, max_requests: int = 100_000, prices: Prices | None = None,
                 trace_path: Path = TRACE_PATH, settings: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self.max_requests = max_requests
        self.trace_path = trace_path
        super().__init__(_controls(prices or Prices()), settings, sections=SECTIONS)

    @property
    def costs(self) -> dict[str, float]:
        """Monthly dollars of the latest run and the break-even rate, all at that run's prices
        (empty before a first successful run)."""
        r = self.result
        if r is None:
            return {}
        return {
            "serverless_monthly": r.monthly_cost,
            "always_on_monthly": always_on_monthly_cost(1, r.prices),
            "break_even_rate": break_even_rate(r.warm_service_time, r.memory_mb, r.prices),
        }

    def compute(self, settings: dict[str, Any]) -> PlatformResult:
        prices = Prices(gb_second=settings["gb_second"], per_million_requests=settings["per_million_requests"],
                        always_on_hourly=settings["always_on_hourly"])
        try:
            workload = make_workload(settings["pattern"], settings["arrival_rate"], self.trace_path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{settings['pattern']}: {exc}") from exc
        self._show_rate(workload)
        return simulate_platform(
            workload=workload,
            warm_service_time=settings["warm_service_time"],
            cold_service_time=settings["warm_service_time"] + settings["cold_start"],
            expiration_threshold=settings["keep_alive"],
            max_time=simulated_horizon(settings["pattern"], workload, self.max_requests),
            seed=self.seed,
            memory_mb=settings["memory_mb"],
            prices=prices,
        )

    def _show_rate(self, workload: Workload) -> None:
        """A trace sets its own rate: show it on the (then disabled) rate slider."""
        rate = self.controls["arrival_rate"]
        rate.disabled = isinstance(workload, TraceReplay)
        if rate.disabled and not math.isclose(rate.value, workload.mean_rate):
            self._holding, was_holding = True, self._holding
            try:
                rate.value = workload.mean_rate
            finally:
                self._holding = was_holding

    def summary_html(self) -> str:
        r, c = self.result, self.costs
        return self.table([
            ("requests simulated", f"{r.requests:,} over {r.max_time / 3600:.1f} h"),
            ("cold-start probability", f"{r.cold_start_probability:.2%}"),
            ("response time p50 / p95 / p99", f"{r.response_time_p50:.2f} / {r.response_time_p95:.2f} / "
                                              f"{r.response_time_p99:.2f} s"),
            ("instances (avg): all / busy / idle", f"{r.avg_server_count:.2f} / {r.avg_running_count:.2f} / "
                                                   f"{r.avg_idle_count:.2f}"),
            ("serverless, per month", f"${c['serverless_monthly']:,.2f}"),
            ("1 always-on instance, per month", f"${c['always_on_monthly']:,.2f}"),
            ("break-even rate", f"{c['break_even_rate']:.3g} req/s"),
        ])

    def draw(self) -> Figure:
        r, s, costs = self.result, self.settings(), self.costs
        fig = new_figure(3.4, left=0.07, right=0.99, wspace=0.38)
        timeline, latency, cost = fig.subplots(1, 3)

        hours = r.timeline_time / 3600
        timeline.step(hours, r.timeline_servers, where="post", label="instances")
        timeline.fill_between(hours, r.timeline_servers, step="post", alpha=0.3)
        timeline.step(hours, r.timeline_running, where="post", label="busy")
        timeline.set(title="instances over time", xlabel="time (h)", ylabel="instances")
        timeline.yaxis.set_major_locator(MaxNLocator(integer=True))
        timeline.legend(loc="upper right")

        percentiles = [r.response_time_p50, r.response_time_p95, r.response_time_p99]
        latency.bar(["p50", "p95", "p99"], percentiles, color=["tab:green", "tab:orange", "tab:red"])
        latency.axhline(s["warm_service_time"] + s["cold_start"], color="grey", linestyle="--",
                        label="mean cold request")
        latency.set(title=f"response time (cold starts: {r.cold_start_probability:.1%})", ylabel="seconds")
        latency.legend(loc="upper left")

        rates = np.logspace(-3, 2, 60)
        serverless = [serverless_monthly_cost_for_rate(x, s["warm_service_time"], s["memory_mb"], r.prices)
                      for x in rates]
        cost.loglog(rates, serverless, label=f"serverless ({s['memory_mb']} MB)")
        cost.axhline(costs["always_on_monthly"], color="tab:purple", label="1 always-on instance")
        cost.axvline(costs["break_even_rate"], color="black", linestyle=":",
                     label=f"break-even {costs['break_even_rate']:.3g} req/s")
        cost.plot([r.arrival_rate], [costs["serverless_monthly"]], "o", color="tab:red",
                  label="this simulation")
        cost.set(title="monthly cost vs request rate", xlabel="requests per second", ylabel="US$ per month")
        # Plain tick labels: the default 10^x ones go through mathtext, a third of the redraw time.
        for axis in (cost.xaxis, cost.yaxis):
            axis.set_major_formatter(PLAIN)
        # Unlabelled minor ticks (8 a decade on both log axes) were a quarter of the redraw time.
        cost.minorticks_off()
        cost.legend(loc="upper left", fontsize="small")
        return fig


def serverless_dashboard(*, seed: int = 1, max_requests: int = 100_000, prices: Prices | None = None,
                         trace_path: Path = TRACE_PATH, **settings: Any) -> ServerlessDashboard:
    """Build the dashboard, optionally with starting values (``keep_alive=60``, ...)."""
    return ServerlessDashboard(seed=seed, max_requests=max_requests, prices=prices, trace_path=trace_path,
                               settings=settings)
