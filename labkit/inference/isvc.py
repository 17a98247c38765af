"""The InferenceService controller: a predictor served by labkit's model server as a Knative
Service, the way KServe's serverless mode does it.

Applying an InferenceService `<name>`:

- resolves `storageUri` offline (a remote scheme fails here, naming the field);
- makes the Knative Service `<name>-predictor` whose container is
  `python -m labkit.inference.server` for that model, readiness `/v2/health/ready` (so a pod is
  ready only once its model is loaded), and the component fields mapped as KServe maps them:
  minReplicas/maxReplicas -> min-scale/max-scale (minReplicas 0 = scale to zero),
  scaleMetric/scaleTarget -> metric/target, containerConcurrency, timeout, batcher;
- sets its traffic from canaryTrafficPercent (`labkit.inference.rollout`): every spec change is
  a new revision; a model that fails to load fails its revision (the server exits, as KServe's
  do) and the previously rolled-out revision keeps serving.

A custom predictor (`spec.predictor.containers`, one container) runs its own command and args
instead, readiness `/v2/health/ready` unless it sets a readinessProbe; `python` in its command
is labkit's interpreter, so `python model.py --model_name=...` (KServe's way of starting a
kserve.Model file) runs it on labkit.inference.custom here and on the SDK in a real image.

Status is KServe's: url, address, conditions (PredictorReady, IngressReady, Ready, ...),
components.predictor (latest created / ready / rolled-out / previous rolled-out revisions,
traffic), modelStatus. The local URL (no path prefix) is the predictor's ingress;
`inference_service(cluster, name)` gives notebooks the live side (cold starts split into
process start and model load).

A `transformer` becomes a second Knative Service, `<name>-transformer` (its own revisions,
pods and queue-proxies), its container given the arguments KServe's controller appends unless
the container already has them: `--model_name <name>`, `--predictor_host <predictor>`,
`--http_port 8080` and, with containerConcurrency, `--workers N` (kserve/kserve
pkg/apis/serving/v1beta1/transformer_custom.go, `CustomTransformer.GetContainer`; no
`--protocol`: the container says which protocol it speaks to the predictor). On a cluster the
predictor host is `<name>-predictor.<namespace>`; here it is the predictor's local address
(127.0.0.1:PORT, through its activator and queue-proxies). `python` in the command is
labkit's interpreter, as for a custom predictor, so a kserve.Model transformer file runs on
labkit.inference.custom. The InferenceService's URL is then the transformer's (see
labkit.inference.transformer). `logger` on the predictor posts payloads as CloudEvents
(labkit.inference.payload_logger; its url must be given). Not run locally: a logger on the
transformer, canary traffic on the transformer (it always follows its latest revision).
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from labkit.core.controller import ObjectStatus
from labkit.core.models import Container
from labkit.inference.models import API_VERSION, KIND, InferenceService, PredictorSpec, TransformerSpec
from labkit.inference.rollout import Rollout, TrafficEntry, after_routing, traffic_block
from labkit.inference.runtimes import FORMATS
from labkit.inference.storage import resolve_storage_uri
from labkit.manifests import ObjectMeta
from labkit.mesh.control import ControlPlane, control_plane
from labkit.net import python_command
from labkit.serving.autoscaler_config import GROUP, MAX_SCALE, METRIC, MIN_SCALE, TARGET
from labkit.serving.models import (
    KnativeContainer,
    KnativeHTTPGet,
    KnativeProbe,
    KnativeService,
    RevisionSpec,
    RevisionTemplate,
    ServiceSpec,
    TemplateMetadata,
    TrafficTarget,
)
from labkit.serving.service import KnativeServiceController

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["KSERVE_BATCH_DEFAULTS", "InferenceServiceController", "inference_service",
           "predictor_knative_service", "transformer_args"]

TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
KSERVE_BATCH_DEFAULTS = (32, 5000)
"""KServe's batcher defaults: maxBatchSize 32 rows, maxLatency 5000 ms."""
READY_PATH = "/v2/health/ready"

def inference_service(cluster: LocalCluster, name: str,
                      namespace: str = "default") -> InferenceServiceController:
    """The live side of an applied InferenceService."""
    return cluster.controller(f"{API_VERSION}/{KIND}", name, namespace, of=InferenceServiceController)


class InferenceServiceController:
    def __init__(self, cluster: LocalCluster, obj: InferenceService) -> None:
        self.cluster = cluster
        self.name = obj.metadata.name
        self.namespace = obj.metadata.namespace
        self.obj: InferenceService | None = None
        self.predictor: KnativeServiceController | None = None
        self.transformer: KnativeServiceController | None = None
        self.rollout = Rollout()
        self.generation = 0

    # -- the Python API ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The local address (http://127.0.0.1:PORT, no path prefix): the transformer's if
        there is one, else the predictor's."""
        front = self.transformer or self.predictor
        assert front is not None
        return front.url

    def cold_starts(self) -> list[Any]:
        """Every predictor replica start (spawn until its model was loaded and it was ready)."""
        return self.predictor.cold_starts() if self.predictor else []

    def startup_breakdown(self) -> list[dict[str, Any]]:
        """Per ready predictor pod: process start and model load seconds, as the server
        measured them (`GET /v2` on the pod, the labkit_startup extension)."""
        found = []
        for revision in (self.predictor.revisions.values() if self.predictor else []):
            for pod in revision.ready_pods():
                with urllib.request.urlopen(pod.replica.url + "/v2", timeout=5) as response:
                    startup = orjson.loads(response.read())["labkit_startup"]
                found.append({"revision": revision.name, "pod": pod.name,
                              "spawn_to_ready_seconds": pod.replica.startup_seconds, **startup})
        return found

    # -- apply / delete ---------------------------------------------------------------------

    def apply(self, obj: InferenceService) -> None:
        _refuse_unsupported(obj)
        predictor = obj.spec.predictor
        model_path = None  # a custom container finds its model itself
        if predictor.containers is None:
            assert predictor.storage_uri is not None  # the kind requires it
            model_path = str(resolve_storage_uri(predictor.storage_uri,
                                                 field=predictor.storage_uri_field))
        template = _template(obj, model_path)
        existing = self.predictor
        new_revision = existing is None or existing.obj is None or (
            existing.obj.spec.template != template)
        latest_created = existing.latest_created if existing and existing.revisions else None
        entries, rollout = traffic_block(
            predictor.canary_traffic_percent, self.rollout, new_revision=new_revision,
            latest_created=latest_created,
            tags=obj.metadata.annotations.get(TAG_ROUTING) == "true")
        ksvc = predictor_knative_service(obj, model_path, entries)
        controller = existing or KnativeServiceController(self.cluster, ksvc)
        try:
            controller.apply(ksvc)
        except BaseException:
            if existing is None:
                controller.delete()
            raise
        self.predictor = controller
        self.rollout = rollout
        self._apply_transformer(obj)
        if self.obj is None or self.obj.spec != obj.spec:
            self.generation += 1
        self.obj = obj
        self._note_rollout()
        self._join_mesh()

    def _join_mesh(self) -> None:
        """Make the InferenceService reachable through the mesh by Host header, as the Istio
        ingress makes it on a cluster: `<name>` (`<name>.<ns>.svc.cluster.local`, KServe's
        address, and `<name>.<ns>.<domain>`, its url) reaches the transformer when there is one,
        else the predictor; `<name>-predictor` (and `<name>-predictor.<ns>.<domain>`) always
        the predictor."""
        plane = _mesh(self.cluster)
        if plane is None or self.predictor is None:
            return
        domain = self.predictor.config.domain
        for name, component in ((self.name, self.transformer or self.predictor),
                                (f"{self.name}-predictor", self.predictor)):
            port = int(component.url.rsplit(":", 1)[1])
            plane.expose_route(name, self.namespace, port, [f"{name}.{self.namespace}.{domain}"])

    def _apply_transformer(self, obj: InferenceService) -> None:
        spec = obj.spec.transformer
        if spec is None:
            if self.transformer is not None:
                self.transformer.delete()
                self.transformer = None
            return
        assert self.predictor is not None
        predictor_host = self.predictor.url.split("://", 1)[1]
        ksvc = KnativeService(
            metadata=ObjectMeta(name=f"{self.name}-transformer", namespace=self.namespace),
            spec=ServiceSpec(template=_transformer_template(obj, spec, predictor_host)),
        )
        controller = self.transformer or KnativeServiceController(self.cluster, ksvc)
        try:
            controller.apply(ksvc)
        except BaseException:
            if self.transformer is None:
                controller.delete()
            raise
        self.transformer = controller

    def reconcile(self) -> None:
        if self.transformer is not None:
            self.transformer.reconcile()
        if self.predictor is not None:
            self.predictor.reconcile()
            self._note_rollout()

    def _note_rollout(self) -> None:
        assert self.predictor is not None
        self.rollout = after_routing(self.rollout, list(self.predictor.table.split))

    def delete(self) -> None:
        plane = _mesh(self.cluster)
        if plane is not None:
            for name in (self.name, f"{self.name}-predictor"):
                plane.remove_route(name, self.namespace)
        for component in (self.transformer, self.predictor):
            if component is not None:
                component.delete()

    def owned(self) -> Iterator[tuple[KnativeService, KnativeServiceController]]:
        """The Knative Services KServe makes for the predictor and transformer (`<name>-predictor`,
        `<name>-transformer`), so `cluster.controller()` reaches them as `kubectl get ksvc` does."""
        for component in (self.predictor, self.transformer):
            if component is not None and component.obj is not None:
                yield component.obj, component

    # -- status -----------------------------------------------------------------------------

    def kserve_status(self) -> dict[str, Any]:
        """status as `kubectl get isvc -o yaml` shows it on a cluster."""
        assert self.predictor is not None
        predictor = self.predictor.knative_status
        latest = self.predictor.revisions.get(predictor.latest_created_revision_name or "")
        failed = latest is not None and not latest.ready and latest.failure is not None
        components = {"predictor": _component_status(predictor)}
        components["predictor"].update(
            latestRolledoutRevision=self.rollout.latest,
            previousRolledoutRevision=self.rollout.previous or "")
        conditions = [
            _kserve_condition("IngressReady", predictor.condition("RoutesReady")),
            _kserve_condition("PredictorConfigurationReady",
                              predictor.condition("ConfigurationsReady")),
            _kserve_condition("PredictorReady", predictor.condition("Ready")),
            _kserve_condition("PredictorRouteReady", predictor.condition("RoutesReady")),
        ]
        ready = [predictor.condition("Ready")]
        if self.transformer is not None:
            transformer = self.transformer.knative_status
            components["transformer"] = _component_status(transformer)
            conditions.append(_kserve_condition("TransformerReady", transformer.condition("Ready")))
            ready.append(transformer.condition("Ready"))
        not_ready = [c for c in ready if c is None or c.status != "True"]
        conditions.append(_kserve_condition("Ready", not_ready[0] if not_ready else ready[0]))
        domain = self.predictor.config.domain
        return {
            "url": f"http://{self.name}.{self.namespace}.{domain}",
            "address": {"url": f"http://{self.name}.{self.namespace}.svc.cluster.local"},
            "observedGeneration": self.generation,
            "conditions": conditions,
            "components": components,
            "modelStatus": _model_status(latest, failed),
            "deploymentMode": "Serverless",
        }

    def status(self) -> ObjectStatus:
        assert self.predictor is not None
        kserve = self.kserve_status()
        ready = next(c for c in kserve["conditions"] if c["type"] == "Ready")
        traffic = kserve["components"]["predictor"]["traffic"]
        ok = ready["status"] == "True"
        message = ("traffic " + ", ".join(f"{t['revisionName']} {t['percent']}%" for t in traffic)
                   if ok else ready.get("message") or "not ready yet")
        predictor = self.predictor.status()
        detail: dict[str, Any] = {"kserve": kserve, "predictor": dict(predictor.detail)}
        front = predictor
        if self.transformer is not None:
            front = self.transformer.status()
            detail["transformer"] = dict(front.detail)
        return ObjectStatus(
            kind="InferenceService", name=self.name, namespace=self.namespace, ready=ok,
            url=front.url, urls=front.urls, message=message.splitlines()[0], detail=detail,
        )


def predictor_knative_service(obj: InferenceService, model_path: str | None,
                              entries: list[TrafficEntry]) -> KnativeService:
    """The Knative Service `<name>-predictor` that KServe's serverless mode makes for `obj`,
    serving the model at `model_path` (a resolved storageUri; None for a custom container)
    with the traffic `entries` (from :func:`labkit.inference.rollout.traffic_block`). Pure: no
    cluster needed."""
    return KnativeService(
        metadata=ObjectMeta(name=f"{obj.metadata.name}-predictor", namespace=obj.metadata.namespace),
        spec=ServiceSpec(template=_template(obj, model_path), traffic=[
            TrafficTarget(tag=e.tag, percent=e.percent, revision_name=e.revision_name,
                          latest_revision=e.latest_revision) for e in entries]),
    )


def _mesh(cluster: LocalCluster) -> ControlPlane | None:
    """The cluster's mesh control plane, or None when the mesh component is not loaded."""
    try:
        return control_plane(cluster)
    except LookupError:
        return None


def _refuse_unsupported(obj: InferenceService) -> None:
    logger = obj.spec.predictor.logger
    if logger is not None and not logger.url:
        raise ValueError("spec.predictor.logger.url: labkit needs the address to post events "
                         "to (a cluster defaults to the namespace's broker)")
    if obj.spec.transformer is not None and obj.spec.transformer.logger is not None:
        raise ValueError("spec.transformer.logger: payload logging is run on the predictor "
                         "only here; move the logger there")


def _annotations(obj: InferenceService, component: PredictorSpec | TransformerSpec) -> dict[str, str]:
    """Knative autoscaling annotations for a component, mapped as KServe maps them."""
    annotations = {k: v for k, v in {**obj.metadata.annotations, **component.annotations}.items()
                   if k.startswith(GROUP + "/")}
    annotations[MIN_SCALE] = str(1 if component.min_replicas is None else component.min_replicas)
    if component.max_replicas:
        annotations[MAX_SCALE] = str(component.max_replicas)
    if component.scale_metric:
        annotations[METRIC] = component.scale_metric
    if component.scale_target:
        annotations[TARGET] = str(component.scale_target)
    return annotations


def transformer_args(args: list[str], name: str, predictor_host: str,
                     container_concurrency: int | None) -> list[str]:
    """The transformer container's arguments as KServe's controller completes them
    (CustomTransformer.GetContainer): each of `--model_name`, `--predictor_host`,
    `--http_port` (and `--workers` with containerConcurrency) appended unless an argument
    already is it or starts with it (utils.IncludesArg), so `--model_name=x` is kept."""
    wanted = [("--model_name", name), ("--predictor_host", predictor_host),
              ("--http_port", "8080")]
    if container_concurrency is not None:
        wanted.append(("--workers", str(container_concurrency)))
    completed = list(args)
    for flag, value in wanted:
        if not any(arg.startswith(flag) for arg in args):
            completed += [flag, value]
    return completed


def _transformer_template(obj: InferenceService, spec: TransformerSpec,
                          predictor_host: str) -> RevisionTemplate:
    given: Container = spec.containers[0]
    probe = given.readiness_probe
    container = KnativeContainer(
        name=given.name, image=given.image, command=_local_python(given.command),
        args=transformer_args(given.args or [], obj.metadata.name, predictor_host,
                              spec.container_concurrency),
        working_dir=given.working_dir,
        env=list(given.env),
        readiness_probe=KnativeProbe(http_get=KnativeHTTPGet(
            path=probe.http_get.path if probe and probe.http_get else "/v2/health/live")),
    )
    return RevisionTemplate(
        metadata=TemplateMetadata(labels=dict(spec.labels), annotations=_annotations(obj, spec)),
        spec=RevisionSpec(container_concurrency=spec.container_concurrency,
                          timeout_seconds=spec.timeout, containers=[container]),
    )


def _template(obj: InferenceService, model_path: str | None) -> RevisionTemplate:
    predictor = obj.spec.predictor
    annotations = _annotations(obj, predictor)
    if model_path is None:
        container = _custom_container(predictor)
    else:
        container = _model_server_container(obj, predictor, model_path)
    return RevisionTemplate(
        metadata=TemplateMetadata(labels=dict(predictor.labels), annotations=annotations),
        spec=RevisionSpec(container_concurrency=predictor.container_concurrency,
                          timeout_seconds=predictor.timeout, containers=[container]),
    )


def _custom_container(predictor: PredictorSpec) -> KnativeContainer:
    """A custom predictor (spec.predictor.containers): its own command and args, as KServe
    runs it; `python` is this interpreter, so `python model.py` sees labkit (and
    labkit.inference.custom) the way the image's python sees the kserve SDK on a cluster."""
    assert predictor.containers is not None
    given = predictor.containers[0]
    probe = given.readiness_probe
    return KnativeContainer(
        name=given.name, image=given.image, command=_local_python(given.command),
        args=given.args,
        working_dir=given.working_dir, env=list(given.env),
        readiness_probe=KnativeProbe(http_get=KnativeHTTPGet(
            path=probe.http_get.path if probe and probe.http_get else READY_PATH)),
    )


def _local_python(command: list[str] | None) -> list[str] | None:
    """`python` / `python3` at the head of a command is this interpreter: the one that has
    labkit, as the image's python has the kserve SDK on a cluster."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command


def _model_server_container(obj: InferenceService, predictor: PredictorSpec,
                            model_path: str) -> KnativeContainer:
    return KnativeContainer(
        name="kserve-container",
        # The ServingRuntime KServe would pick for the format (runtimes.FORMATS), unless named.
        image="labkit/" + ((predictor.model and predictor.model.runtime)
                           or FORMATS[predictor.model_format.lower()].serving_runtime),
        command=python_command("labkit.inference.server",
                               *_server_args(obj, predictor, model_path)),
        env=list((predictor.model or predictor.sklearn).env),  # type: ignore[union-attr]
        readiness_probe=KnativeProbe(http_get=KnativeHTTPGet(path=READY_PATH)),
    )


def _server_args(obj: InferenceService, predictor: PredictorSpec, model_path: str) -> list[str]:
    args = ["--model-name", obj.metadata.name, "--storage-uri", model_path,
            "--model-format", predictor.model_format,
            "--protocol", predictor.protocol_version, "--exit-on-load-failure"]
    if predictor.batcher is not None:
        size, latency = KSERVE_BATCH_DEFAULTS
        args += ["--max-batch-size", str(predictor.batcher.max_batch_size or size),
                 "--max-latency-ms", str(predictor.batcher.max_latency or latency)]
    if predictor.logger is not None and predictor.logger.url:
        args += ["--logger-url", predictor.logger.url,
                 "--logger-mode", predictor.logger.mode or "all",
                 "--inference-service", obj.metadata.name,
                 "--namespace", obj.metadata.namespace]
    return args


def _component_status(knative: Any) -> dict[str, Any]:
    return {
        "latestCreatedRevision": knative.latest_created_revision_name,
        "latestReadyRevision": knative.latest_ready_revision_name,
        "traffic": [
            {k: v for k, v in {"revisionName": t.revision_name, "percent": t.percent,
                                "latestRevision": bool(t.latest_revision),
                                "tag": t.tag}.items() if v is not None}
            for t in knative.traffic
        ],
        "url": knative.url,
    }


def _kserve_condition(kind: str, source: Any) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": kind, "status": source.status if source else "Unknown"}
    if source is not None and source.reason:
        condition["reason"] = source.reason
    if source is not None and source.message:
        condition["message"] = source.message
    return condition


def _model_status(latest: Any, failed: bool) -> dict[str, Any]:
    if latest is None:
        return {"transitionStatus": "InProgress",
                "states": {"activeModelState": "Pending", "targetModelState": "Pending"}}
    pods = latest.describe()["pods"]
    copies = {"failedCopies": 1 if failed else 0, "totalCopies": max(len(pods), 1)}
    if failed:
        return {"transitionStatus": "BlockedByFailedLoad",
                "states": {"activeModelState": "FailedToLoad", "targetModelState": "Loaded"},
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": latest.failure,
                                    "modelRevisionName": latest.name, "location": latest.name},
                "copies": copies}
    if latest.ready:
        return {"transitionStatus": "UpToDate",
                "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                "copies": copies}
    return {"transitionStatus": "InProgress",
            "states": {"activeModelState": "Loading", "targetModelState": "Loaded"},
            "copies": copies}
