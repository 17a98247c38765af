"""The live Flagger controller: real sidecar'd pods, real VirtualService weights, real webhooks.

Intervals are 1 s, so a rollout takes a few seconds; waits poll the Canary's status (no sleeps
as synchronisation), and nothing asserts on timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from labkit import load
from labkit.cluster import ApplyError, LocalCluster
from labkit.core.models import Deployment
from labkit.flagger.podinfo import failing_command, podinfo_deployment
from labkit.manifests import KubeObject
from labkit.mesh.control import control_plane
from labkit.mesh.models import VirtualService
from labkit.serving.models import KnativeService

NS = "default"

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}}


def canary(analysis: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": NS},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898},
                     "analysis": {"interval": "1s", "threshold": 2, **analysis}}}


SUCCESS_RATE = {"name": "request-success-rate", "interval": "1s", "thresholdRange": {"min": 99}}


@pytest.fixture()
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("LABKIT_FLAGGER_STATE", str(tmp_path / "state"))
    with LocalCluster() as c:
        yield c


class Traffic:
    """Requests to the apex service through a client sidecar, until stopped."""

    def __init__(self, cluster: LocalCluster, headers: dict[str, str] | None = None) -> None:
        self.proxy = control_plane(cluster).client(NS).outbound_url
        self.headers = headers or {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            load.run("http://podinfo:9898/get", requests=10, concurrency=2, proxy=self.proxy,
                     headers=self.headers)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


K = TypeVar("K", bound=KubeObject)


def live(cluster: LocalCluster, kind: str, name: str, of: type[K]) -> K:
    """The applied `kind`/`name` in NS as the model it is (another kind fails the test)."""
    obj = cluster.get(kind, name, NS).object
    assert isinstance(obj, of)
    return obj

def status(cluster: LocalCluster) -> dict[str, Any]:
    return dict(cluster.get("Canary", "podinfo", NS).status.detail)


def wait_for(cluster: LocalCluster, phase: str, limit: float = 40.0) -> dict[str, Any]:
    """Poll the Canary's phase (status polling, not a timed assertion)."""
    deadline = time.monotonic() + limit
    seen: list[str] = []
    while time.monotonic() < deadline:
        detail = status(cluster)
        if not seen or seen[-1] != detail["status"]["phase"]:
            seen.append(detail["status"]["phase"])
        if detail["status"]["phase"] == phase:
            return detail
        time.sleep(0.05)
    raise AssertionError(f"never reached {phase}; phases {seen}; events "
                         f"{[e['message'] for e in status(cluster)['events']]}")


def weights(cluster: LocalCluster) -> list[int]:
    vs = live(cluster, "VirtualService", "podinfo", VirtualService).spec
    return [r["weight"] for r in vs["http"][0]["route"]]


def messages(detail: dict[str, Any]) -> list[str]:
    return [e["message"] for e in detail["events"]]


def test_initialisation_creates_flagger_objects(cluster: LocalCluster) -> None:
    cluster.apply([NAMESPACE, podinfo_deployment("v1")])
    cluster.apply(canary({"stepWeight": 50, "metrics": [SUCCESS_RATE]}))
    detail = status(cluster)
    assert detail["status"]["phase"] == "Initialized"
    assert "Initialization done! podinfo.default" in messages(detail)
    names = {(o.kind, o.metadata.name) for o in cluster.objects()}
    assert {("Deployment", "podinfo-primary"), ("Service", "podinfo"), ("Service", "podinfo-primary"),
            ("Service", "podinfo-canary"), ("DestinationRule", "podinfo-primary"),
            ("DestinationRule", "podinfo-canary"), ("VirtualService", "podinfo")} <= names
    assert live(cluster, "Deployment", "podinfo", Deployment).spec.replicas == 0
    assert weights(cluster) == [100, 0]
    # requests by name reach the primary through the mesh
    client = control_plane(cluster).client(NS)
    result = load.run("http://podinfo:9898/get", requests=5, concurrency=1, proxy=client.outbound_url)
    assert result.count(200) == 5


def test_rollout_promotes_and_bad_canary_rolls_back(cluster: LocalCluster) -> None:
    cluster.apply([NAMESPACE, podinfo_deployment("v1")])
    cluster.apply(canary({"stepWeight": 50, "maxWeight": 50, "metrics": [SUCCESS_RATE]}))
    seen_weights: set[int] = set()
    with Traffic(cluster):
        cluster.apply(podinfo_deployment("v2"))
        deadline = time.monotonic() + 40
        while status(cluster)["status"]["phase"] != "Succeeded" and time.monotonic() < deadline:
            seen_weights.add(weights(cluster)[1])
            time.sleep(0.05)
        detail = wait_for(cluster, "Succeeded")
    assert 50 in seen_weights
    assert messages(detail)[-6:] == [
        "New revision detected! Scaling up podinfo.default",
        "Starting canary analysis for podinfo.default",
        "Advance podinfo.default canary weight 50",
        "Copying podinfo.default template spec to podinfo-primary.default",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.default",
    ]
    primary = live(cluster, "Deployment", "podinfo-primary", Deployment)
    assert primary.spec.template.spec.containers[0].env[0].value == "v2"
    assert live(cluster, "Deployment", "podinfo", Deployment).spec.replicas == 0

    with Traffic(cluster):
        cluster.apply(podinfo_deployment("v3", failing=True))
        detail = wait_for(cluster, "Failed")
    assert "Halt podinfo.default advancement success rate 0.00% < 99%" in messages(detail)
    assert "Rolling back podinfo.default failed checks threshold reached 2" in messages(detail)
    assert weights(cluster) == [100, 0]
    assert live(cluster, "Deployment", "podinfo", Deployment).spec.replicas == 0
    assert live(cluster, "Deployment", "podinfo-primary", Deployment).spec.template.spec.containers[0].env[0].value == "v2"


def test_bad_input_is_refused_before_anything_changes(cluster: LocalCluster) -> None:
    cluster.apply([NAMESPACE])
    with pytest.raises(ApplyError, match=r"spec.targetRef: Deployment 'podinfo' not found"):
        cluster.apply(canary({"stepWeight": 10}))
    cluster.apply(podinfo_deployment("v1"))
    missing = canary({"stepWeight": 10, "metrics": [
        {"name": "accuracy", "templateRef": {"name": "model-accuracy"}, "thresholdRange": {"min": 0.9}}]})
    with pytest.raises(ApplyError, match=r"spec.analysis.metrics\[0\].templateRef: MetricTemplate 'model-accuracy' not found"):
        cluster.apply(missing)
    assert {o.kind for o in cluster.objects()} == {"Namespace", "Deployment"}


LOADTESTER = [
    {"apiVersion": "apps/v1", "kind": "Deployment",
     "metadata": {"name": "flagger-loadtester", "namespace": NS},
     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "flagger-loadtester"}},
              "template": {"metadata": {"labels": {"app": "flagger-loadtester"}},
                           "spec": {"containers": [{
                               "name": "loadtester", "image": "ghcr.io/fluxcd/flagger-loadtester:0.34.0",
                               "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}]}}}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "flagger-loadtester", "namespace": NS},
     "spec": {"selector": {"app": "flagger-loadtester"}, "ports": [{"port": 80, "targetPort": 8080}]}},
]
GATE = {"name": "approval", "type": "confirm-promotion", "url": f"http://flagger-loadtester.{NS}/gate/check"}


def hello(version: str) -> dict[str, Any]:
    body = podinfo_deployment(version)
    body["spec"]["template"]["spec"]["containers"][0] = {
        "name": "podinfo", "image": "labkit/hello", "env": [{"name": "TARGET", "value": version}]}
    return body


def open_gate(cluster: LocalCluster) -> None:
    import httpx
    url = cluster.url("Service", "flagger-loadtester", NS)
    answer = httpx.post(f"{url}/gate/open", json={"name": "podinfo", "namespace": NS}, timeout=10)
    assert answer.status_code == 202


def test_load_test_webhook_gate_and_controller_restart(cluster: LocalCluster) -> None:
    """The load tester's hey traffic (through its own sidecar) feeds the success rate; the
    confirm-promotion gate holds the rollout at 50 %; the Canary deleted takes what Flagger made
    with it, and applied again resumes at that weight from labkit's saved status (as after a
    kernel restart); opening the gate promotes."""
    cluster.apply([NAMESPACE, podinfo_deployment("v1"), *LOADTESTER])
    # threshold 5: the tick that starts hey reads a window without traffic yet ("no values
    # found", a failed check), as in Flagger
    spec = canary({"threshold": 5, "stepWeight": 50, "maxWeight": 50, "metrics": [SUCCESS_RATE], "webhooks": [
        {"name": "load-test", "url": f"http://flagger-loadtester.{NS}/", "timeout": "5s",
         "metadata": {"cmd": f"hey -z 1m -q 20 -c 2 http://podinfo-canary.{NS}:9898/get"}},
        GATE]})
    cluster.apply(spec)
    cluster.apply(podinfo_deployment("v2"))
    held = wait_for(cluster, "WaitingPromotion")
    assert "Halt podinfo.default advancement waiting for promotion approval approval" in messages(held)
    assert weights(cluster) == [50, 50]

    # Deleting the Canary deletes what Flagger made from it (Kubernetes' garbage collector
    # follows their ownerReferences); the student's Deployment stays.
    cluster.delete("Canary", "podinfo", NS)
    left = {(o.kind, o.metadata.name) for o in cluster.objects()}
    assert ("VirtualService", "podinfo") not in left and ("Deployment", "podinfo-primary") not in left
    assert ("Deployment", "podinfo") in left
    cluster.apply(spec)
    resumed = status(cluster)
    assert resumed["status"]["phase"] == "WaitingPromotion"
    assert resumed["routes"] == {"primary": 50, "canary": 50, "mirrored": False}
    assert messages(resumed).count("Initialization done! podinfo.default") == 1

    # a kernel restart: a new cluster, the same manifests applied again
    cluster.close()
    with LocalCluster() as fresh:
        fresh.apply([NAMESPACE, podinfo_deployment("v2"), *LOADTESTER])
        fresh.apply(spec)
        assert status(fresh)["status"]["phase"] == "WaitingPromotion"
        assert weights(fresh) == [50, 50]
        primary = live(fresh, "Deployment", "podinfo-primary", Deployment)
        assert primary.spec.template.spec.containers[0].env[0].value == "v1"
        open_gate(fresh)
        done = wait_for(fresh, "Succeeded")
        assert "Confirm-promotion check approval passed" in messages(done)
        assert weights(fresh) == [100, 0]
        promoted = live(fresh, "Deployment", "podinfo-primary", Deployment)
        assert promoted.spec.template.spec.containers[0].env[0].value == "v2"


def test_ab_routes_only_matching_requests_to_the_canary(cluster: LocalCluster) -> None:
    import httpx
    cluster.apply([NAMESPACE, hello("v1"), *LOADTESTER])
    cluster.apply(canary({"iterations": 2, "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
                          "webhooks": [GATE]}))
    cluster.apply(hello("v2"))
    wait_for(cluster, "WaitingPromotion")  # iterations done, promotion held: routes stay put
    with httpx.Client(proxy=control_plane(cluster).client(NS).outbound_url, timeout=10) as http:
        insiders = {http.get("http://podinfo:9898/", headers={"x-canary": "insider"}).text for _ in range(10)}
        others = {http.get("http://podinfo:9898/", headers={"x-canary": "outsider"}).text for _ in range(10)}
    assert insiders == {"Hello v2!\n"}
    assert others == {"Hello v1!\n"}
    open_gate(cluster)
    wait_for(cluster, "Succeeded")
    with httpx.Client(proxy=control_plane(cluster).client(NS).outbound_url, timeout=10) as http:
        assert http.get("http://podinfo:9898/").text == "Hello v2!\n"


def test_failing_webhook_rolls_back(cluster: LocalCluster) -> None:
    cluster.apply([NAMESPACE, podinfo_deployment("v1"), *LOADTESTER])
    cluster.apply(canary({"stepWeight": 50, "webhooks": [
        {"name": "acceptance", "type": "rollout", "url": f"http://flagger-loadtester.{NS}/gate/halt"}]}))
    cluster.apply(podinfo_deployment("v2"))
    detail = wait_for(cluster, "Failed")
    assert messages(detail)[-4:] == [
        "Halt podinfo.default advancement external check acceptance failed Forbidden",
        "Halt podinfo.default advancement external check acceptance failed Forbidden",
        "Rolling back podinfo.default failed checks threshold reached 2",
        "Canary failed! Scaling down podinfo.default",
    ]
    assert weights(cluster) == [100, 0]


def ksvc(version: str, bad: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"image": "ghcr.io/knative/helloworld-go",
                                 "env": [{"name": "TARGET", "value": version}]}
    if bad:
        container = {"image": "labkit/httpbin", "env": [{"name": "TARGET", "value": version}],
                     "command": failing_command()}
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": NS},
            "spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
                                  "spec": {"containers": [container]}}}}


def test_knative_provider_splits_between_primary_and_latest_revision(cluster: LocalCluster) -> None:
    import httpx
    cluster.apply(ksvc("v1"))
    spec = canary({"stepWeight": 50, "maxWeight": 50, "metrics": [SUCCESS_RATE]})
    spec["spec"]["provider"] = "knative"
    spec["spec"]["targetRef"] = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"}
    del spec["spec"]["service"]
    cluster.apply(spec)
    service = live(cluster, "ksvc", "podinfo", KnativeService)
    assert service.metadata.annotations["flagger.app/primary-revision"] == "podinfo-00001"
    url = cluster.url("ksvc", "podinfo", NS)
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                http.get(f"{url}/get")  # the bad version answers 500 there

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        cluster.apply(ksvc("v2"))
        # applying a new template keeps Flagger's traffic block: the new revision gets 0 % first
        split = {(t.revision_name or "latest"): t.percent
                 for t in live(cluster, "ksvc", "podinfo", KnativeService).spec.traffic or []}
        assert split == {"latest": 0, "podinfo-00001": 100}
        detail = wait_for(cluster, "Succeeded")
        assert "Advance podinfo.default canary weight 50" in messages(detail)
        service = live(cluster, "ksvc", "podinfo", KnativeService)
        assert service.metadata.annotations["flagger.app/primary-revision"] == "podinfo-00002"
        with httpx.Client(timeout=10) as http:
            assert {http.get(url).text for _ in range(5)} == {"Hello v2!\n"}

        cluster.apply(ksvc("v3", bad=True))
        detail = wait_for(cluster, "Failed")
        assert "Rolling back podinfo.default failed checks threshold reached 2" in messages(detail)
        split = {(t.revision_name or "latest"): t.percent
                 for t in live(cluster, "ksvc", "podinfo", KnativeService).spec.traffic or []}
        assert split == {"latest": 0, "podinfo-00002": 100}
    finally:
        stop.set()
        sender.join(timeout=30)
