"""Lab 01's dashboard: traffic, keep-alive, cold start and prices -> cold starts, latency, cost.

Thin on purpose: every number comes from :func:`labkit.sim.simulate_platform` and
:mod:`labkit.sim.cost`; this module only maps controls to their arguments and draws.
:func:`serverless_dashboard` returns a :class:`ServerlessDashboard` that exposes its
controls, the latest simulation result, the cost figures and the figure, so a notebook
cell (or a test, with no kernel) can move a control and assert on what changed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from IPython.display import clear_output, display
from matplotlib.figure import Figure

from labkit.sim import (
    Bursty,
    Diurnal,
    Poisson,
    PlatformResult,
    Prices,
    TraceReplay,
    Workload,
    always_on_monthly_cost,
    break_even_rate,
    serverless_monthly_cost_for_rate,
    simulate_platform,
)

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


def _slider(kind: type, description: str, value: float, **kwargs: Any) -> widgets.Widget:
    style = {"description_width": "150px"}
    return kind(value=value, description=description, continuous_update=False, style=style,
                layout=widgets.Layout(width="420px"), **kwargs)


def _controls(prices: Prices) -> dict[str, widgets.Widget]:
    text = {"style": {"description_width": "150px"}, "layout": widgets.Layout(width="300px")}
    return {
        "pattern": widgets.Dropdown(options=PATTERNS, value="Poisson", description="traffic pattern", **text),
        "arrival_rate": _slider(widgets.FloatLogSlider, "arrival rate (req/s)", 0.05, base=10, min=-3, max=1.3,
                                readout_format=".3g"),
        "keep_alive": _slider(widgets.FloatLogSlider, "keep-alive (s)", 600.0, base=10, min=0, max=math.log10(3600),
                              readout_format=".0f"),
        "cold_start": _slider(widgets.FloatSlider, "cold start (s)", 1.0, min=0.0, max=10.0, step=0.1),
        "warm_service_time": _slider(widgets.FloatLogSlider, "warm service (s)", 0.2, base=10, min=-2, max=1,
                                     readout_format=".3g"),
        "memory_mb": _slider(widgets.SelectionSlider, "memory (MB)", 512, options=MEMORY_SIZES_MB),
        # Bounded at 0: a negative price is meaningless, so the field cannot hold one.
        "gb_second": widgets.BoundedFloatText(value=prices.gb_second, min=0, max=1, description="$ per GB-second",
                                              **text),
        "per_million_requests": widgets.BoundedFloatText(value=prices.per_million_requests, min=0, max=1000,
                                                         description="$ per 1M requests", **text),
        "always_on_hourly": widgets.BoundedFloatText(value=prices.always_on_hourly, min=0, max=1000,
                                                     description="always-on $/hour", **text),
    }


class ServerlessDashboard:
    """Controls -> :func:`simulate_platform` + cost model -> summary table and figure.

    Attributes a notebook or test reads: ``controls`` (name -> widget), ``result`` (the
    latest :class:`~labkit.sim.PlatformResult`), ``costs`` (monthly dollars and the
    break-even rate), ``figure`` (the latest matplotlib figure), ``runs`` (how many times
    the simulation ran), ``error`` (why the latest settings could not run, else None) and
    ``widget`` (the box that is displayed).

    The break-even rate prices warm requests only (the cost line); the simulated point also
    bills cold starts, so it sits slightly above the line when cold starts are frequent.
    """

    def __init__(self, *, seed: int = 1, max_requests: int = 100_000, prices: Prices | None = None,
                 trace_path: Path = TRACE_PATH, settings: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self.max_requests = max_requests
        self.trace_path = trace_path
        self.controls = _controls(prices or Prices())
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.result: PlatformResult | None = None
        self.costs: dict[str, float] = {}
        self.figure: Figure | None = None
        self.runs = 0
        self.error: str | None = None
        self._holding = False
        self.widget = widgets.HBox([
            widgets.VBox(list(self.controls.values()) + [self.summary]),
            self.output,
        ])
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self.set(**(settings or {}))

    def settings(self) -> dict[str, Any]:
        """The current control values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Set several controls at once and simulate once (moving each would run each time)."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise KeyError(f"unknown control(s) {unknown}; the controls are {sorted(self.controls)}")
        self._holding = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._holding = False
        self.update()

    def _changed(self, change: Mapping[str, Any]) -> None:
        if not self._holding:
            self.update()

    def update(self) -> None:
        """Run the simulation for the current settings and redraw."""
        s = self.settings()
        prices = Prices(gb_second=s["gb_second"], per_million_requests=s["per_million_requests"],
                        always_on_hourly=s["always_on_hourly"])
        try:
            workload = make_workload(s["pattern"], s["arrival_rate"], self.trace_path)
        except (OSError, ValueError) as exc:
            # Shown in the dashboard (an exception in a widget callback would only reach a log).
            self.error = f"{s['pattern']}: {exc}"
            self.summary.value = f"<b style='color:#b00'>{html.escape(self.error)}</b>"
            return
        self.error = None
        self._show_rate(workload)
        self.result = simulate_platform(
            workload=workload,
            warm_service_time=s["warm_service_time"],
            cold_service_time=s["warm_service_time"] + s["cold_start"],
            expiration_threshold=s["keep_alive"],
            max_time=simulated_horizon(s["pattern"], workload, self.max_requests),
            seed=self.seed,
            memory_mb=s["memory_mb"],
            prices=prices,
        )
        self.runs += 1
        self.costs = {
            "serverless_monthly": self.result.monthly_cost,
            "always_on_monthly": always_on_monthly_cost(1, prices),
            "break_even_rate": break_even_rate(s["warm_service_time"], s["memory_mb"], prices),
        }
        self.summary.value = self._summary_html()
        self.figure = self._draw(prices)
        with self.output:
            clear_output(wait=True)
            display(self.figure)

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

    def _summary_html(self) -> str:
        r, c = self.result, self.costs
        assert r is not None
        rows = [
            ("requests simulated", f"{r.requests:,} over {r.max_time / 3600:.1f} h"),
            ("cold-start probability", f"{r.cold_start_probability:.2%}"),
            ("response time p50 / p95 / p99", f"{r.response_time_p50:.2f} / {r.response_time_p95:.2f} / "
                                              f"{r.response_time_p99:.2f} s"),
            ("instances (avg): all / busy / idle", f"{r.avg_server_count:.2f} / {r.avg_running_count:.2f} / "
                                                   f"{r.avg_idle_count:.2f}"),
            ("serverless, per month", f"${c['serverless_monthly']:,.2f}"),
            ("1 always-on instance, per month", f"${c['always_on_monthly']:,.2f}"),
            ("break-even rate", f"{c['break_even_rate']:.3g} req/s"),
        ]
        cells = "".join(f"<tr><td>{k}</td><td style='text-align:right'><b>{v}</b></td></tr>" for k, v in rows)
        return f"<table>{cells}</table>"

    def _draw(self, prices: Prices) -> Figure:
        r, s = self.result, self.settings()
        assert r is not None
        fig = Figure(figsize=(12, 3.6), layout="constrained")
        timeline, latency, cost = fig.subplots(1, 3)

        hours = r.timeline_time / 3600
        timeline.step(hours, r.timeline_servers, where="post", label="instances")
        timeline.fill_between(hours, r.timeline_servers, step="post", alpha=0.3)
        timeline.step(hours, r.timeline_running, where="post", label="busy")
        timeline.set(title="instances over time", xlabel="time (h)", ylabel="instances")
        timeline.legend(loc="upper right")

        percentiles = [r.response_time_p50, r.response_time_p95, r.response_time_p99]
        latency.bar(["p50", "p95", "p99"], percentiles, color=["tab:green", "tab:orange", "tab:red"])
        latency.axhline(s["warm_service_time"] + s["cold_start"], color="grey", linestyle="--",
                        label="mean cold request")
        latency.set(title=f"response time (cold starts: {r.cold_start_probability:.1%})", ylabel="seconds")
        latency.legend(loc="upper left")

        rates = np.logspace(-3, 2, 60)
        serverless = [serverless_monthly_cost_for_rate(x, s["warm_service_time"], s["memory_mb"], prices) for x in rates]
        cost.loglog(rates, serverless, label=f"serverless ({s['memory_mb']} MB)")
        cost.axhline(self.costs["always_on_monthly"], color="tab:purple", label="1 always-on instance")
        cost.axvline(self.costs["break_even_rate"], color="black", linestyle=":",
                     label=f"break-even {self.costs['break_even_rate']:.3g} req/s")
        cost.plot([r.arrival_rate], [self.costs["serverless_monthly"]], "o", color="tab:red",
                  label="this simulation")
        cost.set(title="monthly cost vs request rate", xlabel="requests per second", ylabel="US$ per month")
        cost.legend(loc="upper left", fontsize="small")
        return fig

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def serverless_dashboard(*, seed: int = 1, max_requests: int = 100_000, prices: Prices | None = None,
                         trace_path: Path = TRACE_PATH, **settings: Any) -> ServerlessDashboard:
    """Build the dashboard, optionally with starting values (``keep_alive=60``, ...)."""
    return ServerlessDashboard(seed=seed, max_requests=max_requests, prices=prices, trace_path=trace_path,
                               settings=settings)
