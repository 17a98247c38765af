"""Registers the mesh with labkit: Istio's four configuration kinds (every served API version),
the v1 Namespace (for `istio-injection`), their controllers, and the control plane as the
cluster extension "mesh". `labkit.components` names this module."""

from __future__ import annotations

from labkit.cluster import register_extension
from labkit.core.controller import register_controller
from labkit.manifests import KubeObject, register_kind
from labkit.mesh.control import ControlPlane, MeshObjectController, NamespaceController
from labkit.mesh.models import (
    NETWORKING_VERSIONS,
    SECURITY_VERSIONS,
    AuthorizationPolicy,
    DestinationRule,
    Namespace,
    PeerAuthentication,
    VirtualService,
)

_model: type[KubeObject]  # both loops' kinds
for _version in NETWORKING_VERSIONS:
    for _model in (VirtualService, DestinationRule):
        register_kind(_version, _model.model_fields["kind"].default, _model)
        register_controller(_version, _model.model_fields["kind"].default, MeshObjectController)
for _version in SECURITY_VERSIONS:
    for _model in (PeerAuthentication, AuthorizationPolicy):
        register_kind(_version, _model.model_fields["kind"].default, _model)
        register_controller(_version, _model.model_fields["kind"].default, MeshObjectController)
register_kind("v1", "Namespace", Namespace)
register_controller("v1", "Namespace", NamespaceController)
register_extension("mesh", ControlPlane)
