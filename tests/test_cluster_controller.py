"""`cluster.controller(kind, name)`: the one way to an object's live side, its errors, the typed
helpers over it, objects that applied objects own, the mesh's handle, and the component list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from import_graph import PACKAGE, closure, internal_edges, read_package

from labkit import manifests
from labkit.cluster import LocalCluster, NotFoundError
from labkit.core.service import ServiceController
from labkit.eventing.channel import ChannelController, SubscriptionController, channel_handle
from labkit.mesh.control import ControlPlane, control_plane
from labkit.serving.service import KnativeServiceController, knative_service

HELLO = (Path(__file__).resolve().parents[1] / "data" / "manifests" / "hello.yaml").read_text()

KSVC_HELLO = """\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      containers: [{image: labkit/httpbin}]
"""

SEQUENCE = """\
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: seq}
spec:
  steps:
  - uri: http://127.0.0.1:9/a
  - uri: http://127.0.0.1:9/b
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: generic}
"""


def test_one_name_two_kinds_the_group_or_the_class_says_which(cluster: LocalCluster) -> None:
    cluster.apply([HELLO, KSVC_HELLO])
    # A bare "Service" is the core one, as kubectl reads it; the group picks Knative's.
    assert isinstance(cluster.controller("Service", "hello"), ServiceController)
    ksvc = cluster.controller("Service", "hello", group="serving.knative.dev", of=KnativeServiceController)
    assert ksvc is cluster.controller("ksvc", "hello") is cluster.controller("serving.knative.dev/v1/Service", "hello")
    assert knative_service(cluster, "hello") is ksvc
    assert ksvc.url == cluster.url("ksvc", "hello")
    with pytest.raises(TypeError, match="run by ServiceController, not KnativeServiceController"):
        cluster.controller("Service", "hello", of=KnativeServiceController)
    with pytest.raises(ValueError, match="already names its API group"):
        cluster.controller("v1/Service", "hello", group="serving.knative.dev")


def test_errors_name_what_exists_and_the_closest_name(cluster: LocalCluster) -> None:
    cluster.apply(HELLO)
    with pytest.raises(NotFoundError, match=re.escape(
            "no Deployment named 'helo' in namespace 'default'; did you mean 'hello'? "
            "(present: Deployment/hello, Service/hello)")):
        cluster.controller("Deployment", "helo")
    with pytest.raises(NotFoundError, match="no Deployment named 'zzz' in namespace 'default' [(]present"):
        cluster.controller("Deployment", "zzz")  # nothing close: no guess
    with pytest.raises(NotFoundError, match="unknown kind 'Deploymnet'; did you mean 'Deployment'[?] supported:"):
        cluster.controller("Deploymnet", "hello")
    with pytest.raises(NotFoundError, match="no Deployment named 'hello' in namespace 'other'"):
        cluster.controller("Deployment", "hello", "other")
    with pytest.raises(LookupError, match=r"no Service named 'hello' .*present: Deployment/hello, Service/hello"):
        knative_service(cluster, "hello")  # the typed helpers say the same


def test_objects_an_applied_object_owns_are_reachable(cluster: LocalCluster) -> None:
    """A Sequence's channels and subscriptions are made by its controller, as Knative's
    Sequence reconciler creates them with the Sequence as their owner."""
    cluster.apply(SEQUENCE)
    # A generic Channel is backed by an InMemoryChannel of its name (Knative's NewChannel).
    generic = cluster.controller("Channel", "generic", of=ChannelController)
    assert channel_handle(cluster, "generic") is generic
    first = cluster.controller("InMemoryChannel", "seq-kn-sequence-0", of=ChannelController)
    assert first is channel_handle(cluster, "seq-kn-sequence-0")
    assert cluster.get("Sequence", "seq").status.url == first.url
    assert isinstance(cluster.controller("Subscription", "seq-kn-sequence-1"), SubscriptionController)
    with pytest.raises(NotFoundError, match="did you mean 'seq-kn-sequence-1'"):
        cluster.controller("InMemoryChannel", "seq-kn-sequence-2")
    # Owned objects are not the user's to delete or list: the Sequence is.
    with pytest.raises(NotFoundError):
        cluster.delete("InMemoryChannel", "seq-kn-sequence-0")
    assert [o.kind for o in cluster.objects()] == ["Sequence", "Channel"]
    cluster.delete("Sequence", "seq")
    with pytest.raises(NotFoundError, match=r"present: Channel/generic, InMemoryChannel/generic\)"):
        channel_handle(cluster, "seq-kn-sequence-0")


def test_the_mesh_is_reached_through_its_own_package(cluster: LocalCluster) -> None:
    plane = control_plane(cluster)
    assert isinstance(plane, ControlPlane)
    assert plane.client() is plane.client("default", "sleep")  # one `sleep` per namespace and account
    with pytest.raises(LookupError, match="no sidecar for workload 'nosuch'"):
        plane.sidecar("nosuch")


def _registering_modules() -> set[str]:
    """Modules that call a registration function at import time (a line starting with it)."""
    calls = re.compile(r"^\s*register_(kind|controller|extension|image)\(", re.MULTILINE)
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if calls.search(path.read_text()):
            parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_registering_module_is_reached_from_the_component_list() -> None:
    """A component registers itself only if `labkit.components` imports it: one added without
    being listed would be missing from every cluster."""
    assert manifests.COMPONENTS_MODULE == "labkit.components"
    reached = closure(internal_edges(read_package()), "labkit.components")
    registering = _registering_modules()
    assert {"labkit.core.models", "labkit.serving.kinds", "labkit.mesh.kinds"} <= registering
    assert sorted(registering - set(reached)) == []
