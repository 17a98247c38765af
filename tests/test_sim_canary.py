"""The canary rollout simulator: Flagger's own step on a modelled fleet, seeded."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from labkit.flagger import analysis
from labkit.flagger.models import Canary
from labkit.manifests import ManifestError, load
from labkit.sim.canary import (
    CANARY_REVISION,
    PRIMARY_REVISION,
    Traffic,
    Version,
    canary_manifest,
    run_many,
    simulate_canary,
)
from labkit.sim.canary_traffic import canary_version, histogram_quantile

AB_MATCH = [{"headers": {"x-canary": {"regex": ".*insider.*"}}}]


def messages(run):
    return [m for d in run.timeline for m in d.messages]


def test_same_seed_same_rollout_other_seed_other_numbers():
    a, b = simulate_canary(failure="errors", seed=7), simulate_canary(failure="errors", seed=7)
    assert a.timeline == b.timeline
    assert (a.total_requests, a.exposed_requests, a.exposed_users) == (b.total_requests, b.exposed_requests,
                                                                      b.exposed_users)
    c = simulate_canary(failure="errors", seed=8)
    assert c.total_requests != a.total_requests


def test_good_version_is_promoted_step_by_step():
    run = simulate_canary(failure="none", seed=1)
    assert run.outcome == "promoted" and not run.bad and run.first_failed_check_at is None
    said = messages(run)
    weights = [m.rsplit(" ", 1)[1] for m in said if m.startswith("Advance model.default canary weight")]
    assert weights == ["10", "20", "30", "40", "50"]
    assert said.index("Copying model.default template spec to model-primary.default") > said.index(
        "Advance model.default canary weight 50")
    assert said[-1] == "Promotion completed! Scaling down model.default"
    assert [d.phase for d in run.timeline][-3:] == ["Promoting", "Finalising", "Succeeded"]
    # once promoted the primary runs the new version: everyone is on it by the end
    assert run.max_weight == 50 and run.exposed_share > 0.3


def test_error_regression_is_rolled_back_at_the_threshold():
    run = simulate_canary(failure="errors", seed=1)
    assert run.outcome == "rolled back" and run.bad
    said = messages(run)
    assert "Rolling back model.default failed checks threshold reached 5" in said
    halts = [m for m in said if m.startswith("Halt model.default advancement success rate")]
    assert len(halts) == 5
    assert run.detection_seconds is not None and run.detection_seconds >= 60
    assert run.timeline[-1].phase == "Failed" and run.timeline[-1].weight == 0
    assert 0 < run.exposed_users <= run.exposed_requests < run.total_requests


def test_success_rate_and_p99_are_read_from_the_canary_counts():
    perfect = simulate_canary(primary=Version(error_rate=0.0), seed=3)
    rates = [d.readings["request-success-rate"] for d in perfect.timeline if d.readings]
    assert {r for r in rates if r is not None} == {100.0}
    # before the canary had any traffic Flagger's query finds no values
    assert perfect.timeline[1].readings["request-success-rate"] is None
    broken = simulate_canary(primary=Version(error_rate=0.0), failure="errors", severity=100, seed=3)
    assert {d.readings["request-success-rate"] for d in broken.timeline[3:]} == {0.0}
    slow = simulate_canary(failure="latency", severity=20, seed=3)  # median 800 ms
    assert slow.outcome == "rolled back"
    assert any("advancement request duration" in m and "> 500ms" in m for m in messages(slow))


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = np.zeros(20, dtype=np.int64)
    buckets[6] = 50   # (50, 100] ms
    buckets[7] = 50   # (100, 250] ms
    # rank 99 of 100 is 49 into the second bucket's 50: 100 + 150 x 49/50
    assert histogram_quantile(0.99, buckets) == pytest.approx(247.0)
    assert histogram_quantile(0.5, buckets) == pytest.approx(100.0)
    buckets[-1] = 1000  # most above the last bound: the highest finite bound
    assert histogram_quantile(0.99, buckets) == 3600000
    assert np.isnan(histogram_quantile(0.99, np.zeros(20)))


def test_exposure_grows_with_the_step_size():
    small = run_many(40, seed=2, canary=canary_manifest(step_weight=5), failure="errors")
    large = run_many(40, seed=2, canary=canary_manifest(step_weight=25), failure="errors")
    assert small.detection_rate == large.detection_rate == 1.0
    assert np.mean(large.exposed_requests()) > 2 * np.mean(small.exposed_requests())
    assert np.mean(large.exposed_users()) > 2 * np.mean(small.exposed_users())


def _in_cohort(user: int, share: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(f"cohort:user-{user}".encode(), digest_size=8).digest(), "big")
    return h / 2 ** 64 < share


def test_ab_match_sends_only_matching_users_to_the_canary():
    traffic = Traffic(ab_share=0.1)
    cohort = {u for u in range(traffic.users) if _in_cohort(u, 0.1)}
    good = simulate_canary(canary_manifest(match=AB_MATCH, iterations=5), traffic=traffic, seed=4)
    assert good.outcome == "promoted" and good.ab_users == len(cohort)
    assert "Advance model.default canary iteration 5/5" in messages(good)
    # A rolled-back run is never promoted, so whoever saw the new version saw it as the canary.
    bad = simulate_canary(canary_manifest(match=AB_MATCH, iterations=5), traffic=traffic,
                          failure="errors", seed=4)
    assert bad.outcome == "rolled back"
    exposed = set(np.flatnonzero(bad.exposed))
    assert exposed and exposed <= cohort


def test_a_match_nobody_sends_leaves_the_canary_without_traffic():
    nobody = [{"headers": {"x-canary": {"exact": "nobody-has-this"}}}]
    run = simulate_canary(canary_manifest(match=nobody, iterations=3), seed=1)
    assert run.ab_users == 0 and run.exposed_users == 0
    assert run.outcome == "rolled back"
    assert any("no values found for istio metric request-success-rate" in m for m in messages(run))


def test_mirrored_copies_are_judged_but_expose_nobody():
    run = simulate_canary(canary_manifest(mirror=True), failure="errors", seed=5)
    assert run.outcome == "rolled back"
    assert run.exposed_requests == 0 and run.exposed_users == 0
    assert any(d.readings.get("request-success-rate") for d in run.timeline)


def test_quality_drop_passes_http_gates_and_is_caught_by_the_quality_gate():
    without = simulate_canary(failure="quality", seed=6)
    assert without.outcome == "promoted"
    gated = simulate_canary(canary_manifest(min_accuracy=86), failure="quality", seed=6)
    assert gated.outcome == "rolled back"
    failed = [d.webhooks["quality-gate"] for d in gated.timeline if "quality-gate" in d.webhooks]
    assert any(not r.ok and r.message.startswith("403 canary v2 accuracy") for r in failed)
    assert any("external check quality-gate failed 403" in m for m in messages(gated))


def test_segment_failure_hits_only_the_segment():
    clean = Version(error_rate=0.0)
    nobody = simulate_canary(primary=clean, failure="segment", severity=100, traffic=Traffic(segment=0.0),
                             seed=2)
    assert nobody.exposed_errors == 0 and nobody.outcome == "promoted"
    some = simulate_canary(primary=clean, failure="segment", severity=100, traffic=Traffic(segment=0.2),
                           seed=2)
    assert some.outcome == "rolled back" and 0 < some.exposed_errors < some.exposed_requests


def test_simulator_decisions_are_exactly_the_pure_steps():
    """Replaying the recorded readings and webhook answers through analysis.step gives the
    simulator's timeline back, decision for decision."""
    canary = load(canary_manifest(min_accuracy=86))[0]
    assert isinstance(canary, Canary)
    for failure in ("none", "errors", "quality"):
        run = simulate_canary(canary, failure=failure, seed=11)
        status, routes = analysis.CanaryStatus(), analysis.Routes()
        for i, d in enumerate(run.timeline):
            readings = analysis.Readings(revision=PRIMARY_REVISION if i == 0 else CANARY_REVISION,
                                         metrics=d.readings, webhook=analysis.hooks(d.webhooks))
            out = analysis.step(canary, status, routes, readings, d.time)
            status, routes = out.status, out.routes
            assert (status.phase, routes.canary, status.failed_checks, status.iterations) == (
                d.phase, d.weight, d.failed_checks, d.iterations)
            assert tuple(e.message for e in out.events) == d.messages


def test_batch_rates_at_the_defaults():
    good = run_many(100, seed=1, failure="none")
    assert good.false_rollback_rate <= 0.02 and np.isnan(good.detection_rate)
    bad = run_many(100, seed=1, failure="errors")
    assert bad.detection_rate >= 0.95 and bad.caught_below(25) >= 0.95
    assert len(bad.detection_seconds()) == 100
    assert "detection rate" in str(bad) and "false rollbacks" in str(good)
    assert bad.summary()["detection_rate"] == bad.detection_rate
    shares = bad.exposed_share()
    assert bad.summary()["exposed_share_p95"] == pytest.approx(np.percentile(shares, 95))


def test_failure_modes_change_only_their_own_property():
    base = Version()
    assert canary_version(base, "errors", 5).error_rate == pytest.approx(base.error_rate + 0.05)
    assert canary_version(base, "latency", 3).latency_ms == 3 * base.latency_ms
    assert canary_version(base, "quality", 5).accuracy == pytest.approx(base.accuracy - 0.05)
    assert canary_version(base, "segment", 40).segment_error_rate == 0.4
    assert canary_version(base, "none") == base


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="failure must be one of"):
        simulate_canary(failure="meltdown")
    with pytest.raises(ManifestError, match=r"spec\.analysis\.stepWeight"):
        simulate_canary(canary_manifest(step_weight=60, max_weight=50))
    templated = canary_manifest()
    templated["spec"]["analysis"]["metrics"].append(
        {"name": "accuracy", "templateRef": {"name": "accuracy"}, "thresholdRange": {"min": 90}})
    with pytest.raises(ValueError, match=r"metrics\[2\]: metric 'accuracy' is not simulated"):
        simulate_canary(templated)
    gate = canary_manifest(min_accuracy=86)
    gate["spec"]["analysis"]["webhooks"][0]["metadata"]["minAccuracy"] = "0.86"
    with pytest.raises(ValueError, match=r"webhooks\[0\]\.metadata\.minAccuracy"):
        simulate_canary(gate)
    with pytest.raises(ValueError, match=r"rate must be a number in the range \[0, 1e\+06\], got -1"):
        Traffic(rate=-1)
    with pytest.raises(ValueError, match="n must be"):
        run_many(0)
