"""Knative's revision garbage collection (`labkit.serving.gc`): config-gc parsing, the pure
decision (cases after knative/serving pkg/reconciler/gc/v2/gc_test.go), and live deletion."""

from __future__ import annotations

import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.serving.gc import NO_GC, GCConfig, RevisionRecord, collect, routed
from labkit.serving.service import configure_serving, knative_service

HOUR = 3600.0
NOW = 1000 * HOUR


def rev(name: str, created_h_ago: float, active_h_ago: float | None = None, routed: bool = False,
        **annotations: str) -> RevisionRecord:
    return RevisionRecord(name, NOW - created_h_ago * HOUR, routed,
                          None if active_h_ago is None else NOW - active_h_ago * HOUR,
                          {k.replace("_", "-"): v for k, v in annotations.items()})


def test_defaults_and_the_disabled_value() -> None:
    assert GCConfig.from_configmap({}) == GCConfig(48 * HOUR, 15 * HOUR, 20, 1000)
    immediate = GCConfig.from_configmap({
        "retain-since-create-time": "disabled", "retain-since-last-active-time": "disabled",
        "min-non-active-revisions": "0", "max-non-active-revisions": "0"})
    assert immediate == GCConfig(None, None, 0, 0)


@pytest.mark.parametrize("data, message", [
    ({"min-non-active-revisions": "-1"}, "min-non-active-revisions: must be non-negative"),
    ({"max-non-active-revisions": "-2"}, "max-non-active-revisions: must be non-negative"),
    ({"min-non-active-revisions": "20", "max-non-active-revisions": "10"},
     r"max-non-active-revisions \(10\) must be >= min-non-active-revisions \(20\)"),
    ({"retain-since-create-time": "two days"}, "retain-since-create-time: 'two days' is not"),
    ({"retain-since-create-tim": "1h"}, "unknown key 'retain-since-create-tim'"),
])
def test_bad_settings_name_the_key(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GCConfig.from_configmap(data)


def test_active_revisions_are_never_collected() -> None:
    config = GCConfig(None, None, 0, 0)  # collect every non-active revision at once
    revisions = [rev("a", 100), rev("b", 100, routed=True), rev("c", 100, **{NO_GC: "True"}),  # type: ignore[arg-type]  # a hyphenated name: never a parameter
                 rev("d", 100)]
    assert collect(config, revisions, latest_ready="d", now=NOW) == ["a"]


def test_a_revision_stays_while_either_time_limit_holds() -> None:
    config = GCConfig(48 * HOUR, 15 * HOUR, 0, None)
    revisions = [rev("young", 47, 20), rev("recent", 100, 14), rev("old", 100, 16),
                 rev("never-routed", 49), rev("latest", 1, routed=True)]
    assert collect(config, revisions, "latest", NOW) == ["never-routed", "old"]


def test_min_non_active_keeps_the_most_recently_active() -> None:
    config = GCConfig(None, 1 * HOUR, 2, None)
    revisions = [rev(f"r{i}", 10 * i, active_h_ago=5 * i) for i in range(1, 6)]
    # Oldest first: r5 and r4 and r3 go, two stay (r1, r2).
    assert collect(config, [*revisions, rev("latest", 0, routed=True)], "latest", NOW) \
        == ["r5", "r4", "r3"]


def test_max_non_active_caps_what_the_time_limits_keep() -> None:
    config = GCConfig(None, 100 * HOUR, 0, 2)  # nothing is stale, at most two remain
    revisions = [rev(f"r{i}", 10 * i, active_h_ago=i) for i in range(1, 6)]
    assert sorted(collect(config, revisions, None, NOW)) == ["r3", "r4", "r5"]


def test_all_disabled_collects_nothing() -> None:
    config = GCConfig(None, None, 0, None)
    assert collect(config, [rev("a", 1000)], None, NOW) == []


def manifest(env: str, **annotations: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"image": "labkit/httpbin",
                                     "env": [{"name": "VERSION", "value": env}]}]}}}})


def test_live_old_revisions_are_deleted_with_their_pods(cluster: LocalCluster, wait_for) -> None:
    configure_serving(cluster, gc=GCConfig(None, None, 0, 0))
    cluster.apply(manifest("v1", **{NO_GC: "true"}))
    cluster.apply(manifest("v2"))
    svc = knative_service(cluster, "web")
    old = svc.revision("web-00002")
    cluster.apply(manifest("v3"))
    wait_for(lambda: "web-00002" not in svc.revisions, 10, "web-00002 collected")
    assert list(svc.revisions) == ["web-00001", "web-00003"]  # no-gc and the latest ready
    wait_for(lambda: old.replica_count == 0, 10, "its pods stopped")
    assert svc.collected == ["web-00002"]


def test_routed_is_the_split_or_the_latest_created_revision() -> None:
    assert routed("web-00001", {"web-00001"}, "web-00002")
    assert routed("web-00002", {"web-00001"}, "web-00002")  # new, its route not settled yet
    assert not routed("web-00000", {"web-00001"}, "web-00002")
