"""Resolving Knative Destinations (`ref` and/or `uri`) to URLs through the local cluster.

A `ref` names any addressable object the cluster runs: a core Service, a Knative Service, a
Broker, a Channel (their status URL), or a Deployment (its first pod's address, which labkit
allows for convenience; Knative would need a Service in front). `ref` + `uri` resolves the uri
relative to the ref's address, as Knative does.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from labkit.eventing.models import Destination

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["UnresolvedDestination", "resolve_destination"]


class UnresolvedDestination(LookupError):
    """The destination's object is not there (yet) or has no address."""

    def __str__(self) -> str:
        return str(self.args[0])


def resolve_destination(cluster: LocalCluster, destination: Destination, namespace: str) -> str:
    """The URL events for `destination` go to; raises UnresolvedDestination saying why not."""
    from labkit.cluster import NotFoundError

    if destination.ref is None:
        assert destination.uri is not None  # the model requires one of them
        return destination.uri
    ref = destination.ref
    kind = f"{ref.api_version}/{ref.kind}" if ref.api_version else ref.kind
    try:
        status = cluster.get(kind, ref.name, ref.namespace or namespace).status
    except NotFoundError as err:
        raise UnresolvedDestination(f"{ref.kind}/{ref.name}: {err}") from None
    base = status.url or (status.urls[0] if status.urls else None)
    if base is None:
        raise UnresolvedDestination(f"{ref.kind}/{ref.name} has no address yet ({status.message})")
    if destination.uri:
        return urllib.parse.urljoin(base.rstrip("/") + "/", destination.uri)
    return base
