"""The mesh side of canaries, with real requests through live sidecars: the mirrored copy's
Host, sticky users (consistent hashing vs weighted subsets vs Flagger's header match), and
retries that hide a bad canary from the source side but not from the destination side."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest
from mesh_helpers import applied, get, meshed, one_route, versioned

from labkit.cluster import LocalCluster
from labkit.flagger import metrics as flagger_metrics
from labkit.mesh.canary import success_rates
from labkit.mesh.control import control_plane

# v1 runs three pods and v2 one: with consistent hashing over all four, about a quarter of
# the users land on v2, each of them for good.
VERSIONS = versioned("model", 80, {"v1": 3, "v2": 1})

USERS, REQUESTS = 120, 5


def rule(load_balancer: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: model}}
spec:
  host: model
  trafficPolicy: {{loadBalancer: {load_balancer}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


WEIGHTED = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: model}
spec:
  hosts: [model]
  http:
  - route:
    - {destination: {host: model, subset: v1}, weight: 50}
    - {destination: {host: model, subset: v2}, weight: 50}
"""

# What Flagger's Istio router makes of `analysis.match` during an A/B test (the canary route
# first, matched users 100 % to it; everyone else to the primary).
FLAGGER_AB = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: model}
spec:
  hosts: [model]
  http:
  - match:
    - headers: {x-canary: {regex: ".*insider.*"}}
    - headers: {cookie: {regex: "^(.*?;)?(canary=always)(;.*)?$"}}
    route:
    - {destination: {host: model, subset: v1}, weight: 0}
    - {destination: {host: model, subset: v2}, weight: 100}
  - route:
    - {destination: {host: model, subset: v1}, weight: 100}
    - {destination: {host: model, subset: v2}, weight: 0}
"""


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    yield from meshed(VERSIONS)


def versions_seen(mesh: LocalCluster, caller: str, headers_of: Callable[[int], dict[str, str]]) -> dict[int, set[str]]:
    """Each user's set of versions over REQUESTS requests; `headers_of(user)` says what the
    user's requests carry."""
    sleep = control_plane(mesh).client("default", caller)
    seen: dict[int, set[str]] = {}
    with httpx.Client(timeout=30) as client:
        for user in range(USERS):
            for _ in range(REQUESTS):
                r = client.get(sleep.outbound_url + "/", headers={"host": "model", **headers_of(user)})
                assert r.status_code == 200, r.text
                seen.setdefault(user, set()).add(r.text.strip().removeprefix("Hello ").rstrip("!"))
    return seen


# --- mirroring -------------------------------------------------------------------------------

def mirrored_authorities(mesh: LocalCluster, caller: str, wait_for: Callable[..., None]) -> list[str]:
    """Send one request to httpbin mirrored to flaky; the lines flaky's sidecar logged for it
    (Istio's access-log format quotes the authority)."""
    flaky = control_plane(mesh).sidecar("flaky")
    sleep = control_plane(mesh).client("default", caller)
    before = flaky.telemetry.metrics.total(reporter="destination", source_workload=caller)
    with applied(mesh, one_route("httpbin", mirror="{host: flaky}")):
        assert get(sleep, "/get", host="httpbin:8000").status_code == 200
        wait_for(lambda: flaky.telemetry.metrics.total(
            reporter="destination", source_workload=caller) == before + 1, what="mirrored copy")
    return [line for line in flaky.access_log() if '"GET /get' in line]


def test_a_mirrored_copy_keeps_its_host_as_istio_1_28_does(mesh: LocalCluster, wait_for: Callable[..., None]) -> None:
    logged = mirrored_authorities(mesh, "mirror-new", wait_for)
    assert logged and '"httpbin:8000"' in logged[-1], logged


def test_the_shadow_suffix_of_istio_1_27_and_its_compatibility_profile(
        mesh: LocalCluster, wait_for: Callable[..., None]) -> None:
    plane = control_plane(mesh)
    plane.shadow_host_suffix = True  # istiod DISABLE_SHADOW_HOST_SUFFIX=false
    plane.changed()
    try:
        logged = mirrored_authorities(mesh, "mirror-old", wait_for)
    finally:
        plane.shadow_host_suffix = False
        plane.changed()
    assert logged and '"httpbin-shadow:8000"' in logged[-1], logged


# --- sticky A/B ------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "headers_of"), [
    ("{httpHeaderName: x-user}", lambda u: {"x-user": f"user-{u}"}),
    ("{httpCookie: {name: user, ttl: 0s}}", lambda u: {"cookie": f"theme=dark; user=user-{u}"}),
])
def test_consistent_hash_over_both_versions_keeps_each_user_on_one(
        mesh: LocalCluster, key: str, headers_of: Callable[[int], dict[str, str]]) -> None:
    with applied(mesh, rule(f"{{consistentHash: {key}}}")):
        seen = versions_seen(mesh, "hasher-" + ("cookie" if "Cookie" in key else "header"), headers_of)
    assert all(len(v) == 1 for v in seen.values()), {u: v for u, v in seen.items() if len(v) > 1}
    share = Counter(next(iter(v)) for v in seen.values())
    # 1 of 4 pods is v2: its share of the ring, not a configured weight (wide bounds: the ring
    # positions depend on the pods' addresses)
    assert 0.08 <= share["v2"] / USERS <= 0.45, share


def test_weights_between_subsets_are_drawn_per_request_so_users_see_both(
        mesh: LocalCluster) -> None:
    with applied(mesh, rule("{consistentHash: {httpHeaderName: x-user}}") + "---" + WEIGHTED):
        seen = versions_seen(mesh, "weighted", lambda u: {"x-user": f"user-{u}"})
    both = sum(len(v) == 2 for v in seen.values())
    # P(one user's 5 draws all alike) = 2 * 0.5**5 = 1/16
    assert both >= 0.75 * USERS, both


def test_flaggers_header_or_cookie_match_pins_exactly_the_matched_users(
        mesh: LocalCluster) -> None:
    def headers_of(user: int) -> dict[str, str]:
        if user % 6 == 0:
            return {"x-canary": "insider"}
        if user % 6 == 1:
            return {"cookie": "canary=always; theme=dark"}
        if user % 6 == 2:  # browsers put a space after ';': the docs' regex no longer matches
            return {"cookie": "theme=dark; canary=always"}
        return {"cookie": "canary=never"}

    with applied(mesh, rule("{simple: ROUND_ROBIN}") + "---" + FLAGGER_AB):
        seen = versions_seen(mesh, "abtest", headers_of)
    assert {u for u, v in seen.items() if v == {"v2"}} == {u for u in range(USERS) if u % 6 < 2}
    assert all(v == {"v1"} for u, v in seen.items() if u % 6 >= 2)


# --- retries hide a bad canary ---------------------------------------------------------------

def test_retries_hide_failures_from_the_source_side_not_the_destination_side(
        mesh: LocalCluster) -> None:
    """flaky answers 503 then 200 in turn: one retry turns every request into a 200."""
    sleep = control_plane(mesh).client("default", "canary-caller")
    flaky = control_plane(mesh).sidecar("flaky")
    start = httpx.get(flaky.metrics_url, timeout=10).text
    before = success_rates(control_plane(mesh).sidecars(), "flaky")
    with applied(mesh, one_route("flaky", retries="{attempts: 2, retryOn: 5xx}")):
        codes = [get(sleep, "/flaky", host="flaky").status_code for _ in range(40)]
    after = success_rates(control_plane(mesh).sidecars(), "flaky")
    assert codes == [200] * 40
    source = (after.source.requests - before.source.requests,
              after.source.errors - before.source.errors)
    destination = (after.destination.requests - before.destination.requests,
                   after.destination.errors - before.destination.errors)
    assert source == (40, 0)                       # the caller saw only successes
    failed = destination[1]
    assert failed >= 39 and destination == (40 + failed, failed)  # each 503 was served, then retried

    # Flagger's request-success-rate reads reporter="destination" from the canary's sidecar
    window = flagger_metrics.parse(httpx.get(flaky.metrics_url, timeout=10).text,
                                   flagger_metrics.istio_destination("flaky", "default")).minus(
        flagger_metrics.parse(start, flagger_metrics.istio_destination("flaky", "default")))
    gate = flagger_metrics.request_success_rate(window)
    assert gate is not None and gate == pytest.approx(100 * 40 / (40 + failed))
    assert gate < 60 < 100
