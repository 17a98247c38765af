"""One Knative revision under load, scaled by the KPA (or the HPA class): the same policy code, simulated time.

The story the simulation tells, second by second, is Knative Serving's:

* Requests arrive (any :class:`~labkit.sim.workloads.Workload`). While the revision's
  ServerlessService is in *Proxy* mode they go to the **activator**, which forwards each to a
  ready pod with room (``containerConcurrency`` per pod, unlimited when 0) or buffers it (at
  most 10,000, each for at most the revision timeout) until a pod has room: at zero pods, and
  whenever the excess burst capacity is negative. In *Serve* mode they go straight to a random
  ready pod.
* Each pod has a **queue-proxy**: it lets ``containerConcurrency`` requests into the app, queues
  up to 10 x that many more and answers 503 beyond. Optionally the app itself serves only
  ``pod_parallelism`` requests at once (a thread pool), so a pod with ``containerConcurrency``
  0 slows down under load as a real one does.
* Every second the autoscaler scrapes the pods' time-weighted concurrency and request rate and
  the activator reports its own (requests it proxied are counted once, by the activator), into
  `labkit.serving.metrics_window.RevisionMetrics`. The activator's first request for an idle
  revision sends an immediate stat and *pokes* the decider, as Knative's does.
* Every two seconds the decider (`labkit.serving.kpa.Autoscaler`) turns the stable and panic
  averages into a desired pod count; `labkit.serving.kpa_scaler` applies min/max/initial
  scale, the scale-to-zero gating (grace period, pod retention) and decides whether the
  activator stays in the path.
* A new pod becomes ready after a start-up delay drawn from a distribution (the cold start);
  a removed pod leaves the endpoints at once and finishes its in-flight requests.

* With the HPA class (``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev``) there
  is no decider: every sync period (15 s) Kubernetes' HPA (`labkit.serving.hpa_sync`) reads
  each pod's CPU use since the last sync (a request in service keeps ``cpu_per_request``
  cores busy) against its CPU request (``cpu_request``) and sets the replicas; at least one
  pod, so the activator is in the path only before the first pod is ready.

Everything Knative decides is decided by the pure policy modules of `labkit.serving`, given
a `labkit.clock.SimClock`: the decider tick and the PA reconcile (`labkit.serving.reconcile`,
run after each tick, when a pod becomes ready and when it asks to be run again) are the very
functions the live autoscaler calls. This module only plays the data path and the clock. It
imports no live component.

Speed, and why the model looks the way it does
----------------------------------------------
simpy processes are used where they read as the story (the traffic source, the autoscaler's
1-second loop, a pod starting, the activator's buffer timing out). A request, though, is not a
process: it costs two simpy events (its arrival, as one timeout of the traffic process, and its
completion, a bare timeout with a callback) and O(1) bookkeeping. A process per request adds a
generator, an initialisation event and a resume per request: on the development machine the
bare skeleton (200,000 arrivals, each with a 0.2 s service) took 0.26 s with callbacks and
0.70 s with a process per request, and nothing in a request's life waits on anything but its
own service time.
Concurrency is integrated per change (a running area), so the per-second scrape is O(1) and
not O(requests). Service and start-up times are drawn from numpy in chunks. One simulated
hour of 50 req/s bursty load runs in about a second (see bench/bench_autoscaling.py).

Simplifications, on purpose
---------------------------
* The scraper reads every ready pod (Knative samples 4 of 5, 14 of 100, and scales the sample
  up to a total): the sample's expected value, without its noise.
* Network and activator hops add no time; the activator's probe of a new pod is instant.
* The activator picks a pod as the live one does (`labkit.serving.pod_pick.PodPicker`:
  first available up to ``containerConcurrency`` 3, round robin above, the better of two
  random pods at 0), judging a pod by all the requests its queue-proxy holds; in Serve mode a
  pod is picked at random (kube-proxy).
* Pod removal picks starting pods first, then the newest ready pods (as a ReplicaSet does).
* ``enable-scale-to-zero``, the grace period and the scale rates are cluster settings: pass an
  `AutoscalerConfig` to change them (the annotations cover the per-revision ones).
"""

from __future__ import annotations

import math
import random
from array import array
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from labkit.clock import Cancellable, SimClock
from labkit.params import check_range, check_seed
from labkit.serving.autoscaler_config import (
    HPA_CLASS,
    AutoscalerConfig,
    RevisionAutoscaling,
)
from labkit.serving.constants import (
    ACTIVATOR_QUEUE_DEPTH,
    HPA_SYNC_SECONDS,
    QUEUE_PROXY_QUEUE_FACTOR,
    SCRAPE_SECONDS,
    TICK_SECONDS,
)
from labkit.serving.hpa import HPASpec, cpu_readings, knative_hpa_spec
from labkit.serving.hpa_sync import HPADecision, HPAHistory, hpa_sync
from labkit.serving.kpa import Autoscaler, DeciderSpec, initial_excess_burst_capacity
from labkit.serving.kpa_scaler import SCALE_UNKNOWN
from labkit.serving.metrics_window import RevisionMetrics
from labkit.serving.pod_pick import PodPicker
from labkit.serving.reconcile import (
    ReconcileRecord,
    decide,
    initial_status,
    reconcile,
    record,
    should_poke,
)
from labkit.sim.cost import SECONDS_PER_MONTH, Prices
from labkit.sim.platform import SERVICE_DISTRIBUTIONS, _service_sampler
from labkit.sim.results import Scalar, SimResult
from labkit.sim.workloads import TraceReplay, Workload, as_generator
from labkit.stats import percentile

__all__ = [
    "ACTIVATOR_QUEUE_DEPTH",
    "QUEUE_PROXY_QUEUE_FACTOR",
    "AutoscalingResult",
    "burst_workload",
    "clients_workload",
    "simulate_autoscaling",
]

TICK_EVERY_SCRAPES = round(TICK_SECONDS / SCRAPE_SECONDS)
"""The decider runs every 2 s, on every other scrape (after it, so it sees that second)."""

Process = Generator[simpy.Event, Any, None]
"""A simpy process: a generator of the events it waits for."""


# --- the data path --------------------------------------------------------------------------

class _Level:
    """A count that changes over time, with its time integral (for time-weighted averages)."""

    __slots__ = ("area", "since", "value")

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.since = 0.0
        self.area = 0.0

    def change(self, t: float, delta: int) -> None:
        self.area += self.value * (t - self.since)
        self.since = t
        self.value += delta

    def total(self, t: float) -> float:
        """The area so far (since the last `integral`), without restarting it."""
        return self.area + self.value * (t - self.since)

    def integral(self, t: float) -> float:
        """The area up to `t` (and the area restarts from there)."""
        area = self.area + self.value * (t - self.since)
        self.area = 0.0
        self.since = t
        return area


class _Request:
    __slots__ = ("arrival", "cold", "pod", "proxied", "start")

    def __init__(self, arrival: float) -> None:
        self.arrival = arrival
        self.start = 0.0
        self.pod: _Pod | None = None
        self.proxied = False
        self.cold = False


class _Pod:
    """A replica: its queue-proxy's counters and queue, and where it is in its life."""

    __slots__ = ("busy", "cpu", "in_flight", "name", "queue", "ready", "removed")

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight = 0  # what the queue-proxy counts: in service + queued
        self.busy = 0
        self.cpu = _Level()  # requests in service over time: the app's CPU seconds (HPA class)
        self.queue: deque[_Request] = deque()
        self.ready = False
        self.removed = False  # out of the endpoints, draining


class _Draws:
    """Values handed out one at a time from numpy chunks (cheap per request)."""

    def __init__(self, chunks: Iterator[np.ndarray]) -> None:
        self._chunks = chunks
        self._buffer: list[float] = []
        self._next = 0

    def __call__(self) -> float:
        if self._next == len(self._buffer):
            self._buffer = next(self._chunks).tolist()
            self._next = 0
        value = self._buffer[self._next]
        self._next += 1
        return value


@dataclass(eq=False)
class _HPAModel:
    """The HPA class: Kubernetes' HPA, what it remembers, and how the app uses CPU."""

    spec: HPASpec
    request_millis: int  # the container's resources.requests.cpu
    cpu_per_request: float  # cores one request in service keeps busy
    sync_seconds: float
    history: HPAHistory = field(default_factory=HPAHistory)
    marks: dict[str, tuple[float, float]] = field(default_factory=dict)
    decisions: list[HPADecision] = field(default_factory=list)
    cpu_seconds: list[dict[str, float]] = field(default_factory=list)  # per sync: ready pods' counters


class _Revision:
    """The model: a revision, its pods, the activator and the autoscaler, on one simpy env."""

    def __init__(self, env: simpy.Environment, settings: RevisionAutoscaling,
                 container_concurrency: int, pod_parallelism: int | None,
                 service: _Draws, startup: _Draws, route: random.Random,
                 timeout: float, initially_ready: bool, hpa: _HPAModel | None = None) -> None:
        self.env = env
        self.clock = SimClock(env)
        self.settings = settings
        self.hpa = hpa
        self.spec: DeciderSpec | None = None if hpa else settings.decider_spec()
        cc = container_concurrency
        self.activator_room = cc if cc > 0 else math.inf  # what the activator sends a pod
        self.slots = cc if cc > 0 else (pod_parallelism or math.inf)  # what a pod serves at once
        self.queue_limit = QUEUE_PROXY_QUEUE_FACTOR * cc if cc > 0 else math.inf
        self.service = service
        self.startup = startup
        self.route = route
        self.timeout = timeout
        self.has_scrape_target = settings.target_burst_capacity != -1
        self.metrics = RevisionMetrics(settings.stable_window, settings.panic_window,
                                       # a str the settings validated as one of the two algorithms
                                       settings.aggregation_algorithm,  # type: ignore[arg-type]
                                       has_scrape_target=self.has_scrape_target)

        # pods
        self.pods: list[_Pod] = []  # not removed: starting or ready
        self.ready: list[_Pod] = []
        self.replicas = settings.initial_scale
        self.alive = _Level()  # pods that exist (starting, ready or draining): what is paid for
        self.pods_started = 0
        self.startup_times = array("d")
        self.picker = PodPicker(cc, route)
        self._load = lambda i: self.ready[i].in_flight  # what the picker asks of a pod

        # activator and request accounting
        self.buffer: deque[_Request] = deque()
        self._buffer_filled = env.event()
        self.serve = False  # SKS mode: True = Serve (straight to pods), False = Proxy
        self.direct = _Level()  # requests the pods hold that did not come through the activator
        self.proxied = _Level()  # requests the activator holds (buffered or forwarded)
        self.direct_arrivals = 0
        self.proxied_arrivals = 0
        self._activator_knows = False  # the activator has a stats entry for the revision
        self._poke_credit = 0.0
        self.requests = 0
        self.rejected = 0
        self.timed_out = 0
        self.cold_starts = 0
        self.arrival = array("d")
        self.latency = array("d")
        self.queue_delay = array("d")
        self.cold = array("b")
        self.records: dict[str, array] = {k: array("d") for k in ("time", "concurrency", "rps")}

        # autoscaler and PodAutoscaler state
        self.desired = SCALE_UNKNOWN
        self.ebc = initial_excess_burst_capacity(self.spec, settings.initial_scale) if self.spec else 0
        self._recheck: Cancellable | None = None
        self.reconciles: list[ReconcileRecord] = []
        self.ticks: dict[str, array] = {k: array("d") for k in (
            "time", "ready", "stable", "panic", "desired", "in_panic", "excess_burst_capacity")}
        self.seconds: dict[str, array] = {k: array("d") for k in (
            "time", "requests", "concurrency", "desired", "replicas", "ready", "in_panic",
            "activator_in_path")}

        for _ in range(settings.initial_scale):
            pod = self._new_pod()
            if initially_ready:
                self._become_ready(pod)
            else:
                env.process(self._pod_starts(pod))
        self.status = initial_status(settings, len(self.ready), 0.0)
        self.autoscaler = Autoscaler(self.spec, len(self.ready), now=0.0) if self.spec else None
        self.reconcile()

    # --- processes: the story ---------------------------------------------------------------

    def traffic(self, chunks: Iterator[np.ndarray]) -> Process:
        """Requests arrive at their times and enter the revision."""
        env = self.env
        for chunk in chunks:
            for t in chunk.tolist():
                if t > env.now:
                    yield env.timeout(t - env.now)
                self.arrive(env.now)

    def autoscaler_loop(self) -> Process:
        """Scrape every second, decide every other second, and note what happened."""
        scrapes = 0
        while True:
            yield self.env.timeout(SCRAPE_SECONDS)
            now = self.env.now
            scrapes += 1
            self.scrape(now)
            if self.autoscaler is not None and scrapes % TICK_EVERY_SCRAPES == 0:
                self.decide(now)
            self._note_second(now)

    def hpa_loop(self, hpa: _HPAModel) -> Process:
        """HPA class: every sync period, Kubernetes' HPA sync over the pods' CPU use."""
        while True:
            yield self.env.timeout(hpa.sync_seconds)
            now = self.env.now
            pods = [(pod.name, pod.ready, pod.cpu.total(now) * hpa.cpu_per_request if pod.ready else None)
                    for pod in self.pods]
            hpa.cpu_seconds.append({name: cpu for name, _, cpu in pods if cpu is not None})
            readings, hpa.marks = cpu_readings(pods, hpa.marks, now, hpa.request_millis)
            decision = hpa_sync(hpa.spec, hpa.history, self.replicas, readings, now)
            hpa.history = decision.history
            hpa.decisions.append(decision)
            self.desired = decision.desired
            self.reconcile()

    def _pod_starts(self, pod: _Pod) -> Process:
        """A new pod: schedule, pull, start the container, pass the readiness probe."""
        began = self.env.now
        yield self.env.timeout(self.startup())
        if pod.removed:
            return  # scaled away while starting
        self.startup_times.append(self.env.now - began)
        self._become_ready(pod)
        self.reconcile()

    def activator_timeouts(self) -> Process:
        """Buffered requests older than the revision timeout get a 504 (oldest first), as the
        live activator answers them ("activator request timeout")."""
        env = self.env
        while True:
            if not self.buffer:
                self._buffer_filled = env.event()
                yield self._buffer_filled
                continue
            deadline = self.buffer[0].arrival + self.timeout
            if deadline > env.now:
                yield env.timeout(deadline - env.now)
                continue
            self.buffer.popleft()
            self.timed_out += 1
            self.proxied.change(env.now, -1)

    # --- requests ---------------------------------------------------------------------------

    def arrive(self, now: float) -> None:
        request = _Request(now)
        self.requests += 1
        if self.serve and self.ready:
            self.direct_arrivals += 1
            ready = self.ready
            self._to_pod(ready[int(self.route.random() * len(ready))], request, now, self.direct)
            return
        self._to_activator(request, now)

    def _to_activator(self, request: _Request, now: float) -> None:
        request.proxied = True
        self.proxied_arrivals += 1
        self.proxied.change(now, 1)
        if not self.ready:
            request.cold = True
        if not self._activator_knows:
            # The activator's first request for a revision: report it at once and poke.
            self._activator_knows = True
            self._poke_credit = 1.0
            self._record(now, 1.0, 1.0)
            self._poke(now, 1.0)
        if not self.buffer:
            pod = self._pod_with_room()
            if pod is not None:
                self._to_pod(pod, request, now, None)
                return
        if len(self.buffer) >= ACTIVATOR_QUEUE_DEPTH:
            self.rejected += 1
            self.proxied.change(now, -1)
            return
        self.buffer.append(request)
        if not self._buffer_filled.triggered:
            self._buffer_filled.succeed()

    def _pod_with_room(self) -> _Pod | None:
        i = self.picker.pick(len(self.ready), self._load)
        return None if i is None else self.ready[i]

    def _to_pod(self, pod: _Pod, request: _Request, now: float, counted: _Level | None) -> None:
        """The queue-proxy takes the request: in service, queued, or 503."""
        if pod.busy < self.slots:
            pod.in_flight += 1
            self._start(pod, request, now)
        elif len(pod.queue) < self.queue_limit:
            pod.in_flight += 1
            pod.queue.append(request)
        else:
            self.rejected += 1
            if request.proxied:
                self.proxied.change(now, -1)
            return
        request.pod = pod
        if counted is not None:
            counted.change(now, 1)

    def _start(self, pod: _Pod, request: _Request, now: float) -> None:
        request.start = now
        pod.busy += 1
        pod.cpu.change(now, 1)
        self.env.timeout(self.service(), request).callbacks.append(self._done)

    def _done(self, event: simpy.Event) -> None:
        request: _Request = event._value  # what _start gave the timeout
        now = self.env.now
        pod = request.pod
        assert pod is not None
        pod.busy -= 1
        pod.cpu.change(now, -1)
        pod.in_flight -= 1
        (self.proxied if request.proxied else self.direct).change(now, -1)
        self.arrival.append(request.arrival)
        self.latency.append(now - request.arrival)
        self.queue_delay.append(request.start - request.arrival)
        self.cold.append(request.cold)
        if pod.queue:
            self._start(pod, pod.queue.popleft(), now)
        if pod.removed:
            if pod.in_flight == 0:
                self.alive.change(now, -1)  # drained: the pod is gone
        elif self.buffer and pod.in_flight < self.activator_room:
            self._to_pod(pod, self.buffer.popleft(), now, None)

    def _drain_buffer(self, now: float) -> None:
        while self.buffer:
            pod = self._pod_with_room()
            if pod is None:
                return
            self._to_pod(pod, self.buffer.popleft(), now, None)

    # --- pods -------------------------------------------------------------------------------

    def _new_pod(self) -> _Pod:
        pod = _Pod(f"pod-{self.pods_started + 1}")
        self.pods.append(pod)
        self.alive.change(self.env.now, 1)
        self.pods_started += 1
        return pod

    def _become_ready(self, pod: _Pod) -> None:
        now = self.env.now
        pod.ready = True
        if not self.ready and self.buffer and self.buffer[0].cold:
            self.cold_starts += 1  # requests were waiting for the first pod: a cold start
        self.ready.append(pod)
        self._drain_buffer(now)

    def _remove(self, pod: _Pod) -> None:
        now = self.env.now
        pod.removed = True
        self.pods.remove(pod)
        if pod.ready:
            self.ready.remove(pod)
            if pod.in_flight:
                return  # it drains, then goes
        self.alive.change(now, -1)

    def set_replicas(self, replicas: int) -> None:
        """The Deployment's replicas change: start pods, or remove starting then newest ones."""
        self.replicas = replicas
        while len(self.pods) < replicas:
            self.env.process(self._pod_starts(self._new_pod()))
        while len(self.pods) > replicas:
            starting = [p for p in self.pods if not p.ready]
            self._remove(starting[-1] if starting else self.ready[-1])

    # --- the autoscaler ---------------------------------------------------------------------

    def scrape(self, now: float) -> None:
        """One second of stats: from the pods (if any) and from the activator (if it knows)."""
        pods_concurrency = self.direct.integral(now) / SCRAPE_SECONDS
        pods_rps = self.direct_arrivals / SCRAPE_SECONDS
        activator_concurrency = self.proxied.integral(now) / SCRAPE_SECONDS
        activator_rps = self.proxied_arrivals / SCRAPE_SECONDS
        self.direct_arrivals = self.proxied_arrivals = 0
        self.seconds["requests"].append(pods_rps + activator_rps)
        seen = 0.0
        if self.ready and self.has_scrape_target:
            self._record(now, pods_concurrency, pods_rps)
            seen += pods_concurrency
        if self._activator_knows:
            # The immediate stat of the first request is taken back from the next report.
            activator_concurrency = max(0.0, activator_concurrency - self._poke_credit)
            activator_rps = max(0.0, activator_rps - self._poke_credit)
            self._poke_credit = 0.0
            self._record(now, activator_concurrency, activator_rps)
            seen += activator_concurrency
            if activator_concurrency == 0 and activator_rps == 0 and self.proxied.value == 0:
                self._activator_knows = False  # an idle revision leaves the activator's stats
            else:
                self._poke(now, activator_concurrency)
        self.seconds["concurrency"].append(seen)

    def _record(self, now: float, concurrency: float, rps: float) -> None:
        """A stat into the autoscaler's windows, and into the log of what it was given."""
        self.metrics.record(now, concurrency, rps)
        records = self.records
        records["time"].append(now)
        records["concurrency"].append(concurrency)
        records["rps"].append(rps)

    def _poke(self, now: float, concurrency: float) -> None:
        """A revision the decider wants at zero has traffic again: decide now, not next tick."""
        if self.autoscaler is not None and should_poke(self.desired, concurrency):
            self.decide(now)

    def decide(self, now: float) -> None:
        assert self.autoscaler is not None
        ready = len(self.ready)
        self.desired, self.ebc, stable, panic = decide(
            self.autoscaler, self.metrics, now, ready, self.desired, self.ebc)
        tick = self.ticks
        tick["time"].append(now)
        tick["ready"].append(ready)
        tick["stable"].append(math.nan if stable is None else stable)
        tick["panic"].append(math.nan if panic is None else panic)
        tick["desired"].append(self.desired)
        tick["in_panic"].append(self.autoscaler.in_panic)
        tick["excess_burst_capacity"].append(self.ebc)
        self.reconcile()

    def reconcile(self) -> None:
        """The PodAutoscaler reconciler: replicas, the Active condition, the SKS mode."""
        now = self.env.now
        result = reconcile(self.settings, self.status, self.desired, self.ebc,
                           len(self.ready), self.replicas, now)
        if result.replicas is not None:
            self.set_replicas(result.replicas)
        self.status = result.status
        self.serve = result.status.mode == "Serve"
        self.reconciles.append(record(now, self.desired, result))
        if result.recheck_after is not None:
            if self._recheck is not None:
                self._recheck.cancel()
            self._recheck = self.clock.call_later(result.recheck_after, self.reconcile)

    def _note_second(self, now: float) -> None:
        s = self.seconds
        s["time"].append(now)
        s["desired"].append(self.desired)
        s["replicas"].append(self.replicas)
        s["ready"].append(len(self.ready))
        s["in_panic"].append(bool(self.autoscaler and self.autoscaler.in_panic))
        s["activator_in_path"].append(not self.serve)


# --- the result -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class AutoscalingResult(SimResult):
    """What happened to one revision. Times in seconds from the start of the run.

    Per second (``timeline``, arrays of equal length, at t = 1, 2, ...): ``requests`` that
    arrived in that second, ``concurrency`` the revision-wide time-weighted concurrency the
    autoscaler recorded for it (pods and activator; the activator's immediate stat for a
    request at zero pods is recorded too, but not shown here), ``desired`` (the decider's pod count, -1 before its first
    decision), ``replicas`` (the Deployment's), ``ready`` pods, ``in_panic`` and
    ``activator_in_path`` (1/0). Per decider tick (``ticks``, every 2 s plus pokes): ``time``,
    ``ready`` pods the decision saw, ``stable`` and ``panic`` averages (NaN without data),
    ``desired``, ``in_panic``, ``excess_burst_capacity``.

    Per served request (arrays, in completion order): ``arrival``, ``latency`` (arrival to
    response), ``queue_delay`` (arrival to the start of service: waiting in the activator, for
    a cold start, or in a queue-proxy) and ``cold`` (it arrived when no pod was ready).

    What the autoscaler was given and did: ``metric_records`` (arrays ``time``, ``concurrency``,
    ``rps``: every stat recorded into its windows, the pods' and the activator's each second
    and the activator's immediate stat) and ``reconciles`` (one
    `labkit.serving.reconcile.ReconcileRecord` per PA reconcile), the same log the live
    `labkit.serving.autoscaler_loop.AutoscalerLoop` keeps.
    """

    settings: RevisionAutoscaling
    spec: DeciderSpec | None
    container_concurrency: int
    duration: float
    seed: int | None
    workload: str
    requests: int
    served: int
    rejected: int
    timed_out: int
    cold_starts: int
    pods_started: int
    pod_seconds: float
    timeline: dict[str, np.ndarray] = field(repr=False)
    ticks: dict[str, np.ndarray] = field(repr=False)
    arrival: np.ndarray = field(repr=False)
    latency: np.ndarray = field(repr=False)
    queue_delay: np.ndarray = field(repr=False)
    cold: np.ndarray = field(repr=False)
    startup_times: np.ndarray = field(repr=False)
    prices: Prices = field(default_factory=Prices, repr=False)
    metric_records: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    reconciles: list[ReconcileRecord] = field(default_factory=list, repr=False)
    hpa_decisions: list[HPADecision] = field(default_factory=list, repr=False)
    """HPA class: every sync of Kubernetes' HPA (`labkit.serving.hpa_sync.HPADecision`); `spec`
    is then None (no KPA decider) and ``ticks`` stay empty."""
    hpa_cpu_seconds: list[dict[str, float]] = field(default_factory=list, repr=False)
    """HPA class: at each sync, the CPU seconds each ready pod ("pod-N", the N-th started)
    had used so far: what the HPA's metrics were computed from."""

    @property
    def requests_cold(self) -> int:
        """Served requests that arrived when no pod was ready and waited for one to start."""
        return int(self.cold.sum())

    @property
    def panic_periods(self) -> list[tuple[float, float]]:
        """(start, end) of each stretch of seconds the decider spent in panic mode."""
        time, flags = self.timeline["time"], self.timeline["in_panic"]
        periods: list[tuple[float, float]] = []
        start: float | None = None
        for t, flag in zip(time.tolist(), flags.tolist()):
            if flag and start is None:
                start = t - 1.0
            elif not flag and start is not None:
                periods.append((start, t - 1.0))
                start = None
        if start is not None:
            periods.append((start, float(time[-1])))
        return periods

    @property
    def mean_ready_pods(self) -> float:
        return float(self.timeline["ready"].mean()) if self.timeline["ready"].size else 0.0

    @property
    def max_ready_pods(self) -> int:
        return int(self.timeline["ready"].max()) if self.timeline["ready"].size else 0

    @property
    def cost(self) -> float:
        """Dollars for the pod-seconds of this run, each pod priced as an always-on instance."""
        return self.pod_seconds / 3600.0 * self.prices.always_on_hourly

    @property
    def monthly_cost(self) -> float:
        """`cost` scaled from the run's duration to a month."""
        return self.cost * SECONDS_PER_MONTH / self.duration

    def latency_percentile(self, q: float) -> float:
        """The q-th percentile of the served requests' latency (NaN if none was served)."""
        return percentile(self.latency, q)

    def queue_delay_percentile(self, q: float) -> float:
        """The q-th percentile of the served requests' queueing delay."""
        return percentile(self.queue_delay, q)

    def summary(self) -> dict[str, Scalar]:
        """Scalar results as a plain dict (tables, JSON)."""
        out: dict[str, Scalar] = {
            "requests": self.requests, "served": self.served, "rejected": self.rejected,
            "timed_out": self.timed_out, "cold_starts": self.cold_starts,
            "requests_cold": self.requests_cold, "pods_started": self.pods_started,
            "max_ready_pods": self.max_ready_pods, "mean_ready_pods": self.mean_ready_pods,
            "panic_seconds": float(self.timeline["in_panic"].sum()),
            "pod_seconds": self.pod_seconds, "cost": self.cost, "monthly_cost": self.monthly_cost,
        }
        for q in (50, 95, 99):
            out[f"latency_p{q}"] = self.latency_percentile(q)
            out[f"queue_delay_p{q}"] = self.queue_delay_percentile(q)
        return out


# --- entry points ---------------------------------------------------------------------------

def _check_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    anns = dict(annotations or {})
    for key, value in anns.items():
        if not isinstance(value, str):
            raise TypeError(f"annotations[{key!r}]: annotation values are strings, got "
                            f"{value!r} (quote it in YAML: \"{value}\")")
    return anns


def _zeros() -> Iterator[np.ndarray]:
    while True:
        yield np.zeros(1024)


def _draws(rng: np.random.Generator, distribution: str, mean: float, cv: float, name: str) -> _Draws:
    if distribution not in SERVICE_DISTRIBUTIONS:
        raise ValueError(f"{name}_distribution must be one of {SERVICE_DISTRIBUTIONS}, got {distribution!r}")
    if mean == 0:
        return _Draws(_zeros())
    return _Draws(_service_sampler(rng, distribution, mean, cv))


def simulate_autoscaling(
    workload: Workload,
    annotations: Mapping[str, str] | None = None,
    *,
    duration: float = 3600.0,
    seed: int | None = 1,
    container_concurrency: int = 0,
    config: AutoscalerConfig | None = None,
    service_time: float = 0.2,
    service_distribution: str = "exponential",
    service_cv: float = 1.0,
    pod_parallelism: int | None = None,
    cold_start: float = 2.0,
    cold_start_distribution: str = "lognormal",
    cold_start_cv: float = 0.3,
    timeout: float = 300.0,
    initially_ready: bool = True,
    prices: Prices | None = None,
    cpu_request: float = 1.0,
    cpu_per_request: float = 1.0,
    hpa_sync_seconds: float = HPA_SYNC_SECONDS,
) -> AutoscalingResult:
    """Simulate one revision scaled by the KPA (or, with the HPA class, by Kubernetes' HPA on
    CPU) for `duration` seconds.

    workload: the arrivals (Poisson, Bursty, Diurnal, TraceReplay, or `burst_workload`).
    annotations: the revision's ``autoscaling.knative.dev/*`` annotations, exactly as in a
        Knative Service's ``spec.template.metadata.annotations`` (string values); invalid
        ones raise `labkit.serving.autoscaler_config.AnnotationError` naming the key.
    container_concurrency: ``spec.template.spec.containerConcurrency`` (0 = unlimited).
    config: the cluster's ``config-autoscaler`` (grace period, scale rates, ...).
    service_time, service_distribution, service_cv: the app's time per request (mean, s).
    pod_parallelism: requests the app serves at once when ``containerConcurrency`` is 0
        (None: unlimited, e.g. an endpoint that sleeps); more wait inside the pod.
    cold_start, cold_start_distribution, cold_start_cv: a new pod's start-up time (mean, s).
    timeout: the revision's ``timeoutSeconds``: how long the activator holds a request.
    initially_ready: the revision's initial-scale pods are ready at t = 0 (a revision that
        was deployed before the run; its decider, like Knative's, starts in panic if created
        with more than one pod); False: they start at t = 0, like a fresh deployment.
    seed: an int; the same seed gives the same run. prices: to price the pod-seconds.
    cpu_request, cpu_per_request, hpa_sync_seconds: HPA class only
        (``autoscaling.knative.dev/class: hpa.autoscaling.knative.dev``): the container's
        ``resources.requests.cpu`` in cores, the cores one request in service keeps busy
        (1.0: a CPU-bound request; use `pod_parallelism` for the app's threads), and the HPA
        sync period. Utilisation is CPU used over CPU requested, against the ``target``
        annotation (percent, default 80).
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a labkit.sim.workloads.Workload, got {type(workload).__name__}")
    settings = RevisionAutoscaling.resolve(_check_annotations(annotations), config,
                                           container_concurrency=container_concurrency)
    hpa = None
    if settings.autoscaler_class == HPA_CLASS:
        hpa = _HPAModel(knative_hpa_spec(settings, _check_annotations(annotations)),
                        request_millis=round(check_range("cpu_request", cpu_request, 0, closed="neither") * 1000),
                        cpu_per_request=check_range("cpu_per_request", cpu_per_request, 0, closed="neither"),
                        sync_seconds=check_range("hpa_sync_seconds", hpa_sync_seconds, 0, closed="neither"))
    duration = check_range("duration", duration, 0, closed="neither")
    service_time = check_range("service_time", service_time, 0, closed="neither")
    cold_start = check_range("cold_start", cold_start, 0, closed="left")
    timeout = check_range("timeout", timeout, 0, closed="neither")
    if pod_parallelism is not None:
        pod_parallelism = check_range("pod_parallelism", pod_parallelism, 1, integer=True)
    recorded_seed = check_seed(seed) if seed is not None else int(as_generator(None).integers(2**63))
    arrival_rng, service_rng, startup_rng, route_rng = (
        np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(recorded_seed).spawn(4))

    env = simpy.Environment()
    revision = _Revision(
        env, settings, container_concurrency, pod_parallelism,
        service=_draws(service_rng, service_distribution, service_time, service_cv, "service"),
        startup=_draws(startup_rng, cold_start_distribution, cold_start, cold_start_cv, "cold_start"),
        route=random.Random(int(route_rng.integers(2**63))),
        timeout=timeout, initially_ready=initially_ready, hpa=hpa,
    )
    env.process(revision.traffic(workload.arrival_chunks(arrival_rng, duration)))
    env.process(revision.autoscaler_loop())
    if hpa is not None:
        env.process(revision.hpa_loop(hpa))
    env.process(revision.activator_timeouts())
    env.run(until=duration)
    while env.peek() == duration:  # the scrape and decision at t = duration belong to the run
        env.step()

    pod_seconds = revision.alive.integral(duration)
    served = len(revision.latency)
    return AutoscalingResult(
        settings=settings,
        spec=revision.spec,
        container_concurrency=container_concurrency,
        duration=duration,
        seed=recorded_seed,
        workload=repr(workload),
        requests=revision.requests,
        served=served,
        rejected=revision.rejected,
        timed_out=revision.timed_out,
        cold_starts=revision.cold_starts,
        pods_started=revision.pods_started,
        pod_seconds=pod_seconds,
        timeline={k: np.frombuffer(v, dtype=float).copy() for k, v in revision.seconds.items()},
        ticks={k: np.frombuffer(v, dtype=float).copy() for k, v in revision.ticks.items()},
        arrival=np.frombuffer(revision.arrival, dtype=float).copy(),
        latency=np.frombuffer(revision.latency, dtype=float).copy(),
        queue_delay=np.frombuffer(revision.queue_delay, dtype=float).copy(),
        cold=np.frombuffer(revision.cold, dtype=np.int8).astype(bool),
        startup_times=np.frombuffer(revision.startup_times, dtype=float).copy(),
        prices=prices or Prices(),
        metric_records={k: np.frombuffer(v, dtype=float).copy() for k, v in revision.records.items()},
        reconciles=revision.reconciles,
        hpa_decisions=hpa.decisions if hpa else [],
        hpa_cpu_seconds=hpa.cpu_seconds if hpa else [],
    )


def burst_workload(base_rate: float, burst_rate: float, burst_start: float, burst_duration: float,
                   horizon: float, seed: int = 1) -> TraceReplay:
    """Poisson traffic at `base_rate` with one burst at `burst_rate` (req/s) from `burst_start`
    for `burst_duration` seconds: the scenario of "a burst hits a quiet revision".

    Drawn once from `seed` and replayed, so every run (and every setting compared) sees the
    very same requests.
    """
    base_rate = check_range("base_rate", base_rate, 0, closed="left")
    burst_rate = check_range("burst_rate", burst_rate, 0, closed="left")
    burst_start = check_range("burst_start", burst_start, 0, closed="left")
    burst_duration = check_range("burst_duration", burst_duration, 0, closed="left")
    horizon = check_range("horizon", horizon, 0, closed="neither")
    if burst_start + burst_duration > horizon:
        raise ValueError(f"the burst ({burst_start:g} s + {burst_duration:g} s) must end within the horizon "
                         f"({horizon:g} s)")
    rng = np.random.default_rng(check_seed(seed))
    base = np.sort(rng.uniform(0.0, horizon, rng.poisson(base_rate * horizon)))
    burst = burst_start + np.sort(rng.uniform(0.0, burst_duration, rng.poisson(burst_rate * burst_duration)))
    times = np.sort(np.concatenate([base, burst]))
    if times.size == 0:
        raise ValueError("burst_workload: no request at all; raise a rate")
    return TraceReplay(times, duration=horizon)


def clients_workload(clients: int, request_seconds: float, start: float, seconds: float,
                     horizon: float) -> TraceReplay:
    """`clients` concurrent clients that each send a request, wait `request_seconds` for its
    answer and send the next, from `start` for `seconds`: a load test's ``-c clients``.

    The simulator's arrivals do not wait for answers, so this is the schedule such clients
    keep while no request waits (no cold start, no queue): concurrency `clients`, exactly what
    a live run against a warm revision with ``containerConcurrency`` 0 sees.
    """
    clients = check_range("clients", clients, 1, integer=True)
    request_seconds = check_range("request_seconds", request_seconds, 0, closed="neither")
    start = check_range("start", start, 0, closed="left")
    seconds = check_range("seconds", seconds, 0, closed="neither")
    horizon = check_range("horizon", horizon, 0, closed="neither")
    if start + seconds >= horizon:
        raise ValueError(f"the clients ({start:g} s + {seconds:g} s) must stop before the horizon ({horizon:g} s)")
    rounds = start + np.arange(0.0, seconds, request_seconds)
    return TraceReplay(np.repeat(rounds, clients), duration=horizon)
