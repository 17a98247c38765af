"""Lab 07's dashboard: a Knative Service's traffic block -> its Route, Revisions and measured split.

Three revisions of `hello` exist (`hello-00001` .. `hello-00003`, the last the latest). The
controls write a `spec.traffic` block (a percent and a tag per entry; the third entry either
follows `latestRevision` or names `hello-00003`); the dashboard then

- validates the whole Service with labkit's manifest loader, so a block Knative's webhook
  would refuse (percents not summing to 100, a tag used twice) shows its error instead;
- expands it with :func:`labkit.serving.expand.expand_revisions`, the code `expand()` uses:
  the Revisions with their `routingState`, the Route and the Ingress's splits and tag hosts;
- sends `requests` simulated requests to the main URL through
  :meth:`labkit.serving.models.RouteTable.pick`, the pick the live Service's router makes,
  with a seeded generator, and compares the measured shares with the wanted percents.
"""

from __future__ import annotations

import html
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import yaml
from matplotlib.figure import Figure

from labkit.manifests import load
from labkit.serving.expand import expand_revisions
from labkit.serving.models import KnativeService, RouteTable
from labkit.widgets.common import Dashboard, new_figure, slider

__all__ = ["NO_TAG", "REVISIONS", "TAGS", "TrafficDashboard", "TrafficPlan", "traffic_dashboard",
           "traffic_service"]

REVISIONS = ("hello-00001", "hello-00002", "hello-00003")
"""The revisions that exist; the last is the latest ready one."""
NO_TAG = "(no tag)"
TAGS = (NO_TAG, "stable", "previous", "candidate")
LATEST = "latestRevision: true"
PINNED = f"revisionName: {REVISIONS[-1]}"


def _template(target: str) -> dict[str, Any]:
    """Knative's helloworld-go template with its TARGET changed: one revision per value."""
    return {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go",
                                     "env": [{"name": "TARGET", "value": target}]}]}}


def traffic_service(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The Knative Service manifest (a dict) whose traffic block the settings describe."""
    s = settings
    traffic: list[dict[str, Any]] = []
    for i, revision in enumerate(REVISIONS, start=1):
        entry: dict[str, Any] = {"revisionName": revision}
        if i == len(REVISIONS) and s["latest_mode"] == LATEST:
            entry = {"latestRevision": True}
        entry["percent"] = s[f"percent_{i}"]
        if s[f"tag_{i}"] != NO_TAG:
            entry["tag"] = s[f"tag_{i}"]
        traffic.append(entry)
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello"},
            "spec": {"template": _template("revision three"), "traffic": traffic}}


@dataclass(frozen=True)
class TrafficPlan:
    """What the settings amount to: the validated Service, the objects Knative holds, the
    resolved route table and the revisions simulated requests reached."""

    service: KnativeService
    objects: list[dict[str, Any]]
    table: RouteTable
    counts: Counter[str]
    requests: int

    def routing_state(self) -> dict[str, str]:
        """Revision name -> its `serving.knative.dev/routingState` label."""
        return {o["metadata"]["name"]: o["metadata"]["labels"]["serving.knative.dev/routingState"]
                for o in self.objects if o["kind"] == "Revision"}

    def measured(self) -> dict[str, float]:
        """Revision -> share of the simulated requests it got (0..1)."""
        return {r: self.counts.get(r, 0) / self.requests for r in REVISIONS}


def plan_traffic(settings: Mapping[str, Any], *, seed: int, domain: str) -> TrafficPlan:
    [service] = load(traffic_service(settings))  # ManifestError (a ValueError) names the field
    assert isinstance(service, KnativeService)
    templates = [load({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "hello"},
                       "spec": {"template": _template(target)}})[0].spec.template  # type: ignore[attr-defined]  # a Service
                 for target in ("Knative", "revision two", "revision three")]
    objects, table = expand_revisions(service, templates, domain)
    if table.problems:
        raise ValueError("; ".join(table.problems))
    rng = random.Random(seed)
    requests = int(settings["requests"])
    counts = Counter(table.pick(rng) for _ in range(requests)) if table.split else Counter()
    return TrafficPlan(service, objects, table, counts, requests)


def _controls() -> dict[str, widgets.Widget]:
    def percent(i: int, value: int) -> widgets.Widget:
        return slider(widgets.IntSlider, f"{REVISIONS[i - 1]} %", value, min=0, max=100, step=5)

    def tag(i: int, value: str) -> widgets.Widget:
        return widgets.Dropdown(options=TAGS, value=value, description=f"{REVISIONS[i - 1]} tag")

    return {
        "percent_1": percent(1, 80), "tag_1": tag(1, "stable"),
        "percent_2": percent(2, 0), "tag_2": tag(2, NO_TAG),
        "latest_mode": widgets.Dropdown(options=(LATEST, PINNED), value=LATEST, description="third entry"),
        "percent_3": percent(3, 20), "tag_3": tag(3, "candidate"),
        "requests": slider(widgets.IntSlider, "simulated requests", 1000, min=100, max=10000, step=100),
    }


SECTIONS = {
    "spec.traffic": ["percent_1", "tag_1", "percent_2", "tag_2", "latest_mode", "percent_3", "tag_3"],
    "simulated traffic": ["requests"],
}


class TrafficDashboard(Dashboard):
    """Controls -> traffic block -> validated Service, expanded objects, measured split.

    ``result`` is the latest :class:`TrafficPlan`; ``error`` says why Knative would refuse the
    current block (the dashboard shows it in place of the result)."""

    title = "Lab 07: a Knative traffic block, its Route and the measured split"
    about = ("the traffic block the controls write for three revisions of hello, whether Knative accepts it, "
             "each revision's routingState and tag URL, and the split measured over simulated requests "
             "through the route's weighted pick.")

    def __init__(self, *, seed: int = 1, domain: str = "svc.cluster.local",
                 settings: Mapping[str, Any] | None = None) -> None:
        self.seed, self.domain = seed, domain
        self.result: TrafficPlan | None = None
        super().__init__(_controls(), settings, sections=SECTIONS)

    def compute(self, settings: dict[str, Any]) -> TrafficPlan:
        return plan_traffic(settings, seed=self.seed, domain=self.domain)

    def summary_html(self) -> str:
        plan = self.result
        assert plan is not None
        wanted = dict(plan.table.split)
        measured = plan.measured()
        state = plan.routing_state()
        rows = [(f"{r} ({state[r]})", f"{wanted.get(r, 0)} % wanted, {measured[r]:.1%} measured") for r in REVISIONS]
        rows += [(f"tag {tag}", f"http://{tag}-hello.default.{self.domain} -> {rev}") for tag, rev in plan.table.tags]
        traffic = yaml.safe_dump({"traffic": traffic_service(self.settings())["spec"]["traffic"]}, sort_keys=False)
        return (self.table(rows) + f"<pre style='font-size:11px'>{html.escape(traffic)}</pre>")

    def draw(self) -> Figure:
        plan = self.result
        assert plan is not None
        wanted = dict(plan.table.split)
        measured = plan.measured()
        fig = new_figure(3.0, left=0.09, bottom=0.2)
        ax = fig.subplots()
        x = range(len(REVISIONS))
        ax.bar([i - 0.2 for i in x], [wanted.get(r, 0) for r in REVISIONS], width=0.4, label="percent in the Route")
        ax.bar([i + 0.2 for i in x], [100 * measured[r] for r in REVISIONS], width=0.4,
               label=f"measured over {plan.requests:,} requests")
        ax.set_xticks(list(x), [f"{r}\n{plan.routing_state()[r]}" for r in REVISIONS])
        ax.set(ylabel="% of main-URL requests", ylim=(0, 105), title="main URL: wanted vs measured split")
        ax.legend(fontsize="small")
        return fig


def traffic_dashboard(*, seed: int = 1, domain: str = "svc.cluster.local", **settings: Any) -> TrafficDashboard:
    """Build the dashboard, optionally with starting values (``percent_1=50``, ...)."""
    return TrafficDashboard(seed=seed, domain=domain, settings=settings)
