"""istioctl-analyze messages for config Istio accepts but that cannot work (labkit.mesh.analysis):
a route to an undefined subset (IST0101) and a subset that selects no pod (IST0173)."""

from __future__ import annotations

import warnings

import pytest
from mesh_helpers import versioned

from labkit.cluster import LocalCluster
from labkit.core.controller import ConfigWarning
from labkit.manifests import load_text
from labkit.mesh.analysis import analyze, fqdn

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v4, labels: {version: v4}}
"""
ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews.default.svc.cluster.local, subset: v3}, weight: 10}
    mirror: {host: reviews, subset: v1}
"""


def _objects(text: str) -> tuple[list, list]:
    objects = load_text(text)
    return ([o for o in objects if o.kind == "VirtualService"], [o for o in objects if o.kind == "DestinationRule"])


@pytest.mark.parametrize(("host", "expected"), [
    ("reviews", "reviews.default.svc.cluster.local"),
    ("reviews.other", "reviews.other.svc.cluster.local"),
    ("reviews.other.svc.cluster.local", "reviews.other.svc.cluster.local"),
    ("httpbin.org", "httpbin.org.svc.cluster.local"),  # two labels read as name.namespace, as Istio does
])
def test_short_hosts_are_read_in_the_rules_namespace(host: str, expected: str) -> None:
    assert fqdn(host, "default") == expected


def test_a_route_to_an_undefined_subset_is_ist0101_with_istioctls_text() -> None:
    routes, rules = _objects(ROUTE + "---\n" + RULE)
    messages = analyze(routes, rules, {("default", "reviews"): {"app": "reviews"}},
                       {"default": [{"app": "reviews", "version": "v1"}, {"app": "reviews", "version": "v4"}]})
    assert [str(m) for m in messages] == [
        'Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule '
        'not found: "reviews.default.svc.cluster.local+v3"']


def test_a_subset_that_selects_no_pod_is_ist0173() -> None:
    _, rules = _objects(RULE)
    messages = analyze([], rules, {("default", "reviews"): {"app": "reviews"}},
                       {"default": [{"app": "reviews", "version": "v1"}, {"app": "ratings", "version": "v4"}]})
    assert [str(m) for m in messages] == [
        "Error [IST0173] (DestinationRule default/reviews) The Subset v4 defined in the DestinationRule "
        "does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."]
    assert messages[0].status_entry()["type"] == {"code": "IST0173"}


def test_a_rule_for_a_host_with_no_service_is_left_to_other_analyzers() -> None:
    _, rules = _objects(RULE)
    assert analyze([], rules, {}, {}) == []


def test_one_apply_is_judged_as_a_whole_as_istioctl_analyze_judges_a_set_of_files() -> None:
    with LocalCluster(start_timeout=20.0) as cluster, warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        cluster.apply(versioned("reviews", 9080, {"v1": 1, "v3": 1}) + "---\n" + ROUTE + "---\n"
                      + RULE.replace("v4", "v3"))  # the route comes before the rule defining v3


def test_applying_warns_and_the_status_carries_the_message_until_the_subset_exists() -> None:
    with LocalCluster(start_timeout=20.0) as cluster:
        cluster.apply(versioned("reviews", 9080, {"v1": 1}))
        with pytest.warns(ConfigWarning, match=r"IST0101.*reviews\+v2"):
            cluster.apply(ROUTE.replace("reviews.default.svc.cluster.local, subset: v3", "reviews, subset: v2"))
        status = cluster.get("VirtualService", "reviews").status
        assert status.ready and "IST0101" in status.message
        assert status.detail["validationMessages"][0]["type"] == {"code": "IST0101"}

        with pytest.warns(ConfigWarning, match=r"IST0173.*Subset v2"):
            cluster.apply(RULE.replace("v4", "v2"))
        assert "validationMessages" not in cluster.get("VirtualService", "reviews").status.detail

        cluster.apply(versioned("reviews", 9080, {"v1": 1, "v2": 1}))
        assert "validationMessages" not in cluster.get("DestinationRule", "reviews").status.detail
