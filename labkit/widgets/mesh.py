"""Lab 04's dashboard: failures, retries, pool limits and ejection -> success, latency, load.

Thin on purpose: every number comes from :func:`labkit.sim.simulate_mesh`, which runs the
sidecar's own policy code; this module maps controls to Istio spec fragments and draws.
:func:`mesh_dashboard` returns a :class:`MeshDashboard` exposing its controls, the latest
result, the Istio YAML the settings amount to, and the figure, so a notebook cell (or a
test without a kernel) can move a control and assert on what changed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import yaml
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from labkit.sim import MeshSimResult, simulate_mesh
from labkit.widgets.common import Dashboard, new_figure, slider

RETRY_ON = ("5xx", "gateway-error", "connect-failure,refused-stream,unavailable,cancelled")
"""The retryOn choices offered; the last one is Istio's default policy's list."""
RETRY_ON_LABELS = {"connect-failure,refused-stream,unavailable,cancelled": "Istio's default list"}
"""The default list is too long for a dropdown at laptop width; the YAML below the plot spells it out."""


def _int(description: str, value: int, low: int, high: int) -> widgets.Widget:
    return slider(widgets.IntSlider, description, value, min=low, max=high)


def _float(description: str, value: float, low: float, high: float, step: float) -> widgets.Widget:
    return slider(widgets.FloatSlider, description, value, min=low, max=high, step=step)


def _controls() -> dict[str, widgets.Widget]:
    return {
        # the service and its trouble
        "hosts": _int("hosts (pods)", 3, 1, 10),
        "failing_hosts": _int("failing hosts", 1, 0, 10),
        "failure_rate": _float("failure rate of those", 0.5, 0.0, 1.0, 0.05),
        "arrival_rate": _float("requests per second", 100.0, 10.0, 500.0, 10.0),
        # VirtualService route
        "attempts": _int("retries.attempts", 0, 0, 5),
        "retry_on": widgets.Dropdown(options=[(RETRY_ON_LABELS.get(r, r), r) for r in RETRY_ON], value="5xx",
                                     description="retries.retryOn"),
        "per_try_timeout_ms": _int("perTryTimeout (ms, 0=none)", 0, 0, 200),
        "timeout_ms": _int("timeout (ms, 0=none)", 0, 0, 500),
        # DestinationRule trafficPolicy.connectionPool
        "max_connections": _int("maxConnections (0=∞)", 0, 0, 50),
        "max_pending": _int("http1MaxPendingRequests (0=∞)", 0, 0, 50),
        # DestinationRule trafficPolicy.outlierDetection
        "outlier_detection": widgets.Checkbox(value=False, description="outlierDetection"),
        "consecutive_5xx": _int("consecutive5xxErrors", 5, 1, 20),
        "interval_s": _float("interval (s)", 1.0, 0.5, 10.0, 0.5),
        "base_ejection_s": _float("baseEjectionTime (s)", 10.0, 1.0, 60.0, 1.0),
        "max_ejection_percent": _int("maxEjectionPercent", 100, 1, 100),
    }


SECTIONS = {
    "the service and its trouble": ["hosts", "failing_hosts", "failure_rate", "arrival_rate"],
    "VirtualService route": ["attempts", "retry_on", "per_try_timeout_ms", "timeout_ms"],
    "DestinationRule connectionPool": ["max_connections", "max_pending"],
    "DestinationRule outlierDetection": ["outlier_detection", "consecutive_5xx", "interval_s", "base_ejection_s",
                                         "max_ejection_percent"],
}


def istio_specs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The Istio spec fragments the settings amount to: the route's `retries` and `timeout`
    (VirtualService) and the `trafficPolicy` (DestinationRule); None = block left out."""
    s = settings
    retries: dict[str, Any] = {"attempts": s["attempts"]}
    if s["attempts"]:
        retries["retryOn"] = s["retry_on"]
        if s["per_try_timeout_ms"]:
            retries["perTryTimeout"] = f"{s['per_try_timeout_ms']}ms"
    pool: dict[str, Any] = {}
    if s["max_connections"]:
        pool["tcp"] = {"maxConnections": s["max_connections"]}
    if s["max_pending"]:
        pool["http"] = {"http1MaxPendingRequests": s["max_pending"]}
    outlier = None
    if s["outlier_detection"]:
        outlier = {"consecutive5xxErrors": s["consecutive_5xx"], "interval": f"{s['interval_s']:g}s",
                   "baseEjectionTime": f"{s['base_ejection_s']:g}s",
                   "maxEjectionPercent": s["max_ejection_percent"]}
    return {"retries": retries, "timeout": f"{s['timeout_ms']}ms" if s["timeout_ms"] else None,
            "connectionPool": pool or None, "outlierDetection": outlier}


def specs_yaml(specs: Mapping[str, Any]) -> str:
    """The fragments as the YAML a student would put in the two resources."""
    route: dict[str, Any] = {"route": [{"destination": {"host": "backend"}}], "retries": specs["retries"]}
    if specs["timeout"]:
        route["timeout"] = specs["timeout"]
    policy = {k: specs[k] for k in ("connectionPool", "outlierDetection") if specs[k]}
    vs = {"kind": "VirtualService", "spec": {"hosts": ["backend"], "http": [route]}}
    dr = {"kind": "DestinationRule", "spec": {"host": "backend", **({"trafficPolicy": policy} if policy else {})}}
    return yaml.safe_dump(vs, sort_keys=False) + "---\n" + yaml.safe_dump(dr, sort_keys=False)


class MeshDashboard(Dashboard):
    """Controls -> :func:`simulate_mesh` -> summary table, the Istio YAML, and a figure.

    Read by notebooks and tests: ``controls``, ``result`` (the latest
    :class:`~labkit.sim.MeshSimResult`), ``specs`` (the Istio fragments simulated),
    ``figure``, ``runs`` (simulations so far), ``error`` (why the settings could not run) and
    ``widget`` (what is displayed).
    """

    title = "Lab 04: the mesh dashboard"
    about = ("success rate, latency, tries per request and the load on failing hosts when one client "
             "sidecar calls a partly failing service, for the retries, timeouts, connection pool and "
             "outlier detection you choose, with the VirtualService and DestinationRule YAML.")

    def __init__(self, *, seed: int = 1, duration: float = 30.0, service_time: float = 0.01,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.seed, self.duration, self.service_time = seed, duration, service_time
        self.specs: dict[str, Any] = {}
        self.result: MeshSimResult | None = None
        self._plots: MeshPlots | None = None
        super().__init__(_controls(), settings, sections=SECTIONS)

    def compute(self, settings: dict[str, Any]) -> MeshSimResult:
        s = settings
        specs = istio_specs(s)
        result = simulate_mesh(
            hosts=s["hosts"], failing_hosts=min(s["failing_hosts"], s["hosts"]), failure_rate=s["failure_rate"],
            arrival_rate=s["arrival_rate"], service_time=self.service_time, duration=self.duration,
            retries=specs["retries"], timeout=s["timeout_ms"] / 1000 if s["timeout_ms"] else None,
            connection_pool=specs["connectionPool"], outlier_detection=specs["outlierDetection"], seed=self.seed)
        self.specs = specs
        return result

    def summary_html(self) -> str:
        r = self.result
        assert r is not None
        table = self.table([
            ("success rate", f"{r.success_rate:.1%} of {r.requests:,} requests"),
            ("latency p50 / p90 / p99", (f"{r.latency_p50 * 1000:.1f} / {r.latency_p90 * 1000:.1f} / "
                                         f"{r.latency_p99 * 1000:.1f} ms")),
            ("tries per request", f"{r.mean_tries:.2f}"),
            ("load on failing host(s)", f"{r.failing_load:.1f} tries/s ({r.failing_share:.1%} of tries)"),
            ("503 UO (circuit open)", f"{r.count_flag('UO'):,}"),
            ("503 UH (all ejected)", f"{r.count_flag('UH'):,}"),
            ("504 UT (timeout)", f"{r.count_flag('UT'):,}"),
            ("URX (retries exhausted)", f"{r.count_flag('URX'):,}"),
            ("ejections", f"{r.ejections}"),
        ])
        return table + f"<pre style='font-size:11px'>{html.escape(specs_yaml(self.specs))}</pre>"

    def draw(self) -> Figure:
        if self._plots is None:
            self._plots = MeshPlots()
        assert self.result is not None
        self._plots.show(self.result)
        return self._plots.figure


class MeshPlots:
    """The dashboard's figure, made once and then only given new data: making axes and their
    ticks was half of a redraw (issue 11: a change should answer in about 200 ms)."""

    def __init__(self) -> None:
        self.figure = new_figure(3.3, left=0.07, right=0.99, wspace=0.42, bottom=0.2)
        self.success, self.load, self.hosts = self.figure.subplots(1, 3)
        (self.success_line,) = self.success.plot([], [])
        self.success.set(xlabel="time (s)", ylabel="%", ylim=(0, 105))
        (self.load_line,) = self.load.plot([], [], color="tab:red", label="tries/s to failing host(s)")
        self.load.set(title="load on the failing host(s)", xlabel="time (s)", ylabel="tries per second")
        self.ejected = self.load.twinx()
        (self.ejected_line,) = self.ejected.plot([], [], drawstyle="steps-post", color="grey", linestyle="--",
                                                 label="hosts ejected")
        self.ejected.set_ylabel("hosts ejected")
        self.load.legend(loc="upper right", fontsize="small")
        # Hosts by number and no y label: ten names, or a y label beside the twin axis's, do not fit.
        self.hosts.set(title="tries per host (red: failing)", xlabel="host (backend-N)")
        self.bars: BarContainer | None = None

    def show(self, r: MeshSimResult) -> None:
        self.success_line.set_data(r.series_time, [100 * x if not math.isnan(x) else math.nan
                                                   for x in r.series_success])
        self.success.set_title(f"success rate (overall {r.success_rate:.1%})")
        self.load_line.set_data(r.series_time, r.series_failing_load)
        self.ejected_line.set_data(r.series_time, r.series_ejected)
        self.ejected.set_ylim(0, max(1, max(r.series_ejected)) + 0.5)
        if self.bars is not None:
            self.bars.remove()
        names = list(r.tries_per_host)
        self.bars = self.hosts.bar(range(len(names)), [r.tries_per_host[h] for h in names],
                                   color=["tab:red" if h in r.failing_hosts else "tab:blue" for h in names])
        self.hosts.set_xticks(range(len(names)), [name.removeprefix("backend-") for name in names])
        for axes in (self.success, self.load, self.hosts):
            axes.relim()
            axes.autoscale_view()


def mesh_dashboard(*, seed: int = 1, duration: float = 30.0, service_time: float = 0.01,
                   **settings: Any) -> MeshDashboard:
    """Build the dashboard, optionally with starting values (``attempts=2``, ...)."""
    return MeshDashboard(seed=seed, duration=duration, service_time=service_time, settings=settings)
