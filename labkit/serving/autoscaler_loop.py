"""The live autoscaler of one revision: scrape every second, decide every 2 s, on the wall clock.

This is the glue Knative's autoscaler and PodAutoscaler reconciler are around the pure policy
code, which it uses unchanged (the simulator uses the very same modules with a simulated
clock):

- every second it *scrapes*: each pod's queue-proxy reports its time-weighted concurrency and
  request rate for the second (requests the activator proxied are taken out; beyond 3 pods a
  seeded sample of `scrape_sample_size` pods is read and scaled up, as Knative does), the activator
  adds its own stats for the revision, and the revision-wide total goes into the collector's
  windows (`metrics_window.RevisionMetrics`); while pods exist, a zero is recorded too;
- every 2 seconds it *decides*: `kpa.Autoscaler.scale` gives the desired pods and the excess
  burst capacity, `kpa_scaler.decide_replicas` applies min/max/initial scale and the
  scale-to-zero gating, `LiveRevision.scale_to` starts or stops processes, and
  `kpa_scaler.sks_mode` puts the activator in the request path (Proxy) or takes it out
  (Serve);
- a *poke* from the activator (a request for a revision at zero) records the activator's
  immediate stat and decides at once instead of waiting for the next tick.

A revision of the HPA class (``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev``)
is scaled on CPU instead, as Kubernetes' HorizontalPodAutoscaler does for it: every sync
period (15 s in Kubernetes) the replicas' CPU use since the last sync, in percent of one core
(labkit's stand-in for the container's CPU request), goes into `hpa.hpa_desired_replicas`
against the ``target`` annotation (default 80 %); at least one pod (no scale to zero) and no
panic mode. The activator only serves while no pod is ready.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from labkit.clock import Cancellable, WallClock
from labkit.serving.autoscaler_config import HPA_CLASS, RevisionAutoscaling
from labkit.serving.hpa import hpa_desired_replicas
from labkit.serving.kpa import Autoscaler, initial_excess_burst_capacity
from labkit.serving.kpa_scaler import (
    SCALE_UNKNOWN,
    Activity,
    PodAutoscalerState,
    decide_replicas,
    min_ready_pods,
    next_activity,
    sks_mode,
)
from labkit.serving.metrics_window import NoData, RevisionMetrics, scrape_sample_size
from labkit.serving.queue_proxy import Stat
from labkit.serving.revision import LiveRevision, Sample

__all__ = ["SCRAPE_SECONDS", "TICK_SECONDS", "AutoscalerLoop"]

SCRAPE_SECONDS = 1.0
TICK_SECONDS = 2.0
"""Knative's decider tick (hard-coded there too)."""

ActivatorStats = Callable[[float], "Stat | None"]


class AutoscalerLoop:
    """Scrapes and scales one `LiveRevision` until `stop()`."""

    def __init__(self, revision: LiveRevision, clock: WallClock,
                 activator_stats: ActivatorStats, hpa_sync_seconds: float = 15.0) -> None:
        self.revision = revision
        self.clock = clock
        self._activator_stats = activator_stats
        settings = revision.settings
        now = clock.now()
        self.settings = settings
        kpa = settings.autoscaler_class != HPA_CLASS
        self.decider = Autoscaler(settings.decider_spec(), 0, now) if kpa else None
        self.hpa_sync_seconds = hpa_sync_seconds
        self._hpa_due = now + hpa_sync_seconds
        self._cpu_marks: dict[str, tuple[float, float]] = {}
        self.cpu_utilization: float | None = None
        """HPA class: the replicas' average CPU use in % of one core at the last sync."""
        self.metrics = RevisionMetrics(
            settings.stable_window, settings.panic_window, settings.aggregation_algorithm,  # type: ignore[arg-type]
            has_scrape_target=settings.target_burst_capacity != -1)
        self.desired_scale = SCALE_UNKNOWN
        self.excess_burst_capacity = (
            initial_excess_burst_capacity(self.decider.spec, settings.initial_scale)
            if self.decider else 0)
        self.activity = Activity.ACTIVATING if settings.initial_scale > 0 else Activity.INACTIVE
        self.activity_since = now
        self.initialized = settings.initial_scale == 0
        self.mode = "Proxy"
        self.mode_since = now
        self.last_observed = 0.0
        self._rng = random.Random(revision.name)  # which pods the scraper samples
        self._timer: Cancellable | None = None
        self._ticks = 0
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._timer = self.clock.call_later(SCRAPE_SECONDS, self._every_second)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()

    def update(self, settings: RevisionAutoscaling) -> None:
        """New settings (reachability changed, or the cluster's config)."""
        self.settings = settings
        self.revision.settings = settings
        if self.decider is not None:
            self.decider.update(settings.decider_spec())

    def _every_second(self) -> None:
        if self._stopped:
            return
        self._timer = self.clock.call_later(SCRAPE_SECONDS, self._every_second)
        now = self.clock.now()
        self._scrape(now)
        self._ticks += 1
        if self._ticks % round(TICK_SECONDS / SCRAPE_SECONDS) == 0:
            self.decide(now)

    # -- the two steps ----------------------------------------------------------------------

    def _scrape(self, now: float) -> None:
        # Every queue-proxy closes its one-second period; the scraper reads a sample of them
        # (all of them up to 3 pods) and scales the sum up to the whole revision.
        stats = [pod.proxy.stats.report(now) for pod in self.revision.ready_pods()
                 if pod.proxy is not None]
        seen = bool(stats)
        concurrency = rps = 0.0
        if stats:
            size = scrape_sample_size(len(stats))
            sample = stats if size == len(stats) else self._rng.sample(stats, size)
            for stat in sample:
                # Floating-point leftovers of the subtraction must not become negative load.
                concurrency += max(0.0, stat.concurrency - stat.proxied_concurrency)
                rps += max(0.0, stat.rps - stat.proxied_rps)
            concurrency *= len(stats) / size
            rps *= len(stats) / size
        activator = self._activator_stats(now)
        if activator is not None:
            concurrency += activator.concurrency
            rps += activator.rps
            seen = True
        if seen:
            self.metrics.record(now, concurrency, rps)
            self.last_observed = concurrency

    def poke(self) -> None:
        """A request reached the activator for this revision: at zero, decide now."""
        if self._stopped or self.revision.replica_count > 0:
            return
        now = self.clock.now()
        self.metrics.record(now, 1.0, 1.0)  # the activator's immediate stat
        self.decide(now)

    def _hpa_desired(self, now: float, ready: int) -> int:
        """Kubernetes' HPA rule on the CPU used since the last sync; held between syncs."""
        floor = max(self.settings.min_scale, 1)
        current = max(self.revision.replica_count, floor)
        if now < self._hpa_due:
            return current
        self._hpa_due = now + self.hpa_sync_seconds
        samples, marks = [], {}
        for pod in self.revision.ready_pods():
            cpu = pod.cpu_seconds()
            if cpu is None:
                continue
            marks[pod.name] = (cpu, now)
            if pod.name in self._cpu_marks:
                before, then = self._cpu_marks[pod.name]
                if now > then:
                    samples.append((cpu - before) / (now - then) * 100)
        self._cpu_marks = marks
        if not samples:
            return current
        self.cpu_utilization = sum(samples) / len(samples)
        return hpa_desired_replicas(ready, self.cpu_utilization, self.settings.target,
                                    min_replicas=floor, max_replicas=self.settings.max_scale)

    def decide(self, now: float) -> None:
        revision, settings = self.revision, self.settings
        ready = revision.ready_count
        stable: float | None = None
        panic: float | None = None
        if self.decider is not None:
            try:
                stable, panic = self.metrics.stable_and_panic(now, settings.metric)
            except NoData:
                stable = panic = None
            result = self.decider.scale(now, ready, stable, panic)
            if result.scale_valid:
                self.desired_scale = result.desired_pod_count
                self.excess_burst_capacity = result.excess_burst_capacity
        else:
            self.desired_scale = self._hpa_desired(now, ready)
            self.excess_burst_capacity = 0  # no burst rule: the activator serves only at zero
        state = PodAutoscalerState(
            activity=self.activity,
            activity_for=now - self.activity_since,
            scale_target_initialized=self.initialized,
            activator_in_path_for=now - self.mode_since if self.mode == "Proxy" else 0.0,
        )
        decision = decide_replicas(self.desired_scale, settings, state, revision.replica_count)
        if decision.apply:
            revision.scale_to(decision.replicas)
        want = decision.replicas
        min_ready = min_ready_pods(settings, self.initialized)
        if not self.initialized and ready >= min_ready:
            self.initialized = True
        activity = next_activity(want, ready, min_ready, self.activity)
        if activity is not self.activity:
            self.activity, self.activity_since = activity, now
        mode = sks_mode(want, self.excess_burst_capacity, ready)
        if mode != self.mode:
            self.mode, self.mode_since = mode, now
        revision.mode = mode
        revision.active = {Activity.ACTIVE: True, Activity.INACTIVE: False}.get(activity)
        revision.desired = want
        revision.excess_burst_capacity = self.excess_burst_capacity
        revision.in_panic = bool(self.decider and self.decider.in_panic)
        metric = settings.metric if settings.metric in ("concurrency", "rps") else "concurrency"
        try:
            rps_stable, _ = self.metrics.stable_and_panic(now, "rps")
        except NoData:
            rps_stable = 0.0
        revision.record(Sample(
            t=round(now - revision.created, 3),
            desired=want,
            replicas=revision.replica_count,
            ready=ready,
            observed_concurrency=self.last_observed,
            stable_concurrency=(stable or 0.0) if metric == "concurrency" else 0.0,
            panic_concurrency=(panic or 0.0) if metric == "concurrency" else 0.0,
            rps=rps_stable,
            panic=revision.in_panic,
            mode=mode,
            excess_burst_capacity=self.excess_burst_capacity,
        ))
