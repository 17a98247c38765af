"""Lab 02's dashboard: turn mesh features on and off over a failing, insecure topology.

The topology is lab 02's: three callers send requests to `backend` (three pods, one of them
flaky):

- `frontend` (the legitimate caller) and `sleep` (a workload that should not call the backend
  directly), both get sidecars when the namespace is injected;
- `legacy-job`, a client outside the mesh: never a sidecar, always plaintext.

Each feature maps to the Istio object that turns it on, and each outcome comes from labkit's
policy code, not from a formula:

- retries, outlier detection and connection-pool limits -> :func:`labkit.sim.simulate_mesh`
  (the client sidecar's retry, balancer, pool and outlier code); the traffic of callers with a
  sidecar is simulated as one client (one sidecar's view, a simplification), callers without
  one go straight to the pods, picked at random as kube-proxy's iptables mode picks;
- mTLS -> :func:`labkit.mesh.authz.admits` (a STRICT server sidecar resets plaintext
  connections); a request is plaintext on the wire unless both ends have sidecars and the mode
  is not DISABLE;
- authorisation -> :func:`labkit.mesh.authz.authorize` on each caller's request, whose principal
  exists only over mutual TLS: a DENY rule on `sa/sleep` cannot match a plaintext request.

Latency: the simulated latency plus `hop_ms` per sidecar the request crosses (two between
sidecars, one for a plaintext client reaching a server sidecar); set it from lab 03's numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import yaml
from matplotlib.figure import Figure

from labkit.mesh import authz
from labkit.sim import MeshSimResult, simulate_mesh
from labkit.widgets.common import Dashboard, new_figure, slider
from labkit.widgets.mesh import specs_yaml

__all__ = ["CALLERS", "CallerOutcome", "FeaturesDashboard", "MeshFeatures", "features_dashboard"]


@dataclass(frozen=True)
class Caller:
    name: str
    share: float
    """Share of all requests this caller sends."""
    injectable: bool
    """Gets a sidecar when the namespace is injected."""


CALLERS = (Caller("frontend", 0.8, True), Caller("sleep", 0.1, True), Caller("legacy-job", 0.1, False))
NAMESPACE = "default"
BACKEND_LABELS = {"app": "backend"}
DENY_SLEEP = {"selector": {"matchLabels": BACKEND_LABELS}, "action": "DENY",
              "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/{NAMESPACE}/sa/sleep"]}}]}]}
POOL = {"tcp": {"maxConnections": 4}, "http": {"http1MaxPendingRequests": 4}}
OUTLIER = {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "15s", "maxEjectionPercent": 100}
MTLS_MODES = (authz.DISABLE, authz.PERMISSIVE, authz.STRICT)


@dataclass(frozen=True)
class CallerOutcome:
    """What one caller saw. Shares are of the requests it sent."""

    caller: str
    sidecar: bool
    plaintext: bool
    refused: float
    """Connection reset by a STRICT server sidecar (no HTTP status at all)."""
    denied: float
    """403 RBAC: access denied, from the backend's sidecar."""
    ok: float
    failed: float
    """5xx (and the mesh's own 503s) among the requests that reached the backend."""
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class MeshFeatures:
    outcomes: tuple[CallerOutcome, ...]
    meshed: MeshSimResult | None
    plain: MeshSimResult | None

    def outcome(self, caller: str) -> CallerOutcome:
        return next(o for o in self.outcomes if o.caller == caller)

    @property
    def plaintext_share(self) -> float:
        """Share of all requests whose bytes crossed the wire readable."""
        return sum(c.share for c, o in zip(CALLERS, self.outcomes) if o.plaintext)


def istio_objects(settings: Mapping[str, Any]) -> str:
    """The Istio YAML the settings amount to (nothing without sidecars)."""
    s = settings
    if not s["sidecars"]:
        return "# no sidecars: no Istio object has any effect\n"
    retries = {"attempts": s["attempts"], "retryOn": "5xx"} if s["attempts"] else None
    text = ""
    if retries or s["circuit_breaking"] or s["outlier_detection"]:
        text = specs_yaml({"retries": retries or {"attempts": 0}, "timeout": None,
                           "connectionPool": POOL if s["circuit_breaking"] else None,
                           "outlierDetection": OUTLIER if s["outlier_detection"] else None}) + "---\n"
    text += yaml.safe_dump({"kind": "PeerAuthentication", "spec": {"mtls": {"mode": s["mtls"]}}}, sort_keys=False)
    if s["authz"]:
        text += "---\n" + yaml.safe_dump({"kind": "AuthorizationPolicy", "spec": DENY_SLEEP}, sort_keys=False)
    return text


def mesh_features(settings: Mapping[str, Any], *, seed: int, duration: float,
                  service_time: float = 0.01) -> MeshFeatures:
    s = settings
    mesh_on = bool(s["sidecars"])
    policies = ([authz.AuthorizationPolicy.from_spec(DENY_SLEEP, NAMESPACE, "deny-sleep")]
                if mesh_on and s["authz"] else [])
    admitted: dict[str, tuple[bool, bool, bool, bool]] = {}
    for caller in CALLERS:
        sidecar = mesh_on and caller.injectable
        mutual_tls = sidecar and s["mtls"] != authz.DISABLE
        reaches = authz.admits(s["mtls"], mutual_tls) if mesh_on else True
        principal = f"cluster.local/ns/{NAMESPACE}/sa/{caller.name}" if mutual_tls else None
        allowed = authz.authorize(policies, NAMESPACE, BACKEND_LABELS,
                                  authz.AuthzRequest(principal=principal)).allowed
        admitted[caller.name] = (sidecar, mutual_tls, reaches, allowed)

    def run(callers: list[Caller], with_policy: bool) -> MeshSimResult | None:
        rate = s["arrival_rate"] * sum(c.share for c in callers)
        if rate <= 0:
            return None
        return simulate_mesh(
            hosts=3, failing_hosts=1, failure_rate=s["failure_rate"], arrival_rate=rate, service_time=service_time,
            duration=duration, seed=seed,
            retries=({"attempts": s["attempts"], "retryOn": "5xx"} if s["attempts"] else None) if with_policy
            else {"attempts": 0},
            connection_pool=POOL if with_policy and s["circuit_breaking"] else None,
            outlier_detection=OUTLIER if with_policy and s["outlier_detection"] else None,
            load_balancer=None if with_policy else {"simple": "RANDOM"})

    through = [c for c in CALLERS if admitted[c.name][2] and admitted[c.name][3]]
    meshed = run([c for c in through if admitted[c.name][0]], True)
    plain = run([c for c in through if not admitted[c.name][0]], False)
    outcomes = []
    for caller in CALLERS:
        sidecar, mutual_tls, reaches, allowed = admitted[caller.name]
        result = meshed if sidecar else plain
        hops = (2 if sidecar else 1) if mesh_on else 0
        extra = hops * s["hop_ms"]
        if not reaches or not allowed or result is None:
            ok, failed, p50, p99 = 0.0, 0.0, math.nan, math.nan
        else:
            ok, failed = result.success_rate, 1 - result.success_rate
            p50, p99 = result.latency_p50 * 1000 + extra, result.latency_p99 * 1000 + extra
        outcomes.append(CallerOutcome(caller.name, sidecar, not mutual_tls, 0.0 if reaches else 1.0,
                                      1.0 if reaches and not allowed else 0.0, ok, failed, p50, p99))
    return MeshFeatures(tuple(outcomes), meshed, plain)


def _controls() -> dict[str, widgets.Widget]:
    return {
        "sidecars": widgets.Checkbox(value=False, description="sidecars injected"),
        "attempts": slider(widgets.IntSlider, "retries.attempts", 0, min=0, max=5),
        "mtls": widgets.Dropdown(options=MTLS_MODES, value=authz.PERMISSIVE, description="PeerAuthentication"),
        "outlier_detection": widgets.Checkbox(value=False, description="outlierDetection"),
        "circuit_breaking": widgets.Checkbox(value=False, description="connectionPool limits"),
        "authz": widgets.Checkbox(value=False, description="DENY sa/sleep at backend"),
        "failure_rate": slider(widgets.FloatSlider, "flaky pod fails", 0.5, min=0.0, max=1.0, step=0.05),
        "arrival_rate": slider(widgets.FloatSlider, "requests per second", 100.0, min=10.0, max=400.0, step=10.0),
        "hop_ms": slider(widgets.FloatSlider, "sidecar hop (ms)", 0.5, min=0.0, max=5.0, step=0.1),
    }


SECTIONS = {
    "mesh features": ["sidecars", "attempts", "mtls", "outlier_detection", "circuit_breaking", "authz"],
    "the topology and its trouble": ["failure_rate", "arrival_rate", "hop_ms"],
}


class FeaturesDashboard(Dashboard):
    """Controls -> :func:`mesh_features` -> a row per caller and a figure; ``result`` is the
    latest :class:`MeshFeatures`."""

    title = "Lab 02: which mesh feature fixes what"
    about = ("what frontend, sleep and a legacy job outside the mesh get from a backend with one flaky pod "
             "(success, 5xx, 403, reset, plaintext on the wire, latency) as you turn sidecars, retries, "
             "mTLS modes, outlier detection, pool limits and a DENY policy on and off.")

    def __init__(self, *, seed: int = 1, duration: float = 10.0, settings: Mapping[str, Any] | None = None) -> None:
        self.seed, self.duration = seed, duration
        self.result: MeshFeatures | None = None
        super().__init__(_controls(), settings, sections=SECTIONS)

    def compute(self, settings: dict[str, Any]) -> MeshFeatures:
        return mesh_features(settings, seed=self.seed, duration=self.duration)

    def summary_html(self) -> str:
        r = self.result
        assert r is not None

        def latency(o: CallerOutcome) -> str:
            return "-" if math.isnan(o.p50_ms) else f"p50 {o.p50_ms:.1f} / p99 {o.p99_ms:.1f} ms"

        def outcome(o: CallerOutcome) -> str:
            if o.refused:
                return "reset by STRICT"
            if o.denied:
                return "403 denied"
            return f"{o.ok:.1%} ok, {o.failed:.1%} 5xx"

        rows = []
        for o in r.outcomes:
            rows.append((f"{o.caller} ({'sidecar' if o.sidecar else 'no sidecar'})",
                         f"{outcome(o)}; {'plaintext' if o.plaintext else 'mTLS'}"))
            rows.append((f"{o.caller} latency", latency(o)))
        rows.append(("requests readable on the wire", f"{r.plaintext_share:.0%}"))
        return self.table(rows) + f"<pre style='font-size:11px'>{html.escape(istio_objects(self.settings()))}</pre>"

    def draw(self) -> Figure:
        r = self.result
        assert r is not None
        fig = new_figure(2.9, left=0.12, bottom=0.18, wspace=0.45)
        outcome_ax, latency_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        names = [f"{o.caller}{' (plaintext)' if o.plaintext else ''}" for o in r.outcomes]
        left = [0.0] * len(names)
        for label, colour, field in (("ok", "tab:green", "ok"), ("5xx", "tab:red", "failed"),
                                     ("403 denied", "tab:orange", "denied"), ("reset (STRICT)", "grey", "refused")):
            values = [100 * getattr(o, field) for o in r.outcomes]
            outcome_ax.barh(names, values, left=left, color=colour, label=label)
            left = [a + b for a, b in zip(left, values)]
        outcome_ax.invert_yaxis()
        outcome_ax.set(xlim=(0, 100), xlabel="% of the caller's requests", title="what each caller got")
        outcome_ax.legend(fontsize="x-small", loc="lower right")
        for i, o in enumerate(r.outcomes):
            latency_ax.barh([i - 0.2, i + 0.2], [0 if math.isnan(o.p50_ms) else o.p50_ms,
                                                 0 if math.isnan(o.p99_ms) else o.p99_ms],
                            height=0.4, color=["tab:blue", "tab:purple"])
        latency_ax.set_yticks(range(len(names)), [o.caller for o in r.outcomes])
        latency_ax.invert_yaxis()
        latency_ax.set(xlabel="ms (blue p50, purple p99)", title="latency of answered requests")
        return fig


def features_dashboard(*, seed: int = 1, duration: float = 10.0, **settings: Any) -> FeaturesDashboard:
    """Build the dashboard, optionally with starting values (``sidecars=True``, ...)."""
    return FeaturesDashboard(seed=seed, duration=duration, settings=settings)
