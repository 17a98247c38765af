"""The live autoscaler of one revision: scrape every second, decide every 2 s, on the wall clock.

This is the glue Knative's autoscaler and PodAutoscaler reconciler are around the pure policy
code, which it uses unchanged (the simulator uses the very same modules with a simulated
clock):

- every second it *scrapes*: each pod's queue-proxy reports its time-weighted concurrency and
  request rate for the second (requests the activator proxied are taken out; beyond 3 pods a
  seeded sample of `scrape_sample_size` pods is read and scaled up, as Knative does), the activator
  adds its own stats for the revision, and the revision-wide total goes into the collector's
  windows (`metrics_window.RevisionMetrics`); while pods exist, a zero is recorded too (with
  ``target-burst-capacity: "-1"`` no pod is scraped: the activator sees every request);
- every 2 seconds it *decides* (`labkit.serving.reconcile.decide` around
  `kpa.Autoscaler.scale`: the desired pods and the excess burst capacity) and *reconciles*
  (`labkit.serving.reconcile.reconcile`: min/max/initial scale and the scale-to-zero gating
  give the replicas `LiveRevision.scale_to` sets; the PA's Active condition; the SKS mode,
  Proxy with the activator in the request path or Serve without it);
- the reconcile also runs when the revision's pods change and when it asked to run again
  (``recheck_after``: a timer on the same clock, Knative's ``enqueueAfter``), e.g. to mark
  an idle revision Inactive once it has been active for a stable window, or to remove the
  last pod when the scale-to-zero grace period is over;
- the activator's first request for an idle revision *pokes* it: the activator's immediate
  stat is recorded and, if the decider wants zero pods, it decides at once instead of
  waiting for the next tick (so do the activator's stats each second).

The simulator (`labkit.sim.autoscaling`) calls the same `decide` and `reconcile` at the same
moments; `reconciles` logs every reconcile (clock time, desired, want, replicas set, ready
pods, Active condition, SKS mode).

A revision of the HPA class (``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev``)
is scaled on CPU instead, by the HorizontalPodAutoscaler Knative creates for it
(`labkit.serving.hpa.knative_hpa_spec`): every sync period (15 s in Kubernetes) each pod's
real CPU use since the last sync (psutil, `labkit.serving.hpa_cpu`) against the container's
``resources.requests.cpu`` goes into one HPA sync (`labkit.serving.hpa_sync.hpa_sync`:
tolerance, stabilisation windows, scaling policies), whose replicas the PA reconcile then
sets; `hpa_decisions` logs every sync and `hpa_status()` is that HPA's status (its
conditions, `labkit.serving.hpa_status`). Without a CPU request the HPA cannot compute a
utilisation and never scales, as on Kubernetes (`hpa_warning()` says so). At least one pod
(no scale to zero), no panic mode; the activator only serves while no pod is ready.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from labkit.clock import Cancellable, Clock
from labkit.serving.autoscaler_config import HPA_CLASS, RevisionAutoscaling
from labkit.serving.constants import HPA_SYNC_SECONDS, SCRAPE_SECONDS, TICK_SECONDS, USER_CONTAINER
from labkit.serving.hpa import cpu_readings, knative_hpa_spec
from labkit.serving.hpa_cpu import process_cpu_seconds
from labkit.serving.hpa_status import hpa_conditions, missing_cpu_request
from labkit.serving.hpa_sync import HPADecision, HPAHistory, hpa_sync
from labkit.serving.kpa import Autoscaler, initial_excess_burst_capacity
from labkit.serving.kpa_scaler import SCALE_UNKNOWN, Activity
from labkit.serving.metrics_window import NoData, RevisionMetrics, scrape_sample_size
from labkit.serving.queue_proxy import Stat
from labkit.serving.reconcile import (
    ReconcileRecord,
    decide,
    initial_status,
    reconcile,
    record,
    should_poke,
)
from labkit.serving.revision import LiveRevision, PodState, Sample, ServingPod

__all__ = ["AutoscalerLoop"]

ActivatorStats = Callable[[float], "Stat | None"]
CpuSeconds = Callable[[ServingPod], "float | None"]
"""HPA class: the CPU seconds a pod has used so far (default: its processes', from the OS)."""


def _process_cpu(pod: ServingPod) -> float | None:
    return process_cpu_seconds(pod.pid)

_SCRAPES_PER_TICK = round(TICK_SECONDS / SCRAPE_SECONDS)


class AutoscalerLoop:
    """Scrapes, decides and reconciles one `LiveRevision` until `stop()`.

    `clock` is the wall clock of the cluster's event loop in a running cluster; all timers and
    `poke`/`pods_changed` callbacks run on that loop's thread.
    """

    def __init__(self, revision: LiveRevision, clock: Clock,
                 activator_stats: ActivatorStats,
                 hpa_sync_seconds: float = HPA_SYNC_SECONDS,
                 cpu_seconds: CpuSeconds = _process_cpu) -> None:
        self.revision = revision
        self.clock = clock
        self._activator_stats = activator_stats
        settings = revision.settings
        now = clock.now()
        self.settings = settings
        kpa = settings.autoscaler_class != HPA_CLASS
        self.decider = Autoscaler(settings.decider_spec(), revision.ready_count, now) if kpa else None
        self.hpa_sync_seconds = hpa_sync_seconds
        self._cpu_seconds = cpu_seconds
        self.hpa_spec = None if kpa else knative_hpa_spec(settings, revision.template.metadata.annotations)
        self.hpa_history = HPAHistory()
        self.hpa_decisions: list[HPADecision] = []
        """HPA class: every sync, in order (times on `clock`)."""
        self._hpa_timer: Cancellable | None = None
        self._hpa_due = now
        self._cpu_marks: dict[str, tuple[float, float]] = {}
        self.cpu_utilization: int | None = None
        """HPA class: the pods' CPU use in % of their CPU request at the last sync that had one."""
        self.metrics = RevisionMetrics(
            settings.stable_window, settings.panic_window, settings.aggregation_algorithm,  # type: ignore[arg-type]
            has_scrape_target=settings.target_burst_capacity != -1)
        self.desired_scale = SCALE_UNKNOWN
        self.excess_burst_capacity = (
            initial_excess_burst_capacity(self.decider.spec, settings.initial_scale)
            if self.decider else 0)
        self.status = initial_status(settings, revision.ready_count, now)
        self.reconciles: list[ReconcileRecord] = []
        """Every reconcile, in order (times on `clock`)."""
        self.last_observed = 0.0
        self._rng = random.Random(revision.name)  # which pods the scraper samples
        self._timer: Cancellable | None = None
        self._recheck: Cancellable | None = None
        self._due = now
        self._scrapes = 0
        self._stopped = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._due = self.clock.now() + SCRAPE_SECONDS
        self._timer = self.clock.call_later(SCRAPE_SECONDS, self._every_second)
        if self.hpa_spec is not None:
            self._hpa_due = self.clock.now() + self.hpa_sync_seconds
            self._hpa_timer = self.clock.call_later(self.hpa_sync_seconds, self._every_sync)
        self.pods_changed()  # Knative reconciles a new PA at once

    def stop(self) -> None:
        self._stopped = True
        for timer in (self._timer, self._recheck, self._hpa_timer):
            if timer is not None:
                timer.cancel()

    def update(self, settings: RevisionAutoscaling) -> None:
        """New settings (reachability changed, or the cluster's config)."""
        self.settings = settings
        self.revision.settings = settings
        if self.decider is not None:
            self.decider.update(settings.decider_spec())
        else:
            self.hpa_spec = knative_hpa_spec(settings, self.revision.template.metadata.annotations)

    def pods_changed(self) -> None:
        """From any thread: the revision's pods changed (its endpoints): reconcile soon."""
        if self._stopped:
            return
        try:
            self.clock.call_later(0.0, self.reconcile)
        except RuntimeError:
            pass  # the cluster's event loop is closed (shutting down): nothing to reconcile

    def _every_second(self) -> None:
        if self._stopped:
            return
        now = self.clock.now()
        self._scrape(now)
        self._scrapes += 1
        if self._scrapes % _SCRAPES_PER_TICK == 0:
            self.decide(now)
        # The next timer is armed after this second's work, as in the simulator, so a recheck
        # due at the same instant as a scrape runs first in both. Missed seconds are dropped
        # (like Go's ticker), not caught up in a burst.
        self._due += SCRAPE_SECONDS
        later = self.clock.now()
        if self._due <= later:
            self._due = later + SCRAPE_SECONDS
        self._timer = self.clock.call_later(self._due - later, self._every_second)

    # -- the three steps --------------------------------------------------------------------

    def _scrape(self, now: float) -> None:
        # Every queue-proxy closes its one-second period; the scraper reads a sample of them
        # (all of them up to 3 pods) and scales the sum up to the whole revision. With an
        # unlimited burst capacity (-1) Knative scrapes no pod: the activator sees everything.
        stats = [pod.proxy.stats.report(now) for pod in self.revision.ready_pods()
                 if pod.proxy is not None] if self.metrics.has_scrape_target else []
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
        if activator is not None and should_poke(self.desired_scale, activator.concurrency):
            self.decide(now)

    def poke(self) -> None:
        """The activator's first request for this revision since it was idle: record the
        activator's immediate stat, and decide now if the decider wants zero pods."""
        if self._stopped:
            return
        now = self.clock.now()
        self.metrics.record(now, 1.0, 1.0)
        if should_poke(self.desired_scale, 1.0):
            self.decide(now)

    def _every_sync(self) -> None:
        if self._stopped:
            return
        self.hpa_sync(self.clock.now())
        self._hpa_due += self.hpa_sync_seconds  # as `_every_second`: no catching up
        later = self.clock.now()
        if self._hpa_due <= later:
            self._hpa_due = later + self.hpa_sync_seconds
        self._hpa_timer = self.clock.call_later(self._hpa_due - later, self._every_sync)

    def hpa_sync(self, now: float) -> HPADecision:
        """HPA class: one sync of Kubernetes' HPA over the pods' CPU use since the last one,
        then a reconcile with the replicas it wants."""
        assert self.hpa_spec is not None
        revision = self.revision
        pods = [(pod.name, pod.ready, self._cpu_seconds(pod) if pod.ready else None)
                for pod in list(revision.pods) if pod.state != PodState.TERMINATING]
        readings, self._cpu_marks = cpu_readings(pods, self._cpu_marks, now, self._cpu_request(),
                                                 self._container_name())
        decision = hpa_sync(self.hpa_spec, self.hpa_history, revision.replica_count, readings, now)
        self.hpa_history = decision.history
        self.hpa_decisions.append(decision)
        if decision.utilization is not None:
            self.cpu_utilization = decision.utilization
        self.desired_scale = decision.desired
        self.reconcile(now)
        return decision

    def _cpu_request(self) -> int | None:
        resources = self.revision.template.spec.container.resources
        return resources.cpu_request_millis() if resources else None

    def _container_name(self) -> str:
        return self.revision.template.spec.container.name or USER_CONTAINER

    def hpa_status(self) -> dict[str, object] | None:
        """HPA class: the status of the HorizontalPodAutoscaler Knative creates for the revision
        (named after it, ``kubectl describe hpa <revision>``); None for the KPA class."""
        if self.hpa_spec is None:
            return None
        decisions = list(self.hpa_decisions)
        last = decisions[-1] if decisions else None
        return {"currentReplicas": last.current if last else None,
                "desiredReplicas": last.desired if last else None,
                "currentCPUUtilizationPercentage": self.cpu_utilization,
                "conditions": [c.as_dict() for c in hpa_conditions(decisions)]}

    def hpa_warning(self) -> str | None:
        """HPA class: the apply-time warning when the container sets no CPU request."""
        if self.hpa_spec is None:
            return None
        revision = self.revision
        return missing_cpu_request(f"HorizontalPodAutoscaler {revision.namespace}/{revision.name} (Knative's "
                                   f"for the class {HPA_CLASS})", f"Revision {revision.name}",
                                   self._container_name(), self._cpu_request())

    def decide(self, now: float) -> None:
        """A decider tick (or a poke) at `now`, then a reconcile."""
        revision, settings = self.revision, self.settings
        ready = revision.ready_count
        stable: float | None = None
        panic: float | None = None
        if self.decider is not None:
            decision = decide(self.decider, self.metrics, now, ready,
                              self.desired_scale, self.excess_burst_capacity)
            stable, panic = decision.stable, decision.panic
            self.desired_scale = decision.desired
            self.excess_burst_capacity = decision.excess_burst_capacity
        else:  # the HPA sets desired_scale on its own period (`hpa_sync`)
            self.excess_burst_capacity = 0  # no burst rule: the activator serves only at zero
        revision.in_panic = bool(self.decider and self.decider.in_panic)
        self.reconcile(now)
        metric = settings.metric if settings.metric in ("concurrency", "rps") else "concurrency"
        try:
            rps_stable, _ = self.metrics.stable_and_panic(now, "rps")
        except NoData:
            rps_stable = 0.0
        revision.record(Sample(
            t=round(now - revision.created, 3),
            desired=self.status.want,
            replicas=revision.replica_count,
            ready=ready,
            observed_concurrency=self.last_observed,
            stable_concurrency=(stable or 0.0) if metric == "concurrency" else 0.0,
            panic_concurrency=(panic or 0.0) if metric == "concurrency" else 0.0,
            rps=rps_stable,
            panic=revision.in_panic,
            mode=self.status.mode,
            excess_burst_capacity=self.excess_burst_capacity,
        ))

    def reconcile(self, now: float | None = None) -> None:
        """The PA reconciler: set the replicas, the Active condition and the SKS mode, and
        come back when it asks to (``recheck_after``)."""
        if self._stopped:
            return
        if now is None:
            now = self.clock.now()
        revision = self.revision
        result = reconcile(self.settings, self.status, self.desired_scale,
                           self.excess_burst_capacity, revision.ready_count,
                           revision.replica_count, now)
        if result.replicas is not None:
            revision.scale_to(result.replicas)
        self.status = status = result.status
        self.reconciles.append(record(now, self.desired_scale, result))
        revision.mode = status.mode
        revision.active = {Activity.ACTIVE: True, Activity.INACTIVE: False}.get(status.activity)
        revision.desired = status.want
        revision.excess_burst_capacity = self.excess_burst_capacity
        if result.recheck_after is not None:
            if self._recheck is not None:
                self._recheck.cancel()
            self._recheck = self.clock.call_later(result.recheck_after, self.reconcile)
