"""A serverless platform simulator: cold starts, keep-alive, scale to zero, concurrency, cost.

Model (SimFaaS semantics, Mahmoudi & Khazaei, PyPI ``simfaas`` 0.2.2, ``ServerlessSimulator``)
------------------------------------------------------------------------------------------
* Each instance serves one request at a time (``concurrency=1``).
* A request that finds an idle instance is *warm*: it is served by the **newest** idle
  instance (largest creation time, as SimFaaS's ``schedule_warm_instance``), taking a warm
  service time. Otherwise it is *cold*: a new instance is created and the request takes a cold
  service time, which includes the start-up (SimFaaS's ``cold_service_time``).
* A request is rejected when no instance is idle and ``maximum_concurrency`` instances are
  running (SimFaaS checks ``running_count == maximum_concurrency``; with one request per
  instance this is the same condition).
* An idle instance expires ``expiration_threshold`` seconds after its last request *ended*.
* Events at the same instant: a departure or expiration is handled before an arrival (so a
  request ending as another arrives frees its instance for it; a keep-alive ending as a
  request arrives has expired). This matters for traces and deterministic service times.
* Service times are exponential with the given means, unless another distribution is chosen.
* ``cold_start_probability`` = cold requests / all requests, rejected ones included;
  ``rejection_probability`` = rejected / all requests.
* ``avg_server_count``, ``avg_running_count`` and ``avg_idle_count`` are time averages of the
  instance counts (integral over the run / its length).

labkit extensions
-----------------
* ``concurrency > 1``: an instance serves up to that many requests at once. A request goes to
  the newest instance with a free slot. A starting instance takes no other request until its
  cold request ends (so a burst during a cold start causes more cold starts, as on a platform
  without a request buffer). ``maximum_concurrency`` still caps the number of instances.
* ``min_instances``: a warm pool created idle at t = 0; the platform never lets idle
  instances expire below that count.
* ``workload=``: any :class:`~labkit.sim.workloads.Workload` instead of Poisson arrivals.
* ``service_distribution``: ``"exponential"`` (default), ``"deterministic"`` or
  ``"lognormal"`` (with coefficient of variation ``service_cv``).
* ``memory_mb`` and :mod:`labkit.sim.cost` price a run.

Where labkit deliberately differs from SimFaaS
----------------------------------------------
* Horizon: SimFaaS processes events until the first one at or after ``max_time`` and divides
  time integrals by that event's time; labkit stops exactly at ``max_time`` and divides by
  ``max_time``. The difference is one event out of the whole run.
* Randomness: SimFaaS draws everything from numpy's global RNG one sample at a time; labkit
  draws arrivals, warm and cold service times from three independent streams spawned from
  ``seed`` (in numpy chunks). The same seed therefore gives the same arrivals and service
  times whatever the keep-alive, which makes comparisons between settings sharper (common
  random numbers). Results agree with SimFaaS in distribution, not sample by sample.
* Response-time percentiles are computed from at most ``response_time_samples`` warm and as
  many cold service times, weighted by the warm and cold counts, with labkit's one percentile
  (`labkit.stats.percentiles`: numpy's linear interpolation, frequency-weighted; SimFaaS
  reports none). Service times do not depend
  on the platform's state, so this is exact up to that many requests and an unbiased sample
  beyond, while memory stays bounded on 1e6-second runs.

Engine choice
-------------
The hot loop is a plain event loop over a ``heapq`` of (time, code) pairs, not simpy. Measured
on the development machine, the bare skeleton of this model (Poisson arrivals, each
scheduling its departure) runs about 0.47 M requests per second on a ``simpy.Environment``
driven by callbacks and about 2.6 M on a heap: simpy's event objects and callback dispatch
alone would use most of the time budget, the full model would fall short of the 5x-SimFaaS
target, and no part of the model reads better as a simpy process. Each request costs
O(log n): one push/pop for its departure, plus occasional expiration checks. The next arrival
is kept out of the heap (arrivals come pre-sorted from the workload, in numpy chunks).
Idle instances are found without scanning: a heap keyed by each instance's creation order
(negated, so the top is the newest instance) holds the instances with a free slot; expired
instances are skipped lazily when they reach the top, and their storage is reused. Each instance has at most one
pending expiration check; when it fires for an instance that has served since, it is pushed
again to the new due time. Time integrals are kept per transition, not per event (see
:func:`_run`), and the garbage collector is paused during the loop, which allocates no cycles.
"""

from __future__ import annotations

import gc
import math
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from heapq import heapify, heappop, heappush
from typing import Any

import numpy as np

from labkit.params import check_range, check_seed
from labkit.sim.cost import Prices, serverless_monthly_cost
from labkit.sim.results import Scalar, SimResult
from labkit.sim.workloads import Poisson, Workload, as_generator
from labkit.stats import percentiles

__all__ = ["SERVICE_DISTRIBUTIONS", "PlatformResult", "simulate_platform"]

SERVICE_DISTRIBUTIONS = ("exponential", "deterministic", "lognormal")

#: Service times are drawn this many at a time.
_DRAW_CHUNK = 1 << 14
#: Low bits of an instance's heap key hold its slot; the high bits its creation order.
_SLOT_BITS = 32
#: The heap of instances with a free slot is rebuilt when more than this many of its entries,
#: and more than half, belong to expired instances (long-lived newer instances can keep
#: stale entries of older ones from ever reaching the top).
_COMPACT_MIN = 64


@dataclass(frozen=True, eq=False)
class PlatformResult(SimResult):
    """Outcome of :func:`simulate_platform`. Times in seconds, counts are totals over the run.

    ``utilization`` is the time-averaged number of requests in service divided by the
    time-averaged serving capacity (``concurrency * avg_server_count``); with one request per
    instance it is ``avg_running_count / avg_server_count``: the share of paid-for instance
    time that does work. ``busy_instance_seconds`` is the instance time spent with at least
    one request in service (what pay-per-use bills). The timeline arrays sample the instance
    counts (a step function) at the ``timeline_points`` evenly spaced instants
    ``timeline_time``, so memory stays bounded however long the run.
    """

    # parameters
    arrival_rate: float
    warm_service_time: float
    cold_service_time: float
    expiration_threshold: float
    max_time: float
    seed: int | None
    maximum_concurrency: int
    concurrency: int
    min_instances: int
    service_distribution: str
    memory_mb: float
    workload: str
    # counts
    requests: int
    cold_starts: int
    warm_starts: int
    rejections: int
    instances_created: int
    instances_expired: int
    # per-request probabilities
    cold_start_probability: float
    rejection_probability: float
    # time averages
    avg_server_count: float
    avg_running_count: float
    avg_idle_count: float
    avg_in_flight: float
    utilization: float
    busy_instance_seconds: float
    avg_instance_lifespan: float
    # response time = service time; cold requests include the cold start
    response_time_mean: float
    response_time_p50: float
    response_time_p95: float
    response_time_p99: float
    # instance counts sampled at evenly spaced instants
    timeline_time: np.ndarray = field(repr=False)
    timeline_servers: np.ndarray = field(repr=False)
    timeline_running: np.ndarray = field(repr=False)
    timeline_idle: np.ndarray = field(repr=False)
    prices: Prices = field(default_factory=Prices, repr=False)

    @property
    def monthly_cost(self) -> float:
        """Pay-per-use cost of this run scaled to a month, with :attr:`prices`."""
        return serverless_monthly_cost(self, self.prices)

    def summary(self) -> dict[str, Scalar]:
        """The scalar results as a plain dict (for tables, JSON and pandas)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("timeline")}
        del out["prices"]
        out["monthly_cost"] = self.monthly_cost
        return out


def _service_sampler(rng: np.random.Generator, distribution: str, mean: float, cv: float) -> Iterator[np.ndarray]:
    """Yield chunks of service times with the given mean."""
    if distribution == "lognormal":
        sigma = math.sqrt(math.log1p(cv * cv))
        mu = math.log(mean) - sigma * sigma / 2
    while True:
        if distribution == "exponential":
            yield rng.exponential(mean, _DRAW_CHUNK)
        elif distribution == "deterministic":
            yield np.full(_DRAW_CHUNK, mean)
        else:
            yield rng.lognormal(mu, sigma, _DRAW_CHUNK)


class _Draws:
    """Service times handed out one at a time, with the first ``keep`` retained for percentiles."""

    def __init__(self, chunks: Iterator[np.ndarray], keep: int) -> None:
        self._chunks = chunks
        self._keep = keep
        self.kept: list[np.ndarray] = []
        self._kept_n = 0

    def next_chunk(self) -> list[float]:
        chunk = next(self._chunks)
        if self._kept_n < self._keep:
            self.kept.append(chunk)
            self._kept_n += chunk.size
        return chunk.tolist()

    def used(self, n: int) -> np.ndarray:
        """The first ``min(n, keep)`` values handed out."""
        if not self.kept:
            return np.empty(0)
        return np.concatenate(self.kept)[: min(n, self._keep)]


def _next_arrivals(chunks: Iterator[np.ndarray]) -> list[float]:
    """The next non-empty chunk of arrival times as a list; empty when the workload is done."""
    for chunk in chunks:
        if chunk.size:
            return chunk.tolist()
    return []


def _mixture_percentiles(groups: list[tuple[np.ndarray, int]], qs: tuple[float, ...]) -> list[float]:
    """Percentiles of the warm and cold times together, each kept sample standing for
    ``group_count / group_size`` requests (groups are subsampled separately beyond
    ``response_time_samples``, so the rarer cold times keep their true share)."""
    kept = [(v, n) for v, n in groups if v.size and n]
    values = np.concatenate([v for v, _ in kept]) if kept else np.empty(0)
    weights = np.concatenate([np.full(v.size, n / v.size) for v, n in kept]) if kept else np.empty(0)
    return percentiles(values, qs, weights).tolist()


def simulate_platform(
    arrival_rate: float | None = None,
    warm_service_time: float = 1.991,
    cold_service_time: float = 2.244,
    expiration_threshold: float = 600.0,
    max_time: float = 86400.0,
    seed: int | np.random.Generator | random.Random | None = 1,
    maximum_concurrency: int = 1000,
    *,
    workload: Workload | None = None,
    concurrency: int = 1,
    min_instances: int = 0,
    service_distribution: str = "exponential",
    service_cv: float = 1.0,
    memory_mb: float = 128.0,
    prices: Prices | None = None,
    timeline_points: int = 500,
    response_time_samples: int = 1_000_000,
    progress: bool = False,
) -> PlatformResult:
    """Simulate a serverless function platform for ``max_time`` seconds; see the module doc.

    arrival_rate: Poisson arrivals in requests/s; or give ``workload=`` instead.
    warm_service_time, cold_service_time: mean service times in seconds; a cold one includes
        the start-up (defaults: the SimFaaS README's 1.991 s and 2.244 s).
    expiration_threshold: keep-alive in seconds after a request ends; ``math.inf`` never
        scales to zero.
    max_time: simulated seconds. seed: an int (default 1, as every simulator), or a
        numpy/random generator; ``None`` draws a fresh seed and records it in ``result.seed``
        so any run can be repeated.
    maximum_concurrency: most instances at once; a request that would need more is rejected.
    workload: a :class:`~labkit.sim.workloads.Workload` (Poisson, Bursty, Diurnal,
        TraceReplay). concurrency: requests one instance serves at once. min_instances: warm
        pool that never expires.
    service_distribution: ``"exponential"``, ``"deterministic"`` or ``"lognormal"``
        (coefficient of variation ``service_cv``).
    memory_mb, prices: what the run costs (``result.monthly_cost``).
    timeline_points: how many instants the instance-count timeline samples.
    response_time_samples: at most this many warm (and cold) service times are kept for the
        percentiles. progress: show a ``tqdm.auto`` bar (a widget in Jupyter).
    """
    if workload is None:
        if arrival_rate is None:
            raise ValueError("give arrival_rate (req/s) or workload=")
        workload = Poisson(check_range("arrival_rate", arrival_rate, 0, closed="neither"))
    elif arrival_rate is not None:
        raise ValueError("give arrival_rate or workload=, not both")
    elif not isinstance(workload, Workload):
        raise TypeError(f"workload must be a labkit.sim.workloads.Workload, got {type(workload).__name__}")
    warm_service_time = check_range("warm_service_time", warm_service_time, 0, closed="neither")
    cold_service_time = check_range("cold_service_time", cold_service_time, 0, closed="neither")
    if cold_service_time < warm_service_time:
        raise ValueError(
            f"cold_service_time ({cold_service_time}) must be >= warm_service_time ({warm_service_time}): "
            "a cold request includes the start-up"
        )
    threshold = check_range("expiration_threshold", expiration_threshold, 0)
    max_time = check_range("max_time", max_time, 0, closed="neither")
    max_instances = check_range("maximum_concurrency", maximum_concurrency, 1, integer=True)
    capacity = check_range("concurrency", concurrency, 1, integer=True)
    min_instances = check_range("min_instances", min_instances, 0, integer=True)
    if min_instances > max_instances:
        raise ValueError(f"min_instances ({min_instances}) exceeds maximum_concurrency ({max_instances})")
    if service_distribution not in SERVICE_DISTRIBUTIONS:
        raise ValueError(f"service_distribution must be one of {SERVICE_DISTRIBUTIONS}, got {service_distribution!r}")
    service_cv = check_range("service_cv", service_cv, 0, closed="neither")
    memory_mb = check_range("memory_mb", memory_mb, 0, closed="neither")
    timeline_points = check_range("timeline_points", timeline_points, 1, integer=True)
    response_time_samples = check_range("response_time_samples", response_time_samples, 1, integer=True)
    prices = prices if prices is not None else Prices()

    if isinstance(seed, (np.random.Generator, random.Random)):
        recorded_seed = None
        root = np.random.SeedSequence(int(as_generator(seed).integers(2**63)))
    else:
        recorded_seed = secrets.randbits(64) if seed is None else check_seed(seed)
        root = np.random.SeedSequence(recorded_seed)
    arrival_rng, warm_rng, cold_rng = (np.random.Generator(np.random.PCG64(s)) for s in root.spawn(3))
    warm = _Draws(
        _service_sampler(warm_rng, service_distribution, warm_service_time, service_cv), response_time_samples
    )
    cold = _Draws(
        _service_sampler(cold_rng, service_distribution, cold_service_time, service_cv), response_time_samples
    )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=round(max_time), unit="sim s", desc="simulate_platform")
    was_enabled = gc.isenabled()
    gc.disable()  # the loop makes no reference cycles; collector passes only cost time
    try:
        tally = _run(
            workload.arrival_chunks(arrival_rng, max_time),
            warm,
            cold,
            max_time=max_time,
            threshold=threshold,
            capacity=capacity,
            max_instances=max_instances,
            min_instances=min_instances,
            timeline_points=timeline_points,
            bar=bar,
        )
    finally:
        if was_enabled:
            gc.enable()
        if bar is not None:
            bar.close()

    warm_used = warm.used(tally.warm)
    cold_used = cold.used(tally.cold)
    p50, p95, p99 = _mixture_percentiles([(warm_used, tally.warm), (cold_used, tally.cold)], (50, 95, 99))
    served = tally.warm + tally.cold
    mean_rt = math.nan
    if served:
        mean_rt = float(sum(v.mean() * n for v, n in ((warm_used, tally.warm), (cold_used, tally.cold)) if n) / served)
    avg_servers = tally.area_servers / max_time
    avg_running = tally.area_running / max_time
    avg_in_flight = tally.area_in_flight / max_time
    samples = np.array(tally.samples, dtype=float).reshape(-1, 3)
    requests = tally.requests
    return PlatformResult(
        arrival_rate=workload.mean_rate,
        warm_service_time=warm_service_time,
        cold_service_time=cold_service_time,
        expiration_threshold=threshold,
        max_time=max_time,
        seed=recorded_seed,
        maximum_concurrency=max_instances,
        concurrency=capacity,
        min_instances=min_instances,
        service_distribution=service_distribution,
        memory_mb=memory_mb,
        workload=repr(workload),
        requests=requests,
        cold_starts=tally.cold,
        warm_starts=tally.warm,
        rejections=tally.rejected,
        instances_created=tally.created,
        instances_expired=tally.expired,
        cold_start_probability=tally.cold / requests if requests else 0.0,
        rejection_probability=tally.rejected / requests if requests else 0.0,
        avg_server_count=avg_servers,
        avg_running_count=avg_running,
        avg_idle_count=max(0.0, avg_servers - avg_running),  # clamp float rounding
        avg_in_flight=avg_in_flight,
        utilization=min(1.0, avg_in_flight / (capacity * avg_servers)) if avg_servers else 0.0,
        busy_instance_seconds=tally.area_running,
        avg_instance_lifespan=tally.lifespan_sum / tally.expired if tally.expired else math.nan,
        response_time_mean=mean_rt,
        response_time_p50=p50,
        response_time_p95=p95,
        response_time_p99=p99,
        timeline_time=np.arange(timeline_points) * (max_time / timeline_points),
        timeline_servers=samples[:, 0],
        timeline_running=samples[:, 1],
        timeline_idle=samples[:, 2],
        prices=prices,
    )


@dataclass
class _Tally:
    """Raw totals of one run, before they become a :class:`PlatformResult`."""

    requests: int
    cold: int
    warm: int
    rejected: int
    created: int
    expired: int
    lifespan_sum: float
    area_servers: float
    area_running: float
    area_in_flight: float
    samples: list[tuple[int, int, int]]


def _run(
    arrivals: Iterator[np.ndarray],
    warm: _Draws,
    cold: _Draws,
    *,
    max_time: float,
    threshold: float,
    capacity: int,
    max_instances: int,
    min_instances: int,
    timeline_points: int,
    bar: Any,
) -> _Tally:
    """The event loop. Written for speed: locals only, no per-event allocation but the heap
    tuples, and time integrals kept per transition instead of per event:

    * instance count: only creations and expirations change it, so its integral is updated
      there;
    * running count: each instance adds the length of its busy periods when it goes idle;
    * requests in service: the sum of accepted service times, less what runs past the end.
    """
    # Per-instance state lives in slots; an expired instance's slot is reused, so memory
    # follows the peak instance count, not the number of instances ever created (which a
    # keep-alive of 0 makes as large as the number of requests).
    key: list[int] = []  # (creation order << _SLOT_BITS) | slot, or -1 for a spare slot
    created: list[float] = []
    load: list[int] = []  # requests in service
    listed: list[bool] = []  # has an entry in `free`
    busy_since: list[float] = []  # start of its current busy period
    last_end: list[float] = []  # end of its last request
    exp_pending: list[bool] = []  # has an expiration check in `events`
    spare: list[int] = []  # slots of expired instances
    # heap of -key: instances with a free slot, newest first; entries of expired instances
    # no longer match their slot's key and are dropped when they reach the top
    free: list[int] = []
    events: list[tuple[float, int]] = []  # (time, 2*slot) departure, (time, 2*slot+1) expiration check
    mask = (1 << _SLOT_BITS) - 1

    for i in range(min_instances):
        key.append(i << _SLOT_BITS | i)
        created.append(0.0)
        load.append(0)
        listed.append(True)
        busy_since.append(0.0)
        last_end.append(0.0)
        exp_pending.append(False)  # the pool gets an expiration check once it has served
        heappush(free, -key[i])
    instances = servers = idle = min_instances
    stale = 0
    running = 0
    requests = cold_count = warm_count = rejected = expired = 0
    lifespan_sum = busy_area = work = area_servers = 0.0
    servers_since = 0.0

    step = max_time / timeline_points
    samples: list[tuple[int, int, int]] = []
    grid_next = 0.0

    chunk = _DRAW_CHUNK
    warm_buf = warm.next_chunk()
    cold_buf = cold.next_chunk()
    wi = ci = 0
    arr_buf = _next_arrivals(arrivals)
    na = len(arr_buf)
    next_arrival = arr_buf[0] if na else math.inf
    ai = 1

    while True:
        # on a tie the departure or expiration goes first, as in SimFaaS: a request ending at
        # the instant another arrives frees its instance for it
        if events and events[0][0] <= next_arrival:
            t, code = heappop(events)
            if t >= max_time:
                heappush(events, (t, code))
                break
            while t >= grid_next and len(samples) < timeline_points:
                samples.append((servers, running, idle))
                grid_next = len(samples) * step
            i = code >> 1
            if code & 1 == 0:  # departure
                n = load[i] - 1
                load[i] = n
                if not listed[i]:
                    heappush(free, -key[i])
                    listed[i] = True
                if n == 0:
                    running -= 1
                    idle += 1
                    busy_area += t - busy_since[i]
                    last_end[i] = t
                    if not exp_pending[i]:
                        heappush(events, (t + threshold, code + 1))
                        exp_pending[i] = True
            else:  # expiration check
                exp_pending[i] = False
                if load[i] == 0:
                    due = last_end[i] + threshold
                    if due > t:
                        heappush(events, (due, code))
                        exp_pending[i] = True
                    elif servers > min_instances:
                        key[i] = -1
                        listed[i] = False
                        spare.append(i)
                        stale += 1  # its entry in `free` is now stale
                        if stale > _COMPACT_MIN and 2 * stale > len(free):
                            free = [e for e in free if key[-e & mask] == -e]
                            heapify(free)
                            stale = 0
                        area_servers += servers * (t - servers_since)
                        servers_since = t
                        servers -= 1
                        idle -= 1
                        expired += 1
                        lifespan_sum += t - created[i]
            continue

        t = next_arrival
        if t >= max_time:
            break
        while t >= grid_next and len(samples) < timeline_points:
            samples.append((servers, running, idle))
            grid_next = len(samples) * step
        if ai < na:
            next_arrival = arr_buf[ai]
            ai += 1
        else:
            arr_buf = _next_arrivals(arrivals)
            na = len(arr_buf)
            next_arrival = arr_buf[0] if na else math.inf
            ai = 1
            if bar is not None:
                bar.update(int(t) - bar.n)
        requests += 1
        while free:
            k = -free[0]
            i = k & mask
            if key[i] == k:
                break
            heappop(free)
            stale -= 1
        if free:
            n = load[i] + 1
            load[i] = n
            if n == 1:
                running += 1
                idle -= 1
                busy_since[i] = t
            if n == capacity:
                heappop(free)
                listed[i] = False
            if wi == chunk:
                warm_buf = warm.next_chunk()
                wi = 0
            s = warm_buf[wi]
            wi += 1
            warm_count += 1
        elif servers < max_instances:
            if spare:
                i = spare.pop()  # listed and exp_pending were cleared when it expired
                key[i] = instances << _SLOT_BITS | i
                created[i] = busy_since[i] = last_end[i] = t
                load[i] = 1
            else:
                i = len(load)
                key.append(instances << _SLOT_BITS | i)
                created.append(t)
                load.append(1)
                listed.append(False)  # a starting instance takes no other request
                busy_since.append(t)
                last_end.append(t)
                exp_pending.append(False)
            instances += 1
            area_servers += servers * (t - servers_since)
            servers_since = t
            servers += 1
            running += 1
            if ci == chunk:
                cold_buf = cold.next_chunk()
                ci = 0
            s = cold_buf[ci]
            ci += 1
            cold_count += 1
        else:
            rejected += 1
            continue
        work += s
        heappush(events, (t + s, 2 * i))

    # close the books at max_time
    while len(samples) < timeline_points:
        samples.append((servers, running, idle))
    area_servers += servers * (max_time - servers_since)
    busy_area += sum(max_time - since for since, n in zip(busy_since, load) if n)
    work -= sum(end - max_time for end, code in events if code & 1 == 0)
    if bar is not None:
        bar.update(bar.total - bar.n)
    return _Tally(
        requests=requests,
        cold=cold_count,
        warm=warm_count,
        rejected=rejected,
        created=instances,
        expired=expired,
        lifespan_sum=lifespan_sum,
        area_servers=area_servers,
        area_running=busy_area,
        area_in_flight=work,
        samples=samples,
    )
