"""What a Knative Service becomes on Kubernetes: every object its reconcilers create.

`expand(service)` lists, as plain Kubernetes objects (dicts, or YAML with `expand_yaml`), what
Knative's controllers would create for a Service in a cluster, with the names, labels and
owner references they give them:

======================  =========================  ==========================================
Object                  Name                       Made by / role
======================  =========================  ==========================================
Configuration           <svc>                      Service reconciler: the template
Route                   <svc>                      Service reconciler: the traffic block
Revision                <svc>-00001                Configuration reconciler: one per template
Deployment              <rev>-deployment           Revision: user-container + queue-proxy
PodAutoscaler (KPA)     <rev>                      Revision: scale bounds, concurrency
ServerlessService       <rev>                      KPA: Serve or Proxy (activator) mode
Service (private)       <rev>-private              SKS: selects the pods; metrics ports
Service (public)        <rev>                      SKS: no selector; pods or activator
Ingress (KIngress)      <svc>                      Route: hosts and weighted splits
Service (route)         <svc>, <tag>-<svc>         Route: DNS names pointing at the gateway
======================  =========================  ==========================================

The KIngress (``networking.internal.knative.dev/v1alpha1`` Ingress) is Knative's own networking
layer: one rule per host set (cluster-local names, the external domain; again per tag), each
split naming a revision's public Service and appending the ``Knative-Serving-Revision`` and
``-Namespace`` headers the activator routes by. Its ``networking.knative.dev/ingress.class``
annotation picks the networking plugin that programs it (the Service's annotation, else
config-network's ``ingress-class``, by default ``istio.ingress.networking.knative.dev``:
net-istio turns it into Istio Gateways and VirtualServices; Kourier and Contour are the
others). During a gradual rollout it also carries the rollout state
(``networking.internal.knative.dev/rollout``, `labkit.serving.rollout_duration`).

With a live service (`expand(service, live=knative_service(cluster, name))`) every revision
that exists is expanded with its current replicas, routing state and SKS mode; otherwise the
first revision is shown as Knative would create it. UIDs are derived from names, so the
output is stable from run to run (a real cluster assigns random ones).

Followed: knative/serving ``pkg/reconciler/{service,configuration,revision,route,
serverlessservice,autoscaling/kpa}/resources`` per
/work/shared/reference/knative-revisions-traffic.md section 1 (names, labels, ports, env).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import yaml

from labkit.serving.autoscaler_config import RevisionAutoscaling
from labkit.serving.constants import USER_CONTAINER
from labkit.serving.models import API_VERSION, KnativeService, RevisionTemplate, RouteTable, resolve_traffic
from labkit.serving.rollout_duration import Rollout

if TYPE_CHECKING:
    from labkit.serving.service import KnativeServiceController

__all__ = ["QUEUE_IMAGE", "QUEUE_PORTS", "expand", "expand_revisions", "expand_yaml", "object_names"]

SERVING = "serving.knative.dev"
AUTOSCALING_INTERNAL = "autoscaling.internal.knative.dev/v1alpha1"
NETWORKING_INTERNAL = "networking.internal.knative.dev/v1alpha1"
QUEUE_IMAGE = "gcr.io/knative-releases/knative.dev/serving/cmd/queue"
QUEUE_PORTS = {"queue-port": 8012, "http-queueadm": 8022, "http-autometric": 9090,
               "http-usermetric": 9091}
"""The queue-proxy's ports: serving (8012), admin/drain (8022), autoscaler metrics (9090),
user metrics (9091)."""
GATEWAY = "knative-local-gateway.istio-system.svc.cluster.local"
INGRESS_CLASS = "networking.knative.dev/ingress.class"
"""Knative's IngressClassAnnotationKey (knative.dev/networking pkg/apis/networking/register.go)."""
DEFAULT_INGRESS_CLASS = "istio.ingress.networking.knative.dev"
"""config-network's ingress-class default (net-istio)."""
ROLLOUT_ANNOTATION = "networking.internal.knative.dev/rollout"
"""Where the Route reconciler keeps the rollout state on the KIngress (RolloutAnnotationKey)."""


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "labkit:" + "/".join(parts)))


def _owner(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _meta(name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any],
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [owner]
    return meta


class _Rev:
    """One revision to expand: its template and what the cluster knows about it now."""

    def __init__(self, name: str, generation: int, template: RevisionTemplate,
                 replicas: int | None, mode: str | None, routed: bool) -> None:
        self.name = name
        self.generation = generation
        self.template = template
        self.replicas = replicas
        self.mode = mode
        self.routed = routed


def _revisions(service: KnativeService, live: KnativeServiceController | None) -> list[_Rev]:
    if live is None:
        name = service.spec.template.metadata.name or f"{service.metadata.name}-00001"
        return [_Rev(name, 1, service.spec.template, None, None, True)]
    routed = live.table.routed
    return [_Rev(r.name, r.generation, r.template, r.replica_count, r.mode,
                 r.name in routed) for r in live.revisions.values()]


def _service_labels(svc: str, svc_uid: str) -> dict[str, str]:
    return {f"{SERVING}/service": svc, f"{SERVING}/serviceUID": svc_uid}


def _revision_objects(svc: KnativeService, rev: _Rev, svc_uid: str, config_uid: str
                      ) -> list[dict[str, Any]]:
    name, ns, service_name = rev.name, svc.metadata.namespace, svc.metadata.name
    rev_uid = _uid(ns, "revision", name)
    spec = rev.template.spec
    container = spec.container
    limits = spec.timeouts
    settings = RevisionAutoscaling.resolve(rev.template.metadata.annotations,
                                           container_concurrency=spec.concurrency_limit)
    replicas = settings.initial_scale if rev.replicas is None else rev.replicas
    labels = {
        **rev.template.metadata.labels,
        f"{SERVING}/configuration": service_name,
        f"{SERVING}/configurationGeneration": str(rev.generation),
        f"{SERVING}/configurationUID": config_uid,
        **_service_labels(service_name, svc_uid),
    }
    revision_labels = {**labels, f"{SERVING}/routingState": "active" if rev.routed else "reserve"}
    pod_labels = {**labels, f"{SERVING}/revision": name, f"{SERVING}/revisionUID": rev_uid,
                  "app": name}
    annotations = dict(rev.template.metadata.annotations)
    revision = {
        "apiVersion": API_VERSION,
        "kind": "Revision",
        "metadata": _meta(name, ns, revision_labels,
                          _owner(API_VERSION, "Configuration", service_name, config_uid),
                          {**annotations, f"{SERVING}/routes": service_name}),
        "spec": {
            "containerConcurrency": spec.concurrency_limit,
            "timeoutSeconds": spec.timeout,
            # SetDefaults leaves these two nil when off (revision_defaults.go).
            **({"responseStartTimeoutSeconds": int(limits.response_start)}
               if limits.response_start else {}),
            **({"idleTimeoutSeconds": int(limits.idle)} if limits.idle else {}),
            "enableServiceLinks": False,
            "containers": [_user_container(rev.template)],
        },
    }
    owner = _owner(API_VERSION, "Revision", name, rev_uid)
    probe = {"httpGet": {"path": container.ready_path, "port": container.container_port}}
    queue_env = [
        ("SERVING_NAMESPACE", ns), ("SERVING_SERVICE", service_name),
        ("SERVING_CONFIGURATION", service_name), ("SERVING_REVISION", name),
        ("QUEUE_SERVING_PORT", "8012"), ("QUEUE_SERVING_TLS_PORT", "8112"),
        ("CONTAINER_CONCURRENCY", str(spec.concurrency_limit)),
        ("REVISION_TIMEOUT_SECONDS", str(spec.timeout)),
        # Always set, 0 when off (pkg/reconciler/revision/resources/queue.go, makeQueueContainer).
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", str(int(limits.response_start))),
        ("REVISION_IDLE_TIMEOUT_SECONDS", str(int(limits.idle))),
        ("USER_PORT", str(container.container_port)),
        ("SERVING_READINESS_PROBE", json.dumps(probe, separators=(",", ":"))),
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(f"{name}-deployment", ns, pod_labels, owner),
        "spec": {
            "replicas": replicas,
            # The revision's progress-deadline annotation, else config-deployment's (deploy.go).
            "progressDeadlineSeconds": int(settings.progress_deadline),
            "selector": {"matchLabels": {f"{SERVING}/revisionUID": rev_uid}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": {
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": spec.timeout,
                    "containers": [
                        {**_user_container(rev.template),
                         "lifecycle": {"preStop": {"httpGet": {"path": "/wait-for-drain",
                                                               "port": 8022}}}},
                        {
                            "name": "queue-proxy",
                            "image": QUEUE_IMAGE,
                            "ports": [{"name": n, "containerPort": p}
                                      for n, p in QUEUE_PORTS.items()],
                            "env": [
                                *({"name": k, "value": v} for k, v in queue_env),
                                {"name": "SERVING_POD",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "SERVING_POD_IP",
                                 "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            ],
                            "readinessProbe": {"httpGet": {
                                "port": 8012,
                                "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]}},
                        },
                    ],
                },
            },
        },
    }
    pa = {
        "apiVersion": AUTOSCALING_INTERNAL,
        "kind": "PodAutoscaler",
        "metadata": _meta(name, ns, labels, owner, {
            "autoscaling.knative.dev/class": settings.autoscaler_class,
            "autoscaling.knative.dev/metric": settings.metric}),
        "spec": {
            "containerConcurrency": spec.concurrency_limit,
            "protocolType": "http1",
            "reachability": "Reachable" if rev.routed else "Unreachable",
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": f"{name}-deployment"},
        },
    }
    pa_uid = _uid(ns, "podautoscaler", name)
    sks_owner = _owner(AUTOSCALING_INTERNAL, "PodAutoscaler", name, pa_uid)
    mode = rev.mode or ("Serve" if settings.target_burst_capacity == 0 else "Proxy")
    sks = {
        "apiVersion": NETWORKING_INTERNAL,
        "kind": "ServerlessService",
        "metadata": _meta(name, ns, labels, sks_owner),
        "spec": {
            "mode": mode,
            "numActivators": 2 if settings.target_burst_capacity == 0 else max(2, -(
                -int(replicas * settings.total + max(settings.target_burst_capacity, 0))
                // int(settings.config.activator_capacity))),
            "objectRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                          "name": f"{name}-deployment"},
            "protocolType": "http1",
        },
    }
    sks_uid = _uid(ns, "serverlessservice", name)
    svc_owner = _owner(NETWORKING_INTERNAL, "ServerlessService", name, sks_uid)

    def k8s_service(suffix: str, kind: str, selector: bool) -> dict[str, Any]:
        ports = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8012}]
        if selector:
            ports += [{"name": n, "port": p, "protocol": "TCP", "targetPort": p}
                      for n, p in QUEUE_PORTS.items() if n != "queue-port"]
        spec_: dict[str, Any] = {"ports": ports}
        if selector:
            spec_["selector"] = {f"{SERVING}/revisionUID": rev_uid}
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(name + suffix, ns, {
                **labels, "networking.internal.knative.dev/serverlessservice": name,
                "networking.internal.knative.dev/serviceType": kind}, svc_owner),
            "spec": spec_,
        }

    return [revision, deployment, pa, sks, k8s_service("-private", "Private", True),
            k8s_service("", "Public", False)]


def _user_container(template: RevisionTemplate) -> dict[str, Any]:
    container = template.spec.container
    body = container.model_dump(mode="json", by_alias=True, exclude_none=True,
                                exclude={"name", "ports", "readiness_probe", "env"})
    out: dict[str, Any] = {"name": container.name or USER_CONTAINER, **body}
    out["ports"] = [{"name": "user-port", "containerPort": container.container_port,
                     "protocol": "TCP"}]
    out["env"] = [*({"name": v.name, "value": v.value} for v in container.env),
                  {"name": "PORT", "value": str(container.container_port)}]
    if container.readiness_probe is not None:
        out["readinessProbe"] = container.readiness_probe.model_dump(
            mode="json", by_alias=True, exclude_unset=True)
    return out


def _rollout_json(config: str, rollout: Rollout) -> str:
    """The rollout state as Knative serialises it (rollout.go's JSON field names; times in
    ns). labkit's clock is monotonic, so only the step pace is given, not the timestamps."""
    step = {"stepDuration": int(rollout.step_duration * 1e9), "stepSize": rollout.step_size}
    return json.dumps({"configurations": [{
        "configurationName": config, "percent": rollout.percent,
        "revisions": [{"revisionName": n, "percent": p} for n, p in rollout.revisions],
        "stepParams": {k: v for k, v in step.items() if v}}]}, separators=(",", ":"))


def _route_objects(svc: KnativeService, svc_uid: str, latest: str, domain: str,
                   table: RouteTable | None, ingress_class: str,
                   rollout: Rollout | None) -> list[dict[str, Any]]:
    name, ns = svc.metadata.name, svc.metadata.namespace
    labels = _service_labels(name, svc_uid)
    owner = _owner(API_VERSION, "Service", name, svc_uid)
    spec_traffic = []
    for target in svc.traffic:
        entry = target.model_dump(mode="json", by_alias=True, exclude_none=True)
        if target.follows_latest:
            entry = {"configurationName": name, "latestRevision": True, **{
                k: v for k, v in entry.items() if k not in ("latestRevision",)}}
        spec_traffic.append(entry)
    route = {"apiVersion": API_VERSION, "kind": "Route",
             "metadata": _meta(name, ns, labels, owner), "spec": {"traffic": spec_traffic}}
    route_uid = _uid(ns, "route", name)
    route_owner = _owner(API_VERSION, "Route", name, route_uid)
    if table is not None:
        resolved = [(t.tag, t.revision_name or "", t.percent or 0) for t in table.traffic]
    else:
        resolved = [(t.tag, latest if t.follows_latest else t.revision_name or "",
                     t.percent or 0) for t in svc.traffic]

    def splits(entries: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
        return [{"serviceName": rev, "serviceNamespace": ns, "servicePort": 80, "percent": pct,
                 "appendHeaders": {"Knative-Serving-Revision": rev,
                                   "Knative-Serving-Namespace": ns}}
                for rev, pct in entries]

    def rules(host: str, entries: list[tuple[str, int]]) -> list[dict[str, Any]]:
        local = [f"{host}.{ns}", f"{host}.{ns}.svc", f"{host}.{ns}.svc.cluster.local"]
        return [{"hosts": hosts, "visibility": visibility,
                 "http": {"paths": [{"splits": splits(entries)}]}}
                for hosts, visibility in ((local, "ClusterLocal"),
                                          ([f"{host}.{ns}.{domain}"], "ExternalIP"))]

    main = [(rev, pct) for tag, rev, pct in resolved if pct > 0]
    all_rules = rules(name, main)
    tags = [(tag, rev) for tag, rev, _ in resolved if tag]
    for tag, rev in tags:
        all_rules += rules(f"{tag}-{name}", [(rev, 100)])
    ingress_annotations = {INGRESS_CLASS: ingress_class}
    if rollout is not None:
        ingress_annotations[ROLLOUT_ANNOTATION] = _rollout_json(name, rollout)
    ingress = {"apiVersion": NETWORKING_INTERNAL, "kind": "Ingress",
               "metadata": _meta(name, ns, {**labels, f"{SERVING}/route": name}, route_owner,
                                 ingress_annotations),
               "spec": {"httpOption": "Enabled", "rules": all_rules}}
    dns = [{"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(host, ns, {**labels, f"{SERVING}/route": name}, route_owner),
            "spec": {"type": "ExternalName", "externalName": GATEWAY,
                     "ports": [{"name": "http2", "port": 80, "targetPort": 80}]}}
           for host in [name, *(f"{tag}-{name}" for tag, _ in tags)]]
    return [route, ingress, *dns]


def _configuration(service: KnativeService, svc_uid: str) -> dict[str, Any]:
    name, ns = service.metadata.name, service.metadata.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "Configuration",
        "metadata": _meta(name, ns, _service_labels(name, svc_uid),
                          _owner(API_VERSION, "Service", name, svc_uid)),
        "spec": {"template": service.spec.template.model_dump(
            mode="json", by_alias=True, exclude_unset=True)},
    }


def _objects(service: KnativeService, revisions: list[_Rev], latest: str, domain: str,
             table: RouteTable | None, live: KnativeServiceController | None = None,
             ) -> list[dict[str, Any]]:
    ns = service.metadata.namespace
    svc_uid = _uid(ns, "service", service.metadata.name)
    config_uid = _uid(ns, "configuration", service.metadata.name)
    objects = [_configuration(service, svc_uid)]
    for rev in revisions:
        objects += _revision_objects(service, rev, svc_uid, config_uid)
    default_class = live.config.ingress_class if live is not None else DEFAULT_INGRESS_CLASS
    ingress_class = service.metadata.annotations.get(INGRESS_CLASS, default_class)
    rollout = live.rollout if live is not None else None
    return objects + _route_objects(service, svc_uid, latest, domain, table, ingress_class,
                                    rollout)


def expand(service: KnativeService, live: KnativeServiceController | None = None,
           domain: str = "example.com") -> list[dict[str, Any]]:
    """The objects Knative creates for `service`, in creation order, as dicts."""
    revisions = _revisions(service, live)
    if live is None:
        return _objects(service, revisions, revisions[-1].name, domain, None)
    return _objects(service, revisions, live.latest_ready or revisions[-1].name, live.config.domain,
                    live.table, live)


def expand_revisions(service: KnativeService, templates: list[RevisionTemplate],
                     domain: str = "example.com") -> tuple[list[dict[str, Any]], RouteTable]:
    """What Knative holds for `service` once each of `templates` (oldest first) has made a
    revision and all of them are ready: `<svc>-00001`, `<svc>-00002`, ... with the last one
    the latest, and `service`'s traffic block resolved against them as the Route reconciler
    resolves it. Returns the objects and the resolved route table (split, tags, problems),
    so a planner can show both without a cluster."""
    name, ns = service.metadata.name, service.metadata.namespace
    names = [f"{name}-{i:05d}" for i in range(1, len(templates) + 1)]
    if not names:
        raise ValueError("templates: at least one revision template is needed")
    table = resolve_traffic(service.traffic, names[-1], set(names),
                            lambda tag: f"http://{tag}-{name}.{ns}.{domain}")
    revisions = [_Rev(rev, i, template, None, None, rev in table.routed)
                 for i, (rev, template) in enumerate(zip(names, templates), start=1)]
    return _objects(service, revisions, names[-1], domain, table), table


def expand_yaml(service: KnativeService, live: KnativeServiceController | None = None,
                domain: str = "example.com") -> str:
    """`expand()` as a multi-document YAML stream (what `kubectl get ... -o yaml` lists)."""
    return "---\n".join(yaml.dump(o, Dumper=_PlainDumper, sort_keys=False)
                         for o in expand(service, live, domain))


class _PlainDumper(yaml.SafeDumper):
    """No &anchors/*aliases for repeated label maps: a student reads every object whole."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def object_names(objects: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, name) of each object: the quick overview a lab prints."""
    return [(o["kind"], o["metadata"]["name"]) for o in objects]
