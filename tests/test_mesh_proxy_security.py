"""Server-side security in the sidecar: mutual TLS between sidecars with SPIFFE identities,
PeerAuthentication modes (STRICT resets plaintext), AuthorizationPolicy (403 RBAC)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mesh_helpers import WORKLOADS, applied, echoed_headers, get

from labkit.cluster import LocalCluster
from labkit.mesh import flags
from labkit.mesh.control import control_plane


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(WORKLOADS)
        yield cluster


def test_sidecars_speak_mutual_tls_and_the_app_sees_the_callers_identity(mesh: LocalCluster) -> None:
    r = get(control_plane(mesh).client(), "/headers")
    xfcc = echoed_headers(r)["x-forwarded-client-cert"]
    assert xfcc.startswith("By=spiffe://cluster.local/ns/default/sa/default;Hash=")
    assert xfcc.endswith('Subject="";URI=spiffe://cluster.local/ns/default/sa/sleep')
    # A caller outside the mesh (plaintext, PERMISSIVE by default) gets through without one.
    plain = httpx.get(control_plane(mesh).sidecar("httpbin").inbound_url + "/headers", timeout=10)
    assert plain.status_code == 200 and "x-forwarded-client-cert" not in echoed_headers(plain)


def test_strict_peer_authentication_resets_plaintext_but_admits_sidecars(mesh: LocalCluster) -> None:
    policy = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""
    inbound = control_plane(mesh).sidecar("httpbin").inbound_url
    with applied(mesh, policy):
        assert control_plane(mesh).sidecar("httpbin").mtls_mode == "STRICT"
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
            httpx.get(inbound + "/get", timeout=10)
        assert get(control_plane(mesh).client(), "/get").status_code == 200
    assert httpx.get(inbound + "/get", timeout=10).status_code == 200


def test_dr_tls_disable_towards_strict_server_is_503(mesh: LocalCluster) -> None:
    config = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec: {host: httpbin, trafficPolicy: {tls: {mode: DISABLE}}}
"""
    with applied(mesh, config):
        r = get(control_plane(mesh).client("default", "plain-caller"), "/get")
    assert r.status_code == 503 and r.text.startswith(flags.RESET_BEFORE_HEADERS)


def test_authorization_policy_allows_only_named_principals(mesh: LocalCluster) -> None:
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-viewer}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]
    to: [{operation: {methods: [GET], paths: [/get, /headers]}}]
"""
    with applied(mesh, policy):
        assert get(control_plane(mesh).client(), "/get").status_code == 200
        denied = get(control_plane(mesh).client("default", "intruder"), "/get")
        assert (denied.status_code, denied.text) == (403, flags.RBAC_DENIED_BODY)
        assert get(control_plane(mesh).client(), "/status/200").status_code == 403  # path not allowed
        plain = httpx.get(control_plane(mesh).sidecar("httpbin").inbound_url + "/get", timeout=10)
        assert plain.status_code == 403  # plaintext has no principal
    server = control_plane(mesh).sidecar("httpbin").telemetry.metrics
    assert server.total(reporter="destination", source_workload="intruder",
                        response_code="403", response_flags="-") == 1


def test_deny_policy_wins_over_allow(mesh: LocalCluster) -> None:
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-guest}
spec:
  action: DENY
  rules: [{when: [{key: "request.headers[x-token]", values: [guest]}]}]
"""
    with applied(mesh, policy):
        assert get(control_plane(mesh).client(), "/get", headers={"x-token": "guest"}).status_code == 403
        assert get(control_plane(mesh).client(), "/get", headers={"x-token": "admin"}).status_code == 200
