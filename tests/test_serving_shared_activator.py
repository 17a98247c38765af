"""One activator for every revision of a cluster, as Knative runs it: it finds the revision
from the headers the ingress appends, and counts per Service."""

from __future__ import annotations

import urllib.error
import urllib.request

import yaml

from labkit.cluster import LocalCluster
from labkit.serving.activator import NAMESPACE_HEADER, REVISION_HEADER
from labkit.serving.service import knative_service

KSVC = "serving.knative.dev/v1/Service"


def manifest(name: str) -> str:
    # TBC -1: the activator stays in the path, so every request goes through it.
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/target-burst-capacity": "-1"}},
            "spec": {"containers": [{"image": "labkit/httpbin"}]}}}})


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("x-labkit-revision", ""), ""
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def test_two_services_share_one_activator(cluster: LocalCluster) -> None:
    cluster.apply(manifest("one"))
    cluster.apply(manifest("two"))
    one, two = knative_service(cluster, "one"), knative_service(cluster, "two")
    assert one.activator is not None and two.activator is not None
    assert one.activator.url == two.activator.url
    assert get(one.url + "/get")[:2] == (200, "one-00001")
    assert get(two.url + "/get")[:2] == (200, "two-00001")
    assert get(two.url + "/get")[:2] == (200, "two-00001")
    assert (one.activator.forwarded, two.activator.forwarded) == (1, 2)
    # Straight to the activator: the headers choose the revision, as the KIngress sets them.
    direct = one.activator.url + "/get"
    assert get(direct, {REVISION_HEADER: "two-00001", NAMESPACE_HEADER: "default"})[:2] == (
        200, "two-00001")
    status, _, body = get(direct, {REVISION_HEADER: "two-00001", NAMESPACE_HEADER: "other"})
    assert status == 404 and REVISION_HEADER in body and NAMESPACE_HEADER in body


def test_the_activator_stops_with_the_last_service(cluster: LocalCluster) -> None:
    cluster.apply(manifest("one"))
    cluster.apply(manifest("two"))
    one = knative_service(cluster, "one")
    assert one.activator is not None
    url = one.activator.url
    cluster.delete(KSVC, "one")
    assert get(url + "/get", {REVISION_HEADER: "two-00001", NAMESPACE_HEADER: "default"})[0] \
        == 200
    cluster.delete(KSVC, "two")
    try:
        urllib.request.urlopen(url + "/get", timeout=5)
        raise AssertionError("the activator still answers")
    except urllib.error.URLError as exc:
        assert isinstance(exc.reason, ConnectionRefusedError)
