"""Lab 09's dashboard: the KServe request path -> latency per hop, p50 and p99.

Thin on purpose: every number comes from :func:`labkit.sim.simulate_dataflow`; this module maps
controls to its parameters and draws one stacked bar per view (a typical request, a slow one,
and the means of warm and cold requests), so the dominant hop shows as the longest segment.
:func:`dataflow_dashboard` returns a :class:`DataflowDashboard` whose ``controls``,
``result`` and ``figure`` a notebook cell (or a test without a kernel) can drive and inspect.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit.sim.dataflow import HOPS, MODEL_PRESETS, DataflowResult, simulate_dataflow
from labkit.widgets.common import Dashboard, new_figure, slider

__all__ = ["HOP_COLOURS", "VIEWS", "DataflowDashboard", "dataflow_dashboard"]

VIEWS = ("p50", "p99", "warm", "cold")
"""The bars drawn: the requests around p50 and p99, and the mean warm and cold request."""

HOP_COLOURS = dict(zip(HOPS, ("#8da0cb", "#5e6fa8", "#fc8d62", "#e5c494", "#b3852f", "#ffd92f",
                           "#a6d854", "#66c2a5", "#e78ac3", "#b3b3b3", "#d62728", "#7f7f7f")))


def _controls() -> dict[str, widgets.Widget]:
    return {
        "model": widgets.Dropdown(options=sorted(MODEL_PRESETS), value="iris-logistic-regression",
                                  description="model"),
        "arrival_rate": slider(widgets.FloatLogSlider, "requests per second", 2.0, base=10, min=-2, max=2, step=0.1),
        "min_replicas": slider(widgets.IntSlider, "minReplicas", 0, min=0, max=3),
        "mtls": widgets.Checkbox(value=True, description="mTLS between sidecars"),
        "proxy_ms": slider(widgets.FloatSlider, "proxy hop (ms)", 0.12, min=0.0, max=5.0, step=0.01),
        "transformer_ms": slider(widgets.FloatSlider, "transformer (ms, 0=none)", 0.0, min=0.0, max=20.0, step=0.5),
        "max_batch_size": slider(widgets.IntSlider, "batcher maxBatchSize", 1, min=1, max=32),
        "max_latency_ms": slider(widgets.FloatSlider, "batcher maxLatency (ms)", 5.0, min=1.0, max=50.0, step=1.0),
    }


SECTIONS = {
    "model and load": ["model", "arrival_rate", "min_replicas", "transformer_ms"],
    "mesh and batcher": ["mtls", "proxy_ms", "max_batch_size", "max_latency_ms"],
}


class DataflowDashboard(Dashboard):
    """Controls -> simulate_dataflow -> p50/p99 table and stacked per-hop bars."""

    title = "Lab 09: the KServe data-flow dashboard"
    about = ("where the time of a prediction goes, hop by hop, for a typical request (p50), a slow one (p99) "
             "and the mean warm and cold request, for the model, load, scaling, mTLS, proxy, transformer "
             "and batcher settings you choose.")

    def __init__(self, *, duration: float = 1800.0, seed: int = 1, **settings: Any) -> None:
        self.duration = duration
        self.seed = seed
        super().__init__(_controls(), settings, sections=SECTIONS)
        self.controls["max_batch_size"].observe(self._batcher_switched, names="value")
        self._batcher_switched()

    def _batcher_switched(self, change: Any = None) -> None:
        """maxLatency only matters once a batch can hold two requests: grey it out before."""
        self.controls["max_latency_ms"].disabled = self.controls["max_batch_size"].value <= 1

    def compute(self, settings: dict[str, Any]) -> DataflowResult:
        return simulate_dataflow(duration=self.duration, seed=self.seed, **settings)

    def summary_html(self) -> str:
        r: DataflowResult = self.result
        return self.table([
            ("requests served", f"{r.requests}"),
            ("cold requests", f"{int(r.cold.sum())} ({r.cold.mean():.1%})" if r.requests else "0"),
            ("p50 latency", f"{r.p50:.2f} ms"),
            ("p99 latency", f"{r.p99:.2f} ms"),
            ("dominant hop at p99", r.dominant_hop("p99")),
            ("mean ready pods", f"{r.autoscaling.mean_ready_pods:.2f}"),
        ])

    def draw(self) -> Figure:
        """Two panels on linear scales, since a cold start is a thousand times a warm hop:
        the warm views (p50, p99, mean warm) and the mean cold request."""
        r: DataflowResult = self.result
        figure = new_figure(3.4, left=0.1, right=0.99, bottom=0.3, top=0.91, wspace=0.25)
        warm_ax, cold_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        for ax, views in ((warm_ax, VIEWS[:3]), (cold_ax, VIEWS[3:])):
            parts = {view: r.breakdown(view) for view in views}
            labels = [f"{v}\n{sum(parts[v].values()):.1f} ms" for v in views]
            left = np.zeros(len(views))
            for hop in HOPS:
                widths = np.array([parts[view][hop] for view in views])
                if widths.any():
                    ax.barh(labels, widths, left=left, color=HOP_COLOURS[hop], label=hop)
                left += widths
            ax.invert_yaxis()
            ax.set_xlabel("milliseconds")
        warm_ax.set_title("warm requests: where the time goes")
        cold_ax.set_title("cold requests (mean)" if r.cold.any() else "no cold requests")
        handles: dict[str, Any] = {}
        for ax in (warm_ax, cold_ax):
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        ordered = [hop for hop in HOPS if hop in handles]
        figure.legend(handles=[handles[h] for h in ordered], labels=ordered, loc="lower center", ncol=6,
                      fontsize=8, frameon=False)
        return figure


def dataflow_dashboard(**settings: Any) -> DataflowDashboard:
    """The dashboard with its first run done; `settings` set initial control values
    (`duration` and `seed` fix the simulation)."""
    return DataflowDashboard(**settings)
