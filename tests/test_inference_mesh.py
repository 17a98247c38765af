"""An InferenceService through the mesh, by Host header as on a cluster: a client sidecar's
outbound listener reaches the predictor as `<name>.<ns>.example.com`,
`<name>.<ns>.svc.cluster.local` and `<name>-predictor...`, with mutual TLS unless a
PeerAuthentication disables it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import yaml
from inference_helpers import MODELS

from labkit.cluster import LocalCluster
from labkit.inference.timing import parse_server_timing
from labkit.mesh.control import control_plane

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
DISABLE = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
"""


def isvc(name: str = "iris") -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                         "protocolVersion": "v2",
                                         "storageUri": str(MODELS / "iris")}}},
    })


def infer(cluster: LocalCluster, host: str, name: str = "iris") -> httpx.Response:
    return httpx.post(f"{control_plane(cluster).client().outbound_url}/v2/models/{name}/infer", json=BODY,
                      headers={"Host": host}, timeout=30)


def mtls_requests(cluster: LocalCluster, name: str) -> tuple[int, int]:
    metrics = control_plane(cluster).sidecar(name).telemetry.metrics
    return (metrics.total(reporter="destination", connection_security_policy="mutual_tls"),
            metrics.total(reporter="destination", connection_security_policy="none"))


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    with LocalCluster(start_timeout=30.0) as cluster:
        cluster.apply(isvc())
        yield cluster


@pytest.mark.parametrize("host", ["iris.default.example.com", "iris.default.svc.cluster.local",
                                  "iris-predictor.default.svc.cluster.local",
                                  "iris-predictor.default.example.com", "iris.default"])
def test_the_inference_service_answers_by_host_header(mesh: LocalCluster, host: str) -> None:
    r = infer(mesh, host)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [0]
    assert r.headers["x-labkit-revision"] == "iris-predictor-00001"
    assert "predict" in parse_server_timing(r.headers["server-timing"])
    assert "x-envoy-upstream-service-time" in r.headers


def test_an_unknown_host_gets_the_mesh_404(mesh: LocalCluster) -> None:
    assert infer(mesh, "nope.default.example.com").status_code == 404


def test_mutual_tls_by_default_and_plaintext_when_disabled(mesh: LocalCluster) -> None:
    before = mtls_requests(mesh, "iris")
    assert infer(mesh, "iris.default.example.com").status_code == 200
    after = mtls_requests(mesh, "iris")
    assert after == (before[0] + 1, before[1])
    mesh.apply(DISABLE)
    try:
        assert infer(mesh, "iris.default.example.com").status_code == 200
        assert mtls_requests(mesh, "iris") == (after[0], after[1] + 1)
    finally:
        mesh.delete("PeerAuthentication", "default")
    assert infer(mesh, "iris.default.example.com").status_code == 200
    assert mtls_requests(mesh, "iris")[0] == after[0] + 1


def test_deleting_the_inference_service_removes_its_route() -> None:
    with LocalCluster(start_timeout=30.0) as cluster:
        cluster.apply(isvc("gone"))
        assert infer(cluster, "gone.default.example.com", "gone").status_code == 200
        cluster.delete("InferenceService", "gone")
        assert infer(cluster, "gone.default.example.com", "gone").status_code == 404
