"""Lab 05's dashboard: Knative autoscaling settings and a workload -> pods, panic, latency, cost.

Thin on purpose: every number comes from :func:`labkit.sim.autoscaling.simulate_autoscaling`,
configured with the very annotations a Knative Service carries (``dash.annotations()`` shows
them, ready to paste) plus the cluster-wide ``config-autoscaler`` settings (scale rates,
scale-to-zero grace period). The loop of controls, runs and redraws is
:class:`labkit.widgets.common.Dashboard`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit.serving.autoscaler_config import AutoscalerConfig, RevisionAutoscaling
from labkit.sim import Bursty, Diurnal, Poisson, Workload
from labkit.sim.autoscaling import (
    AutoscalingResult,
    burst_workload,
    simulate_autoscaling,
)
from labkit.widgets.common import Dashboard, new_figure, slider

__all__ = ["PATTERNS", "AutoscalingDashboard", "autoscaling_dashboard", "make_workload"]

PATTERNS = ("one burst", "Poisson", "bursty (MMPP)", "diurnal")
BURST_START = 120.0
"""When the single burst starts: after two minutes of base load, so the windows are full."""
MMPP_HIGH_SECONDS, MMPP_LOW_SECONDS = 30.0, 150.0
PREFIX = "autoscaling.knative.dev/"
MAX_POINTS = 4000
"""At most this many requests are drawn in the latency scatter (a seeded sample)."""


def make_workload(pattern: str, rate: float, burst_rate: float, burst_seconds: float, duration: float,
                  seed: int = 1) -> Workload:
    """The arrivals for a dashboard setting: `rate` req/s of base load and bursts of `burst_rate`."""
    if pattern == "one burst":
        return burst_workload(rate, burst_rate, BURST_START, burst_seconds, duration, seed=seed)
    if rate <= 0:
        raise ValueError(f"{pattern}: the base rate must be > 0 req/s")
    if pattern == "Poisson":
        return Poisson(rate)
    if pattern == "bursty (MMPP)":
        return Bursty(max(burst_rate, rate * 1.01), rate, mean_high_duration=MMPP_HIGH_SECONDS,
                      mean_low_duration=MMPP_LOW_SECONDS)
    if pattern == "diurnal":
        return Diurnal(rate, 10.0, period=duration)  # one "day" over the run
    raise ValueError(f"pattern: expected one of {PATTERNS}, got {pattern!r}")


def _controls() -> dict[str, widgets.Widget]:
    return {
        "pattern": widgets.Dropdown(options=PATTERNS, value="one burst", description="workload"),
        "rate": slider(widgets.FloatSlider, "base rate (req/s)", 2.0, min=0.0, max=100.0, step=0.5),
        "burst_rate": slider(widgets.FloatSlider, "burst rate (req/s)", 40.0, min=0.0, max=500.0, step=5.0),
        "burst_seconds": slider(widgets.IntSlider, "burst length (s)", 30, min=1, max=300),
        "service_time": slider(widgets.FloatLogSlider, "service time (s)", 0.5, base=10, min=-2, max=1,
                               readout_format=".3g"),
        "cold_start": slider(widgets.FloatSlider, "cold start (s)", 2.0, min=0.0, max=20.0, step=0.5),
        "container_concurrency": slider(widgets.IntSlider, "containerConcurrency", 0, min=0, max=100),
        "metric": widgets.Dropdown(options=("concurrency", "rps"), value="concurrency", description="metric"),
        "target": slider(widgets.FloatLogSlider, "target (per pod)", 10.0, base=10, min=-1, max=3,
                         readout_format=".3g"),
        "utilization": slider(widgets.IntSlider, "target utilisation %", 70, min=1, max=100),
        "window": slider(widgets.IntSlider, "stable window (s)", 60, min=6, max=600),
        "panic_window_percentage": slider(widgets.FloatSlider, "panic window %", 10.0, min=1.0, max=100.0,
                                          step=1.0),
        "panic_threshold_percentage": slider(widgets.IntSlider, "panic threshold %", 200, min=110, max=1000,
                                             step=10),
        "max_scale_up_rate": slider(widgets.FloatLogSlider, "max scale-up rate", 1000.0, base=10,
                                    min=math.log10(1.1), max=3, readout_format=".3g"),
        "max_scale_down_rate": slider(widgets.FloatSlider, "max scale-down rate", 2.0, min=1.1, max=10.0,
                                      step=0.1),
        "min_scale": slider(widgets.IntSlider, "min-scale", 0, min=0, max=50),
        "max_scale": slider(widgets.IntSlider, "max-scale (0 = none)", 0, min=0, max=200),
        "initial_scale": slider(widgets.IntSlider, "initial-scale", 1, min=1, max=50),
        "grace": slider(widgets.IntSlider, "scale-to-zero grace (s)", 30, min=1, max=300),
    }


SECTIONS = {
    "workload and the container": ["pattern", "rate", "burst_rate", "burst_seconds", "service_time", "cold_start",
                                   "container_concurrency"],
    "revision annotations": ["metric", "target", "utilization", "window", "panic_window_percentage",
                             "panic_threshold_percentage", "min_scale", "max_scale", "initial_scale"],
    "config-autoscaler (cluster-wide)": ["max_scale_up_rate", "max_scale_down_rate", "grace"],
}
FOLDED = ("config-autoscaler (cluster-wide)",)
"""Rarely changed: the cluster's scale rates and grace period, folded away."""


def annotations_for(settings: Mapping[str, Any]) -> dict[str, str]:
    """The revision annotations for dashboard settings (strings, as in a manifest)."""
    anns = {
        "metric": settings["metric"],
        "target": f"{settings['target']:.3g}",
        "target-utilization-percentage": str(settings["utilization"]),
        "window": f"{settings['window']}s",
        "panic-window-percentage": f"{settings['panic_window_percentage']:g}",
        "panic-threshold-percentage": str(settings["panic_threshold_percentage"]),
        "min-scale": str(settings["min_scale"]),
        "max-scale": str(settings["max_scale"]),
        "initial-scale": str(settings["initial_scale"]),
    }
    return {PREFIX + key: value for key, value in anns.items()}


def config_for(settings: Mapping[str, Any]) -> AutoscalerConfig:
    """The cluster-wide config-autoscaler settings the dashboard changes."""
    return AutoscalerConfig(max_scale_up_rate=settings["max_scale_up_rate"],
                            max_scale_down_rate=settings["max_scale_down_rate"],
                            scale_to_zero_grace_period=float(settings["grace"]))


def resolved_rows(resolved: RevisionAutoscaling, container_concurrency: int,
                  asked_target: float) -> list[tuple[str, str]]:
    """What the autoscaler made of the settings, as Knative resolves them: the per-pod target
    (total x utilisation, capped by containerConcurrency), the windows and the limits. A setting
    that changes none of the outcomes above still shows here that it was taken."""
    unit = "concurrent requests" if resolved.metric == "concurrency" else "req/s"
    target = f"{resolved.target:.3g} {unit} = {resolved.total:.3g} x {resolved.target / resolved.total:.0%}"
    if resolved.metric == "concurrency" and container_concurrency and asked_target > container_concurrency:
        target += f" (containerConcurrency {container_concurrency} caps the target {asked_target:.3g})"
    config = resolved.config
    return [
        ("autoscaler's target per pod", target),
        ("windows: stable / panic", f"{resolved.stable_window:g} s / {resolved.panic_window:g} s"),
        ("panic when desired/ready pods reach", f"{resolved.panic_threshold:.0%}"),
        ("scale rates: ready pods x up / ÷ down", f"{config.max_scale_up_rate:.3g} / {config.max_scale_down_rate:.3g}"),
    ]


class AutoscalingDashboard(Dashboard):
    """Controls -> :func:`simulate_autoscaling` -> pods vs load, panic, latency, cost.

    Reads like the other dashboards: ``controls``, ``result`` (the latest
    :class:`~labkit.sim.autoscaling.AutoscalingResult`), ``figure``, ``runs``, ``error``,
    ``widget``; ``annotations()`` and ``config()`` give the settings as Knative takes them.
    """

    title = "Lab 05: the autoscaling dashboard"
    about = ("ready and desired pods against the load (red: panic), the latency of every request (red: it "
             "waited for a cold start) and the percentiles, for the workload, revision annotations and "
             "config-autoscaler settings you choose.")

    def __init__(self, *, seed: int = 1, duration: float = 600.0, settings: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self.duration = duration
        super().__init__(_controls(), settings, sections=SECTIONS, folded=FOLDED)

    def annotations(self) -> dict[str, str]:
        return annotations_for(self.settings())

    def config(self) -> AutoscalerConfig:
        return config_for(self.settings())

    def compute(self, settings: dict[str, Any]) -> AutoscalingResult:
        if settings["max_scale"] and settings["min_scale"] > settings["max_scale"]:
            raise ValueError(f"min-scale ({settings['min_scale']}) must not exceed max-scale ({settings['max_scale']})")
        workload = make_workload(settings["pattern"], settings["rate"], settings["burst_rate"],
                                 settings["burst_seconds"], self.duration, seed=self.seed)
        return simulate_autoscaling(
            workload, annotations_for(settings), config=config_for(settings), duration=self.duration,
            seed=self.seed, container_concurrency=settings["container_concurrency"],
            service_time=settings["service_time"], cold_start=settings["cold_start"],
        )

    def summary_html(self) -> str:
        r: AutoscalingResult = self.result
        return self.table([
            ("requests: served / 503 / timed out", f"{r.served:,} / {r.rejected:,} / {r.timed_out:,}"),
            ("pods: most / mean", f"{r.max_ready_pods} / {r.mean_ready_pods:.1f}"),
            ("time in panic", f"{r.timeline['in_panic'].sum():.0f} s in {len(r.panic_periods)} period(s)"),
            ("cold starts (requests that waited)", f"{r.cold_starts} ({r.requests_cold:,})"),
            ("latency p50 / p95 / p99", " / ".join(f"{r.latency_percentile(q):.2f}" for q in (50, 95, 99)) + " s"),
            ("queueing delay p99", f"{r.queue_delay_percentile(99):.2f} s"),
            ("pod-seconds (cost)", f"{r.pod_seconds:,.0f} (${r.cost:.4f})"),
            *resolved_rows(r.settings, r.container_concurrency, self.settings()["target"]),
        ])

    def draw(self) -> Figure:
        r: AutoscalingResult = self.result
        fig = new_figure(3.6, left=0.06, right=0.99, wspace=0.3)
        pods, latency, bars = fig.subplots(1, 3, width_ratios=[2.2, 1.4, 1])
        t = r.timeline["time"]
        for start, end in r.panic_periods:
            pods.axvspan(start, end, color="tab:red", alpha=0.12, lw=0)
        pods.step(t, r.timeline["ready"], where="post", color="tab:blue", label="ready pods")
        pods.step(t, np.maximum(r.timeline["desired"], 0), where="post", color="tab:blue", ls="--", alpha=0.6,
                  label="desired pods")
        # The load in pods: what the metric of each second calls for at the per-pod target.
        assert r.spec is not None, "the dashboard's settings have no HPA class: the KPA decides"
        metric = r.spec.scaling_metric
        series = r.timeline["concurrency"] if metric == "concurrency" else r.timeline["requests"]
        pods.plot(t, series / r.spec.target_value, color="tab:orange", lw=0.8, alpha=0.8,
                  label=f"{metric} / target")
        pods.set(title="pods vs load (red: panic)", xlabel="time (s)", ylabel="pods")
        pods.set_ylim(bottom=0)
        pods.legend(loc="upper right", fontsize="small")

        if r.served:
            rng = np.random.default_rng(0)
            pick = np.sort(rng.choice(r.served, size=min(r.served, MAX_POINTS), replace=False))
            latency.scatter(r.arrival[pick], r.latency[pick], s=3, alpha=0.4, label="latency")
            latency.scatter(r.arrival[pick][r.cold[pick]], r.latency[pick][r.cold[pick]], s=5, color="tab:red",
                            label="waited for a cold start")
            latency.legend(loc="upper right", fontsize="small")
        latency.set(title="latency of each request", xlabel="arrival time (s)", ylabel="seconds")

        qs = (50, 95, 99)
        x = np.arange(len(qs))
        bars.bar(x - 0.2, [r.latency_percentile(q) for q in qs], width=0.4, label="latency")
        bars.bar(x + 0.2, [r.queue_delay_percentile(q) for q in qs], width=0.4, label="queueing delay")
        bars.set_xticks(x, [f"p{q}" for q in qs])
        bars.set(title="percentiles", ylabel="seconds")
        bars.margins(y=0.45)  # headroom: the legend sits above the bars, not on them
        bars.legend(loc="upper left", fontsize="small")
        return fig


def autoscaling_dashboard(*, seed: int = 1, duration: float = 600.0, **settings: Any) -> AutoscalingDashboard:
    """Build the dashboard, optionally with starting values (``target=1``, ``window=20``, ...)."""
    return AutoscalingDashboard(seed=seed, duration=duration, settings=settings)
