"""Knative's hops time themselves: the activator and queue-proxy append Server-Timing lines."""

from __future__ import annotations

import statistics

import httpx
import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.inference.timing import parse_server_timing
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving, knative_service


def httpbin_service(annotations: dict[str, str]) -> str:
    """A Knative Service running labkit/httpbin, which sends no Server-Timing of its own."""
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "timed"},
        "spec": {"template": {"metadata": {"annotations": annotations},
                              "spec": {"containers": [{"image": "labkit/httpbin"}]}}},
    }, sort_keys=False)


def timing_of(client: httpx.Client, url: str) -> dict[str, float]:
    answer = client.get(url)
    assert answer.status_code == 200, answer.text
    return parse_server_timing(answer.headers.get_list("server-timing"))


def test_cold_request_through_the_activator_then_warm_through_the_queue_proxy_only(
        cluster: LocalCluster, wait_for) -> None:
    configure_serving(cluster, autoscaler=AutoscalerConfig(allow_zero_initial_scale=True))
    # target-burst-capacity 0: the activator stays in the path only while there is no pod.
    cluster.apply(httpbin_service({"autoscaling.knative.dev/initial-scale": "0",
                                   "autoscaling.knative.dev/target-burst-capacity": "0"}))
    svc = knative_service(cluster, "timed")
    revision = svc.revision()
    assert revision.replica_count == 0
    with httpx.Client(timeout=60) as client:
        cold = timing_of(client, svc.url + "/get")
        assert list(cold) == ["queue-proxy", "activator-wait", "activator"], \
            "the activator appends after the pod's line, never replacing it"
        assert all(ms >= 0 for ms in cold.values())
        assert svc.activator is not None and svc.activator.forwarded == 1
        wait_for(lambda: revision.mode == "Serve", 30, "the route to bypass the activator")
        warm = [timing_of(client, svc.url + "/get") for _ in range(5)]
    assert all(list(w) == ["queue-proxy"] for w in warm), \
        "a warm request with no burst room skips the activator"
    assert all(w["queue-proxy"] >= 0 for w in warm) and svc.activator.forwarded == 1
    # A cold start is a whole process start; a warm hop is bookkeeping on one event loop. The
    # median keeps one request that waited for the GIL from deciding the comparison.
    warm_hop = statistics.median(w["queue-proxy"] for w in warm)
    assert cold["activator-wait"] > 10 * warm_hop
    assert cold["activator-wait"] > cold["activator"]


@pytest.mark.parametrize(("header", "expected"), [
    ("decode;dur=0.1, predict;dur=2", {"decode": 0.1, "predict": 2.0}),
    (["predict;dur=2", "queue-proxy;dur=0.05", "activator-wait;dur=900, activator;dur=0.02"],
     {"predict": 2.0, "queue-proxy": 0.05, "activator-wait": 900.0, "activator": 0.02}),
    ([], {}),
])
def test_parse_server_timing_reads_joined_or_repeated_lines(
        header: str | list[str], expected: dict[str, float]) -> None:
    assert parse_server_timing(header) == expected
