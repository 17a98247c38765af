"""Lab 07's traffic dashboard: controls -> validated traffic block, Route, Revisions, split."""

from __future__ import annotations

import html

import pytest

from labkit.widgets.traffic_split import LATEST, NO_TAG, PINNED, REVISIONS, traffic_dashboard


def test_default_block_splits_80_20_and_measures_close_to_it() -> None:
    d = traffic_dashboard()
    assert d.result is not None
    assert d.error is None
    assert dict(d.result.table.split) == {"hello-00001": 80, "hello-00003": 20}
    assert d.result.routing_state() == {"hello-00001": "active", "hello-00002": "reserve", "hello-00003": "active"}
    measured = d.result.measured()
    assert measured["hello-00002"] == 0
    # 1000 seeded requests: within 5 points of the wanted percent (binomial sd about 1.3 points)
    assert abs(measured["hello-00001"] - 0.8) < 0.05


def test_moving_a_slider_changes_route_and_revisions() -> None:
    d = traffic_dashboard()
    assert d.result is not None
    d.set(percent_1=40, percent_2=30, percent_3=30)
    assert dict(d.result.table.split) == {"hello-00001": 40, "hello-00002": 30, "hello-00003": 30}
    assert d.result.routing_state()["hello-00002"] == "active"
    ingress = next(o for o in d.result.objects if o["kind"] == "Ingress")
    splits = ingress["spec"]["rules"][0]["http"]["paths"][0]["splits"]
    assert [(s["serviceName"], s["percent"]) for s in splits] == [
        ("hello-00001", 40), ("hello-00002", 30), ("hello-00003", 30)]


def test_same_seed_same_counts_and_more_requests_converge() -> None:
    a, b = traffic_dashboard(seed=7), traffic_dashboard(seed=7)
    assert a.result is not None and b.result is not None
    assert a.result.counts == b.result.counts
    a.set(requests=10000)
    assert abs(a.result.measured()["hello-00001"] - 0.8) < 0.02


def test_tag_at_zero_percent_keeps_revision_active_and_gets_a_host() -> None:
    d = traffic_dashboard(percent_1=100, percent_3=0, tag_1=NO_TAG, tag_3="candidate")
    assert d.result is not None
    assert dict(d.result.table.split) == {"hello-00001": 100}
    assert dict(d.result.table.tags) == {"candidate": "hello-00003"}
    assert d.result.routing_state()["hello-00003"] == "active"
    assert "http://candidate-hello.default.svc.cluster.local" in d.summary.value
    d.set(tag_3=NO_TAG)
    assert d.result.routing_state()["hello-00003"] == "reserve"


def test_pinned_and_latest_entries_differ_in_the_route_spec() -> None:
    d = traffic_dashboard(latest_mode=LATEST)
    assert d.result is not None
    route = next(o for o in d.result.objects if o["kind"] == "Route")
    assert route["spec"]["traffic"][-1].get("latestRevision") is True
    d.set(latest_mode=PINNED)
    route = next(o for o in d.result.objects if o["kind"] == "Route")
    assert route["spec"]["traffic"][-1]["revisionName"] == REVISIONS[-1]


@pytest.mark.parametrize(("settings", "message"), [
    ({"percent_1": 90}, "traffic targets sum to 110, want 100"),
    ({"tag_2": "stable"}, "duplicate tag 'stable'"),
])
def test_a_block_knative_refuses_shows_the_error_and_keeps_the_last_result(settings: dict, message: str) -> None:
    d = traffic_dashboard()
    before, runs = d.result, d.runs
    d.set(**settings)
    assert d.error is not None and message in d.error
    assert d.result is before and d.runs == runs
    assert html.escape(message) in d.summary.value
