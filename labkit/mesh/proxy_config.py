"""What the control plane tells a sidecar: whom it speaks for (`Workload`), the mesh's services
and their ready endpoints (`ServiceInfo`, `Endpoint`), and one immutable configuration snapshot
(`MeshConfig`, what istiod pushes over xDS).

Plain data, no I/O: `labkit.mesh.control` builds it from the applied objects and pushes it to
every `labkit.mesh.proxy.Sidecar`, which derives its own view (its clusters, routes, mTLS mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labkit.mesh import authz
from labkit.mesh.destination import DestinationRule
from labkit.mesh.routing import VirtualService

__all__ = ["Endpoint", "MeshConfig", "ServiceInfo", "Workload"]


@dataclass(frozen=True)
class Workload:
    """Who a sidecar speaks for: its identity in metrics, authorisation and certificates."""

    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    pod: str = ""
    port: int | None = None
    """The container port the manifest declares (PeerAuthentication `portLevelMtls` keys)."""

    @property
    def principal(self) -> str:
        """SPIFFE identity, `spiffe://cluster.local/ns/<ns>/sa/<sa>`."""
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True)
class Endpoint:
    """One pod behind a service, as the sidecar reaches it: `address` is the pod's sidecar
    inbound listener when it has one (then `sidecar` is True), else the app itself."""

    address: str
    workload: str = "unknown"
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    pod: str = ""
    sidecar: bool = False
    mtls_mode: str = authz.PERMISSIVE
    principal: str | None = None


@dataclass(frozen=True)
class ServiceInfo:
    """A Kubernetes Service as the mesh sees it: name, namespace, ports and ready endpoints."""

    name: str
    namespace: str
    ports: tuple[int, ...]
    endpoints: tuple[Endpoint, ...] = ()
    fqdn: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fqdn", f"{self.name}.{self.namespace}.svc.cluster.local")


@dataclass(frozen=True)
class MeshConfig:
    """One configuration snapshot, the same for every sidecar (each derives its own view).

    `virtual_services` are in creation order (the first whose hosts cover a request wins);
    `destination_rules` are by host FQDN; `sources` keeps the applied YAML specs for dumps.
    """

    version: int = 0
    services: Mapping[str, ServiceInfo] = field(default_factory=dict)
    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: Mapping[str, DestinationRule] = field(default_factory=dict)
    peer_authentications: tuple[authz.PeerAuthentication, ...] = ()
    authorization_policies: tuple[authz.AuthorizationPolicy, ...] = ()
    sources: tuple[Mapping[str, Any], ...] = ()
    shadow_host_suffix: bool = False
    """Mirrored copies carry `<host>-shadow[:port]`: istiod's `DISABLE_SHADOW_HOST_SUFFIX=false`
    (Istio <= 1.27, or a compatibilityVersion <= 1.27 profile). False is Istio >= 1.28's default."""

