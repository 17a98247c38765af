"""The sidecar's outbound listener routes as Envoy's does: by Host, by VirtualService match,
by weight; it answers locally with Envoy's exact replies; telemetry and trace headers."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from mesh_helpers import applied, echoed_headers, get, meshed, one_route, versioned
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from labkit.cluster import LocalCluster
from labkit.mesh.control import control_plane

VERSIONS = versioned("reviews", 9080, {"v1": 1, "v2": 1}) + """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    yield from meshed(VERSIONS)


def test_host_header_forms_and_absolute_form_all_reach_the_service(mesh: LocalCluster) -> None:
    sleep = control_plane(mesh).client()
    for host in ("httpbin", "httpbin:8000", "httpbin.default.svc.cluster.local:8000",
                 "httpbin.default"):
        r = get(sleep, "/get", host=host)
        assert r.status_code == 200, (host, r.text)
        assert echoed_headers(r)["host"] == host
    with httpx.Client(proxy=sleep.outbound_url, timeout=30) as proxied:  # curl -x
        r = proxied.get("http://httpbin:8000/get?x=1")
    assert r.status_code == 200 and r.json()["args"] == {"x": "1"}


def test_unknown_host_is_404_no_route(mesh: LocalCluster) -> None:
    r = get(control_plane(mesh).client(), "/get", host="nosuchservice:80")
    assert (r.status_code, r.text) == (404, "")
    assert 'response_flags="NR"' in control_plane(mesh).client().metrics_text()


def test_every_request_gets_a_request_id_and_a_traceparent_carried_to_the_app(mesh: LocalCluster) -> None:
    sleep = control_plane(mesh).client("default", "tracer")
    trace = "0af7651916cd43dd8448eb211c80319c"
    r = get(sleep, "/headers", headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"})
    seen = echoed_headers(r)
    assert re.fullmatch(r"[0-9a-f-]{36}", seen["x-request-id"])
    assert r.headers["x-request-id"] == seen["x-request-id"]
    version, trace_id, parent, sampled = seen["traceparent"].split("-")
    assert (version, trace_id, sampled) == ("00", trace, "01")
    client_span = list(sleep.spans(trace))[-1]
    server_span = list(control_plane(mesh).sidecar("httpbin").spans(trace))[-1]
    assert client_span["parent_id"] == "b7ad6b7169203331"
    assert server_span["parent_id"] == client_span["span_id"]
    assert parent == server_span["span_id"]  # the app's own spans would hang under the server's


def test_header_match_routes_one_user_to_v2_and_the_rest_to_v1(mesh: LocalCluster) -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""
    sleep = control_plane(mesh).client("default", "matcher")
    with applied(mesh, vs):
        for _ in range(5):
            assert get(sleep, "/", host="reviews:9080", headers={"end-user": "jason"}).text.startswith("Hello v2")
            assert get(sleep, "/", host="reviews:9080").text.startswith("Hello v1")
            assert get(sleep, "/", host="reviews:9080", headers={"end-user": "Jason"}).text.startswith("Hello v1")


def test_weighted_split_is_random_per_request_and_follows_relative_weights(mesh: LocalCluster) -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 3}
    - {destination: {host: reviews, subset: v2}, weight: 1}
"""
    sleep = control_plane(mesh).client("default", "splitter")
    with applied(mesh, vs):
        versions = Counter(get(sleep, "/", host="reviews:9080").text.split()[1].rstrip("!")
                           for _ in range(200))
    # 3:1 of 200 is 150/50; binomial sd is about 6, the margin is over 4 sd.
    assert 120 <= versions["v1"] <= 180 and versions["v1"] + versions["v2"] == 200


def test_consistent_hash_keeps_a_user_on_one_pod(mesh: LocalCluster) -> None:
    sleep = control_plane(mesh).client("default", "hasher")
    for user in ("alice", "bob", "carol"):
        answers = {get(sleep, "/", host="reviews:9080", headers={"x-user": user}).text
                   for _ in range(10)}
        assert len(answers) == 1, (user, answers)
    anonymous = {get(sleep, "/", host="reviews:9080").text for _ in range(40)}
    assert len(anonymous) == 2  # without the key Envoy picks at random


def test_subset_without_destination_rule_is_503_nc(mesh: LocalCluster) -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http: [{route: [{destination: {host: httpbin, subset: v9}}]}]
"""
    with applied(mesh, vs):
        r = get(control_plane(mesh).client("default", "nc"), "/get")
    assert r.status_code == 503
    assert 'response_flags="NC"' in control_plane(mesh).client("default", "nc").metrics_text()


def test_no_matching_route_is_404_nr_and_redirect_rewrite_headers_act(mesh: LocalCluster) -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new}
  - match: [{uri: {prefix: /api/}}]
    rewrite: {uri: /anything/}
    headers:
      request: {set: {x-route: api}}
      response: {add: {x-served-by: mesh}}
    route: [{destination: {host: httpbin}}]
  - match: [{uri: {prefix: /get}}]
    route: [{destination: {host: httpbin}}]
"""
    sleep = control_plane(mesh).client("default", "rewriter")
    with applied(mesh, vs):
        assert get(sleep, "/nothing").status_code == 404
        moved = get(sleep, "/old?key=value")
        assert moved.status_code == 301
        assert moved.headers["location"] == "http://httpbin:8000/new?key=value"
        r = get(sleep, "/api/things?q=1")
        assert r.json()["url"] == "/anything/things?q=1"
        assert echoed_headers(r)["x-route"] == "api"
        assert echoed_headers(r)["x-envoy-original-path"] == "/api/things?q=1"
        assert r.headers["x-served-by"] == "mesh"


def test_mirror_sends_a_copy_the_caller_never_waits_for(mesh: LocalCluster, wait_for) -> None:
    vs = one_route("httpbin", mirror="{host: flaky}")
    sleep = control_plane(mesh).client("default", "mirrorer")
    flaky = control_plane(mesh).sidecar("flaky")
    before = flaky.telemetry.metrics.total(reporter="destination", source_workload="mirrorer")
    with applied(mesh, vs):
        assert get(sleep, "/get").status_code == 200
        wait_for(lambda: flaky.telemetry.metrics.total(
            reporter="destination", source_workload="mirrorer") == before + 1, what="mirrored copy")


def scraped(text: str, name: str, labels: dict[str, str]) -> list[Sample]:
    """The samples called `name` whose labels include `labels` (label order is free)."""
    return [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and labels.items() <= s.labels.items()]


def test_metrics_endpoint_serves_istio_metrics_in_prometheus_text(mesh: LocalCluster) -> None:
    sleep = control_plane(mesh).client("default", "scraped")
    assert get(sleep, "/status/418").status_code == 418
    text = httpx.get(sleep.metrics_url, timeout=10).text
    client = {"reporter": "source", "source_workload": "scraped", "destination_workload": "httpbin",
              "destination_service": "httpbin.default.svc.cluster.local", "response_code": "418",
              "response_flags": "-"}
    assert [s.value for s in scraped(text, "istio_requests_total", client)] == [1]
    assert scraped(text, "istio_request_duration_milliseconds_bucket", {"le": "0.5"})
    server = httpx.get(control_plane(mesh).sidecar("httpbin").metrics_url, timeout=10).text
    assert scraped(server, "istio_requests_total", {
        "reporter": "destination", "source_workload": "scraped",
        "connection_security_policy": "mutual_tls", "response_code": "418"})
    line = sleep.access_log(1)[0]
    assert '"GET /status/418 HTTP/1.1" 418 - via_upstream' in line
    assert "outbound|8000||httpbin.default.svc.cluster.local" in line
    dump = json.loads(httpx.get(sleep.admin_url + "/config_dump", timeout=10).text)
    assert dump["workload"]["principal"] == "spiffe://cluster.local/ns/default/sa/scraped"
