"""Lab 03's dashboard: sidecar cost at scale, from the per-hop cost measured in the lab.

Built from the student's own runs (:func:`labkit.sim.sidecars.hop_quantiles` of the direct
and two-sidecar latencies, with mTLS and without); the controls shape the call tree (depth,
fan-out), the app's own time, the request rate and the sidecar's CPU per hop (default from
Istio 1.24's performance page). Every number comes from :func:`labkit.sim.sidecars.sidecar_cost`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit.sim.sidecars import ISTIO_124_SIDECAR, SidecarCost, sidecar_cost
from labkit.widgets.common import Dashboard, new_figure, slider

__all__ = ["SidecarCostDashboard", "sidecar_cost_dashboard"]

ISTIO_CPU_MS_PER_HOP = ISTIO_124_SIDECAR["vcpu_per_1000_rps"]
"""0.20 vCPU per 1,000 requests per second = 0.20 ms of CPU per request through one sidecar."""


def _controls() -> dict[str, widgets.Widget]:
    return {
        "depth": slider(widgets.IntSlider, "call depth", 2, min=1, max=5),
        "fanout": slider(widgets.IntSlider, "fan-out per service", 2, min=1, max=4),
        "app_ms": slider(widgets.FloatSlider, "app time (ms)", 5.0, min=0.0, max=50.0, step=0.5),
        "rate": slider(widgets.FloatLogSlider, "requests per second", 100.0, base=10, min=0, max=4, step=0.1),
        "cpu_ms_per_hop": slider(widgets.FloatSlider, "CPU per hop (ms)", ISTIO_CPU_MS_PER_HOP,
                                 min=0.0, max=5.0, step=0.05),
        "mtls": widgets.Checkbox(value=True, description="your mTLS runs (off: plaintext)"),
    }


SECTIONS = {
    "the call tree": ["depth", "fanout", "app_ms", "rate"],
    "the sidecar": ["cpu_ms_per_hop", "mtls"],
}


class SidecarCostDashboard(Dashboard):
    """Controls -> :func:`sidecar_cost` -> added latency, CPU and memory; ``result`` is the
    latest :class:`~labkit.sim.sidecars.SidecarCost`, ``by_depth`` the same tree at each depth
    up to the chosen one (what the left plot draws)."""

    title = "Lab 03: sidecar cost at scale"
    about = ("the latency (p50, p99) and CPU that sidecars add to a call tree of the depth and fan-out you "
             "choose, from the per-hop cost you measured, with and without mutual TLS.")

    def __init__(self, hop_ms_mtls: np.ndarray, hop_ms_plain: np.ndarray, *, seed: int = 1, requests: int = 400,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.hops = {True: np.asarray(hop_ms_mtls, float), False: np.asarray(hop_ms_plain, float)}
        self.seed, self.requests = seed, requests
        self.result: SidecarCost | None = None
        self.by_depth: list[SidecarCost] = []
        super().__init__(_controls(), settings, sections=SECTIONS)

    def compute(self, settings: dict[str, Any]) -> SidecarCost:
        s = settings
        common = {"fanout": s["fanout"], "app_ms": s["app_ms"], "rate": s["rate"],
                  "cpu_ms_per_hop": s["cpu_ms_per_hop"], "seed": self.seed}
        hops = self.hops[bool(s["mtls"])]
        # about 150k simulated calls per tree keeps a change near 200 ms; wide trees get fewer
        # requests (at least 100), enough for a p99 of the end-to-end latency
        def requests(depth: int) -> int:
            return max(100, min(self.requests, 150_000 // s["fanout"] ** depth))

        result = sidecar_cost(hops, depth=s["depth"], requests=requests(s["depth"]), **common)
        self.by_depth = [sidecar_cost(hops, depth=d, requests=requests(d), **common)
                         for d in range(1, s["depth"])] + [result]
        return result

    def summary_html(self) -> str:
        r = self.result
        assert r is not None
        return self.table([
            ("calls per request", f"{r.calls} ({2 * r.calls} sidecar hops)"),
            ("p50 without / with", f"{r.percentile(50, False):.2f} / {r.percentile(50):.2f} ms"),
            ("p99 without / with", f"{r.percentile(99, False):.2f} / {r.percentile(99):.2f} ms"),
            ("added p50 / p99", f"{r.added(50):.2f} / {r.added(99):.2f} ms"),
            ("sidecar CPU", f"{r.sidecar_cpu_cores:.2f} cores"),
            ("sidecar memory", f"{r.sidecar_memory_mb:,.0f} MB for {r.sidecars} pods"),
        ])

    def draw(self) -> Figure:
        r = self.result
        assert r is not None
        fig = new_figure(2.9)
        depth_ax, cdf_ax = fig.subplots(1, 2)
        depths = [c.depth for c in self.by_depth]
        depth_ax.plot(depths, [c.added(50) for c in self.by_depth], "o-", label="p50")
        depth_ax.plot(depths, [c.added(99) for c in self.by_depth], "o-", label="p99")
        depth_ax.set(xlabel="call depth", ylabel="ms added", title=f"added by sidecars (fan-out {r.fanout})",
                     xticks=depths)
        depth_ax.legend(fontsize="small")
        share = np.arange(1, len(r.bare_ms) + 1) / len(r.bare_ms)
        cdf_ax.plot(np.sort(r.bare_ms), share, label="without sidecars")
        cdf_ax.plot(np.sort(r.meshed_ms), share, label="with sidecars")
        cdf_ax.set(xlabel="end-to-end latency (ms)", ylabel="share of requests", title="latency CDF")
        cdf_ax.legend(fontsize="small")
        return fig


def sidecar_cost_dashboard(hop_ms_mtls: np.ndarray, hop_ms_plain: np.ndarray, *, seed: int = 1,
                           **settings: Any) -> SidecarCostDashboard:
    """Build the dashboard from the per-hop quantile functions in ms (mTLS and plaintext)."""
    return SidecarCostDashboard(hop_ms_mtls, hop_ms_plain, seed=seed, settings=settings)
