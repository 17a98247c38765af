"""Istio's configuration kinds as manifests: VirtualService, DestinationRule (networking.istio.io),
PeerAuthentication, AuthorizationPolicy (security.istio.io), and the v1 Namespace whose
`istio-injection` label asks for sidecars.

Thin on purpose: the `spec` stays the plain dict a student wrote, and validation is the policy
modules' own `from_spec` (the same code that runs the sidecar), so there is one definition of
what Istio accepts. Their `SpecError` field path (`http[0].route[1].weight`) becomes the
manifest path `spec.http[0].route[1].weight`, which `labkit.manifests` turns into FILE:LINE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from labkit.manifests import FieldPath, KubeObject
from labkit.mesh import authz, spec
from labkit.mesh.destination import DestinationRule as DestinationRulePolicy
from labkit.mesh.routing import VirtualService as VirtualServicePolicy

__all__ = [
    "NETWORKING_VERSIONS",
    "SECURITY_VERSIONS",
    "AuthorizationPolicy",
    "DestinationRule",
    "IstioObject",
    "Namespace",
    "PeerAuthentication",
    "VirtualService",
    "field_path",
]

NETWORKING_VERSIONS = ("networking.istio.io/v1", "networking.istio.io/v1beta1",
                       "networking.istio.io/v1alpha3")
SECURITY_VERSIONS = ("security.istio.io/v1", "security.istio.io/v1beta1")
DRY_RUN_ANNOTATION = "istio.io/dry-run"

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_path(text: str) -> FieldPath:
    """`http[0].route[1].weight` -> ("spec", "http", 0, "route", 1, "weight")."""
    parts: list[str | int] = ["spec"]
    for name, index in _PART.findall(text):
        parts.append(int(index) if index else name)
    return tuple(parts)


class IstioObject(KubeObject):
    """An Istio config object: `spec` is validated by the matching policy module."""

    spec: dict[str, Any] = Field(default_factory=dict)

    def policy(self) -> Any:
        """The parsed policy object the sidecar runs (raises `spec.SpecError`)."""
        raise NotImplementedError

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        yield from super().problems()
        try:
            self.policy()
        except spec.SpecError as exc:
            yield field_path(exc.path), exc.reason


class VirtualService(IstioObject):
    api_version: Literal["networking.istio.io/v1", "networking.istio.io/v1beta1",
                         "networking.istio.io/v1alpha3"] = "networking.istio.io/v1"
    kind: Literal["VirtualService"] = "VirtualService"

    def policy(self, consistent_hash_hosts: frozenset[str] = frozenset()) -> VirtualServicePolicy:
        return VirtualServicePolicy.from_spec(self.spec, self.metadata.namespace,
                                              self.metadata.name,
                                              consistent_hash_hosts=consistent_hash_hosts)


class DestinationRule(IstioObject):
    api_version: Literal["networking.istio.io/v1", "networking.istio.io/v1beta1",
                         "networking.istio.io/v1alpha3"] = "networking.istio.io/v1"
    kind: Literal["DestinationRule"] = "DestinationRule"

    def policy(self) -> DestinationRulePolicy:
        return DestinationRulePolicy.from_spec(self.spec, self.metadata.namespace)


class PeerAuthentication(IstioObject):
    api_version: Literal["security.istio.io/v1", "security.istio.io/v1beta1"] = "security.istio.io/v1"
    kind: Literal["PeerAuthentication"] = "PeerAuthentication"

    def policy(self, created: float = 0.0) -> authz.PeerAuthentication:
        return authz.PeerAuthentication.from_spec(self.spec, self.metadata.namespace,
                                                  self.metadata.name, created)


class AuthorizationPolicy(IstioObject):
    api_version: Literal["security.istio.io/v1", "security.istio.io/v1beta1"] = "security.istio.io/v1"
    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"

    def policy(self) -> authz.AuthorizationPolicy:
        dry_run = self.metadata.annotations.get(DRY_RUN_ANNOTATION, "").lower() == "true"
        return authz.AuthorizationPolicy.from_spec(self.spec, self.metadata.namespace,
                                                   self.metadata.name, dry_run=dry_run)


class Namespace(KubeObject):
    """v1 Namespace: labkit reads its labels (`istio-injection: enabled`)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    name_rule = "label"


MESH_KINDS: tuple[type[IstioObject], ...] = (VirtualService, DestinationRule, PeerAuthentication,
                                             AuthorizationPolicy)
