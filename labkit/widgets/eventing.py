"""Lab 06's dashboard: failure pattern and DeliverySpec -> latency distribution, dead letters.

Thin on purpose: every number comes from :func:`labkit.sim.simulate_delivery`, which makes its
decisions with the live broker's `DeliveryPolicy`. :func:`delivery_dashboard` returns a
:class:`DeliveryDashboard` exposing its controls, the latest result and figure, so a notebook
cell (or a test, with no kernel) can move a control and assert on what changed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
from IPython.display import clear_output, display
from matplotlib.figure import Figure

from labkit.sim import DeliverySimResult, simulate_delivery

__all__ = ["POLICIES", "DeliveryDashboard", "delivery_dashboard"]

POLICIES = ("none", "linear", "exponential")


def _controls() -> dict[str, widgets.Widget]:
    common = {"continuous_update": False, "style": {"description_width": "170px"},
              "layout": widgets.Layout(width="430px")}
    return {
        "failure_probability": widgets.FloatSlider(value=0.3, min=0.0, max=1.0, step=0.05,
                                                   description="failure probability", **common),
        "outage_seconds": widgets.FloatSlider(value=0.0, min=0.0, max=60.0, step=1.0,
                                              description="subscriber outage (s)", **common),
        "retry": widgets.IntSlider(value=3, min=0, max=12, description="retry", **common),
        "backoff_policy": widgets.Dropdown(options=POLICIES, value="exponential",
                                           description="backoffPolicy",
                                           style=common["style"],
                                           layout=widgets.Layout(width="300px")),
        "backoff_delay": widgets.FloatLogSlider(value=0.2, base=10, min=-2, max=1,
                                                description="backoffDelay (s)",
                                                readout_format=".3g", **common),
    }


class DeliveryDashboard:
    """Controls -> :func:`simulate_delivery` -> summary table and figure.

    Attributes: ``controls``, ``result`` (latest :class:`DeliverySimResult`), ``figure``,
    ``runs``, ``widget``. The outage starts 10 s into the run; events arrive at
    ``arrival_rate`` per second.
    """

    OUTAGE_START = 10.0

    def __init__(self, *, seed: int = 1, events: int = 5000, arrival_rate: float = 100.0,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self.events = events
        self.arrival_rate = arrival_rate
        self.controls = _controls()
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.result: DeliverySimResult | None = None
        self.figure: Figure | None = None
        self.runs = 0
        self._holding = False
        self.widget = widgets.HBox([widgets.VBox(list(self.controls.values()) + [self.summary]),
                                    self.output])
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self.set(**(settings or {}))

    def settings(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Set several controls and simulate once."""
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
        s = self.settings()
        policy = None if s["backoff_policy"] == "none" else s["backoff_policy"]
        outages = ((self.OUTAGE_START, self.OUTAGE_START + s["outage_seconds"]),) \
            if s["outage_seconds"] > 0 else ()
        self.result = simulate_delivery(
            failure_probability=s["failure_probability"], retry=s["retry"],
            backoff_policy=policy, backoff_delay=s["backoff_delay"], events=self.events,
            arrival_rate=self.arrival_rate, outages=outages, seed=self.seed)
        self.runs += 1
        self.summary.value = self._summary_html()
        self.figure = self._draw()
        with self.output:
            clear_output(wait=True)
            display(self.figure)

    def _summary_html(self) -> str:
        r = self.result
        assert r is not None
        rows = [("events", f"{r.events:,}"), ("delivered", f"{r.delivered:,}"),
                ("dead-letter rate", f"{r.dead_letter_rate:.2%}"),
                ("attempts per event", f"{r.mean_attempts:.2f}"),
                ("latency p50 / p99", f"{_ms(r.latency_p50)} / {_ms(r.latency_p99)}")]
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'><b>"
                        f"{html.escape(v)}</b></td></tr>" for k, v in rows)
        return f"<table>{cells}</table>"

    def _draw(self) -> Figure:
        r = self.result
        assert r is not None
        fig = Figure(figsize=(10, 3.4), layout="constrained")
        hist, outcome = fig.subplots(1, 2, width_ratios=[3, 1])
        if len(r.latencies):
            low = max(float(r.latencies.min()), 1e-3)
            high = max(float(r.latencies.max()), low * 1.01)
            bins = np.logspace(np.log10(low), np.log10(high) + 0.01, 40)
            hist.hist(r.latencies, bins=bins, color="tab:blue")
            hist.set_xscale("log")
            for q, colour in ((0.5, "tab:green"), (0.99, "tab:red")):
                hist.axvline(r.latency_quantile(q), color=colour, linestyle="--",
                             label=f"p{int(q * 100)} {_ms(r.latency_quantile(q))}")
            hist.legend(loc="upper right")
        hist.set(title="delivery latency (arrival -> subscriber's 2xx)", xlabel="seconds",
                 ylabel="events")
        outcome.bar(["delivered", "dead-lettered"], [r.delivered, r.dead_lettered + r.dropped],
                    color=["tab:green", "tab:red"])
        outcome.set(title=f"dead-letter rate {r.dead_letter_rate:.1%}", ylabel="events")
        return fig

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):  # nothing delivered
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def delivery_dashboard(*, seed: int = 1, events: int = 5000, arrival_rate: float = 100.0,
                       **settings: Any) -> DeliveryDashboard:
    """Build the dashboard, optionally with starting values (``retry=5``, ...)."""
    return DeliveryDashboard(seed=seed, events=events, arrival_rate=arrival_rate,
                             settings=settings)
