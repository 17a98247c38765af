"""The control plane: istiod's job on a laptop.

It holds the mesh configuration (VirtualService, DestinationRule, PeerAuthentication,
AuthorizationPolicy), watches Services, Deployments, Namespaces and pods, injects sidecars, issues
each workload its SPIFFE certificate, and pushes one `MeshConfig` snapshot to every running
sidecar whenever something changes, as xDS does: the sidecars keep running and requests in flight
finish with the configuration they started with.

Injection (https://istio.io/latest/docs/setup/additional-setup/sidecar-injection/): a Deployment
gets a sidecar when its namespace has the label `istio-injection=enabled` or its pod template has
the label or annotation `sidecar.istio.io/inject: "true"`; `"false"` on the template, or
`istio-injection=disabled` on the namespace, wins. Like Istio's mutating webhook, injection
changes the object as it is admitted: the app's container gets `HTTP_PROXY` naming the
workload's outbound listener, so the app's calls by service name go through its sidecar (there is
no iptables to redirect them). Each pod gets its own inbound listener, and the mesh's endpoints of
a Service are those listeners; a pod without a sidecar is reached directly.

One sidecar object serves all pods of a workload (one outbound listener, one inbound listener per
pod): the client-side state (pool counters, ejections) is therefore per workload, not per pod as
in Istio. The Kubernetes Service address (`cluster.url("Service", ...)`) still reaches the pods
directly, like a client outside the mesh.

All network work runs on the cluster's background loop; apply() waits until the new snapshot is
pushed, so the next request already sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from labkit.core.controller import Cluster, ObjectStatus
from labkit.core.models import Deployment, EnvVar, Service
from labkit.core.pods import Pod, matches
from labkit.manifests import KubeObject
from labkit.mesh import authz, security
from labkit.mesh.analysis import AnalysisMessage, analyze
from labkit.mesh.destination import DestinationRule as DestinationRulePolicy
from labkit.mesh.models import (
    AuthorizationPolicy,
    DestinationRule,
    IstioObject,
    Namespace,
    PeerAuthentication,
    VirtualService,
)
from labkit.mesh.proxy import HOST, Sidecar
from labkit.mesh.proxy_config import Endpoint, MeshConfig, ServiceInfo, Workload

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["ControlPlane", "MeshObjectController", "control_plane", "should_inject"]

INJECT = "sidecar.istio.io/inject"
NAMESPACE_LABEL = "istio-injection"
PROXY_ENV = "HTTP_PROXY"


def should_inject(deployment: Deployment, namespace_labels: dict[str, str]) -> bool:
    """Istio's injection decision for a Deployment's pods."""
    if namespace_labels.get(NAMESPACE_LABEL) == "disabled":
        return False
    meta = deployment.spec.template.metadata
    asked = meta.labels.get(INJECT, meta.annotations.get(INJECT))
    if asked is not None:
        return asked.lower() == "true"
    return namespace_labels.get(NAMESPACE_LABEL) == "enabled"


def _service_account(deployment: Deployment) -> str:
    """The pod's service account (Kubernetes' `default` unless the template names one)."""
    return deployment.spec.template.spec.service_account


def _declared_port(deployment: Deployment) -> int | None:
    ports = deployment.container.ports
    return ports[0].container_port if ports else None


def _seed(base: int, name: str) -> int:
    return base ^ zlib.crc32(name.encode())


@dataclass
class _State:
    """What the control plane knows, swapped as a whole so the loop reads a consistent view."""

    config: tuple[tuple[int, IstioObject], ...] = ()
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)


class ControlPlane:
    """One per LocalCluster (a cluster extension named "mesh"). Thread-safe entry points:
    `client`, `sidecar`, `sidecars`, `proxy_status`, `proxy_config`, and the extension hooks."""

    def __init__(self, cluster: LocalCluster, *, seed: int = 0) -> None:
        self.cluster = cluster
        self.seed = seed
        self.ca = security.CertificateAuthority()
        self.version = 0
        self.mesh = MeshConfig()
        self.shadow_host_suffix = False
        """istiod's `DISABLE_SHADOW_HOST_SUFFIX=false` (Istio <= 1.27 behaviour): mirrored copies
        get `<host>-shadow`. Set it, then `changed()` pushes it to every sidecar."""
        self._state = _State()
        self._config: dict[tuple[str, str, str, str], tuple[int, IstioObject]] = {}
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._workloads: dict[tuple[str, str], Sidecar] = {}
        self._admitted: set[tuple[str, str]] = set()
        self._clients: dict[tuple[str, str], Sidecar] = {}
        self._routes: dict[tuple[str, str], tuple[Sidecar, tuple[str, ...]]] = {}
        self._sync_lock: asyncio.Lock | None = None
        self._sync_scheduled = False
        self._closed = False
        self._unsubscribe = cluster.pods.subscribe(self._pods_changed)

    # -- cluster extension hooks --------------------------------------------------------------

    def admit(self, obj: KubeObject) -> KubeObject:
        """Mutating admission: a Deployment that asks for a sidecar gets one, and its app is
        told where the sidecar's outbound listener is (`HTTP_PROXY`)."""
        if not isinstance(obj, Deployment):
            return obj
        namespaces = {o.metadata.name: dict(o.metadata.labels) for o in self.cluster.objects()
                      if isinstance(o, Namespace)}
        if not should_inject(obj, namespaces.get(obj.metadata.namespace, {})):
            return obj
        # Marked before the sidecar exists: a sync running on the loop meanwhile (any pod that
        # changes schedules one) would otherwise close it as belonging to no Deployment.
        self._admitted.add((obj.metadata.namespace, obj.metadata.name))
        sidecar = self.cluster.loop.run(self._workload_sidecar(obj))
        admitted = obj.model_copy(deep=True)
        container = admitted.spec.template.spec.containers[0]
        container.env = [e for e in container.env if e.name != PROXY_ENV] + [
            EnvVar(name=PROXY_ENV, value=sidecar.outbound_url)]
        return admitted

    def changed(self) -> None:
        """Objects were applied or deleted: re-read them and push a new snapshot (blocking)."""
        if self._closed:
            return
        objects = self.cluster.objects()
        with self._lock:
            self._state = _State(
                config=tuple(self._config.values()),
                namespaces={o.metadata.name: dict(o.metadata.labels) for o in objects
                            if isinstance(o, Namespace)},
                deployments={(o.metadata.namespace, o.metadata.name): o for o in objects
                             if isinstance(o, Deployment)},
                services={(o.metadata.namespace, o.metadata.name): o for o in objects
                          if isinstance(o, Service)},
            )
            self._admitted.clear()
        self.cluster.loop.run(self._sync())

    def close(self) -> None:
        """Stop every sidecar (before the pods go). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        if self.cluster.loop.running:
            self.cluster.loop.run(self._close_all())

    async def _close_all(self) -> None:
        for sidecar in self.sidecars():
            await sidecar.close()
        self._workloads.clear()
        self._clients.clear()
        self._routes.clear()

    # -- mesh configuration (called by MeshObjectController) ----------------------------------

    def put(self, obj: IstioObject) -> None:
        """Store a mesh object; it is checked first (a bad spec raises, nothing changes)."""
        obj.policy()
        with self._lock:
            previous = self._config.get(obj.key)
            serial = previous[0] if previous else next(self._serial)
            self._config[obj.key] = (serial, obj)
            self._state = replace(self._state, config=tuple(self._config.values()))

    def remove(self, obj: IstioObject) -> None:
        with self._lock:
            self._config.pop(obj.key, None)
            self._state = replace(self._state, config=tuple(self._config.values()))

    def analysis(self) -> list[AnalysisMessage]:
        """What `istioctl analyze` would say of the mesh config now (labkit.mesh.analysis): routes
        to undefined subsets, subsets that select no pod (running or in a Deployment's template)."""
        state = self._state
        config = [obj for _, obj in state.config]
        pod_labels: dict[str, list[dict[str, str]]] = {}
        for pod in self.cluster.pods.all():
            pod_labels.setdefault(pod.namespace, []).append(dict(pod.labels))
        for (namespace, _), deployment in state.deployments.items():
            pod_labels.setdefault(namespace, []).append(dict(deployment.spec.template.metadata.labels or {}))
        return analyze([o for o in config if isinstance(o, VirtualService)],
                       [o for o in config if isinstance(o, DestinationRule)],
                       {key: dict(service.spec.selector or {}) for key, service in state.services.items()},
                       pod_labels)

    # -- public API ---------------------------------------------------------------------------

    def client(self, namespace: str = "default", service_account: str = "sleep") -> Sidecar:
        """A sidecar for a caller with no app of its own, like Istio's `sleep`/`curl` sample:
        send requests to its `outbound_url` with the service name as Host (or use it as an
        HTTP proxy). The same (namespace, service account) returns the same sidecar."""
        key = (namespace, service_account)
        if key not in self._clients:
            self.cluster.loop.run(self._start_client(namespace, service_account))
        return self._clients[key]

    def sidecar(self, workload: str, namespace: str = "default") -> Sidecar:
        """The sidecar injected into Deployment `workload` (or a `client()` by service account,
        or an `expose_route` by name)."""
        route = self._routes.get((namespace, workload))
        found = (self._workloads.get((namespace, workload)) or self._clients.get((namespace, workload))
                 or (route[0] if route else None))
        if found is None:
            have = ", ".join(f"{ns}/{n}" for ns, n in [*self._workloads, *self._clients]) or "none"
            raise LookupError(
                f"no sidecar for workload {workload!r} in namespace {namespace!r} (sidecars: {have}); "
                f"label the namespace {NAMESPACE_LABEL}=enabled or set the pod template "
                f"annotation {INJECT}: \"true\"")
        return found

    def sidecars(self) -> list[Sidecar]:
        return [*self._workloads.values(), *self._clients.values(),
                *(sidecar for sidecar, _ in self._routes.values())]

    def expose_route(self, name: str, namespace: str, port: int, hosts: Iterable[str] = ()) -> Sidecar:
        """Put a workload that is not a Deployment in the mesh: a Knative route's ingress on
        loopback `port` (KServe's predictor or transformer, reached on a cluster through the
        Istio ingress and the pod's istio-proxy). It becomes the mesh Service `name` in
        `namespace`, behind a sidecar of its own (so PeerAuthentication decides mTLS for it as
        for any pod), and also answers to `hosts` (e.g. `iris.default.example.com`). Calling it
        again replaces the route; `remove_route` takes it out."""
        key = (namespace, name)
        self.cluster.loop.run(self._expose(key, port, tuple(h.lower() for h in hosts)))
        return self._routes[key][0]

    def remove_route(self, name: str, namespace: str = "default") -> None:
        route = self._routes.pop((namespace, name), None)
        if route is not None and not self._closed and self.cluster.loop.running:
            self.cluster.loop.run(self._unexpose(route[0]))

    async def _expose(self, key: tuple[str, str], port: int, hosts: tuple[str, ...]) -> None:
        namespace, name = key
        route = self._routes.get(key)
        if route is None:
            workload = Workload(name, namespace, {"app": name}, "default")
            sidecar = Sidecar(workload, seed=_seed(self.seed, f"route/{namespace}/{name}"),
                              tls=self._certificate(namespace, "default"))
            await sidecar.start()
        else:
            sidecar = route[0]
        await sidecar.add_inbound(name, port)
        self._routes[key] = (sidecar, hosts)
        await self._sync()

    async def _unexpose(self, sidecar: Sidecar) -> None:
        await sidecar.close()
        await self._sync()

    def proxy_status(self) -> list[dict[str, Any]]:
        """One row per sidecar, like `istioctl proxy-status`: is its config the latest?"""
        return [{"workload": f"{s.workload.namespace}/{s.workload.name}",
                 "pods": sorted(s.inbound_ports), "version": s.config_version,
                 "synced": s.config_version == self.version, "outbound": s.outbound_url}
                for s in self.sidecars()]

    def proxy_config(self, workload: str, namespace: str = "default") -> dict[str, Any]:
        """Like `istioctl proxy-config all <pod>`: what that sidecar runs now."""
        return self.sidecar(workload, namespace).config()

    # -- sidecars -----------------------------------------------------------------------------

    def _certificate(self, namespace: str, service_account: str) -> security.WorkloadCertificate:
        return self.ca.issue(namespace, service_account)

    async def _workload_sidecar(self, deployment: Deployment) -> Sidecar:
        meta = deployment.metadata
        key = (meta.namespace, meta.name)
        sidecar = self._workloads.get(key)
        labels = dict(deployment.spec.template.metadata.labels)
        account = _service_account(deployment)
        if sidecar is not None and (sidecar.workload.labels != labels
                                    or sidecar.workload.service_account != account):
            await sidecar.close()  # a new identity: a new proxy, as a new pod would get
            sidecar = None
        if sidecar is None:
            workload = Workload(meta.name, meta.namespace, labels, account,
                                port=_declared_port(deployment))
            sidecar = Sidecar(workload, seed=_seed(self.seed, f"{meta.namespace}/{meta.name}"),
                              tls=self._certificate(meta.namespace, account))
            await sidecar.start()
            sidecar.push(self.mesh)
            self._workloads[key] = sidecar
        return sidecar

    async def _start_client(self, namespace: str, service_account: str) -> None:
        workload = Workload(service_account, namespace, {"app": service_account}, service_account)
        sidecar = Sidecar(workload, seed=_seed(self.seed, f"client/{namespace}/{service_account}"),
                          tls=self._certificate(namespace, service_account))
        await sidecar.start()
        self._clients[(namespace, service_account)] = sidecar
        await self._sync()

    def _pods_changed(self) -> None:
        """Pods came or went (any thread): schedule one sync on the loop."""
        if self._closed or not self.cluster.loop.running:
            return
        try:
            self.cluster.loop.loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # the loop is closing
            pass

    def _schedule(self) -> None:
        if not self._sync_scheduled and not self._closed:
            self._sync_scheduled = True
            asyncio.get_running_loop().create_task(self._sync())

    async def _sync(self) -> None:
        """Reconcile sidecars with the workloads and push a new snapshot to all of them."""
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            self._sync_scheduled = False
            if self._closed:
                return
            pods = [p for p in self.cluster.pods.all() if p.ready]
            await self._reconcile_sidecars(pods)
            self.version += 1
            self.mesh = self._build(self._state, pods)
            for sidecar in self.sidecars():
                sidecar.push(self.mesh)

    async def _reconcile_sidecars(self, pods: list[Pod]) -> None:
        for key, sidecar in list(self._workloads.items()):
            if key in self._admitted:
                continue  # admitted by an apply() still running: its Deployment comes next
            # The latest state, read after the admitted check: `changed()` replaces the state
            # before it clears the admitted set, and a close below awaits, letting it run. A
            # state read when this sync began can predate a Deployment applied meanwhile.
            state = self._state
            deployment = state.deployments.get(key)
            if deployment is None or not should_inject(deployment, state.namespaces.get(key[0], {})):
                await sidecar.close()
                if self._workloads.get(key) is sidecar:  # not replaced while it closed
                    del self._workloads[key]
        by_workload: dict[tuple[str, str], list[Pod]] = {}
        for pod in pods:
            owner_kind, _, owner = pod.owner.partition("/")
            if owner_kind == "Deployment":
                by_workload.setdefault((pod.namespace, owner), []).append(pod)
        for key, sidecar in list(self._workloads.items()):  # an admit may add one meanwhile
            current = {p.name: p for p in by_workload.get(key, [])}
            for name in list(sidecar.inbound_ports):
                if name not in current:
                    await sidecar.remove_inbound(name)
            for name, pod in current.items():
                await sidecar.add_inbound(name, pod.port)

    def _build(self, state: _State, pods: list[Pod]) -> MeshConfig:
        config = sorted(state.config, key=lambda item: item[0])
        peer_auths = tuple(obj.policy(float(serial)) for serial, obj in config
                           if isinstance(obj, PeerAuthentication))
        rules: dict[str, DestinationRulePolicy] = {}
        for _, obj in config:
            if isinstance(obj, DestinationRule):
                rule = obj.policy()
                rules.setdefault(rule.host, rule)  # the oldest rule for a host wins
        hashed = frozenset(host for host, rule in rules.items() if _uses_consistent_hash(rule))
        services = {}
        for (namespace, name), service in state.services.items():
            endpoints = tuple(self._endpoint(pod, peer_auths) for pod in pods
                              if pod.namespace == namespace
                              and matches(service.spec.selector, pod.labels))
            info = ServiceInfo(name, namespace, tuple(p.port for p in service.spec.ports),
                               endpoints)
            services[info.fqdn] = info
        for (namespace, name), (sidecar, hosts) in list(self._routes.items()):
            pod = sidecar.inbound_ports[name]
            endpoint = Endpoint(
                f"{HOST}:{pod}", name, namespace, dict(sidecar.workload.labels), name, sidecar=True,
                mtls_mode=authz.effective_mtls_mode(peer_auths, namespace, sidecar.workload.labels, None),
                principal=sidecar.workload.principal)
            info = ServiceInfo(name, namespace, (80,), (endpoint,))
            services.update({info.fqdn: info, **dict.fromkeys(hosts, info)})
        return MeshConfig(
            version=self.version,
            services=services,
            virtual_services=tuple(obj.policy(hashed) for _, obj in config
                                   if isinstance(obj, VirtualService)),
            destination_rules=rules,
            peer_authentications=peer_auths,
            authorization_policies=tuple(obj.policy() for _, obj in config
                                         if isinstance(obj, AuthorizationPolicy)),
            sources=tuple({"kind": obj.kind, "namespace": obj.metadata.namespace,
                           "name": obj.metadata.name, "spec": obj.spec} for _, obj in config),
            shadow_host_suffix=self.shadow_host_suffix,
        )

    def _endpoint(self, pod: Pod, peer_auths: Iterable[authz.PeerAuthentication]) -> Endpoint:
        workload = pod.owner.partition("/")[2] or pod.name
        sidecar = self._workloads.get((pod.namespace, workload))
        port = sidecar.inbound_ports.get(pod.name) if sidecar else None
        if sidecar is None or port is None:
            return Endpoint(f"{HOST}:{pod.port}", workload, pod.namespace, dict(pod.labels), pod.name)
        return Endpoint(
            f"{HOST}:{port}", workload, pod.namespace, dict(pod.labels), pod.name, sidecar=True,
            mtls_mode=authz.effective_mtls_mode(peer_auths, pod.namespace, pod.labels,
                                                sidecar.workload.port),
            principal=sidecar.workload.principal)


def _uses_consistent_hash(rule: DestinationRulePolicy) -> bool:
    return rule.policy().consistent_hash or any(
        rule.policy(name).consistent_hash for name in rule.subsets)


def control_plane(cluster: Cluster) -> ControlPlane:
    """The mesh's public handle on a cluster, istiod: `client()` (a caller with its own
    sidecar, Istio's `sleep` sample), `sidecar(workload)`, `sidecars()`, `proxy_status()`, the
    CA (`ca`). The cluster holds it as its extension "mesh" and knows nothing more of it."""
    plane = cluster.extension("mesh")
    if not isinstance(plane, ControlPlane):
        raise TypeError(f"the cluster's extension 'mesh' is a {type(plane).__name__}, not a ControlPlane")
    return plane


class MeshObjectController:
    """Controller of the four Istio kinds: hands the object to the control plane."""

    def __init__(self, cluster: LocalCluster, obj: IstioObject) -> None:
        self.plane = control_plane(cluster)
        self.obj: IstioObject | None = None

    def apply(self, obj: IstioObject) -> None:
        self.plane.put(obj)
        self.obj = obj

    def _messages(self) -> list[AnalysisMessage]:
        assert self.obj is not None
        meta = self.obj.metadata
        return [m for m in self.plane.analysis()
                if (m.kind, m.namespace, m.name) == (self.obj.kind, meta.namespace, meta.name)]

    def delete(self) -> None:
        if self.obj is not None:
            self.plane.remove(self.obj)

    def status(self) -> ObjectStatus:
        assert self.obj is not None
        synced = sum(1 for s in self.plane.sidecars() if s.config_version == self.plane.version)
        messages = self._messages()
        # Istio accepts such config (ready), and says what is wrong in status.validationMessages.
        return ObjectStatus(
            kind=self.obj.kind, name=self.obj.metadata.name, namespace=self.obj.metadata.namespace,
            ready=True,
            message="; ".join([f"config v{self.plane.version} pushed to {synced} sidecar(s)",
                               *(str(m) for m in messages)]),
            detail={"spec": self.obj.spec,
                    **({"validationMessages": [m.status_entry() for m in messages]} if messages else {})},
            warnings=tuple(str(m) for m in messages))


class NamespaceController:
    """A Namespace only carries labels (read by the control plane)."""

    def __init__(self, cluster: LocalCluster, obj: Namespace) -> None:
        self.obj = obj

    def apply(self, obj: Namespace) -> None:
        self.obj = obj

    def delete(self) -> None:
        pass

    def status(self) -> ObjectStatus:
        labels = ", ".join(f"{k}={v}" for k, v in self.obj.metadata.labels.items())
        return ObjectStatus(kind="Namespace", name=self.obj.metadata.name,
                            namespace=self.obj.metadata.namespace, ready=True,
                            message=labels or "no labels")
