"""Lab 08's dashboard: build an InferenceService from choices; see its YAML, its Knative
objects and a prediction.

Every step is labkit's own code, without a cluster:

- the manifest is validated by :func:`labkit.manifests.load` (a choice KServe or labkit would
  refuse, such as a gRPC protocol or a runtime this machine lacks, shows that error);
- the Knative Service it becomes is :func:`labkit.inference.isvc.predictor_knative_service`,
  the function the controller applies, with the traffic from KServe's canary rule
  (:func:`labkit.inference.rollout.traffic_block`); it is expanded into Revisions, Route,
  Deployments and the rest by :func:`labkit.serving.expand.expand_revisions`;
- the prediction goes through :class:`labkit.inference.server.ModelServer`'s request handler,
  the one the live model server runs, called in this kernel instead of over HTTP (starting a
  server process per change would take a second or more; lab 08's live cells make the real
  calls). Loaded models are cached per file.

Canary: the dashboard shows the **second** apply. The first one (``BASELINE``: iris, joblib,
V2) has been rolled out as `<name>-predictor-00001`; a changed predictor makes revision 00002,
and `canaryTrafficPercent` decides its share. Unchanged choices make no new revision, so a
canary percent then has nothing to split (as in KServe).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import yaml
from matplotlib.figure import Figure

from labkit.inference.httpd import Request, Response
from labkit.inference.isvc import predictor_knative_service
from labkit.inference.models import InferenceService
from labkit.inference.rollout import Rollout, traffic_block
from labkit.inference.runtimes import FORMATS as RUNTIMES
from labkit.inference.runtimes import LoadedModel
from labkit.inference.server import ModelServer
from labkit.inference.storage import resolve_storage_uri
from labkit.manifests import load
from labkit.serving.expand import expand_revisions
from labkit.serving.models import RouteTable
from labkit.widgets.common import Dashboard, new_figure, slider

__all__ = ["BASELINE", "MODELS", "IsvcDashboard", "IsvcPlan", "isvc_dashboard", "isvc_manifest"]

NAME = "sklearn-iris"
MODELS = {"iris (joblib)": "data/models/iris", "iris (skops)": "data/models/iris-skops",
          "iris (xgboost)": "data/models/iris-xgboost", "iris (lightgbm)": "data/models/iris-lightgbm",
          "iris (onnx)": "data/models/iris-onnx"}
"""storageUri per choice, relative to the repository root (as lab 08 runs)."""
FORMATS = tuple(RUNTIMES)
PROTOCOLS = ("v1", "v2", "grpc-v2")
SAMPLE = [[6.8, 2.8, 4.8, 1.4]]
BASELINE: dict[str, Any] = {"model": "iris (joblib)", "model_format": "sklearn", "protocol": "v2",
                            "min_replicas": 1, "max_replicas": 3, "canary_percent": 100}
DOMAIN = "example.com"
"""KServe's quick install configures this Knative domain; Knative's own default is svc.cluster.local."""


def isvc_manifest(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The InferenceService the choices describe (canary 100 = field left out)."""
    s = settings
    predictor: dict[str, Any] = {"minReplicas": s["min_replicas"]}
    if s["max_replicas"]:
        predictor["maxReplicas"] = s["max_replicas"]
    if s["canary_percent"] < 100:
        predictor["canaryTrafficPercent"] = s["canary_percent"]
    predictor["model"] = {"modelFormat": {"name": s["model_format"]}, "protocolVersion": s["protocol"],
                          "storageUri": MODELS[s["model"]]}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": NAME}, "spec": {"predictor": predictor}}


@dataclass(frozen=True)
class IsvcPlan:
    manifest: dict[str, Any]
    objects: list[dict[str, Any]]
    table: RouteTable
    request: dict[str, Any]
    path: str
    status: int
    response: dict[str, Any]

    def kinds(self) -> list[tuple[str, str]]:
        return [(o["kind"], o["metadata"]["name"]) for o in self.objects]


_MODELS: dict[tuple[str, str], LoadedModel] = {}


def _server(model_path: str, model_format: str, protocol: str) -> ModelServer:
    """A model server for the choices, its model loaded once per (file, format) as a pod loads
    it once (a pickle's warning is printed on that first load only)."""
    server = ModelServer(NAME, model_path, model_format=model_format, protocol=protocol)
    key = (model_path, model_format)
    if key not in _MODELS:
        server.load()
        if server.model is None:
            raise ValueError(server.load_error or "the model did not load")
        _MODELS[key] = server.model
    server.model = _MODELS[key]
    return server


def _predict(model_path: str, settings: Mapping[str, Any]) -> tuple[dict[str, Any], str, int, dict[str, Any]]:
    server = _server(model_path, settings["model_format"], settings["protocol"])
    body: dict[str, Any]
    if settings["protocol"] == "v1":
        path, body = f"/v1/models/{NAME}:predict", {"instances": SAMPLE}
    else:
        path = f"/v2/models/{NAME}/infer"
        body = {"inputs": [{"name": "input-0", "shape": [len(SAMPLE), len(SAMPLE[0])], "datatype": "FP64",
                            "data": [x for row in SAMPLE for x in row]}]}
    response = server.handle(Request("POST", path, {"content-type": "application/json"}, json.dumps(body).encode()))
    assert isinstance(response, Response), "no batcher is configured, so the answer is immediate"
    return body, path, response.status, json.loads(response.body)


def plan_isvc(settings: Mapping[str, Any]) -> IsvcPlan:
    manifest = isvc_manifest(settings)
    [isvc] = load(manifest)  # ManifestError (a ValueError) names file, field and reason
    [baseline] = load(isvc_manifest(BASELINE))
    assert isinstance(isvc, InferenceService) and isinstance(baseline, InferenceService)
    uri = isvc.spec.predictor.storage_uri
    assert uri is not None
    model_path = str(resolve_storage_uri(uri, field=isvc.spec.predictor.storage_uri_field))
    first = predictor_knative_service(baseline, str(resolve_storage_uri(MODELS[BASELINE["model"]])), [])
    rolled_out = f"{NAME}-predictor-00001"
    template = predictor_knative_service(isvc, model_path, []).spec.template
    new_revision = template != first.spec.template
    entries, _ = traffic_block(isvc.spec.predictor.canary_traffic_percent, Rollout(latest=rolled_out),
                               new_revision=new_revision, latest_created=rolled_out, tags=False)
    ksvc = predictor_knative_service(isvc, model_path, entries)
    templates = [first.spec.template, template] if new_revision else [first.spec.template]
    objects, table = expand_revisions(ksvc, templates, DOMAIN)
    request, path, status, response = _predict(model_path, settings)
    return IsvcPlan(manifest, objects, table, request, path, status, response)


def _controls() -> dict[str, widgets.Widget]:
    return {
        "model": widgets.Dropdown(options=tuple(MODELS), value=BASELINE["model"], description="model file"),
        "model_format": widgets.Dropdown(options=FORMATS, value="sklearn", description="modelFormat.name"),
        "protocol": widgets.Dropdown(options=PROTOCOLS, value="v2", description="protocolVersion"),
        "min_replicas": slider(widgets.IntSlider, "minReplicas", 1, min=0, max=3),
        "max_replicas": slider(widgets.IntSlider, "maxReplicas (0=none)", 3, min=0, max=5),
        "canary_percent": slider(widgets.IntSlider, "canary % (100=none)", 100, min=0, max=100, step=5),
    }


SECTIONS = {
    "predictor.model": ["model", "model_format", "protocol"],
    "predictor": ["min_replicas", "max_replicas", "canary_percent"],
}


class IsvcDashboard(Dashboard):
    """Controls -> InferenceService YAML, its Knative objects, the route split and a
    prediction; ``result`` is the latest :class:`IsvcPlan`."""

    title = "Lab 08: an InferenceService from choices"
    about = ("the InferenceService YAML your choices make, whether labkit's loader accepts it, the Knative "
             "objects and route split it becomes (second apply: 00001 is rolled out), and one prediction "
             "through the model server's handler.")

    def __init__(self, *, settings: Mapping[str, Any] | None = None) -> None:
        self.result: IsvcPlan | None = None
        super().__init__(_controls(), settings, sections=SECTIONS)

    def compute(self, settings: dict[str, Any]) -> IsvcPlan:
        return plan_isvc(settings)

    def summary_html(self) -> str:
        p = self.result
        assert p is not None
        revision = next(o for o in p.objects if o["kind"] == "Revision" and
                        o["metadata"]["name"] == p.table.split[0][0])
        annotations = revision["metadata"]["annotations"]
        scale = {k.split("/")[1]: v for k, v in annotations.items() if k.startswith("autoscaling.knative.dev/")}
        rows = [("Knative objects", f"{len(p.objects)}: " + ", ".join(sorted({k for k, _ in p.kinds()}))),
                ("route split", ", ".join(f"{r} {pct} %" for r, pct in p.table.split)),
                ("revision autoscaling", ", ".join(f"{k}={v}" for k, v in sorted(scale.items()))),
                ("request", f"POST {p.path}"),
                ("prediction", f"{p.status}: {json.dumps(p.response)[:80]}")]
        text = yaml.safe_dump(p.manifest, sort_keys=False)
        return (self.table(rows) + "<p style='font-size:11px'>prediction: the model server's handler in this "
                "kernel, not over HTTP</p>" + f"<pre style='font-size:11px'>{html.escape(text)}</pre>")

    def draw(self) -> Figure:
        p = self.result
        assert p is not None
        fig = new_figure(2.6, left=0.08, bottom=0.28, wspace=0.6)
        split_ax, kinds_ax = fig.subplots(1, 2)
        names = [r for r, _ in p.table.split]
        split_ax.bar(names, [pct for _, pct in p.table.split], color=["tab:blue", "tab:orange"][:len(names)])
        split_ax.set(ylim=(0, 105), ylabel="% of requests", title="predictor route")
        split_ax.tick_params(axis="x", labelsize=7)
        counts: dict[str, int] = {}
        for kind, _ in p.kinds():
            counts[kind] = counts.get(kind, 0) + 1
        kinds_ax.barh(list(counts), list(counts.values()), color="tab:grey")
        kinds_ax.invert_yaxis()
        kinds_ax.tick_params(axis="y", labelsize=7)
        kinds_ax.set(xlabel="objects", title="what it becomes")
        return fig


def isvc_dashboard(**settings: Any) -> IsvcDashboard:
    """Build the dashboard, optionally with starting values (``protocol="v1"``, ...); run it
    from the repository root (lab 08 changes there), where the storageUri paths resolve."""
    return IsvcDashboard(settings=settings)
