"""The Knative Service controller: Service -> Configuration -> Revisions -> Route, live.

Applying a `KnativeService` does what Knative's reconcilers do between them:

- *Configuration*: every change of ``spec.template`` stamps a new immutable revision, named
  ``<service>-00001``, ``-00002``, ... (the Configuration's generation) or as
  ``spec.template.metadata.name`` says. A revision starts at its initial scale (default 1)
  and gets its own autoscaler (`AutoscalerLoop`); apply() waits until those pods answer or
  one fails to start.
- *Route*: ``spec.traffic`` (default: 100 % to the latest ready revision) is resolved to
  revisions; ``latestRevision`` entries follow the newest *ready* revision, so a revision
  that fails to start takes no traffic. The ingress listens on a loopback port for the main
  URL and one more per tag (a tag URL sends 100 % to its revision, whatever its percent);
  on the main port a Host header ``<tag>-<service>.<namespace>.<domain>`` also selects the tag.
  Requests go to a ready pod's queue-proxy when the revision is in Serve mode, else through
  the activator: one per cluster, shared by every Service's revisions, as in Knative.
- *Gradual rollout*: with ``rollout-duration`` (`ServingConfig.rollout_duration`, or the
  Service's ``serving.knative.dev/rollout-duration`` annotation) a new latest ready revision
  takes the main URL's latestRevision share in steps (`labkit.serving.rollout_duration`;
  ``svc.rollout`` is the state).
- *Garbage collection*: old revisions config-gc no longer keeps are deleted with their pods
  (`labkit.serving.gc`; ``svc.collected`` lists them).
- *Status*: ``url``, ``latestCreatedRevisionName``, ``latestReadyRevisionName``, resolved
  ``traffic`` and the conditions ``ConfigurationsReady``, ``RoutesReady`` and ``Ready``.

Revisions no route points at become unreachable (routingState ``reserve``): min-scale stops
holding them and they scale to zero.

The Python API for notebooks (and the simulator's comparisons):

- ``configure_serving(cluster, autoscaler=AutoscalerConfig(...), domain=..., seed=...,
  activator_queue_depth=..., rollout_duration=..., ingress_class=..., gc=GCConfig(...))``: the
  cluster's Knative ConfigMaps, for Services applied after (the activator's queue depth: when
  the cluster's first Service starts it);
- ``svc = knative_service(cluster, name)``: ``svc.url``, ``svc.tag_url(tag)``,
  ``svc.metrics_url`` (Prometheus text), ``svc.knative_status`` (a `ServiceStatus` model),
  ``svc.revisions`` (name -> `LiveRevision`, in creation order), ``svc.revision(name=None)``
  (default: the latest created), ``svc.latest_ready``, ``svc.cold_starts()``,
  ``svc.metrics_text()``, ``svc.activator`` (the cluster's one activator as this Service
  sees it: ``url``, and this Service's ``forwarded``, ``rejected``),
  ``svc.autoscalers[revision]`` (the `AutoscalerLoop`; ``cpu_utilization`` for the HPA class);
- a `LiveRevision`: ``replica_count``, ``ready_count``, ``ready_pods()``, ``desired``, ``mode``
  ("Serve"/"Proxy"), ``in_panic``, ``excess_burst_capacity``, ``cold_starts`` (`ColdStart`:
  revision, pod, at, seconds, from_zero, error), ``latency`` (`LatencyHistogram`), ``failure``,
  ``knative_status`` (a `RevisionStatus`: replicas, Active/ContainerHealthy/Ready/
  ResourcesAvailable) and ``history()``: one `Sample` per 2 s tick (t, desired, replicas, ready,
  observed_concurrency, stable_concurrency, panic_concurrency, rps, panic, mode,
  excess_burst_capacity) — ``pandas.DataFrame(rev.history())`` plots directly.

``cluster.get("serving.knative.dev/v1/Service", name).status`` is the generic `ObjectStatus`
(``detail["knative"]`` holds the same status as a dict).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from labkit.clock import WallClock
from labkit.core.controller import ObjectStatus
from labkit.serving.activator import NAMESPACE_HEADER, REVISION_HEADER, Activator, ActivatorView
from labkit.serving.autoscaler_config import (
    AnnotationError,
    AutoscalerConfig,
    RevisionAutoscaling,
)
from labkit.serving.autoscaler_loop import AutoscalerLoop
from labkit.serving.constants import ACTIVATOR_QUEUE_DEPTH, HPA_SYNC_SECONDS
from labkit.serving.gc import GCConfig, RevisionRecord, collect
from labkit.serving.gc import routed as gc_routed
from labkit.serving.metrics import render
from labkit.serving.models import (
    API_VERSION,
    Addressable,
    ConfigurationStatus,
    KnativeService,
    RouteStatus,
    RouteTable,
    ServiceStatus,
    resolve_traffic,
)
from labkit.serving.queue_proxy import (
    HttpServer,
    Request,
    Response,
    UpstreamPool,
    error_response,
)
from labkit.serving.revision import ColdStart, LiveRevision, condition
from labkit.serving.rollout_duration import Rollout, advance, rollout_duration

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster

__all__ = [
    "KnativeServiceController",
    "ServingConfig",
    "configure_serving",
    "knative_service",
    "serving_config",
]


@dataclass(frozen=True)
class ServingConfig:
    """Cluster-wide Knative settings (Knative's ConfigMaps in knative-serving)."""

    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    """config-autoscaler."""
    domain: str = "example.com"
    """config-domain: the Route URLs are http://<name>.<namespace>.<domain>."""
    seed: int | None = None
    """Seed of the weighted traffic pick (None: derived from the Service's name)."""
    activator_queue_depth: int = ACTIVATOR_QUEUE_DEPTH
    hpa_sync_seconds: float = HPA_SYNC_SECONDS
    """How often the HPA class re-evaluates CPU (kube-controller-manager's sync period)."""
    rollout_duration: float = 0.0
    """config-network ``rollout-duration``: seconds over which a new latest revision takes
    over its traffic share (0: at once; `labkit.serving.rollout_duration`)."""
    ingress_class: str = "istio.ingress.networking.knative.dev"
    """config-network ``ingress-class``: the networking plugin named on each KIngress."""
    gc: GCConfig = field(default_factory=GCConfig)
    """config-gc: when old revisions are deleted (`labkit.serving.gc`)."""


_CONFIGS: weakref.WeakKeyDictionary[LocalCluster, ServingConfig] = weakref.WeakKeyDictionary()
_SERVICES: weakref.WeakKeyDictionary[LocalCluster, dict[tuple[str, str], KnativeServiceController]] = (
    weakref.WeakKeyDictionary())
_ACTIVATORS: weakref.WeakKeyDictionary[LocalCluster, Activator] = weakref.WeakKeyDictionary()


def serving_config(cluster: LocalCluster) -> ServingConfig:
    return _CONFIGS.get(cluster, ServingConfig())


def configure_serving(cluster: LocalCluster, **changes: Any) -> ServingConfig:
    """Change this cluster's Knative settings for Services applied from now on, e.g.
    ``configure_serving(cluster, autoscaler=AutoscalerConfig(scale_to_zero_grace_period=2))``.
    """
    config = replace(serving_config(cluster), **changes)
    _CONFIGS[cluster] = config
    return config


def _owner_of(cluster: LocalCluster, namespace: str, revision: str,
              ) -> KnativeServiceController | None:
    """The Service a revision belongs to (revision names are unique in a namespace)."""
    for svc in list(_SERVICES.get(cluster, {}).values()):
        if svc.namespace == namespace and revision in svc.revisions:
            return svc
    return None


def _cluster_activator(cluster: LocalCluster) -> Activator:
    """The cluster's one activator, started with the first Service (Knative runs one for all
    revisions, in knative-serving). Its queue depth is the cluster's setting at that moment."""
    activator = _ACTIVATORS.get(cluster)
    if activator is None:
        def find(namespace: str, revision: str) -> LiveRevision | None:
            owner = _owner_of(cluster, namespace, revision)
            return owner.revisions.get(revision) if owner is not None else None

        def poke(namespace: str, revision: str) -> None:
            owner = _owner_of(cluster, namespace, revision)
            if owner is not None:
                owner._poke(revision)

        activator = Activator(cluster.loop, find, poke,
                              queue_depth=serving_config(cluster).activator_queue_depth)
        activator.start()
        _ACTIVATORS[cluster] = activator
    return activator


def _release_activator(cluster: LocalCluster) -> None:
    """Stop the cluster's activator once no Service is left to use it."""
    if not _SERVICES.get(cluster) and cluster in _ACTIVATORS:
        _ACTIVATORS.pop(cluster).close()


def knative_service(cluster: LocalCluster, name: str,
                    namespace: str = "default") -> KnativeServiceController:
    """The live side of a Knative Service (applied, or an InferenceService's): revisions,
    replicas, metrics, history."""
    return cluster.controller(f"{API_VERSION}/Service", name, namespace, of=KnativeServiceController)


class KnativeServiceController:
    """One Knative Service on the laptop. Notebooks reach it with `knative_service()`."""

    def __init__(self, cluster: LocalCluster, obj: KnativeService) -> None:
        self.cluster = cluster
        self.obj: KnativeService | None = None
        self.config = serving_config(cluster)
        self.name = obj.metadata.name
        self.namespace = obj.metadata.namespace
        self.generation = 0
        self.revisions: dict[str, LiveRevision] = {}
        self.autoscalers: dict[str, AutoscalerLoop] = {}
        self.table = RouteTable()
        self.rollout: Rollout | None = None
        self.collected: list[str] = []
        """Revisions the garbage collector deleted, in order."""
        """The gradual rollout of the main URL's latestRevision share (None: no such share)."""
        self._clock = WallClock(cluster.loop.loop)
        seed = self.config.seed if self.config.seed is not None else f"{self.namespace}/{self.name}"
        self._rng = random.Random(seed)
        self._round_robin = itertools.count()
        self._pools: dict[int, UpstreamPool] = {}
        self.activator: ActivatorView | None = None
        """Set when the Service's servers start."""
        self._activator_pool: UpstreamPool | None = None
        self.ingress: HttpServer | None = None
        self.tag_listeners: dict[str, HttpServer] = {}
        self.metrics_server: HttpServer | None = None
        self._dirty = threading.Event()

    # -- the Python API ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The local address of the main route (http://127.0.0.1:PORT)."""
        assert self.ingress is not None
        return self.ingress.url

    def tag_url(self, tag: str) -> str:
        """The local address of a tag's route."""
        if tag not in self.tag_listeners:
            raise LookupError(f"Service {self.name} has no tag {tag!r} (tags: "
                              f"{', '.join(self.tag_listeners) or 'none'})")
        return self.tag_listeners[tag].url

    @property
    def metrics_url(self) -> str:
        assert self.metrics_server is not None
        return self.metrics_server.url + "/metrics"

    def logs(self, previous: bool = False) -> str:
        """The latest revision's pod output (`kubectl logs` on its user-container)."""
        return self.revision().logs(previous)

    def revision(self, name: str | None = None) -> LiveRevision:
        """A revision by name; the latest created one by default."""
        if name is None:
            name = self.latest_created
        if name not in self.revisions:
            raise LookupError(f"Service {self.name} has no revision {name!r} (revisions: "
                              f"{', '.join(self.revisions)})")
        return self.revisions[name]

    @property
    def latest_created(self) -> str:
        return next(reversed(self.revisions))

    @property
    def latest_ready(self) -> str | None:
        ready = [r for r in self.revisions.values() if r.ready]
        return max(ready, key=lambda r: r.generation).name if ready else None

    def cold_starts(self) -> list[ColdStart]:
        """Every replica start of every revision, oldest first."""
        starts = [c for r in self.revisions.values() for c in r.cold_starts]
        return sorted(starts, key=lambda c: c.at)

    @property
    def knative_status(self) -> ServiceStatus:
        """The Knative status, as `kubectl get ksvc -o yaml` shows it."""
        latest_ready = self.latest_ready
        latest = self.revisions[self.latest_created] if self.revisions else None
        if latest is None or latest.ready:
            config_ok: bool | None = latest is not None
            config_reason = config_message = ""
        elif latest.failure_message:
            config_ok, config_reason = False, "RevisionFailed"
            config_message = (f'Revision "{latest.name}" failed with message: '
                              f'{latest.failure_message}.')
        else:
            config_ok, config_reason, config_message = None, "RevisionMissing", (
                f'Revision "{latest.name}" is starting')
        table = self.table
        route_ok: bool | None = not table.problems and bool(table.traffic)
        route_reason = "" if route_ok else "TrafficNotReady"
        route_message = "; ".join(table.problems)
        if route_ok and self.rollout is not None and not self.rollout.done:
            # Knative's MarkIngressRolloutInProgress (pkg/apis/serving/v1/route_lifecycle.go).
            route_ok, route_reason = None, "RolloutInProgress"
            route_message = "A gradual rollout of the latest revision(s) is in progress."
        if config_ok is None:
            both: bool | None = None
        elif route_ok is None:
            both = None if config_ok else False
        else:
            both = config_ok and route_ok
        return ServiceStatus(
            observed_generation=self.generation,
            url=self.knative_url(),
            address=Addressable(
                url=f"http://{self.name}.{self.namespace}.svc.cluster.local"),
            latest_created_revision_name=latest.name if latest else None,
            latest_ready_revision_name=latest_ready,
            traffic=list(table.traffic),
            conditions=[
                condition("ConfigurationsReady", config_ok, config_reason, config_message),
                condition("Ready", both, config_reason or route_reason,
                           config_message or route_message),
                condition("RoutesReady", route_ok, route_reason, route_message),
            ],
        )

    def configuration_status(self) -> ConfigurationStatus:
        status = self.knative_status
        return ConfigurationStatus(
            observed_generation=self.generation,
            latest_created_revision_name=status.latest_created_revision_name,
            latest_ready_revision_name=status.latest_ready_revision_name,
            conditions=[c.model_copy(update={"type": "Ready"}) for c in status.conditions
                        if c.type == "ConfigurationsReady"])

    def route_status(self) -> RouteStatus:
        status = self.knative_status
        return RouteStatus(url=status.url, traffic=status.traffic,
                           conditions=[c.model_copy(update={"type": "Ready"})
                                       for c in status.conditions if c.type == "RoutesReady"])

    def knative_url(self, tag: str | None = None) -> str:
        host = f"{tag}-{self.name}" if tag else self.name
        return f"http://{host}.{self.namespace}.{self.config.domain}"

    def metrics_text(self) -> str:
        """Prometheus text for every revision of this Service."""
        samples: list[tuple[str, dict[str, object], float]] = []
        histograms = []
        for rev in self.revisions.values():
            labels: dict[str, object] = {
                "namespace_name": self.namespace, "service_name": self.name,
                "configuration_name": self.name, "revision_name": rev.name}
            last = rev.samples[-1] if rev.samples else None
            samples += [
                ("autoscaler_desired_pods", labels, max(rev.desired, 0)),
                ("autoscaler_actual_pods", labels, rev.replica_count),
                ("autoscaler_ready_pods", labels, rev.ready_count),
                ("autoscaler_stable_request_concurrency", labels,
                 last.stable_concurrency if last else 0.0),
                ("autoscaler_panic_request_concurrency", labels,
                 last.panic_concurrency if last else 0.0),
                ("autoscaler_stable_requests_per_second", labels, last.rps if last else 0.0),
                ("autoscaler_panic_mode", labels, int(rev.in_panic)),
                ("autoscaler_excess_burst_capacity", labels, rev.excess_burst_capacity),
                ("labkit_cold_starts_total", labels,
                 sum(c.seconds is not None for c in rev.cold_starts)),
                ("labkit_cold_start_seconds_sum", labels,
                 round(sum(c.seconds or 0.0 for c in rev.cold_starts), 6)),
            ]
            for code, count in sorted(rev.latency.codes.items()):
                samples.append(("revision_request_count",
                                {**labels, "response_code": code,
                                 "response_code_class": f"{code // 100}xx"}, count))
            histograms.append(("revision_request_latencies", labels, rev.latency))
        samples.append(("activator_request_count",
                        {"namespace_name": self.namespace, "service_name": self.name},
                        self.activator.forwarded if self.activator else 0))
        return render(samples, histograms)

    # -- apply / delete ---------------------------------------------------------------------

    def apply(self, obj: KnativeService) -> None:
        config = self.config.autoscaler
        template_changed = self.obj is None or obj.spec.template != self.obj.spec.template
        new_name: str | None = None
        settings: RevisionAutoscaling | None = None
        if template_changed:
            new_name = obj.spec.template.metadata.name or (
                f"{obj.metadata.name}-{self.generation + 1:05d}")
            if new_name in self.revisions:
                raise ValueError(
                    f"spec.template.metadata.name: revision {new_name!r} already exists with "
                    "a different template; revisions are immutable, so give the changed "
                    "template a new name (or remove the name to let Knative number it)")
            try:
                settings = RevisionAutoscaling.resolve(
                    obj.spec.template.metadata.annotations, config,
                    obj.spec.template.spec.concurrency_limit)
            except AnnotationError as exc:
                # Rules that depend on this cluster's config-autoscaler (initial-scale 0,
                # max-scale-limit) can only be checked here.
                raise ValueError("spec.template.metadata.annotations: " + "; ".join(exc.lines)
                                 + " (with this cluster's config-autoscaler)") from None
        known = set(self.revisions) | ({new_name} if new_name else set())
        for i, target in enumerate(obj.traffic):
            if target.revision_name and target.revision_name not in known:
                raise ValueError(
                    f"spec.traffic[{i}].revisionName: revision {target.revision_name!r} not "
                    f"found (revisions of {obj.metadata.name}: "
                    f"{', '.join(sorted(known)) or 'none'})")
        self._start_servers()
        if template_changed:
            assert new_name is not None and settings is not None
            self.generation += 1
            revision = self._create_revision(obj, new_name, settings)
            revision.wait_settled(settings.initial_scale, self.cluster.start_timeout + 5.0)
        self.obj = obj
        self._reroute()

    def _start_servers(self) -> None:
        if self.ingress is not None:
            return
        servers: list[HttpServer] = []
        shared = _cluster_activator(self.cluster)
        try:
            self.ingress = HttpServer(self.cluster.loop, self._route_main)
            self.ingress.start()
            servers.append(self.ingress)
            self.metrics_server = HttpServer(self.cluster.loop, self._serve_metrics)
            self.metrics_server.start()
        except BaseException:
            for server in servers:
                server.close()
            self.ingress = None
            _release_activator(self.cluster)
            raise
        self.activator = ActivatorView(shared, self.namespace, self.name)
        self._activator_pool = UpstreamPool(shared.port)
        _SERVICES.setdefault(self.cluster, {})[(self.namespace, self.name)] = self

    def _create_revision(self, obj: KnativeService, name: str,
                         settings: RevisionAutoscaling) -> LiveRevision:
        revision = LiveRevision(
            self.cluster.loop, service=self.name, namespace=self.namespace, name=name,
            generation=self.generation, template=obj.spec.template.model_copy(deep=True),
            settings=settings, start_timeout=self.cluster.start_timeout,
            on_change=lambda: self._pods_changed(name))
        self.revisions[name] = revision
        autoscaler = AutoscalerLoop(revision, self._clock,
                                    lambda now: self._activator().stats(self.namespace, name, now),
                                    self.config.hpa_sync_seconds)
        self.autoscalers[name] = autoscaler
        revision.scale_to(settings.initial_scale)
        autoscaler.start()
        return revision

    def _activator(self) -> Activator:
        assert self.activator is not None, "the Service's servers have not started"
        return self.activator.activator

    def _pods_changed(self, revision: str) -> None:
        """From any thread: wake the activator's waiters; re-resolve the route soon."""
        if self.activator is not None:
            self.activator.activator.pods_changed(self.namespace, revision)
        autoscaler = self.autoscalers.get(revision)
        if autoscaler is not None:
            autoscaler.pods_changed()  # the PA reconciler watches the endpoints too
        self._dirty.set()

    def _poke(self, revision: str) -> None:
        autoscaler = self.autoscalers.get(revision)
        if autoscaler is not None:
            autoscaler.poke()

    def _reroute(self) -> None:
        assert self.obj is not None
        ready = {name for name, r in self.revisions.items() if r.ready}
        table = self._roll_out(resolve_traffic(self.obj.traffic, self.latest_ready, ready,
                                               self.knative_url))
        wanted_tags = {tag for tag, _ in table.tags}
        for tag in wanted_tags - set(self.tag_listeners):
            server = HttpServer(self.cluster.loop, self._tag_handler(tag))
            server.start()
            self.tag_listeners[tag] = server
        for tag in set(self.tag_listeners) - wanted_tags:
            self.tag_listeners.pop(tag).close()
        self.table = table
        routed = table.routed
        for name, revision in self.revisions.items():
            reachable = gc_routed(name, routed, self.latest_created)
            if reachable != revision.reachable:
                revision.reachable = reachable
                revision.routing_changed = time.monotonic()
                self.autoscalers[name].update(RevisionAutoscaling.resolve(
                    revision.template.metadata.annotations, self.config.autoscaler,
                    revision.container_concurrency, reachable=reachable))

    def _collect_garbage(self) -> None:
        """Delete the revisions config-gc no longer keeps (Knative's GC reconciler runs on
        every Configuration change; here also on the monitor's ticks, as time passes)."""
        records = [RevisionRecord(r.name, r.created, r.reachable, r.routing_changed,
                                  r.template.metadata.annotations)
                   for r in self.revisions.values()]
        for name in collect(self.config.gc, records, self.latest_ready, time.monotonic()):
            self.autoscalers.pop(name).stop()
            revision = self.revisions.pop(name)
            self._activator().forget(self.namespace, name)
            self.collected.append(name)
            # Its pods stop in the background: the monitor thread must not wait for them.
            threading.Thread(target=revision.close, name=f"labkit-gc-{name}",
                             daemon=True).start()

    def _roll_out(self, table: RouteTable) -> RouteTable:
        """`table` with the main URL's latestRevision share split as the gradual rollout
        has it now (Knative's Route reconciler: Rollout.Step, then ObserveReady)."""
        assert self.obj is not None
        latest = self.latest_ready
        share = sum(t.percent or 0 for t in self.obj.traffic if t.follows_latest and not t.tag)
        if latest is None or not share:
            self.rollout = None
            return table
        duration = rollout_duration(self.obj.metadata.annotations, self.config.rollout_duration)
        self.rollout = rollout = advance(self.rollout, latest, share, time.monotonic(), duration)
        if rollout.done:
            return table
        split = dict(table.split)
        split[latest] -= share
        for name, percent in rollout.revisions:
            split[name] = split.get(name, 0) + percent
        split_now = tuple((n, p) for n, p in split.items() if p > 0)
        follows = [t for t in table.traffic if t.latest_revision and not t.tag]
        if not follows:  # merged into an entry pinning the same revision: status as resolved
            return replace(table, split=split_now)
        others = [t for t in table.traffic if t not in follows]
        traffic = [follows[0].model_copy(update={"revision_name": name, "percent": percent})
                   for name, percent in rollout.revisions] + others
        return replace(table, split=split_now, traffic=tuple(traffic))

    def reconcile(self) -> None:
        """Notice crashed pods and revisions that became ready (route follows), and take the
        next step of a gradual rollout when it is due."""
        for revision in self.revisions.values():
            revision.check_pods()
        due = self.rollout.next_step if self.rollout is not None else None
        if due is not None and time.monotonic() >= due:
            self._dirty.set()
        if self._dirty.is_set() and self.obj is not None:
            self._dirty.clear()
            self._reroute()
        if self.obj is not None:
            self._collect_garbage()

    def delete(self) -> None:
        for autoscaler in self.autoscalers.values():
            autoscaler.stop()
        servers = [self.ingress, self.metrics_server, *self.tag_listeners.values()]
        for server in servers:
            if server is not None:
                server.close()
        self.tag_listeners = {}
        if self.activator is not None:
            for name in self.revisions:
                self.activator.activator.forget(self.namespace, name)
        for pool in [*self._pools.values(), self._activator_pool]:
            if pool is not None:
                pool.close()
        revisions = list(self.revisions.values())
        threads = [threading.Thread(target=r.close) for r in revisions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        services = _SERVICES.get(self.cluster, {})
        if services.get((self.namespace, self.name)) is self:
            del services[(self.namespace, self.name)]
        _release_activator(self.cluster)

    def status(self) -> ObjectStatus:
        assert self.obj is not None
        knative = self.knative_status
        ready = knative.condition("Ready")
        ok = ready is not None and ready.status == "True"
        tags = {tag: server.url for tag, server in self.tag_listeners.items()}
        hpas = [(name, autoscaler.hpa_status()) for name, autoscaler in self.autoscalers.items()]
        if ok:
            message = f"{self.latest_ready} ready, traffic " + ", ".join(
                f"{r} {p}%" for r, p in self.table.split)
        else:
            message = (ready.message if ready and ready.message else "not ready yet")
        return ObjectStatus(
            kind="Service",
            name=self.name,
            namespace=self.namespace,
            ready=ok,
            url=self.ingress.url if self.ingress else None,
            urls=(self.ingress.url, *tags.values()) if self.ingress else (),
            message=message.splitlines()[0] if message else "",
            detail={
                "knative": knative.model_dump(mode="json", by_alias=True, exclude_none=True),
                "tags": tags,
                "activator": self.activator.url if self.activator else None,
                "metricsUrl": self.metrics_url if self.metrics_server else None,
                "revisions": [r.describe() for r in self.revisions.values()],
                # Knative keeps an HPA's conditions out of the Service's (hpa_status): they
                # are the HorizontalPodAutoscalers', one per HPA-class revision.
                "horizontalPodAutoscalers": {name: status for name, status in hpas if status},
            },
            warnings=tuple(w for w in (a.hpa_warning() for a in self.autoscalers.values()) if w),
        )

    # -- the data path ----------------------------------------------------------------------

    def _tag_of_host(self, host: str | None) -> str | None:
        if not host:
            return None
        first = host.split(":")[0].split(".")[0]
        for tag, _ in self.table.tags:
            if first == f"{tag}-{self.name}":
                return tag
        return None

    async def _route_main(self, request: Request) -> Response:
        tag = self._tag_of_host(request.header("host"))
        if tag is not None:
            return await self._route_tag(tag, request)
        split = self.table.split
        if not split:
            return error_response(503, f"Service {self.name}: no ready revision to route to "
                                  f"({'; '.join(self.table.problems) or 'no traffic'})")
        return await self._forward(self.table.pick(self._rng), request)

    def _tag_handler(self, tag: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await self._route_tag(tag, request)
        return handle

    async def _route_tag(self, tag: str, request: Request) -> Response:
        name = dict(self.table.tags).get(tag)
        if name is None:
            return error_response(404, f"Service {self.name}: tag {tag!r} is not routed")
        return await self._forward(name, request)

    async def _forward(self, name: str, request: Request) -> Response:
        revision = self.revisions[name]
        headers = [(REVISION_HEADER, name), (NAMESPACE_HEADER, self.namespace)]
        pods = revision.ready_pods() if revision.mode == "Serve" else []
        pods = [p for p in pods if p.proxy is not None]
        if pods:
            pod = pods[next(self._round_robin) % len(pods)]
            port = pod.proxy.port  # type: ignore[union-attr]
            pool = self._pools.get(port)
            if pool is None:
                pool = self._pools[port] = UpstreamPool(port)
        else:
            assert self._activator_pool is not None
            pool = self._activator_pool
        try:
            return await pool.send(request, headers)
        except (ConnectionError, OSError) as exc:
            return error_response(502, f"ingress: revision {name} did not answer: {exc}")

    async def _serve_metrics(self, request: Request) -> Response:
        if request.target.split("?")[0] != "/metrics":
            return error_response(404, "metrics are at /metrics")
        return Response(200, "OK", [("Content-Type", "text/plain; version=0.0.4")],
                        self.metrics_text().encode())
