"""Lab 10's dashboard: a Flagger canary's settings and a failure -> one rollout and many.

Thin on purpose: every number comes from :mod:`labkit.sim.canary`, which runs Flagger's own
analysis step (`labkit.flagger.analysis.step`) on a modelled fleet. The controls are the
Canary's `analysis` fields (interval, threshold, stepWeight, maxWeight and the gates) plus the
traffic level and how the new version is worse; the dashboard shows the timeline of one seeded
rollout (canary weight and what Flagger read at each step, failed checks marked) and the
statistics of a batch of seeded rollouts (how often the new version is rolled back, how much
traffic reached it). ``dash.manifest`` is the Canary YAML the settings amount to.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import ipywidgets as widgets
import numpy as np
import yaml
from matplotlib.figure import Figure

from labkit.sim.canary import CanaryBatch, CanaryRun, Traffic, canary_manifest, run_many, simulate_canary
from labkit.sim.canary_traffic import DEFAULT_SEVERITY, FAILURES
from labkit.widgets.common import Dashboard, slider

__all__ = ["CanaryDashboard", "canary_dashboard"]

CACHED_SETTINGS = 32
"""Settings whose results are kept, so moving a control back shows them at once."""

WHAT_FAILS = {
    "none": "nothing: the new version is as good as the primary",
    "errors": "+{s:g} points of 5xx for everyone",
    "latency": "{s:g} x the primary's median latency",
    "quality": "{s:g} points lower accuracy (HTTP looks fine)",
    "segment": "{s:g} % of the requests of one user segment fail",
}


def _controls() -> dict[str, widgets.Widget]:
    return {
        "rate": slider(widgets.IntSlider, "requests per second", 10, min=1, max=200),
        "failure": widgets.Dropdown(options=FAILURES, value="errors", description="new version's fault"),
        "interval_s": slider(widgets.IntSlider, "interval (s)", 60, min=10, max=300, step=10),
        "step_weight": slider(widgets.IntSlider, "stepWeight (%)", 10, min=1, max=50),
        "max_weight": slider(widgets.IntSlider, "maxWeight (%)", 50, min=5, max=100, step=5),
        "threshold": slider(widgets.IntSlider, "threshold (failed checks)", 5, min=1, max=20),
        "min_success_rate": slider(widgets.FloatSlider, "min success rate (%)", 99.0, min=90.0, max=100.0,
                                    step=0.1),
        "max_p99_ms": slider(widgets.IntSlider, "max p99 (ms)", 500, min=50, max=3000, step=50),
        "min_accuracy": slider(widgets.FloatSlider, "min accuracy (%, 0 = off)", 0.0, min=0.0, max=100.0,
                                step=0.5),
    }


SECTIONS = {
    "traffic and the new version": ["rate", "failure"],
    "the Canary's analysis": ["interval_s", "step_weight", "max_weight", "threshold", "min_success_rate",
                              "max_p99_ms", "min_accuracy"],
}


class CanaryDashboard(Dashboard):
    """Controls -> one seeded rollout and a batch of `batch` rollouts -> tables and a figure.

    Read by notebooks and tests: ``controls``, ``result`` (a (CanaryRun, CanaryBatch) pair),
    ``run``, ``batch``, ``manifest`` (the Canary simulated), ``figure``, ``runs``, ``error``
    and ``widget``.
    """

    title = "Lab 10: the canary dashboard"
    about = ("one seeded Flagger rollout (canary weight and what the analysis read at each step, failed "
             "checks marked) and a batch of rollouts (how often the worse version is rolled back, how much "
             "traffic reached it), for the traffic, the fault and the Canary analysis settings you choose.")

    def __init__(self, *, seed: int = 1, batch: int = 100, traffic: Traffic | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.seed, self.batch_size, self.traffic = seed, batch, traffic or Traffic()
        self.manifest: dict[str, Any] = {}
        self._cache: dict[tuple[Any, ...], tuple[CanaryRun, CanaryBatch]] = {}
        super().__init__(_controls(), settings, sections=SECTIONS)

    @property
    def run(self) -> CanaryRun:
        return self.result[0]

    @property
    def batch(self) -> CanaryBatch:
        return self.result[1]

    def compute(self, settings: dict[str, Any]) -> tuple[CanaryRun, CanaryBatch]:
        s = settings
        if s["step_weight"] > s["max_weight"]:
            raise ValueError(f"stepWeight {s['step_weight']} is larger than maxWeight {s['max_weight']}: "
                             "the first step would already pass the maximum")
        manifest = canary_manifest(
            interval=f"{s['interval_s']}s", threshold=s["threshold"], max_weight=s["max_weight"],
            step_weight=s["step_weight"], min_success_rate=round(s["min_success_rate"], 2),
            max_p99_ms=s["max_p99_ms"], min_accuracy=s["min_accuracy"] or None)
        traffic = replace(self.traffic, rate=float(s["rate"]))
        key = tuple(sorted(s.items()))
        if key not in self._cache:
            run = simulate_canary(manifest, traffic=traffic, failure=s["failure"], seed=self.seed)
            batch = run_many(self.batch_size, self.seed, manifest, traffic=traffic, failure=s["failure"])
            if len(self._cache) >= CACHED_SETTINGS:
                del self._cache[next(iter(self._cache))]  # the oldest
            self._cache[key] = (run, batch)
        self.manifest = manifest
        return self._cache[key]

    def summary_html(self) -> str:
        run, batch = self.result
        failure = self.controls["failure"].value
        fault = WHAT_FAILS[failure].format(s=DEFAULT_SEVERITY[failure])
        detect = "-" if run.detection_seconds is None else f"{run.detection_seconds:g} s"
        rate_name = "detection rate (rolled back)" if batch.bad else "false rollbacks"
        spread = batch.summary()
        table = self.table([
            ("new version", fault),
            ("this rollout", f"{run.outcome} at {run.ended_at / 60:.1f} min"),
            ("first failed check after", detect),
            ("requests on new version", f"{run.exposed_requests:,} ({run.exposed_share:.1%})"),
            ("users exposed", f"{run.exposed_users:,}"),
            (f"{batch.n} rollouts: {rate_name}", f"{batch.rollback_rate:.1%}"),
            ("rolled back below 25 % weight", f"{batch.caught_below(25):.1%}"),
            ("share on new version p50 / p95",
             f"{spread['exposed_share_p50']:.1%} / {spread['exposed_share_p95']:.1%}"),
        ])
        analysis = yaml.safe_dump({"analysis": self.manifest["spec"]["analysis"]}, sort_keys=False)
        # Compact rows (the widget's default line height is a control's), so the column stays short.
        return (f"<div style='line-height:1.35'>{table}</div>"
                "<details><summary>the Canary's analysis YAML</summary>"
                f"<pre style='font-size:11px'>{html.escape(analysis)}</pre></details>")

    def draw(self) -> Figure:
        run, batch = self.result
        # Fixed margins: constrained layout would cost more than the simulation per redraw.
        fig = Figure(figsize=(6.5, 4))
        timeline, spread = fig.subplots(2, 1, height_ratios=(3, 2),
                                        gridspec_kw={"left": 0.09, "right": 0.98, "top": 0.93,
                                                     "bottom": 0.11, "hspace": 0.55})
        t = [d.time / 60 for d in run.timeline]
        timeline.step(t, [d.weight for d in run.timeline], where="post", color="tab:blue",
                      label="canary weight %")
        failed = [d for i, d in enumerate(run.timeline) if i and d.failed_checks > run.timeline[i - 1].failed_checks]
        timeline.plot([d.time / 60 for d in failed], [d.weight for d in failed], "x", color="tab:red",
                      markersize=8, label="failed check")
        for key, label, color in (("request-success-rate", "success rate %", "tab:green"),
                                  ("quality-gate accuracy", "accuracy % (labelled)", "tab:orange")):
            values = [d.readings.get(key) for d in run.timeline]
            if any(v is not None for v in values):
                timeline.plot(t, [math.nan if v is None else v for v in values], ".-", color=color, label=label)
        timeline.set(title=f"one rollout: {run.outcome}", xlabel="minutes", ylabel="%", ylim=(0, 130))
        timeline.legend(loc="upper left", ncols=4, fontsize="x-small", frameon=False)
        share = 100 * batch.exposed_share()
        spread.hist(share, bins=np.linspace(0, max(100.0, share.max()), 41),
                    color="tab:red" if batch.bad else "tab:blue")
        spread.set(title=f"{batch.n} rollouts: requests that reached the new version",
                   xlabel="% of requests during the rollout", ylabel="rollouts")
        return fig


def canary_dashboard(*, seed: int = 1, batch: int = 100, traffic: Traffic | None = None,
                     **settings: Any) -> CanaryDashboard:
    """Build the dashboard, optionally with starting values (``failure="quality"``, ...)."""
    return CanaryDashboard(seed=seed, batch=batch, traffic=traffic, settings=settings)
