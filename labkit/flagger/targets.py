"""What Flagger does to a target, per provider: read it, route to it, promote it, scale it.

`DeploymentTarget` (provider istio): a Deployment, its `-primary` copy, the Services and the
Istio routing of router.py, metrics from the canary workload's sidecar (destination side).
`KnativeTarget` (provider knative; fluxcd/flagger pkg/canary/knative_controller.go,
pkg/router/knative.go): one Knative Service; the primary is the revision named by the
annotation `flagger.app/primary-revision`, the canary is the latest created revision, and the
split is the Service's own traffic block `[{latestRevision: true, percent: C},
{revisionName: PRIMARY, percent: P}]`; promotion moves the annotation; nothing is scaled (the
revisions scale themselves); metrics from the canary revision's queue-proxy counters.

Both act through `cluster.apply()`, so every change is a real object change a student can
`cluster.get()`. The objects a DeploymentTarget makes name their Canary as owner when Flagger
creates them (router.py); one that exists already keeps its own ownerReferences, and a Service
Flagger did not create keeps its metadata and every field but the selector and ports
(fluxcd/flagger pkg/router/kubernetes_default.go `reconcileService`, istio.go: updates copy the
existing object and replace its spec).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from labkit.core.deployment import template_hash
from labkit.core.models import Deployment
from labkit.flagger import metrics, router
from labkit.flagger.analysis import Routes
from labkit.flagger.models import Canary
from labkit.flagger.router import PRIMARY_REVISION
from labkit.manifests import KubeObject
from labkit.mesh.control import control_plane
from labkit.mesh.models import VirtualService

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster, Resource
    from labkit.serving.models import KnativeService

__all__ = ["DeploymentTarget", "KeepFlaggerFields", "KnativeTarget", "Target",
           "target_for"]


class Target(Protocol):
    def revision(self) -> str: ...
    def primary_ready(self) -> bool: ...
    def not_ready(self) -> str: ...
    def counters(self) -> metrics.Counters | None: ...
    def routes(self) -> Routes | None: ...
    def initialize(self, routes: Routes, saved_primary: dict[str, Any] | None) -> None: ...
    def set_routes(self, routes: Routes) -> None: ...
    def promote(self) -> None: ...
    def scale(self, replicas: int) -> None: ...
    def primary_snapshot(self) -> dict[str, Any] | None: ...


_Model = TypeVar("_Model", bound=KubeObject)


def _as(resource: Resource, model: type[_Model]) -> _Model:
    """The stored object as the model its kind is registered with (the cluster types it KubeObject)."""
    if not isinstance(resource.object, model):
        raise TypeError(f"{resource.object.kind} {resource.object.metadata.name} is not a {model.__name__}")
    return resource.object


def _get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> Resource | None:
    from labkit.cluster import NotFoundError
    try:
        return cluster.get(kind, name, namespace)
    except NotFoundError:
        return None


def _as_flagger_writes(cluster: LocalCluster, canary: Canary, body: dict[str, Any]) -> dict[str, Any]:
    """`body` (made by router.py, owned by the Canary) as Flagger writes it over what exists:
    a new object as is; an existing one keeps its ownerReferences; an existing Service the
    Canary does not control keeps all but its selector and ports."""
    meta = body["metadata"]
    found = _get(cluster, f"{body['apiVersion']}/{body['kind']}", meta["name"], meta["namespace"])
    if found is None:
        return body
    existing = found.object.model_dump(mode="json", by_alias=True, exclude_unset=True)
    owners = existing["metadata"].get("ownerReferences", [])
    if body["kind"] == "Service" and not router.controlled_by(owners, canary):
        existing["spec"].update(selector=body["spec"]["selector"], ports=body["spec"]["ports"])
        return existing
    kept = {key: value for key, value in meta.items() if key != "ownerReferences"}
    return {**body, "metadata": {**kept, **({"ownerReferences": owners} if owners else {})}}


class DeploymentTarget:
    def __init__(self, cluster: LocalCluster, canary: Canary) -> None:
        self.cluster, self.canary = cluster, canary
        self.ns, self.name = canary.metadata.namespace, canary.spec.target_ref.name
        self.apex = canary.spec.service.name or self.name

    def _target(self) -> Resource:
        found = _get(self.cluster, "apps/v1/Deployment", self.name, self.ns)
        if found is None:
            raise RuntimeError(f"deployment {self.name}.{self.ns} get query error: not found")
        return found

    def _primary(self) -> Resource | None:
        return _get(self.cluster, "apps/v1/Deployment", f"{self.name}-primary", self.ns)

    def revision(self) -> str:
        return template_hash(_as(self._target(), Deployment).spec.template)

    def primary_ready(self) -> bool:
        primary = self._primary()
        return primary is not None and primary.status.ready and _as(primary, Deployment).spec.replicas > 0

    def not_ready(self) -> str:
        target = self._target()
        wanted, ready = _as(target, Deployment).spec.replicas, target.status.detail.get("readyReplicas", 0)
        if wanted > 0 and ready < wanted:
            return (f"waiting for rollout to finish: {ready} of {wanted} (readyThreshold 100%) "
                    "updated replicas are available")
        return ""

    def counters(self) -> metrics.Counters | None:
        try:
            sidecar = control_plane(self.cluster).sidecar(self.name, self.ns)
            return metrics.scrape(sidecar.metrics_url, metrics.istio_destination(self.name, self.ns))
        except (LookupError, OSError):  # no mesh, no sidecar for the target, or it is gone
            return None

    def routes(self) -> Routes | None:
        vs = _get(self.cluster, "networking.istio.io/v1beta1/VirtualService", self.apex, self.ns)
        return router.routes_of(_as(vs, VirtualService).spec, self.canary) if vs is not None else None

    def initialize(self, routes: Routes, saved_primary: dict[str, Any] | None) -> None:
        target = _as(self._target(), Deployment)
        objects: list[dict[str, Any]] = []
        if self._primary() is None:
            objects.append(saved_primary or router.primary_deployment(self.canary, target))
        objects += router.services(self.canary, target) + router.destination_rules(self.canary)
        objects.append(router.virtual_service(self.canary, routes))
        self._write(objects)

    def _write(self, objects: list[dict[str, Any]]) -> None:
        self.cluster.apply([_as_flagger_writes(self.cluster, self.canary, body) for body in objects])

    def set_routes(self, routes: Routes) -> None:
        self._write([router.virtual_service(self.canary, routes)])

    def promote(self) -> None:
        primary = self._primary()
        replicas = _as(primary, Deployment).spec.replicas if primary else None
        self._write([router.primary_deployment(self.canary, _as(self._target(), Deployment), replicas)])

    def scale(self, replicas: int) -> None:
        target = _as(self._target(), Deployment)
        if (target.spec.replicas == 0) != (replicas == 0):
            copy = target.model_copy(deep=True)
            copy.spec.replicas = replicas
            self.cluster.apply(copy)

    def primary_snapshot(self) -> dict[str, Any] | None:
        primary = self._primary()
        return primary.object.model_dump(mode="json", by_alias=True, exclude_unset=True) if primary else None


class KnativeTarget:
    def __init__(self, cluster: LocalCluster, canary: Canary) -> None:
        self.cluster, self.canary = cluster, canary
        self.ns, self.name = canary.metadata.namespace, canary.spec.target_ref.name

    def _service(self) -> Resource:
        found = _get(self.cluster, "serving.knative.dev/v1/Service", self.name, self.ns)
        if found is None:
            raise RuntimeError(f"Knative Service {self.name}.{self.ns} get query error: not found")
        return found

    def _knative_service(self) -> KnativeService:
        from labkit.serving.models import KnativeService
        return _as(self._service(), KnativeService)

    def _knative(self) -> dict[str, Any]:
        return self._service().status.detail["knative"]

    def _ready(self, revision: str | None) -> bool:
        return any(r["name"] == revision and r["ready"] for r in self._service().status.detail["revisions"])

    def revision(self) -> str:
        return self._knative().get("latestCreatedRevisionName") or ""

    def primary_ready(self) -> bool:
        """The annotated revision; before initialisation, the one that will be annotated."""
        primary = self._service().object.metadata.annotations.get(PRIMARY_REVISION)
        return self._ready(primary or self.revision())

    def not_ready(self) -> str:
        latest = self.revision()
        return "" if self._ready(latest) else f"Knative Revision {latest}.{self.ns} is not ready"

    def counters(self) -> metrics.Counters | None:
        url = self._service().status.detail.get("metricsUrl")
        if not url:
            return None
        try:
            return metrics.scrape(url, metrics.knative_revision(self.revision(), self.ns))
        except OSError:
            return None

    def routes(self) -> Routes | None:
        service = self._knative_service()
        primary = service.metadata.annotations.get(PRIMARY_REVISION)
        if primary is None:
            return None
        weights = {("latest" if t.follows_latest else t.revision_name): t.percent or 0
                   for t in service.spec.traffic or []}
        return Routes(weights.get(primary, 100), weights.get("latest", 0), False)

    def _update(self, primary: str, routes: Routes) -> None:
        service = self._knative_service()
        body = service.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"status"})
        body["metadata"]["annotations"] = {**service.metadata.annotations, PRIMARY_REVISION: primary}
        body["spec"]["traffic"] = [{"latestRevision": True, "percent": routes.canary},
                                   {"revisionName": primary, "percent": routes.primary}]
        self.cluster.apply(body)

    def initialize(self, routes: Routes, saved_primary: dict[str, Any] | None) -> None:
        primary = self._service().object.metadata.annotations.get(PRIMARY_REVISION) or self.revision()
        self._update(primary, routes)

    def set_routes(self, routes: Routes) -> None:
        service = self._service().object
        self._update(service.metadata.annotations.get(PRIMARY_REVISION) or self.revision(), routes)

    def promote(self) -> None:
        self._update(self.revision(), self.routes() or Routes())

    def scale(self, replicas: int) -> None:
        """Knative scales revisions itself (Flagger's ScaleToZero is a no-op for it)."""

    def primary_snapshot(self) -> dict[str, Any] | None:
        return None


def target_for(cluster: LocalCluster, canary: Canary) -> Target:
    if canary.provider == "knative":
        return KnativeTarget(cluster, canary)
    return DeploymentTarget(cluster, canary)


class KeepFlaggerFields:
    """Cluster extension: a Knative Service applied again keeps what Flagger set on it (the
    primary-revision annotation and, when the new manifest has none, the traffic block), as
    `kubectl apply` keeps fields another manager owns. Without it, applying a new template
    would send 100 % to the new revision at once, before any analysis."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def admit(self, obj: Any) -> Any:
        from labkit.serving.models import KnativeService
        if not isinstance(obj, KnativeService):
            return obj
        stored = _get(self.cluster, "serving.knative.dev/v1/Service", obj.metadata.name,
                      obj.metadata.namespace)
        if stored is None or PRIMARY_REVISION not in stored.object.metadata.annotations:
            return obj
        kept = obj.model_copy(deep=True)
        owned = stored.object.metadata.annotations[PRIMARY_REVISION]
        # assigned, not updated in place, so the field counts as set (manifests.export() writes it)
        kept.metadata.annotations = {PRIMARY_REVISION: owned, **kept.metadata.annotations}
        if not kept.spec.traffic:
            kept.spec.traffic = [t.model_copy() for t in _as(stored, KnativeService).spec.traffic or []] or None
        return kept

    def changed(self) -> None:
        pass

    def close(self) -> None:
        pass
