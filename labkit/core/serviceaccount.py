"""The ServiceAccount controller, and the admission rule that pods need their account to exist.

A ServiceAccount starts nothing locally; it is a name pods run as (the mesh turns it into their
SPIFFE identity). Kubernetes' ServiceAccount admission plugin refuses to create a pod whose
account does not exist, except `default`, which every namespace gets automatically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.core.controller import ObjectStatus, register_controller
from labkit.core.models import ServiceAccount

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["ServiceAccountController", "missing_service_account"]


def missing_service_account(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    """Why a pod running as `name` cannot be created in `namespace` now, or None if it can."""
    if name == "default" or any(
        isinstance(obj, ServiceAccount)
        and obj.metadata.namespace == namespace
        and obj.metadata.name == name
        for obj in cluster.objects()
    ):
        return None
    return (
        f"pods are forbidden: error looking up service account {namespace}/{name}: "
        f"serviceaccount {name!r} not found (apply a v1 ServiceAccount named {name!r} "
        f"in namespace {namespace!r} before the pods that run as it)"
    )


class ServiceAccountController:
    def __init__(self, cluster: LocalCluster, obj: ServiceAccount) -> None:
        self.obj = obj

    def apply(self, obj: ServiceAccount) -> None:
        self.obj = obj

    def delete(self) -> None:
        """Running pods keep their identity, as in Kubernetes; only new pods are refused."""

    def status(self) -> ObjectStatus:
        meta = self.obj.metadata
        return ObjectStatus(
            kind="ServiceAccount", name=meta.name, namespace=meta.namespace, ready=True,
            message=f"identity spiffe://cluster.local/ns/{meta.namespace}/sa/{meta.name}",
        )


register_controller("v1", "ServiceAccount", ServiceAccountController)
