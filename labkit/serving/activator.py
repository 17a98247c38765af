"""The activator: where requests wait while a revision scales from zero (or lacks burst room).

When a revision's serverless service is in Proxy mode (no ready pod, or excess burst capacity
below zero), the ingress sends its requests here instead of to the pods. For each revision the
activator keeps a throttler:

- capacity is ``containerConcurrency`` x ready pods (unlimited when CC = 0); a request takes a
  slot on a pod, or waits in a bounded queue (``queue_depth``, Knative's is 10 000) until a pod
  becomes ready or a slot frees;
- a request that finds the queue full is answered **503** at once; one still waiting for a pod
  when one of the revision's request limits fires (`labkit.serving.timeouts`, counted from its
  arrival here: ``timeoutSeconds``, or a shorter ``responseStartTimeoutSeconds`` or
  ``idleTimeoutSeconds``) gets **504** ``activator request timeout``, as from Knative's
  activator, whose timeout handler runs the queue-proxy's with that message (Knative's e2e
  ``TestActivatorRevisionTimeout``). Knative's timers keep running while the pod answers;
  labkit's stop once the request is on a pod and the pod's queue-proxy applies the limits from
  there, because the queue-proxy hands on a whole answer at its end, which would look to the
  activator like a silent stream;
- the first request for a revision since it was idle *pokes* the autoscaler: an immediate stat
  (one request), taken back from the next report, and a decision at once if the decider wants
  zero pods;
- pods are picked as Knative does (`labkit.serving.pod_pick.PodPicker`, shared with the
  simulator): CC = 0 the less busy of two at random, CC <= 3 the first with room, otherwise
  round robin; the request goes to the pod's queue-proxy with ``K-Proxy-Request: activator``
  so the pod does not count it a second time.

Each answer it forwards gets one more ``Server-Timing`` line, after what the pod sent:
``activator-wait;dur=`` is the time the request was buffered for a pod slot (a whole cold start
when the revision was at zero) and ``activator;dur=`` the rest of its time here, the call to the
pod excluded (milliseconds). A labkit addition, so a notebook sees the hop per request.

It reports its own per-revision concurrency and request rate each second (what the autoscaler
sees while the revision has no pods). As in Knative, one activator serves every revision of
the cluster (Knative runs it as one Deployment in knative-serving, replicated for capacity;
labkit runs one instance): it listens on its own port and finds the revision from the
``Knative-Serving-Namespace`` and ``Knative-Serving-Revision`` headers the ingress appends
(the KIngress splits' ``appendHeaders``). Its counts are kept per Service (`ActivatorView`).

Followed: knative/serving ``pkg/activator/net/throttler.go``, ``pkg/activator/handler``
(``concurrency_reporter.go`` for the immediate stat), per
/work/shared/reference/knative-revisions-traffic.md section 3 and knative-kpa.md section 6.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from labkit.core.loop import BackgroundLoop
from labkit.serving.constants import ACTIVATOR_QUEUE_DEPTH
from labkit.serving.pod_pick import PodPicker
from labkit.serving.queue_proxy import (
    PROXY_HEADER,
    SERVER_TIMING,
    HttpServer,
    LimitReached,
    Request,
    RequestStats,
    RequestWatch,
    Response,
    Stat,
    UpstreamPool,
    error_response,
    timing_entry,
)
from labkit.serving.revision import LiveRevision, ServingPod
from labkit.serving.timeouts import ACTIVATOR_TIMEOUT_BODY

__all__ = [
    "NAMESPACE_HEADER",
    "REVISION_HEADER",
    "Activator",
    "ActivatorView",
    "Throttler",
]

REVISION_HEADER = "Knative-Serving-Revision"
NAMESPACE_HEADER = "Knative-Serving-Namespace"


class Throttler:
    """Slots on one revision's ready pods, and the queue of requests waiting for one."""

    def __init__(self, revision: LiveRevision, queue_depth: int, rng: random.Random) -> None:
        self.revision = revision
        self.queue_depth = queue_depth
        self.waiting = 0
        self.in_flight: dict[str, int] = {}
        self.stats = RequestStats(time.monotonic())
        self.poke_credit = 0.0
        """The immediate stat sent for the first request, taken back from the next report."""
        self._picker = PodPicker(revision.container_concurrency, rng)
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Pods changed or a slot freed: let waiters look again (on the loop thread)."""
        self._changed.set()

    def _pick(self) -> ServingPod | None:
        pods = [p for p in self.revision.ready_pods() if p.proxy is not None]
        if not pods:
            return None
        i = self._picker.pick(len(pods), lambda i: self.in_flight.get(pods[i].name, 0))
        return None if i is None else pods[i]

    async def acquire(self) -> ServingPod:
        """A pod with a free slot, waiting as long as it takes (the caller bounds the wait);
        raises QueueFullError."""
        pod = self._pick()
        if pod is None:
            if self.waiting >= self.queue_depth:
                raise QueueFullError(f"activator queue full ({self.queue_depth} requests)")
            self.waiting += 1
            try:
                while pod is None:
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), 0.5)
                    except asyncio.TimeoutError:
                        pass  # look again: a pod may have become ready between events
                    pod = self._pick()
            finally:
                self.waiting -= 1
        self.in_flight[pod.name] = self.in_flight.get(pod.name, 0) + 1
        return pod

    def release(self, pod: ServingPod) -> None:
        self.in_flight[pod.name] -= 1
        if not self.in_flight[pod.name]:
            del self.in_flight[pod.name]
        self._changed.set()


class QueueFullError(Exception):
    pass


RevisionKey = tuple[str, str]
"""(namespace, revision name): how the activator tells revisions apart."""


class Activator:
    """Buffers and forwards requests for every revision of a cluster."""

    def __init__(
        self,
        loop: BackgroundLoop,
        find: Callable[[str, str], LiveRevision | None],
        poke: Callable[[str, str], None],
        *,
        queue_depth: int = ACTIVATOR_QUEUE_DEPTH,
        seed: int = 0,
    ) -> None:
        """`find(namespace, revision)` looks a revision up; `poke(namespace, revision)` wakes
        its autoscaler."""
        self._loop = loop
        self._find = find
        self._poke = poke
        self.queue_depth = queue_depth
        self._rng = random.Random(seed)
        self._throttlers: dict[RevisionKey, Throttler] = {}
        self._pools: dict[int, UpstreamPool] = {}
        self.forwarded: Counter[RevisionKey] = Counter()
        """Requests sent on to a pod, per (namespace, Service)."""
        self.rejected: Counter[RevisionKey] = Counter()
        """Requests answered 503 (queue full) or 504 (timed out waiting), per Service."""
        self._server = HttpServer(loop, self.handle)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> int:
        return self._server.start()

    def close(self) -> None:
        self._server.close()
        for pool in self._pools.values():
            pool.close()

    def throttler(self, revision: LiveRevision) -> Throttler:
        key = (revision.namespace, revision.name)
        throttler = self._throttlers.get(key)
        if throttler is None or throttler.revision is not revision:
            throttler = Throttler(revision, self.queue_depth, self._rng)
            self._throttlers[key] = throttler
        return throttler

    def forget(self, namespace: str, revision: str) -> None:
        """The revision is gone (its Service deleted, or garbage-collected)."""
        self._throttlers.pop((namespace, revision), None)

    def pods_changed(self, namespace: str, revision: str) -> None:
        """Thread-safe: wake the requests waiting for `revision`."""
        throttler = self._throttlers.get((namespace, revision))
        if throttler is not None and self._loop.running:
            self._loop.loop.call_soon_threadsafe(throttler.notify)

    def stats(self, namespace: str, revision: str, now: float) -> Stat | None:
        """The revision's stats for the last period, or None if it saw no request."""
        throttler = self._throttlers.get((namespace, revision))
        if throttler is None or throttler.stats.idle:
            return None
        stat = throttler.stats.report(now)
        credit, throttler.poke_credit = throttler.poke_credit, 0.0
        if credit:
            stat = stat._replace(concurrency=max(0.0, stat.concurrency - credit),
                                 rps=max(0.0, stat.rps - credit))
        return stat

    async def handle(self, request: Request) -> Response:
        name = request.header(REVISION_HEADER)
        namespace = request.header(NAMESPACE_HEADER)
        revision = self._find(namespace or "", name or "")
        if revision is None:
            return error_response(
                404, f"activator: no revision {name!r} in namespace {namespace!r} (the "
                f"headers {REVISION_HEADER} and {NAMESPACE_HEADER} name it)")
        service = (revision.namespace, revision.service)
        throttler = self.throttler(revision)
        arrived = time.monotonic()
        first = throttler.stats.idle  # Knative's reporter has no entry for the revision yet
        throttler.stats.arrive(arrived)
        try:
            if first:
                throttler.poke_credit = 1.0
                self._poke(revision.namespace, revision.name)
            watch = RequestWatch(revision.spec.timeouts, arrived, time.monotonic)
            try:
                pod = await watch.within(throttler.acquire())
            except QueueFullError as exc:
                self.rejected[service] += 1
                return error_response(503, f"overload: {exc}")
            except LimitReached as cut:
                self.rejected[service] += 1
                return watch.answer(cut.deadline, ACTIVATOR_TIMEOUT_BODY)
            acquired = time.monotonic()
            try:
                assert pod.proxy is not None
                pool = self._pools.get(pod.proxy.port)
                if pool is None:
                    pool = self._pools[pod.proxy.port] = UpstreamPool(pod.proxy.port)
                self.forwarded[service] += 1
                sent = time.monotonic()
                response = await pool.send(request, [(PROXY_HEADER, "activator")])
                response.headers.append((SERVER_TIMING, (
                    f"{timing_entry('activator-wait', acquired - arrived)}, "
                    f"{timing_entry('activator', sent - acquired)}")))
                return response
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                return error_response(502, f"activator: pod {pod.name} did not answer: {exc}")
            finally:
                throttler.release(pod)
        finally:
            throttler.stats.depart(time.monotonic())


@dataclass(frozen=True)
class ActivatorView:
    """The cluster's activator as one Service sees it: its address and that Service's counts."""

    activator: Activator
    namespace: str
    service: str

    @property
    def forwarded(self) -> int:
        return self.activator.forwarded[(self.namespace, self.service)]

    @property
    def rejected(self) -> int:
        return self.activator.rejected[(self.namespace, self.service)]

    @property
    def url(self) -> str:
        return self.activator.url

    @property
    def port(self) -> int:
        return self.activator.port
