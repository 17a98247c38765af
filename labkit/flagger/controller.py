"""The live Flagger controller: runs `analysis.step` for one Canary on the wall clock.

Every `analysis.interval` it reads the world (the target's pod template checksum, whether the
primary and the canary are ready, the canary workload's destination-side counters from its
sidecar), runs the pure step, and carries out what it decided: applies the routing objects
(router.py) through the cluster as real kinds, copies the target's template to the primary,
scales the target, calls the webhooks over HTTP (webhooks.py), records Flagger's events, and
writes the status. The first step (initialisation) runs inside `apply()`, so a Canary whose
objects cannot be made fails its apply and leaves nothing half-done behind it.

Crash safety: after each step the status, the routes and the events are written to a JSON
file (`$LABKIT_FLAGGER_STATE`, default ~/.cache/labkit/flagger/<namespace>.<name>.json). A
controller that starts again (the Canary deleted and applied again, a new LocalCluster after a
kernel restart) takes the routes from the VirtualService when it exists, else from that file,
so traffic stays at the last committed weight, and resumes the analysis from the status. A
saved status with no rollout in flight (Initialized, Succeeded, Failed) is not resumed: the
Canary initialises afresh, as when a notebook is run again from the top.

Provider specifics (a Deployment with Istio routing, or a Knative Service's own traffic block)
live in targets.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.core.controller import ObjectStatus
from labkit.core.models import Deployment
from labkit.files import write_atomic
from labkit.flagger import analysis, metrics, prometheus, router, webhooks
from labkit.flagger.analysis import CanaryStatus, Event, Readings, Routes
from labkit.flagger.models import (
    BUILTIN_METRICS,
    Canary,
    CanaryMetric,
    CanaryWebhook,
    MetricTemplate,
    go_duration,
)
from labkit.flagger.targets import target_for
from labkit.flagger.templates import PrometheusQuery, render_query

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = ["MAX_EVENTS", "CanaryController", "MetricTemplateController", "state_dir"]

MAX_EVENTS = 200
"""Events a Canary keeps, the oldest dropped first. Flagger records Kubernetes Events, which
the API server deletes an hour after they last happened (kube-apiserver `--event-ttl`, default
1h: kubernetes cmd/kube-apiserver/app/options/options.go, `EventTTL: 1 * time.Hour`). labkit
keeps a count rather than an age, so a kernel left running keeps the events of the last
rollouts (a rollout records about ten) and no more."""


def state_dir() -> Path:
    return Path(os.environ.get("LABKIT_FLAGGER_STATE") or Path.home() / ".cache" / "labkit" / "flagger")


class MetricTemplateController:
    """A MetricTemplate is data: Canaries look it up when they evaluate a metric."""

    def __init__(self, cluster: LocalCluster, obj: MetricTemplate) -> None:
        self.obj = obj

    def apply(self, obj: MetricTemplate) -> None:
        self.obj = obj

    def delete(self) -> None:
        pass

    def status(self) -> ObjectStatus:
        return ObjectStatus("MetricTemplate", self.obj.metadata.name, self.obj.metadata.namespace,
                            True, message=f"provider {self.obj.spec.provider.type}")


class CanaryController:
    """Makes one Canary real; see the module docstring."""

    query: PrometheusQuery = staticmethod(prometheus.query)

    def __init__(self, cluster: LocalCluster, obj: Canary) -> None:
        self.cluster = cluster
        self.obj = obj
        self.state = CanaryStatus()
        self.routes = Routes()
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.scrapes = metrics.Scrapes(keep=600.0)
        self._unavailable_since: float | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._primary: dict[str, Any] | None = None  # the primary Deployment as last made
        self._restore()

    # -- the cluster's controller contract ---------------------------------------------------

    def apply(self, obj: Canary) -> None:
        self._check_references(obj)
        with self._mutex:
            self.obj = obj
            self._generation += 1
        self.scrapes.keep = max(600.0, 4 * obj.spec.analysis.interval_seconds)
        if self.state.phase not in ("", analysis.INITIALIZING):
            self._ensure_objects(obj)  # resuming: the routing must exist before the first tick
        # initialise now (create the primary, then see it ready): a failure fails this apply
        for _ in range(2):
            if self.state.phase not in ("", analysis.INITIALIZING):
                break
            self.tick()
        if self.state.phase in ("", analysis.INITIALIZING):
            raise RuntimeError(f"initialisation did not complete: {self._last_message()}")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"flagger-{obj.metadata.name}",
                                            daemon=True)
            self._thread.start()

    def delete(self) -> None:
        # Called under the cluster lock: no join (the loop may be waiting for that lock); the
        # loop sees the flag before it changes anything.
        self._stop.set()

    def status(self) -> ObjectStatus:
        s = self.state
        message = f"{s.phase or 'Pending'} weight {s.canary_weight} failed {s.failed_checks}"
        return ObjectStatus(
            kind="Canary", name=self.obj.metadata.name, namespace=self.obj.metadata.namespace,
            ready=s.phase in (analysis.INITIALIZED, analysis.SUCCEEDED), message=message,
            detail={"status": s.to_dict(), "routes": {"primary": self.routes.primary,
                                                      "canary": self.routes.canary,
                                                      "mirrored": self.routes.mirrored},
                    "events": list(self.events)})

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            # Flagger's scheduler is a Go time.Ticker, which drops ticks for a slow receiver: a
            # tick held up (an apply keeps the cluster lock while new pods start) must not be
            # followed by the missed ones in a burst, each a check with no new traffic behind it
            due = max(due + self.obj.spec.analysis.interval_seconds, time.monotonic())
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - Flagger records it and tries next tick
                self._record([Event("Warning", str(exc))])

    def tick(self) -> None:
        """One analysis step: read, decide (pure), act. Public so tests and notebooks can step."""
        with self._mutex:
            canary, generation, status, routes = self.obj, self._generation, self.state, self.routes
        readings = self._readings(canary, status)
        out = analysis.step(canary, status, routes, readings, time.time())
        with self.cluster.lock, self._mutex:
            if self._stop.is_set() or generation != self._generation:
                return  # deleted, or the spec changed while deciding: decide again next tick
            self._act(canary, out)
            self.state, self.routes = out.status, out.routes
            self._record(out.events)
            if analysis.POST_ROLLOUT in out.actions:
                self._record(analysis.post_rollout_events(self._post_rollout(canary, out.status)))
            self._save()

    # -- reading the world -------------------------------------------------------------------

    def _get(self, kind: str, name: str) -> Any | None:
        from labkit.cluster import NotFoundError
        try:
            return self.cluster.get(kind, name, self.obj.metadata.namespace)
        except NotFoundError:
            return None

    def _readings(self, canary: Canary, status: CanaryStatus) -> Readings:
        target = target_for(self.cluster, canary)
        not_ready = target.not_ready()
        if not_ready:
            self._unavailable_since = self._unavailable_since or time.time()
        else:
            self._unavailable_since = None
        counters = target.counters()  # one scrape per tick; no endpoint, no values
        if counters is not None:
            self.scrapes.add(time.monotonic(), counters)
        values = _LazyMetrics(lambda m: self._metric(canary, m), canary.spec.analysis.metrics)
        checksum = status.last_applied_spec

        def call(hook: CanaryWebhook, phase: str) -> analysis.HookResult:
            return webhooks.call(canary, hook, phase, checksum, self._service_url)

        return Readings(target.revision(), target.primary_ready(), not_ready,
                        self._unavailable_since, values, call)

    def _service_url(self, name: str, namespace: str) -> str | None:
        from labkit.cluster import NotFoundError
        try:
            return self.cluster.url("v1/Service", name, namespace)
        except NotFoundError:
            return None

    def _metric(self, canary: Canary, m: CanaryMetric) -> analysis.MetricValue:
        if m.name in BUILTIN_METRICS and m.template_ref is None:
            window = self.scrapes.window(metric_window(m))
            if window is None:
                return None
            if m.name == "request-success-rate":
                return metrics.request_success_rate(window)
            return metrics.request_duration(window)
        if m.template_ref is not None:
            ns = m.template_ref.namespace or canary.metadata.namespace
            found = self._get("flagger.app/v1beta1/MetricTemplate", m.template_ref.name)
            if found is None:
                return (f"metric template {m.template_ref.name}.{ns} error: "
                        f"metrictemplate.flagger.app \"{m.template_ref.name}\" not found")
            template: MetricTemplate = found.object
            try:
                query = render_query(template, canary, m)
                return self.query(template.spec.provider.address or "", query)
            except Exception as exc:  # noqa: BLE001 - becomes the failed check's message
                return str(exc)
        try:
            return self.query(canary.spec.metrics_server or "", m.query or "")
        except Exception as exc:  # noqa: BLE001 - as above: the failed check's message
            return str(exc)

    # -- acting ------------------------------------------------------------------------------

    def _act(self, canary: Canary, out: analysis.Step) -> None:
        target = target_for(self.cluster, canary)
        if analysis.INITIALIZE in out.actions:
            target.initialize(out.routes, self._primary)
        if analysis.PROMOTE in out.actions:
            target.promote()
        if analysis.INITIALIZE in out.actions or analysis.PROMOTE in out.actions:
            self._primary = target.primary_snapshot()
        if out.routes != self.routes or target.routes() is None:
            target.set_routes(out.routes)
        if analysis.SCALE_TO_ZERO in out.actions:
            target.scale(0)
        if analysis.SCALE_FROM_ZERO in out.actions:
            target.scale(1)

    def _ensure_objects(self, canary: Canary) -> None:
        """Flagger reconciles its objects every tick; labkit does when a controller starts on
        a saved status (a new cluster has none of them): the primary as last promoted, the
        services and rules, and the routing at the committed weights."""
        target_for(self.cluster, canary).initialize(self.routes, self._primary)

    def _post_rollout(self, canary: Canary,
                      status: CanaryStatus) -> list[tuple[CanaryWebhook, analysis.HookResult]]:
        results = []
        for hook in canary.spec.analysis.webhooks:
            if hook.kind == "post-rollout":
                result = webhooks.call(canary, hook, status.phase, status.last_applied_spec,
                                       self._service_url)
                results.append((hook, result))
                if not result.ok:
                    break
        return results

    def _record(self, events: list[Event] | tuple[Event, ...]) -> None:
        now = analysis._rfc3339(time.time())
        for e in events:
            self.events.append({"type": e.type, "reason": "Synced", "message": e.message, "time": now})

    def _last_message(self) -> str:
        return self.events[-1]["message"] if self.events else "no event"

    # -- persistence -------------------------------------------------------------------------

    def _state_file(self) -> Path:
        return state_dir() / f"{self.obj.metadata.namespace}.{self.obj.metadata.name}.json"

    def _save(self) -> None:
        path = self._state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"status": self.state.to_dict(), "events": list(self.events), "primary": self._primary,
                "routes": {"primary": self.routes.primary, "canary": self.routes.canary,
                           "mirrored": self.routes.mirrored}}
        write_atomic(path, json.dumps(data))  # a crash leaves the old file or the new one

    def _restore(self) -> None:
        path = self._state_file()
        if not path.exists():
            return
        data = json.loads(path.read_text())
        state = CanaryStatus.from_dict(data["status"])
        if state.phase not in _IN_FLIGHT:
            return  # nothing in flight: start afresh (a notebook run again from the top)
        self.state = state
        self.events = deque(data.get("events", []), maxlen=MAX_EVENTS)
        self._primary = data.get("primary")
        saved = data.get("routes", {})
        try:
            live = target_for(self.cluster, self.obj).routes()
        except RuntimeError:  # the target is not applied yet: apply() refuses the Canary anyway
            live = None
        self.routes = live or Routes(saved.get("primary", 100), saved.get("canary", 0),
                                     saved.get("mirrored", False))

    # -- bad input ---------------------------------------------------------------------------

    def _check_references(self, obj: Canary) -> None:
        """What only the cluster can tell: the target and the templates exist."""
        problems = list(_reference_problems(self.cluster, obj))
        if problems:
            raise ValueError("; ".join(problems))


_IN_FLIGHT = (analysis.PROGRESSING, analysis.WAITING, analysis.WAITING_PROMOTION, analysis.PROMOTING,
              analysis.FINALISING)


def metric_window(metric: CanaryMetric) -> float:
    """The window a metric is computed over: its own interval, else 1m (Flagger's default)."""
    return go_duration(metric.interval, ()) if metric.interval else 60.0


def _reference_problems(cluster: LocalCluster, obj: Canary) -> Iterator[str]:
    from labkit.cluster import NotFoundError
    ns = obj.metadata.namespace
    ref = obj.spec.target_ref
    try:
        target = cluster.get(f"{ref.api_version or 'apps/v1'}/{ref.kind}", ref.name, ns).object
    except NotFoundError:
        yield (f"spec.targetRef: {ref.kind} {ref.name!r} not found in namespace {ns!r}: "
               "apply the target before its Canary")
        target = None
    if isinstance(target, Deployment):
        try:
            router.selector_label(target)
        except ValueError as exc:
            yield f"spec.targetRef: {exc}"
    for i, m in enumerate(obj.spec.analysis.metrics):
        if m.template_ref is None:
            continue
        tns = m.template_ref.namespace or ns
        try:
            cluster.get("flagger.app/v1beta1/MetricTemplate", m.template_ref.name, tns)
        except NotFoundError:
            yield (f"spec.analysis.metrics[{i}].templateRef: MetricTemplate "
                   f"{m.template_ref.name!r} not found in namespace {tns!r}")


class _LazyMetrics(Mapping[str, analysis.MetricValue]):
    """Metric values computed when the step asks for them (a template query is a request to
    Prometheus; only metrics Flagger evaluates at this point are queried)."""

    def __init__(self, compute: Callable[[CanaryMetric], analysis.MetricValue],
                 metrics_: list[CanaryMetric]) -> None:
        self._compute = compute
        self._metrics = {m.name: m for m in metrics_}
        self._cache: dict[str, analysis.MetricValue] = {}

    def __getitem__(self, name: str) -> analysis.MetricValue:
        if name not in self._cache:
            self._cache[name] = self._compute(self._metrics[name])
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)
