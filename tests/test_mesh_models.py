"""Istio's kinds as manifests: every served API version loads, bad specs are reported as
FILE:LINE: Kind/name: field.path, and exports pass the official CRD schemas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from labkit import manifests
from labkit.cluster import LocalCluster
from labkit.mesh.models import AuthorizationPolicy, VirtualService, field_path

GOOD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
    timeout: 2s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]
    to: [{operation: {methods: [GET], paths: [/info*]}}]
"""


def test_all_four_kinds_load_and_export_valid_against_the_official_crds(
        crd_validate: Callable[[str], str]) -> None:
    objects = manifests.load_text(GOOD)
    assert [o.kind for o in objects] == ["VirtualService", "DestinationRule", "PeerAuthentication",
                                         "AuthorizationPolicy"]
    exported = manifests.export(objects)
    crd_validate(exported)
    assert manifests.load_text(exported) == objects


@pytest.mark.parametrize("api_version", ["networking.istio.io/v1", "networking.istio.io/v1beta1",
                                         "networking.istio.io/v1alpha3"])
def test_older_served_versions_are_accepted(api_version: str) -> None:
    [vs] = manifests.load_text(GOOD.split("---")[0].replace("networking.istio.io/v1", api_version))
    assert isinstance(vs, VirtualService) and vs.api_version == api_version


@pytest.mark.parametrize("change, where, message", [
    ("weight: 10}", "spec.http[1].route[1].weight", "must be >= 0, got -5"),
    ("timeout: 2s", "spec.http[0].timeout", "invalid duration '10'"),
    ("retryOn: \"5xx,connect-failure\"", "spec.http[0].retries.retryOn", "unknown retryOn condition"),
])
def test_bad_specs_are_reported_with_file_line_and_field_path(
        tmp_path: Path, change: str, where: str, message: str) -> None:
    bad = {"weight: 10}": "weight: -5}", "timeout: 2s": "timeout: \"10\"",
           "retryOn: \"5xx,connect-failure\"": "retryOn: \"5xx,sometimes\""}[change]
    path = tmp_path / "vs.yaml"
    text = GOOD.split("---")[0].replace(change, bad)
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if bad in row)
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.load(path)
    [issue] = caught.value.errors
    assert str(issue).startswith(f"{path}:{line}: VirtualService/reviews: {where}: ")
    assert message in str(issue)


def test_unknown_fields_and_values_are_refused_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "dr.yaml"
    path.write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                    "metadata: {name: r}\nspec:\n  host: r\n  trafficPolicy:\n"
                    "    loadBalancer: {simple: FASTEST}\n")
    with pytest.raises(manifests.ManifestError, match=rf"{path}:7: DestinationRule/r: "
                                                      r"spec.trafficPolicy.loadBalancer"):
        manifests.load(path)


def test_field_paths_map_policy_paths_to_manifest_paths() -> None:
    assert field_path("http[0].route[1].weight") == ("spec", "http", 0, "route", 1, "weight")
    assert field_path("") == ("spec",)


def test_dry_run_annotation_reaches_the_policy() -> None:
    [ap] = manifests.load_text("""
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny-all, annotations: {istio.io/dry-run: "true"}}
spec: {action: DENY, rules: [{}]}
""")
    assert isinstance(ap, AuthorizationPolicy) and ap.policy().dry_run


def test_a_bad_rule_in_a_cluster_apply_changes_nothing(cluster: LocalCluster) -> None:
    with pytest.raises(manifests.ManifestError):
        cluster.apply(GOOD.replace("weight: 10}", "weight: -1}"))
    assert cluster.objects() == []
