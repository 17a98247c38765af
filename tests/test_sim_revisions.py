"""The revisions simulator (`labkit.sim.revisions`) against the pure policy driven the way the
live Service drives it: the gradual rollout's steps, which revisions GC deletes and when, and
a revision failing at exactly its progress deadline."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from labkit.serving.gc import NO_GC, GCConfig, RevisionRecord, collect
from labkit.serving.progress_deadline import PROGRESS_DEADLINE, deadline_exceeded
from labkit.serving.rollout_duration import ROLLOUT_DURATION, Rollout, advance
from labkit.sim.revisions import Deploy, simulate_revisions
from labkit.sim.workloads import Poisson

HOUR = 3600.0


def test_rollout_steps_are_rollout_go_s_example() -> None:
    # knative/serving pkg/reconciler/route/traffic/rollout.go: 100 % over 4 steps is
    # 1 -> 26 -> 51 -> 76 -> 100; a 5 s duration observed ready at once gives 4 steps of 1 s.
    result = simulate_revisions([Deploy(0, startup=5), Deploy(100, startup=5)], horizon=200,
                                rollout_duration=5)
    new = [(t, p) for t, p in result.shares("web-00002") if t >= 105]
    assert new == [(105, 1), (106, 26), (107, 51), (108, 76), (109, 100)]
    assert result.split_at(107.5) == (("web-00001", 49), ("web-00002", 51))
    (ro,) = result.rollouts
    assert (ro.revision, ro.started, ro.finished, ro.steps) == ("web-00002", 105, 109, 4)


def replay_rollout(ready_at: dict[str, float], duration: float,
                   horizon: float) -> list[tuple[float, tuple[tuple[str, int], ...]]]:
    """The live Route reconciler's calls, on a plain loop: `advance` whenever a newer
    revision becomes ready and whenever the rollout's next step is due."""
    pending = sorted(ready_at.items(), key=lambda item: item[1])
    state: Rollout | None = None
    latest: str | None = None
    splits: list[tuple[float, tuple[tuple[str, int], ...]]] = []
    while True:
        due = state.next_step if state is not None else None
        candidates = [t for t in (pending[0][1] if pending else None, due) if t is not None]
        if not candidates or min(candidates) >= horizon:
            return splits
        now = min(candidates)
        while pending and pending[0][1] == now:
            latest = pending.pop(0)[0]
        assert latest is not None
        state = advance(state, latest, 100, now, duration)
        if not splits or splits[-1][1] != state.revisions:
            splits.append((now, state.revisions))


def test_rollout_shares_equal_the_live_policy_at_the_same_times() -> None:
    # Three revisions, the third ready in the middle of the second's rollout.
    deploys = [Deploy(0, startup=3), Deploy(HOUR, startup=12.5), Deploy(HOUR + 100, startup=7)]
    result = simulate_revisions(deploys, horizon=2 * HOUR, rollout_duration=380)
    expected = replay_rollout({"web-00001": 3, "web-00002": HOUR + 12.5,
                               "web-00003": HOUR + 107}, 380, 2 * HOUR)
    assert result.splits[0] == (0, ())  # nothing ready yet
    assert result.splits[1:] == expected
    # Mid-rollout the newest takes its 1 % from the newest that has traffic (rollout.go).
    assert result.split_at(HOUR + 107)[-1] == ("web-00003", 1)
    assert len(result.split_at(HOUR + 107)) == 3
    assert result.split_at(2 * HOUR) == (("web-00003", 100),)
    first, second = result.rollouts
    assert first.finished is None and second.finished is not None  # superseded, then done


def test_rollout_duration_annotation_overrides_config_network() -> None:
    deploys = [Deploy(0, startup=1), Deploy(10, startup=1)]
    annotated = simulate_revisions(deploys, horizon=100, rollout_duration=0,
                                   annotations={ROLLOUT_DURATION: "5s"})
    assert annotated.rollouts[0].finished == 15
    at_once = simulate_revisions(deploys, horizon=100)
    assert at_once.rollouts == [] and at_once.split_at(11) == (("web-00002", 100),)


def test_requests_follow_the_split_over_time() -> None:
    rate = 40.0
    result = simulate_revisions([Deploy(0, startup=0), Deploy(50, startup=0)], horizon=300,
                                rollout_duration=100, workload=Poisson(rate), seed=3)
    # The expected count for the new revision: its share integrated over time, times the rate.
    changes = [*result.shares("web-00002"), (300.0, 0)]
    expected = sum(p / 100 * rate * (t1 - t0) for (t0, p), (t1, _) in pairwise(changes))
    served = result.requests["web-00002"]
    assert abs(served - expected) < 5 * math.sqrt(expected), (served, expected)
    total = result.summary()["requests"]
    assert isinstance(total, int)
    assert abs(total - rate * 300) < 5 * math.sqrt(rate * 300)
    assert result.requests[""] == 0  # the first revision was ready at once
    again = simulate_revisions([Deploy(0, startup=0), Deploy(50, startup=0)], horizon=300,
                               rollout_duration=100, workload=Poisson(rate), seed=3)
    assert again.requests == result.requests
    other = simulate_revisions([Deploy(0, startup=0), Deploy(50, startup=0)], horizon=300,
                               rollout_duration=100, workload=Poisson(rate), seed=4)
    assert other.requests != result.requests


def replay_gc(deploys: list[Deploy], config: GCConfig, horizon: float,
              checks: list[float]) -> list[tuple[float, str]]:
    """The live controller's bookkeeping and GC at each check time, rollout off and every
    revision ready `startup` after creation: a revision is referenced while it holds the
    route or is the latest created; the time that last changed is its last activity."""
    created = {f"web-{i + 1:05d}": d.at for i, d in enumerate(deploys)}
    ready = {name: created[name] + d.startup for name, d in zip(created, deploys)
             if d.startup is not None}
    annotations = {name: d.annotations for name, d in zip(created, deploys)}
    deleted: list[tuple[float, str]] = []
    gone: set[str] = set()
    for now in checks:
        alive = [n for n in created if created[n] <= now and n not in gone]
        latest_ready = max((n for n in alive if ready.get(n, math.inf) <= now), default=None)
        latest_created = max(alive)
        records = []
        for name in alive:
            if name in (latest_created, latest_ready):  # never unreferenced yet
                records.append(RevisionRecord(name, created[name], True, None, annotations[name]))
                continue
            # Unreferenced at the later of: a newer one created (no longer the latest
            # created), a newer one ready (the route left it; only if it ever held it).
            lost_latest = min(created[n] for n in created if name < n and created[n] <= now)
            took_route = [ready[n] for n in created if n > name and ready.get(n, math.inf) <= now]
            left_route = min(took_route) if name in ready and took_route else lost_latest
            last_change = max(lost_latest, left_route)
            records.append(RevisionRecord(name, created[name], False, last_change,
                                          annotations[name]))
        for name in collect(config, records, latest_ready, now):
            gone.add(name)
            deleted.append((now, name))
    return deleted


@pytest.mark.parametrize("config", [
    GCConfig(retain_since_create_time=3 * HOUR, retain_since_last_active_time=HOUR,
             min_non_active_revisions=1, max_non_active_revisions=3),
    GCConfig(retain_since_create_time=None, retain_since_last_active_time=2 * HOUR,
             min_non_active_revisions=0, max_non_active_revisions=None),
    GCConfig(retain_since_create_time=None, retain_since_last_active_time=None,
             min_non_active_revisions=1, max_non_active_revisions=2),
])
def test_gc_deletes_what_the_policy_would_given_the_same_history(config: GCConfig) -> None:
    # Irregular deploys, so creation and last activity tell different stories.
    times = [0, 0.5, 1, 4, 4.2, 5, 8, 9.5]
    deploys = [Deploy(t * HOUR, startup=30) for t in times]
    deploys[2] = Deploy(1 * HOUR, startup=30, annotations={NO_GC: "true"})
    resync = 600.0
    horizon = 12 * HOUR
    result = simulate_revisions(deploys, horizon=horizon, gc=config, gc_resync=resync)
    # Knative's GC runs on revision events (created, ready) and on each resync.
    events = {d.at for d in deploys} | {d.at + 30 for d in deploys}
    grid = {k * resync for k in range(1, int(horizon / resync))}
    expected = replay_gc(deploys, config, horizon, sorted(events | grid))
    assert result.deleted == expected
    assert len(result.deleted) >= 3
    assert set(result.remaining) >= {"web-00003", "web-00008"}  # no-gc, the latest


def test_an_old_revision_goes_when_the_rollout_drains_it() -> None:
    # It leaves the route at the rollout's last step; that routing change runs the GC.
    result = simulate_revisions([Deploy(0, startup=1), Deploy(100, startup=1)], horizon=300,
                                rollout_duration=5, gc=GCConfig(None, None, 0, 0),
                                gc_resync=None)
    assert result.rollouts[0].finished == 105
    assert result.deleted == [(105, "web-00001")]


def test_stale_revisions_wait_for_the_next_resync() -> None:
    config = GCConfig(None, None, 0, 0)  # delete any non-active revision at once
    deploys = [Deploy(0, startup=1), Deploy(100, startup=1)]
    result = simulate_revisions(deploys, horizon=200, gc=config, gc_resync=None)
    assert result.deleted == [(101, "web-00001")]  # when it lost the route
    timed = GCConfig(retain_since_create_time=None, retain_since_last_active_time=HOUR,
                     min_non_active_revisions=0, max_non_active_revisions=None)
    late = simulate_revisions(deploys, horizon=30 * HOUR, gc=timed)  # Knative's 10 h resync
    assert late.deleted == [(10 * HOUR, "web-00001")]
    never = simulate_revisions(deploys, horizon=30 * HOUR, gc=timed, gc_resync=None)
    assert never.deleted == []  # stale, but nothing ran the collector
    # Without a resync the next revision event runs it: the creation of a third one.
    third = simulate_revisions([*deploys, Deploy(20 * HOUR)], horizon=30 * HOUR, gc=timed,
                               gc_resync=None)
    assert third.deleted == [(20 * HOUR, "web-00001")]


def test_the_deadline_fails_a_revision_at_exactly_progress_deadline() -> None:
    deploys = [Deploy(0, startup=2), Deploy(1000, startup=None),
               Deploy(5000, startup=None, annotations={PROGRESS_DEADLINE: "90s"}),
               Deploy(9000, startup=90, annotations={PROGRESS_DEADLINE: "90s"}),
               Deploy(9500, startup=89.5, annotations={PROGRESS_DEADLINE: "90s"})]
    result = simulate_revisions(deploys, horizon=20000, workload=Poisson(1.0), seed=1)
    # config-deployment's 600 s, then the annotation's 90 s; pods up at the deadline are late.
    assert result.failed == [(1600, "web-00002"), (5090, "web-00003"), (9090, "web-00004")]
    events = {(name, what) for _, name, what in result.events}
    assert ("web-00002", "failed: ProgressDeadlineExceeded: Initial scale was never achieved") \
        in events
    assert ("web-00005", "ready") in events
    # The route stays on the latest ready revision: a failed one never serves.
    assert result.split_at(1599) == result.split_at(1601) == (("web-00001", 100),)
    assert {"web-00002", "web-00003", "web-00004"}.isdisjoint(result.requests)
    assert result.latest_ready == "web-00005"


def test_the_deadline_is_exact_off_whole_seconds() -> None:
    # 0.2 + 0.5 - 0.2 is a hair below 0.5 in floating point: the timer alone would be early.
    at, deadline = 0.2, 0.5
    assert (at + deadline) - at < deadline
    result = simulate_revisions([Deploy(at, startup=None,
                                        annotations={PROGRESS_DEADLINE: "500ms"})], horizon=5)
    ((failed_at, _),) = result.failed
    assert deadline_exceeded(at, failed_at, deadline, False)
    assert not deadline_exceeded(at, math.nextafter(failed_at, -math.inf), deadline, False)


@pytest.mark.parametrize("kwargs, message", [
    ({"horizon": 0}, r"horizon must be a number in the range \(0, inf\), got 0"),
    ({"horizon": "1d"}, r"horizon must be a number in the range \(0, inf\), got '1d'"),
    ({"rollout_duration": -1}, r"rollout_duration must be a number in the range \[0, inf\)"),
    ({"annotations": {ROLLOUT_DURATION: "soon"}}, f"invalid value: soon: {ROLLOUT_DURATION}"),
    ({"progress_deadline": 0}, r"progress_deadline must be a number in the range \(0, inf\)"),
    ({"gc": {"max-non-active-revisions": "-1"}}, "config-gc: max-non-active-revisions"),
    ({"gc_resync": math.inf}, r"gc_resync must be a number in the range \(0, inf\), got inf"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"deploys": [Deploy(5), Deploy(1)]}, r"deploys\[1\].at: 1 is before deploys\[0\].at"),
    ({"deploys": [Deploy(500)]}, r"deploys\[0\].at: 500 is not before horizon \(100\)"),
    ({"deploys": [Deploy(0, startup=-1)]}, r"deploys\[0\].startup must be"),
    ({"deploys": [Deploy(0), Deploy(1, annotations={PROGRESS_DEADLINE: "0s"})]},
     rf"deploys\[1\].annotations: invalid value: 0s: {PROGRESS_DEADLINE}"),
])
def test_bad_parameters_are_named(kwargs: dict, message: str) -> None:
    args = {"deploys": [Deploy(0)], "horizon": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate_revisions(**args)


def test_summary_and_text() -> None:
    result = simulate_revisions([Deploy(0), Deploy(HOUR), Deploy(2 * HOUR, startup=None)],
                                horizon=3 * HOUR, rollout_duration=60, workload=Poisson(0.5))
    summary = result.summary()
    assert summary["revisions_created"] == 3 and summary["revisions_failed"] == 1
    assert summary["first_failure_at"] == 2 * HOUR + 600
    assert summary["rollouts"] == 1 and summary["latest_ready"] == "web-00002"
    assert all(isinstance(v, (int, float, str, type(None))) for v in summary.values())
    text = str(result)
    assert "02:10:00  web-00003  failed: ProgressDeadlineExceeded" in text
    # 60 s: 59 steps of 1 s, each round(99 / 59) = 2 %, so 100 % after 50 of them (rollout.go).
    assert "rollout of web-00002: 1 % at 01:00:10, 100 % at 01:01:00, 50 steps" in text
