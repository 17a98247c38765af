"""Lab 06's dashboard: failure pattern and DeliverySpec -> latency distribution, dead letters.

Thin on purpose: every number comes from :func:`labkit.sim.simulate_delivery`, which makes its
decisions with the live broker's `DeliveryPolicy`. :func:`delivery_dashboard` returns a
:class:`DeliveryDashboard` exposing its controls, the latest result and figure, so a notebook
cell (or a test, with no kernel) can move a control and assert on what changed. The loop of
controls, runs and redraws is :class:`labkit.widgets.common.Dashboard`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit.sim import DeliverySimResult, simulate_delivery
from labkit.widgets.common import Dashboard, new_figure

__all__ = ["POLICIES", "DeliveryDashboard", "delivery_dashboard"]

POLICIES = ("none", "linear", "exponential")


def _controls() -> dict[str, widgets.Widget]:
    common = {"continuous_update": False}
    return {
        "failure_probability": widgets.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.05,
                                                   description="failure probability", **common),
        "outage_seconds": widgets.FloatSlider(value=0.0, min=0.0, max=60.0, step=1.0,
                                              description="subscriber outage (s)", **common),
        "retry": widgets.IntSlider(value=3, min=0, max=12, description="retry", **common),
        "backoff_policy": widgets.Dropdown(options=POLICIES, value="exponential",
                                           description="backoffPolicy"),
        "backoff_delay": widgets.FloatLogSlider(value=0.2, base=10, min=-2, max=1,
                                                description="backoffDelay (s)",
                                                readout_format=".3g", **common),
    }


SECTIONS = {
    "the subscriber": ["failure_probability", "outage_seconds"],
    "Trigger delivery (DeliverySpec)": ["retry", "backoff_policy", "backoff_delay"],
}


class DeliveryDashboard(Dashboard):
    """Controls -> :func:`simulate_delivery` -> summary table and figure.

    Reads like the other dashboards (:class:`~labkit.widgets.common.Dashboard`); ``result``
    is the latest :class:`DeliverySimResult`. The outage starts 10 s into the run; events
    arrive at ``arrival_rate`` per second.
    """

    title = "Lab 06: the delivery dashboard"
    about = ("the delivery latency of every event and the dead-letter rate, for the subscriber's failures "
             "and outage and the DeliverySpec (retry, backoffPolicy, backoffDelay) you choose.")

    OUTAGE_START = 10.0

    def __init__(self, *, seed: int = 1, events: int = 5000, arrival_rate: float = 100.0,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self.events = events
        self.arrival_rate = arrival_rate
        super().__init__(_controls(), settings, sections=SECTIONS)

    def compute(self, settings: dict[str, Any]) -> DeliverySimResult:
        policy = None if settings["backoff_policy"] == "none" else settings["backoff_policy"]
        outages = ((self.OUTAGE_START, self.OUTAGE_START + settings["outage_seconds"]),) \
            if settings["outage_seconds"] > 0 else ()
        return simulate_delivery(
            failure_probability=settings["failure_probability"], retry=settings["retry"],
            backoff_policy=policy, backoff_delay=settings["backoff_delay"], events=self.events,
            arrival_rate=self.arrival_rate, outages=outages, seed=self.seed)

    def summary_html(self) -> str:
        r: DeliverySimResult = self.result
        return self.table([("events", f"{r.events:,}"), ("delivered", f"{r.delivered:,}"),
                           ("dead-letter rate", f"{r.dead_letter_rate:.2%}"),
                           ("attempts per event", f"{r.mean_attempts:.2f}"),
                           ("latency p50 / p99", f"{_ms(r.latency_p50)} / {_ms(r.latency_p99)}")])

    def draw(self) -> Figure:
        r: DeliverySimResult = self.result
        fig = new_figure(3.3, left=0.07, right=0.99, wspace=0.25)
        hist, outcome = fig.subplots(1, 2, width_ratios=[3, 1])
        if len(r.latencies):
            low = max(float(r.latencies.min()), 1e-3)
            high = max(float(r.latencies.max()), low * 1.01)
            bins = np.logspace(np.log10(low), np.log10(high) + 0.01, 40)
            hist.hist(r.latencies, bins=bins, color="tab:blue")
            hist.set_xscale("log")
            for q, colour in ((50, "tab:green"), (99, "tab:red")):
                hist.axvline(r.latency_percentile(q), color=colour, linestyle="--",
                             label=f"p{q} {_ms(r.latency_percentile(q))}")
            hist.legend(loc="upper right")
        hist.set(title="delivery latency (arrival -> subscriber's 2xx)", xlabel="seconds",
                 ylabel="events")
        outcome.bar(["delivered", "dead-lettered"], [r.delivered, r.dead_lettered + r.dropped],
                    color=["tab:green", "tab:red"])
        outcome.set(title=f"dead-letter rate {r.dead_letter_rate:.1%}", ylabel="events")
        return fig


def _ms(seconds: float) -> str:
    if math.isnan(seconds):  # nothing delivered
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def delivery_dashboard(*, seed: int = 1, events: int = 5000, arrival_rate: float = 100.0,
                       **settings: Any) -> DeliveryDashboard:
    """Build the dashboard, optionally with starting values (``retry=5``, ...)."""
    return DeliveryDashboard(seed=seed, events=events, arrival_rate=arrival_rate,
                             settings=settings)
