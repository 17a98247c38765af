"""The controller contract and registry, kept apart from cluster.py so that components can
register controllers without importing the cluster (and the cluster can import them).

`Cluster` is what a controller may use of the cluster that runs it; `labkit.cluster.LocalCluster`
is its one implementation, and mypy checks that it is one wherever a controller is registered."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

from labkit.manifests import KindKey, KubeObject

if TYPE_CHECKING:
    from labkit.core.loop import BackgroundLoop
    from labkit.core.pods import PodRegistry

__all__ = [
    "Cluster",
    "ConfigWarning",
    "Controller",
    "ControllerFactory",
    "ObjectStatus",
    "Owner",
    "Resource",
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


class Owner(Protocol):
    """A controller that makes objects of its own, as Kubernetes' ownerReferences record (a
    Sequence's channels and subscriptions, an InferenceService's Knative Services): `owned()`
    lists each with its controller, so `Cluster.controller()` reaches them too."""

    def owned(self) -> Iterable[tuple[KubeObject, Controller]]: ...


@dataclass(frozen=True)
class Resource:
    """An applied object (as last applied) and its live status."""

    object: KubeObject
    status: ObjectStatus


T = TypeVar("T")


class Cluster(Protocol):
    """What controllers use of the cluster that runs them: its loop and pods, settings for the
    replicas they start, the lock, and the API (apply, read, find another object's controller)."""

    loop: BackgroundLoop
    pods: PodRegistry
    start_timeout: float
    restart_backoff: tuple[float, float] | None

    @property
    def lock(self) -> threading.RLock: ...

    def apply(self, source: Any, *, on_ready: Callable[[Resource], None] | None = None,
              ) -> list[Resource]: ...

    def get(self, kind: str, name: str, namespace: str = "default") -> Resource: ...

    def url(self, kind: str, name: str, namespace: str = "default") -> str: ...

    def objects(self) -> list[KubeObject]: ...

    @overload
    def controller(self, kind: str, name: str, namespace: str = "default", *,
                   group: str | None = None) -> Controller: ...

    @overload
    def controller(self, kind: str, name: str, namespace: str = "default", *,
                   group: str | None = None, of: type[T]) -> T: ...

    def extension(self, name: str) -> Any: ...


ControllerFactory = Callable[[Cluster, Any], Controller]

ClusterT = TypeVar("ClusterT", bound=Cluster)

_CONTROLLERS: dict[KindKey, ControllerFactory] = {}


def register_controller(api_version: str, kind: str,
                        factory: Callable[[ClusterT, Any], Controller]) -> None:
    """Objects of (api_version, kind) get `factory(cluster, obj)` as their controller. A
    factory may ask for the concrete cluster class it is written against (mypy checks that the
    class is a `Cluster`); the registry calls it with that cluster."""
    _CONTROLLERS[(api_version, kind)] = cast(ControllerFactory, factory)


def controller_factory(api_version: str, kind: str) -> ControllerFactory | None:
    return _CONTROLLERS.get((api_version, kind))
