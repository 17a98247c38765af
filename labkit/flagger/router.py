"""The objects Flagger's Kubernetes and Istio routers make for a Deployment target, as manifests.

For `podinfo` (fluxcd/flagger pkg/router/kubernetes_default.go, istio.go; docs/gitbook/tutorials/
istio-progressive-delivery.md): a Deployment `podinfo-primary` (the target's template, its
selector label value suffixed `-primary`), ClusterIP Services `podinfo` and `podinfo-primary`
(selecting the primary's pods) and `podinfo-canary` (the target's), DestinationRules
`podinfo-primary` and `podinfo-canary` (spec.service.trafficPolicy), and a VirtualService
`podinfo` whose http route splits between the two hosts; with `analysis.match` (A/B) a first
route sends matching requests by the weights and a second sends the rest to the primary; while
mirrored, the primary route carries `mirror: podinfo-canary` and `mirrorPercentage`.

`spec.service.gateways` is accepted but not used: labkit has no ingress gateway, the
VirtualService serves the mesh (Flagger's implicit `mesh` gateway).

Every object made here names its Canary as its controller in `metadata.ownerReferences`, as
Flagger's `metav1.NewControllerRef(cd, flagger.app/v1beta1 Canary)` does when it creates them
(fluxcd/flagger pkg/canary/deployment_controller.go for the primary Deployment,
pkg/router/kubernetes_default.go `reconcileService` for the three Services, pkg/router/istio.go
`reconcileDestinationRule` and `reconcileVirtualService`). On a real cluster Kubernetes' garbage
collector deletes them with the Canary (labkit leaves them in place); `labkit export` leaves
them out, since Flagger makes them there. The Canary's uid is labkit's own (see `canary_uid`).
What happens to an object that exists before Flagger creates it is targets.py's concern.

Pure: objects in, dicts out; targets.py applies them.
"""

from __future__ import annotations

import uuid
from typing import Any

from labkit.core.models import Deployment
from labkit.flagger.analysis import Routes
from labkit.flagger.models import Canary

__all__ = ["CANARY_API_VERSION", "PRIMARY_REVISION", "SELECTOR_LABELS", "canary_uid",
           "controlled_by", "destination_rules", "owner_reference", "primary_deployment",
           "routes_of", "selector_label", "services", "virtual_service"]

SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
"""Flagger's default selector labels (its -selector-labels flag), in order of preference."""

CANARY_API_VERSION = "flagger.app/v1beta1"

PRIMARY_REVISION = "flagger.app/primary-revision"
"""The annotation by which Flagger's Knative router marks a Knative Service's primary revision
(fluxcd/flagger pkg/router/knative.go)."""


def canary_uid(canary: Canary) -> str:
    """The Canary's metadata.uid. labkit's objects have none (the API server assigns it on a
    real cluster), so it is derived from the Canary's identity, as serving/expand.py derives
    the uids of the objects Knative makes: the same Canary applied again keeps it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL,
                          f"labkit:{canary.metadata.namespace}/canary/{canary.metadata.name}"))


def owner_reference(canary: Canary) -> dict[str, Any]:
    """`metav1.NewControllerRef(canary, flagger.app/v1beta1 Canary)`: controller and
    blockOwnerDeletion both true (k8s.io/apimachinery pkg/apis/meta/v1/controller_ref.go)."""
    return {"apiVersion": CANARY_API_VERSION, "kind": "Canary", "name": canary.metadata.name,
            "uid": canary_uid(canary), "controller": True, "blockOwnerDeletion": True}


def controlled_by(owner_references: list[dict[str, Any]], canary: Canary) -> bool:
    """Flagger's isOwnedByCanary (kubernetes_default.go): the controller reference is this Canary."""
    return any(r.get("controller") and r.get("kind") == "Canary" and r.get("name") == canary.metadata.name
               for r in owner_references)


def _meta(canary: Canary, name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "namespace": canary.metadata.namespace, **fields,
            "ownerReferences": [owner_reference(canary)]}


def selector_label(target: Deployment) -> str:
    """The label Flagger splits primary from canary pods by; ValueError when there is none."""
    labels = target.spec.selector.match_labels
    for key in SELECTOR_LABELS:
        if key in labels:
            return key
    raise ValueError(
        f"spec.selector.matchLabels of Deployment {target.metadata.name} must contain one of "
        f"{', '.join(SELECTOR_LABELS)} (Flagger's selector labels)")


def primary_deployment(canary: Canary, target: Deployment, replicas: int | None = None) -> dict[str, Any]:
    """`<target>-primary`: the target's pod template under the primary's label value."""
    key = selector_label(target)
    value = f"{target.spec.selector.match_labels[key]}-primary"
    body = target.model_dump(mode="json", by_alias=True, exclude_unset=True)
    body.update(apiVersion="apps/v1", kind="Deployment")
    body["metadata"] = _meta(canary, f"{target.metadata.name}-primary",
                             labels={**target.metadata.labels, key: value})
    spec = body["spec"]
    spec["replicas"] = replicas if replicas is not None else max(1, target.spec.replicas)
    spec["selector"] = {"matchLabels": {**target.spec.selector.match_labels, key: value}}
    spec["template"].setdefault("metadata", {}).setdefault("labels", {})[key] = value
    return body


def services(canary: Canary, target: Deployment) -> list[dict[str, Any]]:
    key = selector_label(target)
    value = target.spec.selector.match_labels[key]
    svc = canary.spec.service
    port: dict[str, Any] = {"name": svc.port_name or "http", "port": svc.port,
                            "targetPort": svc.target_port if svc.target_port is not None else svc.port}
    apex = svc.name or canary.spec.target_ref.name

    def service(name: str, selected: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": _meta(canary, name, labels={key: name}),
                "spec": {"selector": {key: selected}, "ports": [port]}}

    return [service(apex, f"{value}-primary"), service(f"{apex}-primary", f"{value}-primary"),
            service(f"{apex}-canary", value)]


def destination_rules(canary: Canary) -> list[dict[str, Any]]:
    apex = canary.spec.service.name or canary.spec.target_ref.name
    policy = canary.spec.service.traffic_policy
    rules = []
    for name in (f"{apex}-canary", f"{apex}-primary"):
        spec: dict[str, Any] = {"host": name}
        if policy:
            spec["trafficPolicy"] = policy
        rules.append({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                      "metadata": _meta(canary, name), "spec": spec})
    return rules


def virtual_service(canary: Canary, routes: Routes) -> dict[str, Any]:
    svc, analysis = canary.spec.service, canary.spec.analysis
    apex = svc.name or canary.spec.target_ref.name
    primary, canary_host = f"{apex}-primary", f"{apex}-canary"

    def split(primary_weight: int, canary_weight: int) -> list[dict[str, Any]]:
        return [{"destination": {"host": primary}, "weight": primary_weight},
                {"destination": {"host": canary_host}, "weight": canary_weight}]

    def options(route: dict[str, Any]) -> dict[str, Any]:
        if svc.retries:
            route["retries"] = svc.retries
        if svc.timeout:
            route["timeout"] = svc.timeout
        return route

    main = options({"route": split(routes.primary, routes.canary)})
    if routes.mirrored:
        main["mirror"] = {"host": canary_host}
        if analysis.mirror_weight:
            main["mirrorPercentage"] = {"value": analysis.mirror_weight}
    if analysis.match:
        http = [options({"match": analysis.match, "route": split(routes.primary, routes.canary)}),
                options({"route": [{"destination": {"host": primary}, "weight": 100}]})]
    else:
        http = [main]
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": _meta(canary, apex), "spec": {"hosts": [apex, *svc.hosts], "http": http}}


def routes_of(virtual_service_spec: dict[str, Any], canary: Canary) -> Routes:
    """Flagger's GetRoutes: the weights and mirror of the VirtualService as it stands."""
    apex = canary.spec.service.name or canary.spec.target_ref.name
    http = virtual_service_spec.get("http") or [{}]
    weights = {d["destination"]["host"]: int(d.get("weight", 0)) for d in http[0].get("route", [])}
    mirrored = "mirror" in http[0]
    return Routes(weights.get(f"{apex}-primary", 100), weights.get(f"{apex}-canary", 0), mirrored)
