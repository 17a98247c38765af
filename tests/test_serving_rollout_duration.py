"""Knative's gradual rollout (`labkit.serving.rollout_duration`): the steps as rollout.go takes
them, and live: a new revision's share of real requests grows over the duration."""

from __future__ import annotations

import urllib.request
from collections import Counter

import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.manifests import ManifestError, load_text
from labkit.serving.rollout_duration import ROLLOUT_DURATION, Rollout, advance, rollout_duration
from labkit.serving.service import configure_serving, knative_service


def test_duration_from_the_annotation_else_config_network() -> None:
    assert rollout_duration({}, 0.0) == 0.0
    assert rollout_duration({}, 380.0) == 380.0
    assert rollout_duration({ROLLOUT_DURATION: "380s"}, 0.0) == 380.0
    with pytest.raises(ValueError, match=f"invalid value: 380: {ROLLOUT_DURATION}"):
        rollout_duration({ROLLOUT_DURATION: "380"}, 0.0)


def test_without_a_duration_the_share_moves_at_once() -> None:
    old = advance(None, "a", 100, 0.0, 0.0)
    assert advance(old, "b", 100, 1.0, 0.0).revisions == (("b", 100),)


def due(ro: Rollout) -> float:
    """When the rollout's next step is due (a rollout in progress has one)."""
    assert ro.next_step is not None
    return ro.next_step


def test_one_percent_first_then_equal_steps() -> None:
    # rollout.go's own example: 100 % in 4 steps is 1 -> 26 -> 51 -> 76 -> 100.
    # duration 5 s, first step observed after 1 s: (5 - 1) / 1 = 4 steps of round(99/4) = 25.
    ro = advance(None, "a", 100, 0.0, 5.0)
    ro = advance(ro, "b", 100, 10.0, 5.0)
    assert ro.revisions == (("a", 99), ("b", 1))
    assert (ro.step_size, ro.step_duration, ro.next_step) == (25, 1.0, 11.0)
    seen = [ro.revisions[-1][1]]
    now = 10.0
    while not ro.done:
        now += 1.0
        ro = advance(ro, "b", 100, now, 5.0)
        seen.append(ro.revisions[-1][1])
    assert seen == [1, 26, 51, 76, 100]
    assert ro == Rollout(100, (("b", 100),))  # parameters cleared at the end
    assert now == 14.0


def test_no_step_before_it_is_due() -> None:
    ro = advance(advance(None, "a", 100, 0.0, 10.0), "b", 100, 0.0, 10.0)
    assert advance(ro, "b", 100, due(ro) - 0.01, 10.0).revisions == ro.revisions


def test_a_newer_revision_mid_rollout_takes_its_1_percent_from_the_newest() -> None:
    ro = advance(advance(None, "a", 100, 0.0, 10.0), "b", 100, 0.0, 10.0)
    ro = advance(ro, "b", 100, due(ro), 10.0)  # a 88, b 12
    assert ro.revisions == (("a", 88), ("b", 12))
    ro = advance(ro, "c", 100, due(ro), 10.0)
    assert ro.revisions == (("a", 88), ("b", 11), ("c", 1))
    # Steps drain the newest old revision first ("by design" in rollout.go): b's 11 go first.
    ro = advance(ro, "c", 100, due(ro), 10.0)
    assert ro.revisions == (("a", 88), ("c", 12))
    ro = advance(ro, "c", 100, due(ro), 10.0)
    assert ro.revisions == (("a", 77), ("c", 23))


def test_small_shares_are_not_rolled_out() -> None:
    ro = advance(None, "a", 1, 0.0, 60.0)
    assert advance(ro, "b", 1, 1.0, 60.0).revisions == (("b", 1),)


def test_a_bad_annotation_names_the_field() -> None:
    text = yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "web", "annotations": {ROLLOUT_DURATION: "soon"}},
        "spec": {"template": {"spec": {"containers": [{"image": "labkit/httpbin"}]}}}})
    with pytest.raises(ManifestError, match=rf"metadata.annotations\['{ROLLOUT_DURATION}'\]"):
        load_text(text)


def manifest(name: str, env: str, duration: str | None = None) -> str:
    annotations = {ROLLOUT_DURATION: duration} if duration else {}
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
            "spec": {"containers": [{"image": "labkit/httpbin",
                                     "env": [{"name": "VERSION", "value": env}]}]}}}})


def revision_counts(url: str, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        with urllib.request.urlopen(url + "/get", timeout=10) as response:
            counts[response.headers["x-labkit-revision"]] += 1
    return counts


def test_live_the_new_revision_starts_at_1_percent(cluster: LocalCluster) -> None:
    # 300 s: after the first 1 %, one more percent every ~3 s, so the share stays tiny while
    # the requests below run, however slow the machine.
    cluster.apply(manifest("slow", "v1", "300s"))
    cluster.apply(manifest("slow", "v2", "300s"))
    svc = knative_service(cluster, "slow")
    assert svc.rollout is not None
    assert svc.rollout.revisions == (("slow-00001", 99), ("slow-00002", 1))
    assert svc.rollout.step_size == 1 and 2.9 < svc.rollout.step_duration < 3.1
    status = {t.revision_name: t.percent for t in svc.knative_status.traffic}
    assert status == {"slow-00001": 99, "slow-00002": 1}
    assert dict(svc.table.split) == {"slow-00001": 99, "slow-00002": 1}
    routes = svc.knative_status.condition("RoutesReady")
    assert routes is not None and (routes.status, routes.reason) == ("Unknown", "RolloutInProgress")
    assert routes.message == "A gradual rollout of the latest revision(s) is in progress."
    counts = revision_counts(svc.url, 100)
    # At most a few percent can have moved: binomial(100, 0.05) > 15 is below 1e-4.
    assert counts["slow-00001"] >= 85, counts


def test_live_the_new_revision_takes_over_at_the_end(cluster: LocalCluster, wait_for) -> None:
    configure_serving(cluster, rollout_duration=3.0)  # config-network, no annotation needed
    cluster.apply(manifest("fast", "v1"))
    cluster.apply(manifest("fast", "v2"))
    svc = knative_service(cluster, "fast")
    assert dict(svc.table.split) == {"fast-00001": 99, "fast-00002": 1}
    wait_for(lambda: svc.rollout is not None and svc.rollout.done, 15, "rollout done")
    assert svc.table.split == (("fast-00002", 100),)
    ready = svc.knative_status.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert revision_counts(svc.url, 20) == Counter({"fast-00002": 20})
