"""The mesh-demo app and its manifests: real processes on loopback, and the official CRD schemas."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from mesh_helpers import identity

from labkit.apps.mesh_demo_deploy import MANIFEST, demo_manifest
from labkit.mesh.control import control_plane
from labkit.net import ReplicaProcess, python_command

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
ISTIO_KINDS = {"VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy"}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def demo(env: dict[str, str]) -> ReplicaProcess:
    return ReplicaProcess(python_command("labkit.apps.mesh_demo"), env=env, ready_path="/healthz", name="mesh-demo")


def test_frontend_calls_backend_by_service_env_vars_and_forwards_trace_headers() -> None:
    with demo({"SERVICE_NAME": "backend", "VERSION": "v2"}) as backend, \
         demo({"SERVICE_NAME": "frontend", "UPSTREAMS": "http://backend:9080/", "BACKEND_SERVICE_HOST": "127.0.0.1",
               "BACKEND_SERVICE_PORT": str(backend.port)}) as frontend:
        status, body = get(frontend.url + "/", {"end-user": "jason", "x-request-id": "abc"})
    assert status == 200
    assert body["service"] == "frontend" and body["upstreams"][0]["status"] == 200
    assert body["upstreams"][0]["body"]["version"] == "v2"


def test_frontend_goes_through_http_proxy_in_absolute_form() -> None:
    """With HTTP_PROXY (a sidecar's outbound listener) the call is `GET http://backend:9080/`."""
    with ReplicaProcess(python_command("labkit.apps.httpbin"), name="httpbin") as proxy, \
         demo({"SERVICE_NAME": "frontend", "UPSTREAMS": "http://backend:9080/anything",
               "HTTP_PROXY": proxy.url}) as frontend:
        status, body = get(frontend.url + "/", {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                                "cookie": "secret=1"})
    echoed = body["upstreams"][0]["body"]
    assert status == 200 and echoed["url"] == "http://backend:9080/anything"
    assert echoed["headers"]["Host"] == "backend:9080"
    assert echoed["headers"]["Traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736")
    assert "Cookie" not in echoed["headers"]  # only trace and user headers are propagated


def test_failures_and_unresolvable_names_are_visible() -> None:
    with demo({"SERVICE_NAME": "backend", "FAIL_PERCENT": "100"}) as broken, \
         demo({"SERVICE_NAME": "frontend", "UPSTREAMS": "http://nowhere:9080/"}) as lost:
        assert get(broken.url + "/")[0] == 503
        assert get(broken.url + "/healthz") == (200, {"status": "ok", "service": "backend", "version": "v1"})
        status, body = get(lost.url + "/")
    assert status == 502 and "NOWHERE_SERVICE_HOST" in body["upstreams"][0]["error"]


def test_bad_settings_stop_the_app_with_a_message() -> None:
    app = demo({"FAIL_PERCENT": "150"})
    with pytest.raises(Exception, match="FAIL_PERCENT=150 must be within 0..100"):
        app.start(timeout=20)


def test_demo_manifest_variations() -> None:
    with_mesh = demo_manifest()
    assert with_mesh[0]["kind"] == "Namespace"
    plain = demo_manifest(sidecars=False, names=["backend-v2"], env={"backend-v2": {"FAIL_PERCENT": "50"}})
    # The ServiceAccount comes along: Kubernetes would refuse the pods without it.
    assert [(d["kind"], d["metadata"]["name"]) for d in plain] == [("ServiceAccount", "backend"),
                                                                   ("Deployment", "backend-v2")]
    env = plain[1]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "FAIL_PERCENT", "value": "50"} in env and {"name": "VERSION", "value": "v2"} in env
    with pytest.raises(ValueError, match="no Deployment named \\['nope'\\]"):
        demo_manifest(env={"nope": {}})


def test_manifests_load_in_labkit() -> None:
    from labkit.manifests import load

    for path in [MANIFEST, *sorted(MANIFESTS.glob("istio-*.yaml"))]:
        assert load(path), path


def test_istio_objects_pass_the_official_crds(crd_validate) -> None:
    docs = [d for path in sorted(MANIFESTS.glob("istio-*.yaml")) for d in yaml.safe_load_all(path.read_text())
            if d and d["kind"] in ISTIO_KINDS]
    assert {d["kind"] for d in docs} == {"VirtualService", "DestinationRule"}
    report = crd_validate(yaml.safe_dump_all(docs))
    assert report.count("OK") == len(docs)


def test_without_sidecars_frontend_finds_backend_through_the_kubelets_service_variables(cluster) -> None:
    cluster.apply(demo_manifest(sidecars=False))
    status, body = get(cluster.url("Service", "frontend") + "/")
    assert status == 200 and body["upstreams"][0]["body"]["service"] == "backend"
    # The manifest lists the Services first, so the pods started after them and got their variables.
    kinds = [d["kind"] for d in demo_manifest()]
    assert kinds.index("Service") < kinds.index("Deployment")


def test_each_demo_service_has_its_own_identity(cluster) -> None:
    cluster.apply(demo_manifest())
    identities = {n: identity(cluster, n) for n in ("frontend", "backend-v1", "backend-v2")}
    assert identities == {"frontend": "spiffe://cluster.local/ns/default/sa/frontend",
                          "backend-v1": "spiffe://cluster.local/ns/default/sa/backend",
                          "backend-v2": "spiffe://cluster.local/ns/default/sa/backend"}


def test_demo_in_the_mesh_reaches_both_versions_over_mtls(cluster) -> None:
    from labkit import load
    from labkit.widgets.service_graph import service_graph, snapshot

    cluster.apply(demo_manifest())
    sleep = control_plane(cluster).client()
    sidecars = [control_plane(cluster).sidecar(n) for n in ("frontend", "backend-v1", "backend-v2")] + [sleep]

    def scrape() -> dict:
        return snapshot(urllib.request.urlopen(s.metrics_url, timeout=10).read().decode() for s in sidecars)

    before = scrape()
    result = load.run("http://frontend:9080/", requests=40, concurrency=2, proxy=sleep.outbound_url)
    graph = service_graph(before, scrape(), seconds=1.0)
    assert result.status_counts == {200: 40}
    assert {(e.source, e.destination) for e in graph.edges} == {
        ("sleep", "frontend (v1)"), ("frontend (v1)", "backend-v1 (v1)"), ("frontend (v1)", "backend-v2 (v2)")}
    assert all(e.mtls and e.error_rate == 0 for e in graph.edges)
    assert sum(e.rate for e in graph.edges if e.source == "frontend (v1)") == 40
