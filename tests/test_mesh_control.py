"""The control plane: sidecar injection, configuration pushed live to running sidecars (no
restart, requests in flight unharmed), proxy-config dumps, clean shutdown."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from mesh_helpers import WORKLOADS, applied, get

from labkit.cluster import LocalCluster
from labkit.core.models import Deployment
from labkit.mesh.control import control_plane

FAULT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - route: [{destination: {host: httpbin}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
"""


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(WORKLOADS)
        yield cluster


def test_injection_follows_the_namespace_label_and_the_template_annotation(cluster: LocalCluster) -> None:
    cluster.apply("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec: {containers: [{name: a, image: labkit/hello}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: meshed}
spec:
  selector: {matchLabels: {app: meshed}}
  template:
    metadata: {labels: {app: meshed}, annotations: {sidecar.istio.io/inject: "true"}}
    spec: {containers: [{name: a, image: labkit/hello}]}
""")
    with pytest.raises(LookupError, match="istio-injection=enabled"):
        control_plane(cluster).sidecar("plain")
    meshed = control_plane(cluster).sidecar("meshed")
    deployment = cluster.get("Deployment", "meshed").object
    assert isinstance(deployment, Deployment)
    env = {e.name: e.value for e in deployment.container.env}
    assert env["HTTP_PROXY"] == meshed.outbound_url  # the app calls out through its sidecar
    assert httpx.get(meshed.inbound_url, timeout=10).text.startswith("Hello")


def test_an_app_calls_other_services_through_its_own_sidecar(mesh: LocalCluster) -> None:
    mesh.apply(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: frontend}}
spec:
  selector: {{matchLabels: {{app: frontend}}}}
  template:
    metadata: {{labels: {{app: frontend}}}}
    spec:
      containers:
      - name: app
        image: mesh-demo
        command: ["{sys.executable}", "-m", "labkit.apps.mesh_demo"]
        env: [{{name: SERVICE_NAME, value: frontend}}, {{name: UPSTREAMS, value: "http://httpbin:8000/get"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: frontend}}
spec:
  selector: {{app: frontend}}
  ports: [{{port: 9080, name: http}}]
""")
    assert get(control_plane(mesh).client(), "/", host="frontend:9080").status_code == 200
    frontend = control_plane(mesh).sidecar("frontend").telemetry.metrics
    assert frontend.total(reporter="source", destination_workload="httpbin", response_code="200") >= 1
    assert control_plane(mesh).sidecar("httpbin").telemetry.metrics.total(
        reporter="destination", source_workload="frontend", connection_security_policy="mutual_tls") >= 1


def test_config_is_pushed_live_without_restart_and_in_flight_requests_finish(
        mesh: LocalCluster, wait_for: Callable[..., None]) -> None:
    sleep = control_plane(mesh).client("default", "pushed")
    ports, pushes = dict(sleep.ports), sleep.pushes
    slow: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: slow.append(get(sleep, "/delay/1")))
    worker.start()
    wait_for(lambda: any(c["stats"]["upstream_rq_active"] for c in sleep.config()["clusters"]),
             what="the slow request to be in flight")
    with applied(mesh, FAULT):
        assert get(sleep, "/get").status_code == 418
        worker.join()
        assert slow[0].status_code == 200  # started under the old config, finished unharmed
        assert sleep.ports == ports and sleep.pushes > pushes
        assert control_plane(mesh).proxy_status()[0]["synced"] is True
    assert get(sleep, "/get").status_code == 200  # deleting the rule is pushed too


def test_proxy_config_shows_routes_clusters_and_security(mesh: LocalCluster) -> None:
    sleep = control_plane(mesh).client()
    with applied(mesh, FAULT):
        get(sleep, "/get")
        dump = sleep.config()
        assert dump["routes"] == [{"name": "httpbin", "namespace": "default",
                                   "hosts": ["httpbin.default.svc.cluster.local"], "http": ["route 0"]}]
        assert dump["sources"][0]["spec"]["http"][0]["fault"]["abort"]["httpStatus"] == 418
    server = control_plane(mesh).sidecar("httpbin").config()
    assert server["security"]["mtlsMode"] == "PERMISSIVE" and server["security"]["tls"] is True
    assert server["workload"]["labels"] == {"app": "httpbin", "version": "v1"}
    assert "httpbin.default.svc.cluster.local" in dump["services"]


def test_client_is_reused_and_closing_the_cluster_stops_every_sidecar() -> None:
    with LocalCluster() as cluster:
        sleep = control_plane(cluster).client()
        assert control_plane(cluster).client() is sleep and control_plane(cluster).sidecar("sleep") is sleep
        address = urlsplit(sleep.outbound_url)
    with pytest.raises(OSError):
        socket.create_connection((address.hostname, address.port or 80), timeout=5).close()
