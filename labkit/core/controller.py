"""The controller contract and registry, kept apart from cluster.py so that components can
register controllers without importing the cluster (and the cluster can import them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from labkit.manifests import KindKey

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = [
    "ConfigWarning",
    "Controller",
    "ControllerFactory",
    "ObjectStatus",
    "controller_factory",
    "register_controller",
]


@dataclass(frozen=True)
class ObjectStatus:
    """What `kubectl get` would show: readiness, where to reach it, and kind-specific detail.

    `url` is the object's own address (None when it has none, like a Deployment); `urls` lists
    every address it serves (a Service's ports, a Deployment's pods).
    """

    kind: str
    name: str
    namespace: str
    ready: bool
    url: str | None = None
    urls: tuple[str, ...] = ()
    message: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    """What an analyzer says of config the real system accepts but that cannot work as written
    (`istioctl analyze`); `LocalCluster.apply` shows each as a `ConfigWarning`."""


class ConfigWarning(UserWarning):
    """Applied config that the real system accepts but that cannot work as written."""


class Controller(Protocol):
    """Makes one object real. apply() is create-or-update and must undo its own partial work
    before raising; delete() releases everything; an optional reconcile() is called
    periodically (under the cluster lock) to notice change, such as a pod process dying."""

    def apply(self, obj: Any) -> None: ...

    def delete(self) -> None: ...

    def status(self) -> ObjectStatus: ...


ControllerFactory = Callable[["LocalCluster", Any], Controller]

_CONTROLLERS: dict[KindKey, ControllerFactory] = {}


def register_controller(api_version: str, kind: str, factory: ControllerFactory) -> None:
    """Objects of (api_version, kind) get `factory(cluster, obj)` as their controller."""
    _CONTROLLERS[(api_version, kind)] = factory


def controller_factory(api_version: str, kind: str) -> ControllerFactory | None:
    return _CONTROLLERS.get((api_version, kind))
