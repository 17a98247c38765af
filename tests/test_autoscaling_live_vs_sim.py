"""The live Knative Serving and the simulator tell the same story for the same short scenario.

Scenario: a Knative Service running httpbin, ``target: "1"`` (0.7 concurrent requests per pod
at 70 % utilisation) and the shortest stable window (6 s), a 2 s scale-to-zero grace period;
8 clients call ``/delay/1`` back to back for 12 s, then nothing. Knative's formula wants
ceil(8 / 0.7) = 12 pods. Live, real processes start and stop; simulated, the same annotations
drive the same KPA code on a simulated clock. Asserted: the direction and the rough size of
the scaling (both panic, both reach about a dozen pods, both go back to zero), not exact counts
or times.

The second test holds them to more: the same decisions in the same order, the live autoscaler
fed the stats the simulated one recorded (see its comment).
"""

from __future__ import annotations

import heapq
import math
import statistics
import threading
from collections.abc import Callable

import numpy as np
import pytest

from labkit.load import run as load
from labkit.serving.autoscaler_config import AutoscalerConfig, RevisionAutoscaling
from labkit.serving.autoscaler_loop import AutoscalerLoop
from labkit.serving.models import RevisionTemplate
from labkit.serving.queue_proxy import Stat
from labkit.serving.reconcile import ReconcileRecord
from labkit.serving.revision import LiveRevision
from labkit.serving.service import configure_serving, knative_service
from labkit.sim.autoscaling import clients_workload, simulate_autoscaling
from labkit.sim.workloads import TraceReplay

ANNOTATIONS = {"autoscaling.knative.dev/target": "1", "autoscaling.knative.dev/window": "6s"}
CONFIG = AutoscalerConfig(scale_to_zero_grace_period=2.0)
CLIENTS, DELAY, LOAD_SECONDS = 8, 1.0, 12.0
WANTED = math.ceil(CLIENTS / 0.7)  # 12 pods

SERVICE = f"""
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: delay
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: "{ANNOTATIONS['autoscaling.knative.dev/target']}"
        autoscaling.knative.dev/window: "{ANNOTATIONS['autoscaling.knative.dev/window']}"
    spec:
      containers:
        - image: labkit/httpbin
"""


def test_live_and_simulated_revisions_scale_alike(cluster, wait_for):
    configure_serving(cluster, autoscaler=CONFIG)
    cluster.apply(SERVICE)
    service = knative_service(cluster, "delay")
    revision = service.revision()
    started = revision.history()[-1].t if revision.history() else 0.0
    measured = load(f"{service.url}/delay/{DELAY:g}", duration=LOAD_SECONDS, concurrency=CLIENTS, timeout=30.0)
    assert measured.count(200) == measured.requests > 0
    wait_for(lambda: revision.replica_count == 0 and revision.ready_count == 0, timeout=60.0,
             what="the live revision to scale to zero")
    live = revision.history()
    live_peak = max(s.ready for s in live)
    live_panicked = any(s.panic for s in live)
    starts = [c.seconds for c in service.cold_starts() if c.seconds is not None]

    sim = simulate_autoscaling(
        clients_workload(CLIENTS, DELAY, max(started, 0.5), LOAD_SECONDS, 60.0), ANNOTATIONS, config=CONFIG,
        duration=60.0, seed=1, service_time=DELAY, service_distribution="deterministic",
        cold_start=statistics.median(starts), cold_start_distribution="deterministic",
    )
    sim_peak = sim.max_ready_pods

    # Up: both panic and reach about the dozen pods Knative's formula asks for.
    assert live_panicked and sim.panic_periods
    for peak in (live_peak, sim_peak):
        assert WANTED * 0.6 <= peak <= WANTED * 1.6, (live_peak, sim_peak)
    assert 0.6 <= live_peak / sim_peak <= 1.6, (live_peak, sim_peak)
    # Down: both went back to zero pods after the load stopped (live: waited for above).
    ready = sim.timeline["ready"]
    assert ready[-1] == 0
    assert np.argmax(ready) < np.flatnonzero(ready == 0).max()


# --- the same decisions in the same order ------------------------------------------------------
#
# The test above compares stories (real load, real timing). This one compares decisions: the
# simulator runs a seeded scenario (a burst that throws the decider into panic, the scale back
# to zero, one request that brings the revision back from zero, and zero again), and the live
# `AutoscalerLoop`, on a clock the test steps, scaling a `LiveRevision` of real processes, is
# fed the very stats the simulated autoscaler recorded (through its activator-stats input and
# its poke, the paths the activator uses). Cold starts are 0 s in the simulation; live, the
# clock stands still while the real pods start, so both see the same ready pods at the same
# instants. Asserted: every decider tick (time, desired pods, panic, the window averages) and
# every change the PA reconciler made (replicas set, Active condition, SKS mode, with times,
# including those it made on its own re-checks) are the same, in the same order.

STEP_ANNOTATIONS = {"autoscaling.knative.dev/target": "10", "autoscaling.knative.dev/window": "6s"}
STEP_HORIZON = 60.0


class SteppedClock:
    """A `labkit.clock.Clock` the test moves: timers run in (time, order of arming) order, as
    simpy runs its events; timers may be armed from other threads (pods becoming ready)."""

    def __init__(self) -> None:
        self._now = 0.0
        self._heap: list[tuple[float, int, list[Callable[[], object] | None]]] = []
        self._armed = 0
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        entry: list[Callable[[], object] | None] = [callback]
        with self._lock:
            self._armed += 1
            heapq.heappush(self._heap, (self._now + delay, self._armed, entry))
        return _Timer(entry)

    def next_time(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def run_due(self) -> None:
        """Run every timer due by now, including those armed meanwhile for now."""
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > self._now:
                    return
                _, _, entry = heapq.heappop(self._heap)
            callback = entry[0]
            if callback is not None:
                callback()

    def advance(self, to: float) -> None:
        self._now = to
        self.run_due()


class _Timer:
    def __init__(self, entry: list[Callable[[], object] | None]) -> None:
        self._entry = entry

    def cancel(self) -> None:
        self._entry[0] = None


def step_workload() -> TraceReplay:
    rng = np.random.default_rng(4)
    burst = 5.0 + np.sort(rng.uniform(0.0, 6.0, rng.poisson(20 * 6.0)))
    return TraceReplay(np.concatenate([burst, [40.5]]), duration=STEP_HORIZON)


def settled(records: list[ReconcileRecord]) -> list[tuple[object, ...]]:
    """The PA's state at the end of each instant a reconcile ran, and the replicas it set.

    The simulator reconciles once per pod that becomes ready (1, 2, 3 ready pods at one
    instant), the live loop once the real pods are up; what counts is where each instant ends.
    """
    last: dict[float, ReconcileRecord] = {}
    applied: dict[float, int] = {}
    for r in records:
        last[r.time] = r
        if r.replicas >= 0:
            applied[r.time] = r.replicas
    return [(t, r.desired, r.want, r.ready, r.activity, r.mode, applied.get(t))
            for t, r in last.items()]


def test_live_loop_and_simulator_make_the_same_decisions(cluster, wait_for):
    sim = simulate_autoscaling(step_workload(), STEP_ANNOTATIONS, config=CONFIG,
                               duration=STEP_HORIZON, seed=1, service_time=1.0,
                               service_distribution="deterministic", cold_start=0.0)
    # The scenario: panic, back to zero, up from zero, and the activator always in the path
    # (211 of burst capacity is more than these pods hold), so every stat is the activator's.
    assert sim.panic_periods and sim.timeline["activator_in_path"].all()
    ready = sim.timeline["ready"]
    assert ready.max() >= 3 and (ready == 0).any() and ready[-1] == 0
    assert any(r.time > 40 and r.replicas == 1 for r in sim.reconciles)

    records = sim.metric_records
    per_second: dict[float, tuple[float, float]] = {}
    pokes: list[float] = []
    for t, c, rps in zip(records["time"].tolist(), records["concurrency"].tolist(),
                         records["rps"].tolist()):
        if t != int(t):
            assert (c, rps) == (1.0, 1.0)  # the activator's immediate stat of a first request
            pokes.append(t)
            continue
        before = per_second.get(t, (0.0, 0.0))
        per_second[t] = (before[0] + c, before[1] + rps)
    assert pokes

    clock = SteppedClock()

    def activator_stats(now: float) -> Stat | None:
        if now not in per_second:
            return None
        c, rps = per_second[now]
        return Stat(now, c, 0.0, rps, 0.0, round(rps))

    settings = RevisionAutoscaling.resolve(STEP_ANNOTATIONS, CONFIG)
    template = RevisionTemplate.model_validate({
        "metadata": {"annotations": STEP_ANNOTATIONS},
        "spec": {"containers": [{"image": "labkit/hello"}]}})
    loop_box: list[AutoscalerLoop] = []
    told: set[str] = set()

    def pods_changed() -> None:
        told.update(p.name for p in revision.ready_pods())
        if loop_box:
            loop_box[0].pods_changed()

    revision = LiveRevision(cluster.loop, service="steps", namespace="default",
                            name="steps-00001", generation=1, template=template,
                            settings=settings, start_timeout=20.0, on_change=pods_changed)
    try:
        def pods_up() -> bool:
            pods = revision.ready_pods()
            return (len(pods) == revision.replica_count
                    and {p.name for p in pods} <= told and revision.failure is None)

        revision.scale_to(settings.initial_scale)
        wait_for(pods_up, timeout=30.0, what="the initial pod")
        loop = AutoscalerLoop(revision, clock, activator_stats)
        loop_box.append(loop)
        for t in pokes:
            clock.call_later(t, loop.poke)
        loop.start()
        while (t := clock.next_time()) is not None and t <= STEP_HORIZON:
            clock.advance(t)
            # Time stands still while real pods start (a 0 s cold start, as simulated), then
            # the reconciles their readiness asked for run at this same instant.
            wait_for(pods_up, timeout=30.0, what=f"the pods wanted at t={t:g}")
            clock.run_due()
        loop.stop()
    finally:
        revision.close()

    # Every decider tick (and poke), in order: same time, ready pods, windows, decision.
    live_ticks = [(round(s.t, 3), s.ready, s.stable_concurrency, s.panic_concurrency,
                   s.desired, s.panic) for s in revision.history()]
    created = revision.history()[0].t - sim.ticks["time"][0]  # Sample.t counts from creation
    sim_ticks = sim.ticks
    expected = [
        (round(t + created, 3), int(r), 0.0 if np.isnan(st) else st, 0.0 if np.isnan(pa) else pa,
         want, bool(panic))
        for t, r, st, pa, panic, want in zip(
            sim_ticks["time"].tolist(), sim_ticks["ready"].tolist(), sim_ticks["stable"].tolist(),
            sim_ticks["panic"].tolist(), sim_ticks["in_panic"].tolist(),
            [rec.want for rec in _tick_reconciles(sim.reconciles, sim_ticks["time"].tolist())])]
    assert len(live_ticks) == len(expected)
    for got, want in zip(live_ticks, expected):
        assert got[0] == pytest.approx(want[0], abs=0.002) and got[1:] == want[1:], (got, want)
    # Every change the PA reconciler made, with its time (rechecks included).
    assert settled(loop.reconciles) == settled(sim.reconciles)
    # Ticks fall on even seconds, pokes between seconds: a reconcile on an odd second is one
    # the live loop ran because the reconciler asked to be run again (recheck_after).
    assert any(r.time == int(r.time) and int(r.time) % 2 for r in loop.reconciles)


def _tick_reconciles(records: list[ReconcileRecord], times: list[float]) -> list[ReconcileRecord]:
    """The reconcile that followed each decider tick (the first one at each tick's time)."""
    out, i = [], 0
    for t in times:
        while records[i].time != t:
            i += 1
        out.append(records[i])
        i += 1
    return out
