"""What the eventing controllers share: a per-cluster table of live controllers, and resolving
a destination without failing the apply.

Knative lets a Trigger be applied before its Broker, and a Subscription before its Channel, so
neither side can hold the other: each looks the other up, by (namespace, name), in its
cluster's registry. The registry lives as long as its cluster (weakly keyed) and one lock
guards both sides, so an apply and a lookup never see half of a change.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from labkit.eventing.destinations import UnresolvedDestination, resolve_destination
from labkit.eventing.models import Destination

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["ControllerRegistry", "Registered", "registry_of", "try_resolve"]

R = TypeVar("R", bound="ControllerRegistry")

_BY_CLUSTER: weakref.WeakKeyDictionary[Any, dict[type, ControllerRegistry]] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class ControllerRegistry:
    """Base of one module's registry; a subclass adds a dict per kind it keeps."""

    lock: threading.RLock = field(default_factory=threading.RLock)


class Registered:
    """A controller its registry files under its object's (namespace, name)."""

    obj: Any

    @property
    def key(self) -> tuple[str, str]:
        return (self.obj.metadata.namespace, self.obj.metadata.name)


def registry_of(cluster: LocalCluster, kind: type[R]) -> R:
    """The cluster's registry of class `kind`, made on first use."""
    tables = _BY_CLUSTER.setdefault(cluster, {})
    return tables.setdefault(kind, kind())  # type: ignore[return-value]  # each class maps to its own instance


def try_resolve(cluster: LocalCluster, destination: Destination | None,
                namespace: str) -> tuple[str | None, str | None]:
    """(url, problem): problem says why a destination did not resolve (it may appear later,
    so this is a status to report, not an error to raise); (None, None) for no destination."""
    if destination is None:
        return None, None
    try:
        return resolve_destination(cluster, destination, namespace), None
    except UnresolvedDestination as err:
        return None, str(err)
