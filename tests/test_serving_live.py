"""Knative Serving live: revisions of real processes, routes, the queue-proxy, the activator."""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from labkit.cluster import ApplyError, LocalCluster
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving, knative_service

KSVC = "serving.knative.dev/v1/Service"


def service(name: str = "web", *, annotations: dict[str, str] | None = None,
            spec: dict | None = None, env: str = "v1", traffic: list[dict] | None = None,
            command: list[str] | None = None) -> str:
    """A Knative Service manifest running labkit/httpbin (VERSION=env tells templates apart)."""
    container: dict = {"image": "labkit/httpbin", "env": [{"name": "VERSION", "value": env}]}
    if command:
        container["command"] = command
    body: dict = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": annotations or {}},
                              "spec": {**(spec or {}), "containers": [container]}}},
    }
    if traffic is not None:
        body["spec"]["traffic"] = traffic
    return yaml.safe_dump(body, sort_keys=False)


def fetch(url: str, host: str | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def revision_of(url: str, host: str | None = None) -> str:
    status, headers = fetch(url, host)
    assert status == 200, (status, headers)
    return headers["x-labkit-revision"]


def test_revisions_are_numbered_and_latest_revision_moves(cluster: LocalCluster) -> None:
    cluster.apply(service())
    svc = knative_service(cluster, "web")
    assert revision_of(svc.url + "/get") == "web-00001"
    status = cluster.get(KSVC, "web").status
    assert status.ready and status.url == svc.url
    cluster.apply(service(env="v2"))
    assert list(svc.revisions) == ["web-00001", "web-00002"]
    assert revision_of(svc.url + "/get") == "web-00002"
    knative = svc.knative_status
    assert knative.latest_created_revision_name == knative.latest_ready_revision_name == "web-00002"
    assert [(t.revision_name, t.percent, t.latest_revision) for t in knative.traffic] == [
        ("web-00002", 100, True)]
    assert {c.type: c.status for c in knative.conditions} == {
        "Ready": "True", "ConfigurationsReady": "True", "RoutesReady": "True"}
    # The same template again is no change: no new revision.
    cluster.apply(service(env="v2"))
    assert len(svc.revisions) == 2


def test_split_and_tags(cluster: LocalCluster) -> None:
    cluster.apply(service())
    traffic: list[dict[str, Any]] = [
        {"revisionName": "web-00001", "percent": 80},
        {"latestRevision": True, "percent": 20},
        {"revisionName": "web-00001", "percent": 0, "tag": "stable"},
        {"latestRevision": True, "percent": 0, "tag": "candidate"},
    ]
    cluster.apply(service(env="v2", traffic=traffic))
    svc = knative_service(cluster, "web")
    with ThreadPoolExecutor(8) as pool:
        seen = Counter(pool.map(lambda _: revision_of(svc.url + "/get"), range(300)))
    assert seen["web-00001"] + seen["web-00002"] == 300
    assert 0.10 < seen["web-00002"] / 300 < 0.32  # 20 % +- wide margin
    assert revision_of(svc.tag_url("candidate") + "/get") == "web-00002"
    assert revision_of(svc.tag_url("stable") + "/get") == "web-00001"
    assert revision_of(svc.url + "/get", host="candidate-web.default.example.com") == "web-00002"
    urls = {t.tag: t.url for t in svc.knative_status.traffic if t.tag}
    assert urls == {"stable": "http://stable-web.default.example.com",
                    "candidate": "http://candidate-web.default.example.com"}


def test_a_zero_percent_tag_tests_a_revision_that_takes_no_main_traffic(
        cluster: LocalCluster) -> None:
    cluster.apply(service())
    pin = [{"revisionName": "web-00001", "percent": 100},
           {"latestRevision": True, "percent": 0, "tag": "preview"}]
    cluster.apply(service(env="v2", traffic=pin))
    svc = knative_service(cluster, "web")
    assert {revision_of(svc.url + "/get") for _ in range(20)} == {"web-00001"}
    assert revision_of(svc.tag_url("preview") + "/get") == "web-00002"


def test_unknown_revision_in_traffic_is_refused_and_nothing_changes(
        cluster: LocalCluster) -> None:
    cluster.apply(service())
    bad = [{"revisionName": "web-00007", "percent": 100}]
    with pytest.raises(ApplyError, match=r"spec.traffic\[0\].revisionName: revision "
                                         r"'web-00007' not found \(revisions of web: web-00001"):
        cluster.apply(service(env="v2", traffic=bad))
    svc = knative_service(cluster, "web")
    assert list(svc.revisions) == ["web-00001"]
    assert revision_of(svc.url + "/get") == "web-00001"


def test_container_concurrency_queues_then_answers_503(cluster: LocalCluster, wait_for) -> None:
    # TBC 0 takes the activator out of the path once a pod is ready, so the queue-proxy's own
    # breaker (1 running + 10 queued) faces the burst; max-scale 1 keeps it one pod.
    cluster.apply(service(
        annotations={"autoscaling.knative.dev/target-burst-capacity": "0",
                     "autoscaling.knative.dev/max-scale": "1"},
        spec={"containerConcurrency": 1}))
    svc = knative_service(cluster, "web")
    revision = svc.revision()
    wait_for(lambda: revision.mode == "Serve", 10, "the activator to leave the path")
    with ThreadPoolExecutor(16) as pool:
        codes = Counter(pool.map(lambda _: fetch(svc.url + "/delay/0.8")[0], range(16)))
    assert codes[503] >= 1 and codes[200] >= 11 and codes[200] + codes[503] == 16
    assert revision.latency.codes[503] == codes[503]


def test_timeout_seconds_ends_a_slow_request_with_504(cluster: LocalCluster, wait_for) -> None:
    cluster.apply(service(annotations={"autoscaling.knative.dev/target-burst-capacity": "0"},
                          spec={"timeoutSeconds": 1}))
    revision = knative_service(cluster, "web").revision()
    wait_for(lambda: revision.mode == "Serve", 10, "the activator to leave the path")
    status, _ = fetch(knative_service(cluster, "web").url + "/delay/3")
    assert status == 504


def test_scale_from_zero_through_the_activator_and_back_to_zero(
        cluster: LocalCluster, wait_for) -> None:
    configure_serving(cluster, autoscaler=AutoscalerConfig(
        scale_to_zero_grace_period=1.0, allow_zero_initial_scale=True))
    cluster.apply(service(annotations={"autoscaling.knative.dev/window": "6s",
                                       "autoscaling.knative.dev/initial-scale": "0"}))
    svc = knative_service(cluster, "web")
    revision = svc.revision()
    assert revision.replica_count == 0 and cluster.get(KSVC, "web").status.ready
    # The request is held by the activator while a replica process starts, then answered.
    assert revision_of(svc.url + "/get") == "web-00001"
    [cold] = revision.cold_starts
    assert cold.from_zero and cold.seconds is not None and cold.seconds > 0
    assert svc.activator is not None and svc.activator.forwarded == 1
    wait_for(lambda: revision.replica_count == 0, 40, "scale to zero")
    assert any(s.desired == 0 for s in revision.history())
    conditions = {c.type: (c.status, c.reason) for c in revision.knative_status.conditions}
    assert conditions["Active"] == ("False", "NoTraffic") and conditions["Ready"][0] == "True"
    assert revision_of(svc.url + "/get") == "web-00001"
    assert len(revision.cold_starts) == 2 and revision.cold_starts[1].from_zero


def test_a_replica_that_crashes_at_start_leaves_traffic_on_the_previous_revision(
        cluster: LocalCluster) -> None:
    cluster.apply(service())
    crash = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    cluster.apply(service(env="v2", command=crash))
    svc = knative_service(cluster, "web")
    status = svc.knative_status
    assert status.latest_created_revision_name == "web-00002"
    assert status.latest_ready_revision_name == "web-00001"
    config = status.condition("ConfigurationsReady")
    assert config is not None and config.status == "False"
    assert "exited with code 3" in (config.message or "") and "boom" in (config.message or "")
    assert not cluster.get(KSVC, "web").status.ready
    failed = {c.type: c for c in svc.revision("web-00002").knative_status.conditions}
    assert failed["ContainerHealthy"].status == "False"
    assert failed["ContainerHealthy"].reason == "ExitCode"
    assert revision_of(svc.url + "/get") == "web-00001"


def test_metrics_are_prometheus_text(cluster: LocalCluster) -> None:
    cluster.apply(service())
    svc = knative_service(cluster, "web")
    for _ in range(3):
        fetch(svc.url + "/status/418")
    with urllib.request.urlopen(svc.metrics_url) as response:
        text = response.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    revision = (("configuration_name", "web"), ("namespace_name", "default"),
                ("revision_name", "web-00001"), ("service_name", "web"))
    counted = (("response_code", "418"), ("response_code_class", "4xx"))
    assert samples[("revision_request_count", tuple(sorted(revision + counted)))] == 3
    assert "# TYPE revision_request_latencies histogram" in text
    assert samples[("revision_request_latencies_bucket",
                    tuple(sorted((*revision, ("le", "+Inf")))))] == 3
    assert ("autoscaler_desired_pods", revision) in samples
    assert ("labkit_cold_starts_total", revision) in samples


def test_closing_the_cluster_leaves_no_process(child_pids, process_alive) -> None:
    before = child_pids()
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "2"}))
        revision = knative_service(cluster, "web").revision()
        pids = [pod.pid for pod in revision.ready_pods()]
        assert len(pids) == 2 and all(process_alive(p) for p in pids)
    assert not any(process_alive(p) for p in pids)
    assert child_pids() <= before


def test_load_makes_the_autoscaler_start_more_replicas(cluster: LocalCluster, wait_for) -> None:
    # Target 1 in flight per pod (0.7 at 70 %): three requests in flight call for several pods.
    cluster.apply(service(annotations={"autoscaling.knative.dev/target": "1",
                                       "autoscaling.knative.dev/window": "6s"}))
    svc = knative_service(cluster, "web")
    revision = svc.revision()
    stop = threading.Event()

    def keep_busy() -> None:
        while not stop.is_set():
            fetch(svc.url + "/delay/0.3")

    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            pool.submit(keep_busy)
        try:
            wait_for(lambda: revision.ready_count >= 2, 20, "a second ready replica")
        finally:
            stop.set()
    assert max(s.desired for s in revision.history()) >= 2
    assert any(s.observed_concurrency > 1 for s in revision.history())
    assert len(revision.cold_starts) >= 2


def test_scale_down_drains_in_flight_requests(cluster: LocalCluster, wait_for,
                                              process_alive) -> None:
    cluster.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "2"}))
    revision = knative_service(cluster, "web").revision()
    newest = max(revision.ready_pods(), key=lambda pod: pod.created)
    assert newest.url is not None and newest.proxy is not None
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(fetch, newest.url + "/delay/1")
        wait_for(lambda: newest.proxy.in_flight == 1, 10, "the request to reach the pod")
        revision.scale_to(1)  # as the reconciler does: the newest pod goes first
        assert newest not in revision.ready_pods()
        assert answer.result()[0] == 200
    wait_for(lambda: not process_alive(newest.pid), 10, "the drained pod to stop")


def test_the_activator_queue_is_bounded(cluster: LocalCluster) -> None:
    # A replica that takes 1.5 s to start: five requests arrive while it starts, two fit the
    # activator's queue (depth 2) and are answered once it is ready, three get 503 at once.
    configure_serving(cluster, activator_queue_depth=2, autoscaler=AutoscalerConfig(
        allow_zero_initial_scale=True))
    slow = [sys.executable, "-c", "import runpy, time; time.sleep(1.5); "
            "runpy.run_module('labkit.apps.httpbin', run_name='__main__')"]
    cluster.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "0"},
                          command=slow))
    svc = knative_service(cluster, "web")
    with ThreadPoolExecutor(5) as pool:
        codes = Counter(pool.map(lambda _: fetch(svc.url + "/get")[0], range(5)))
    assert codes == Counter({200: 2, 503: 3})
    assert svc.activator is not None and svc.activator.rejected == 3


def test_cluster_dependent_annotation_rules_are_checked_at_apply(cluster: LocalCluster) -> None:
    # initial-scale 0 is valid YAML for Knative, but only a cluster that allows zero initial
    # scale (config-autoscaler allow-zero-initial-scale) accepts it.
    with pytest.raises(ApplyError, match=r"spec.template.metadata.annotations: invalid value: "
                                         r"0: autoscaling.knative.dev/initial-scale"):
        cluster.apply(service(annotations={"autoscaling.knative.dev/initial-scale": "0"}))
    assert cluster.objects() == []
