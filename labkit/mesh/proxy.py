"""The sidecar: an Envoy-like HTTP/1.1 proxy with an outbound and an inbound listener.

The app of a workload calls other services through the **outbound** listener (by service name in
the Host header, or as an HTTP proxy with absolute-form requests); everything addressed to the
app enters through the **inbound** listener. The proxy only moves bytes: every decision (route,
weighted pick, retry, timeout budget, pool limits, ejection, authorisation, mTLS mode) is asked
of the pure policy modules in `labkit.mesh`, and what happened is recorded by
`labkit.mesh.telemetry`. Its parts: `proxy_config` (what the control plane tells it),
`proxy_http` (its HTTP/1.1 connections, both sides), `clusters` (its upstream clusters' state).

Why it is built this way: a sidecar's overhead is the number students measure (lab 03) and the
budget is under half a millisecond per hop, so the HTTP machinery is asyncio Protocols with
`httptools` parsing (no framework; one task per client connection, not per request), upstream
connections are kept alive and reused, and all policy work is O(1) per request. Header lines
stay bytes as parsed and are decoded only when a decision needs them (`HttpRequest.headers`).
The common outbound request (default route, no limits or timers, a kept-alive upstream
connection) takes a fast path without any task, future or decoding, its header lines
forwarded as they came (`Sidecar._outbound_fast`, which says when it applies). Bodies are
buffered whole, as Envoy does when it may retry; there is no streaming, HTTP/2 or WebSocket.
A caller that disconnects mid-request cancels the upstream try (logged with code 0, flag DC).

Configuration arrives as an immutable `MeshConfig` snapshot via `push()` (the control plane's
xDS); in-flight requests finish with the snapshot they started with, and per-cluster state
(pool counters, ejections) survives a push unless that cluster's policy changed.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from labkit.mesh import authz, flags, retries, security
from labkit.mesh.balancer import ConsistentHash
from labkit.mesh.clusters import Cluster
from labkit.mesh.destination import TrafficPolicy
from labkit.mesh.hosts import resolve_authority, shadow_authority
from labkit.mesh.pool import Lease
from labkit.mesh.proxy_config import Endpoint, MeshConfig, ServiceInfo, Workload
from labkit.mesh.proxy_http import (
    HOP_BY_HOP,
    HOP_BY_HOP_BYTES,
    NOT_FORWARDED_BYTES,
    PEER_HEADER,
    ConnectionTerminated,
    Downstream,
    HttpRequest,
    RawHeaders,
    Response,
    Upstream,
    error_response,
    request_bytes,
    request_wire,
    response_wire,
)
from labkit.mesh.router import Router, Try, choose_host
from labkit.mesh.routing import (
    Destination,
    DirectResponse,
    Forward,
    HeaderOps,
    NoRoute,
    Redirect,
    Request,
    VirtualService,
)
from labkit.mesh.telemetry import Telemetry, TraceContext, new_ids, new_request_id

__all__ = ["HOST", "Sidecar", "TlsProvider"]

HOST = "127.0.0.1"
_CONNECT_TIMEOUT = 10.0
_TIMEOUT_HEADER = b"x-envoy-upstream-rq-timeout-ms"
_INBOUND_RETRIES = retries.RetryPolicy(attempts=2, retry_on=frozenset({"reset-before-request"}),
                                       previous_hosts=False)
"""Istio >= 1.24's inbound retry policy: the hop to the local app is retried on connect failure."""


class TlsProvider(Protocol):
    """Mutual-TLS material of one workload (implemented with `labkit.mesh.security`)."""

    def server_context(self) -> ssl.SSLContext: ...

    def client_context(self) -> ssl.SSLContext: ...


class _Timeout(Exception):
    """A try's time limit (`Try.until`: per-try timeout or the rest of the route's) ran out."""


@dataclass(frozen=True)
class _Target:
    """Where an outbound request's Host header points: a known service (and its VS).
    `default` is the destination of Istio's default route (no VirtualService)."""

    service: ServiceInfo
    port: int
    virtual_service: VirtualService | None
    default: Destination


class _Result:
    """What the router produced for one request (the response plus what to log)."""

    __slots__ = ("cluster", "details", "endpoint", "flags", "response", "route", "upstream_ms")

    def __init__(self, response: Response, flags: tuple[str, ...] = (),
                 details: str = "via_upstream", *, upstream_ms: float | None = None) -> None:
        self.response = response
        self.flags = flags
        self.details = details
        self.endpoint: Endpoint | None = None
        self.cluster = ""
        self.upstream_ms = upstream_ms
        self.route = ""


def _local(reply: flags.LocalReply, details: str) -> _Result:
    headers = [("content-type", "text/plain"), *reply.headers]
    return _Result(Response(reply.status, headers, reply.body.encode()), reply.flags, details)


# ---------------------------------------------------------------------------------------------
# The sidecar


class _InFlight:
    """One outbound request on the fast path (`Sidecar._outbound_fast`): what the router
    would hold in its coroutine frames, kept in one object instead. `task` is set once the
    general router took over; `gone` once the caller left. The try's response arrives by
    callback (`responded`, `failed`: an `Upstream` listener), or in `waiter` for the router."""

    __slots__ = ("_router", "cluster", "conn", "endpoint", "gone", "host", "lease", "parent",
                 "policy", "req", "retry", "rid", "sent_at", "service", "sidecar", "span",
                 "start", "task", "tls", "upstream", "waiter")

    def __init__(self, sidecar: Sidecar, req: HttpRequest, conn: Downstream,
                 service: ServiceInfo, cluster: Cluster, host: str, endpoint: Endpoint,
                 tls: bool, lease: Lease, start: float, rid: str, span: TraceContext,
                 parent: TraceContext | None) -> None:
        self.sidecar = sidecar
        self.req = req
        self.conn = conn
        self.service = service
        self.cluster = cluster
        self.policy = cluster.default_retries
        self.host = host
        self.endpoint = endpoint
        self.tls = tls
        self.lease = lease
        self.start = start
        self.sent_at = start
        self.rid = rid
        self.span = span
        self.parent = parent
        self.upstream: Upstream | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.retry: retries.Retry | None = None
        self.task: asyncio.Task[Any] | None = None
        self.gone = False
        self._router: Router | None = None

    def router(self) -> Router:
        """The request's `Router`, with the first try adopted on `host` at `start`. Made
        only when something is left to decide: a response the policy passes on needs none
        (see `Sidecar._fast_responded`), and making it later changes no decision (neither
        the router nor `adopt` draws random numbers)."""
        if self._router is None:
            state = retries.RetryState(self.policy, start=self.start, timeout=None,
                                       rng=self.sidecar.rng, retry_slot=self.cluster.slots.pool)
            self._router = Router(state, self.cluster)
            self._router.adopt(self.host, self.start)  # no deadline: the try has no time limit
        return self._router

    def responded(self, status: int, headers: RawHeaders, body: bytes, keep: bool) -> None:
        self.sidecar._fast_responded(self, status, headers, body, keep)

    def failed(self, exc: Exception) -> None:
        """The try ended without a response: the router judges it (as `_try` would)."""
        if self.gone:
            return
        assert self.sidecar.loop is not None
        self.waiter = self.sidecar.loop.create_future()
        self.waiter.set_exception(exc)
        self.task = self.sidecar._spawn(self.sidecar._outbound_resumed(self))

    def cancel(self) -> None:
        self.sidecar._fast_cancel(self)


class _Inbound:
    """One pod's inbound listener: accepted connections are delivered to that pod's app."""

    def __init__(self, name: str, sock: socket.socket, app: Cluster) -> None:
        self.name = name
        self.sock = sock
        self.app = app
        self.port: int = sock.getsockname()[1]
        self.task: asyncio.Task[None] | None = None
        self.connections: set[Downstream] = set()


class Sidecar:
    """One workload's proxy. Create, `await start()` on an event loop, `push()` configuration,
    `await close()`. From another thread use the URLs, `config()`, `access_log()`, `spans()`
    and `metrics_text()` (reads only).

    The outbound listener serves the workload's app(s); each pod gets its own inbound listener
    (`add_inbound`), so a client sidecar balances over pods. `app_port`: shorthand for one
    inbound at start (None: a client-only sidecar such as `sleep`). `tls`: the workload's
    certificate (`security.WorkloadCertificate`); None means plaintext only. `seed` seeds every
    random choice (weights, faults, LB, back-off).
    """

    def __init__(self, workload: Workload, *, app_port: int | None = None, seed: int = 0,
                 tls: TlsProvider | None = None) -> None:
        self.workload = workload
        self.app_port = app_port
        self.tls = tls
        self.rng = random.Random(seed)
        self.telemetry = Telemetry()
        self.mesh = MeshConfig()
        self.config_version = 0
        self.pushes = 0
        self.fast_path_requests = 0
        """Outbound requests `_outbound_fast` took, counting those it later handed to a task
        (a retry, a new connection): shows the fast path was used."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._inbounds: dict[str, _Inbound] = {}
        self._downstreams: set[Downstream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clusters: dict[str, Cluster] = {}
        self._by_destination: dict[Destination, Cluster] = {}
        self._idle: dict[tuple[str, bool], list[Upstream]] = {}
        self._targets: dict[str, _Target | None] = {}
        self._fast_routes: dict[str, tuple[_Target, Cluster] | None] = {}
        self._bases: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self._mtls_mode = authz.PERMISSIVE
        self._authz: tuple[authz.AuthorizationPolicy, ...] = ()
        self._server_tls: ssl.SSLContext | None = None
        self._client_tls: ssl.SSLContext | None = None
        self.ports: dict[str, int] = {}
        self._peer = f"{workload.name}.{workload.namespace}"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the outbound and admin (metrics) listeners on free loopback ports, and the
        inbound one when `app_port` was given."""
        self.loop = asyncio.get_running_loop()
        if self.tls is not None:  # built once: loading a key pair costs milliseconds
            self._server_tls = self.tls.server_context()
            self._client_tls = self.tls.client_context()
        for name, handler, fast in (("outbound", self._outbound, self._outbound_fast),
                                    ("admin", self._admin, None)):
            server = await self.loop.create_server(
                functools.partial(Downstream, handler, self._downstreams, fast), HOST, 0,
                reuse_address=True)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        if self.app_port is not None:
            await self.add_inbound(self.workload.pod or self.workload.name, self.app_port)

    async def add_inbound(self, name: str, app_port: int) -> int:
        """Open an inbound listener for pod `name` whose app listens on `app_port`; returns
        the listener's port (the pod's endpoint as other sidecars see it)."""
        assert self.loop is not None, "start() first"
        if name in self._inbounds:
            self.set_app_port(name, app_port)
            return self._inbounds[name].port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        sock.listen(512)
        sock.setblocking(False)
        inbound = _Inbound(name, sock, Cluster(f"inbound|{app_port}||", TrafficPolicy(), self.rng))
        self._inbounds[name] = inbound
        self.set_app_port(name, app_port)
        inbound.task = self.loop.create_task(self._accept_inbound(inbound))
        return inbound.port

    def set_app_port(self, name: str, app_port: int) -> None:
        """The pod's app moved (restarted on a new port): deliver there from now on."""
        assert self.loop is not None
        inbound = self._inbounds[name]
        inbound.app.set_endpoints([Endpoint(f"{HOST}:{app_port}", self.workload.name,
                                            self.workload.namespace)], self.loop.time())

    async def remove_inbound(self, name: str) -> None:
        inbound = self._inbounds.pop(name, None)
        if inbound is not None:
            if inbound.task is not None:
                inbound.task.cancel()
            inbound.sock.close()
            for conn in list(inbound.connections):  # the pod is gone: so are its connections
                conn.abort()

    @property
    def inbound_ports(self) -> dict[str, int]:
        """Inbound listener port by pod name."""
        return {name: i.port for name, i in self._inbounds.items()}

    async def close(self) -> None:
        """Stop listening, cut connections, cancel mirrors. Idempotent."""
        for server in self._servers:
            server.close()
        self._servers = []
        for conn in list(self._downstreams):
            conn.abort()
        for name in list(self._inbounds):
            await self.remove_inbound(name)
        for task in list(self._tasks):
            task.cancel()
        for conns in self._idle.values():
            for upstream in conns:
                upstream.close()
        self._idle.clear()

    @property
    def outbound_url(self) -> str:
        return f"http://{HOST}:{self.ports['outbound']}"

    @property
    def inbound_url(self) -> str:
        """The first pod's inbound listener (`inbound_ports` has them all)."""
        if not self._inbounds:
            raise LookupError(f"sidecar of {self.workload.name} has no inbound listener (no app)")
        return f"http://{HOST}:{next(iter(self._inbounds.values())).port}"

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.ports['admin']}"

    @property
    def metrics_url(self) -> str:
        return f"{self.admin_url}/stats/prometheus"

    def __repr__(self) -> str:
        return (f"<Sidecar {self.workload.namespace}/{self.workload.name} "
                f"out={self.ports.get('outbound')} in={list(self.inbound_ports.values())} "
                f"config v{self.config_version}>")

    # -- configuration -----------------------------------------------------------------------

    def push(self, mesh: MeshConfig) -> None:
        """Take a new configuration snapshot (call on the sidecar's loop). Requests in flight
        keep the snapshot they started with; nothing is restarted."""
        w = self.workload
        self._mtls_mode = authz.effective_mtls_mode(mesh.peer_authentications, w.namespace,
                                                    w.labels, w.port)
        self._authz = tuple(p for p in mesh.authorization_policies
                            if p.applies_to(w.namespace, w.labels))
        self._targets = {}
        self._fast_routes = {}
        self.mesh = mesh
        self.config_version = mesh.version
        self.pushes += 1

    @property
    def mtls_mode(self) -> str:
        """The PeerAuthentication mode this sidecar's inbound listener enforces."""
        return self._mtls_mode

    def config(self) -> dict[str, Any]:
        """What this proxy runs now, like `istioctl proxy-config all`: listeners, routes
        (VirtualServices), clusters with policies and endpoints, security."""
        now = self.loop.time() if self.loop else 0.0
        mesh = self.mesh
        return {
            "workload": {"name": self.workload.name, "namespace": self.workload.namespace,
                         "labels": dict(self.workload.labels),
                         "principal": self.workload.principal},
            "version": self.config_version,
            "listeners": {
                "outbound": self.outbound_url,
                "inbound": {name: f"http://{HOST}:{i.port} -> app {i.app.hosts[0]}"
                            for name, i in self._inbounds.items()},
                "admin": self.admin_url,
            },
            "routes": [
                {"name": vs.name, "namespace": vs.namespace, "hosts": list(vs.hosts),
                 "http": [r.name or f"route {i}" for i, r in enumerate(vs.routes)]}
                for vs in mesh.virtual_services if vs.for_sidecars
            ],
            "services": {fqdn: [e.address for e in s.endpoints] for fqdn, s in mesh.services.items()},
            "clusters": [c.describe(now) for c in list(self._clusters.values())],
            "security": {
                "mtlsMode": self._mtls_mode,
                "tls": self.tls is not None,
                "authorizationPolicies": [f"{p.namespace}/{p.name} ({p.action})" for p in self._authz],
            },
            "sources": [dict(s) for s in mesh.sources],
        }

    def metrics_text(self) -> str:
        return self.telemetry.metrics.prometheus()

    def access_log(self, last: int | None = None) -> list[str]:
        return self.telemetry.access_log(last)

    def spans(self, trace_id: str | None = None) -> list[dict[str, object]]:
        return self.telemetry.span_dicts(trace_id)

    # -- outbound ----------------------------------------------------------------------------

    def _target(self, authority: str) -> _Target | None:
        if authority in self._targets:  # None cached too: an authority the mesh does not know
            return self._targets[authority]
        mesh = self.mesh
        fqdn, port = resolve_authority(authority, self.workload.namespace, mesh.services)
        service = mesh.services.get(fqdn)
        target = None
        if service is not None:
            if port is None or port not in service.ports:
                port = 80 if 80 in service.ports else service.ports[0]
            vs = next((v for v in mesh.virtual_services
                       if v.for_sidecars and v.applies_to(authority, self.workload.namespace)), None)
            target = _Target(service, port, vs, Destination(service.fqdn, None, port))
        if len(self._targets) > 4096:
            self._targets.clear()
        self._targets[authority] = target
        return target

    @staticmethod
    def _ids(request_id: str, traceparent: str) -> tuple[str, TraceContext, TraceContext | None]:
        """A request's `x-request-id` (kept, or a new one) and this hop's span."""
        if not request_id and not traceparent:
            rid, span = new_ids()
            return rid, span, None
        parent = TraceContext.parse(traceparent) if traceparent else None
        return (request_id or new_request_id(), parent.child() if parent else TraceContext.start(),
                parent)

    @classmethod
    def _identify(cls, headers: dict[str, str]) -> tuple[str, TraceContext, TraceContext | None]:
        """Give a request its `x-request-id` and this hop's `traceparent`."""
        rid, span, parent = cls._ids(headers.get("x-request-id", ""), headers.get("traceparent", ""))
        headers["x-request-id"] = rid
        headers["traceparent"] = span.header
        return rid, span, parent

    def _record_gone(self, req: HttpRequest, conn: Downstream, start: float,
                     span: TraceContext, parent: TraceContext | None,
                     service: ServiceInfo | None, request_id: str | None = None) -> None:
        """The caller left before the answer: Envoy logs code 0 with flag DC."""
        gone = _Result(Response(0, [], b""), (flags.DOWNSTREAM_CONNECTION_TERMINATION,),
                       "downstream_remote_disconnect")
        self._record("source", req, conn, gone, start, span, parent, service, mtls=None,
                     request_id=request_id)

    async def _outbound(self, req: HttpRequest, conn: Downstream) -> tuple[Response, bool]:
        loop = self.loop
        assert loop is not None
        start = loop.time()
        headers = req.headers
        rid, span, parent = self._identify(headers)
        target = self._target(req.authority)
        service: ServiceInfo | None = target.service if target else None
        if target is None:
            result = _local(flags.NO_ROUTE, "route_not_found")
        else:
            try:
                if target.virtual_service is None:  # Istio's default route: nothing to decide
                    result = await self._forward(req, target.default, req.path, req.authority,
                                                 headers, None, None)
                else:
                    result = await self._route(req, target, start)
            except asyncio.CancelledError:
                self._record_gone(req, conn, start, span, parent, service)
                raise
        result.response.headers.append(("x-request-id", rid))
        self._record("source", req, conn, result, start, span, parent, service, mtls=None)
        return result.response, True

    # -- outbound fast path ------------------------------------------------------------------

    def _outbound_fast(self, req: HttpRequest, conn: Downstream) -> _InFlight | None:
        """Take an outbound request without a task, or return None for the general path.

        Why: on two shared cores the sidecar's CPU per request decides its throughput, and
        most requests need none of the general path's waiting (route decision, fault delays,
        timers, pool queues) nor its decoded headers. Taken when all of these hold, checked
        before anything changes: the Host is a known service with no VirtualService (Istio's
        default route), its cluster has no consistent hashing and no connectionPool limits
        (so admission never waits or overflows), no route or per-try timeout applies (no
        timer), the request is not HEAD, is in origin form and repeats no header, and a host
        is healthy. The first host is picked by `router.choose_host`, as `Router.next_try`
        picks it; a response the retry policy passes on is recorded with the outlier detector
        and answered; anything else is judged by the request's `Router` (made then, with the
        first try adopted), so decisions and seeded random choices are those of the general
        path. The try goes out at once on a kept-alive connection, its header lines forwarded
        as they came; the response comes back by callback (`_fast_responded`). Whatever needs
        waiting (a new connection, a retry, a try that ended without a response) is handed to
        `_attempts` in a task, with the same Router, so it continues exactly where the fast
        path stopped.
        """
        route = self._fast_routes.get(req.authority)
        if route is None and req.authority not in self._fast_routes:
            route = self._fast_route(req.authority)
        if route is None or req.method == "HEAD" or not req.target.startswith("/"):
            return None
        target, cluster = route
        # The header lines to forward, in order; those the sidecar sets are kept aside.
        lines: list[bytes] = []
        names: set[bytes] = set()
        request_id = traceparent = b""
        rid_at = trace_at = -1
        for name, value in req.raw:
            if name in names or name == _TIMEOUT_HEADER:
                return None  # repeats are joined, the timeout header sets a timer: general path
            names.add(name)
            if name in NOT_FORWARDED_BYTES:
                continue
            if name == b"x-request-id":
                rid_at, request_id = len(lines), value
            elif name == b"traceparent":
                trace_at, traceparent = len(lines), value
            lines.append(b"%s: %s\r\n" % (name, value))
        loop = self.loop
        assert loop is not None
        now = loop.time()
        # The first try's pick, as `Router.next_try` makes it (no host yet to avoid, no key).
        host = choose_host(cluster, now, attempts=cluster.default_retries.host_selection_attempts)
        if host is None:
            return None  # no healthy host: the router answers 503 UH
        rid, span, parent = self._ids(request_id.decode("latin-1"), traceparent.decode("latin-1"))
        lease = cluster.slots.admit()
        assert lease is not None and lease.connection is not None, "an unlimited pool admits at once"
        cluster.balancer.started(host)
        endpoint = cluster.endpoints[host]
        flight = _InFlight(self, req, conn, target.service, cluster, host, endpoint,
                           self._use_tls(endpoint, cluster.policy), lease, now, rid, span, parent)
        self.fast_path_requests += 1
        idle = self._idle.get((host, flight.tls))
        while idle:
            upstream = idle.pop()
            if not upstream.closed:
                # As `_identify` and `request_bytes` would write them (dict order: a header
                # the sidecar sets stays where it was, or comes last).
                rid_line = b"x-request-id: %s\r\n" % rid.encode("latin-1")
                trace_line = b"traceparent: %s\r\n" % span.header.encode()
                if rid_at < 0:
                    lines.append(rid_line)
                else:
                    lines[rid_at] = rid_line
                if trace_at < 0:
                    lines.append(trace_line)
                else:
                    lines[trace_at] = trace_line
                flight.upstream = upstream
                upstream.send_to(request_wire(req.method, req.path, req.authority, lines,
                                               req.body, 1, self._peer), flight)
                return flight
        flight.task = self._spawn(self._outbound_resumed(flight))  # connecting waits
        return flight

    def _fast_route(self, authority: str) -> tuple[_Target, Cluster] | None:
        """The target and cluster of a Host the fast path may take (cached until a push)."""
        target = self._target(authority)
        route = None
        if target is not None and target.virtual_service is None:
            cluster = self._cluster(target.default)
            if isinstance(cluster, Cluster) and cluster.plain:
                route = (target, cluster)
        if len(self._fast_routes) > 4096:
            self._fast_routes.clear()
        self._fast_routes[authority] = route
        return route

    def _fast_responded(self, flight: _InFlight, status: int, headers: RawHeaders, body: bytes,
                        keep: bool) -> None:
        """The fast try's response arrived (`_InFlight.responded`)."""
        if flight.gone:
            return
        assert flight.upstream is not None and self.loop is not None
        cluster, host, upstream = flight.cluster, flight.host, flight.upstream
        try:
            self._keep_or_close(upstream, host, flight.tls, keep,
                                cluster.policy.connection_pool.max_requests_per_connection)
            cluster.balancer.finished(host)
            cluster.slots.release(flight.lease, reusable=keep)
            now = self.loop.time()
            upstream_ms = (now - flight.sent_at) * 1000.0
            if not flight.policy.retriable_response(status, upstream.special):
                # A first try's response the policy does not retry is recorded as
                # `Router.on_result` records it and passed on as it is (`RetryState.on_outcome`
                # finishes with no flags), rendered as `_finish`, `_answer_fast` and
                # `Downstream.answer` would.
                if cluster.outlier is not None:
                    cluster.outlier.record(host, status, now)
                keep_down = flight.req.keep_alive
                lines = [b"%s: %s\r\n" % (k, v) for k, v in headers if k not in HOP_BY_HOP_BYTES]
                lines.append(b"x-envoy-upstream-service-time: %d\r\nx-request-id: %s\r\n" % (
                    round(upstream_ms), flight.rid.encode("latin-1")))
                # Recorded before the answer goes out, as everywhere: whoever reads the
                # telemetry once the response arrived finds the request in it.
                self._log("source", flight.req, flight.conn, status, (), "via_upstream",
                          len(body), flight.endpoint, upstream_ms, cluster.name, "",
                          flight.start, flight.span, flight.parent, flight.service, flight.rid,
                          mtls=None)
                flight.conn.answered_raw(response_wire(status, lines, body, keep_down), keep_down)
                return
            response = Response(status, [(k.decode("latin-1"), v.decode("latin-1"))
                                          for k, v in headers], body, keep)
            decision = flight.router().on_result(
                retries.Outcome(retries.RESPONSE, status, upstream.special), now)
            if isinstance(decision, retries.Retry):
                flight.retry = decision
                flight.task = self._spawn(self._outbound_resumed(flight))
                return
            result = self._finish(decision, cluster, flight.endpoint, response, upstream_ms)
        except Exception as exc:  # noqa: BLE001 - as in Downstream._serve
            flight.conn.answered_fast(flight.req, error_response(exc), False)
            return
        self._answer_fast(flight, result)

    async def _outbound_resumed(self, flight: _InFlight) -> None:
        """The general router takes over a fast-path request (see `_outbound_fast`)."""
        req = flight.req
        headers = req.headers
        headers["x-request-id"] = flight.rid  # as `_identify` sets them for the router
        headers["traceparent"] = flight.span.header
        try:
            first: _InFlight | None = flight
            if flight.retry is not None:
                first = None  # the try is judged; wait the back-off, then the next try
                if flight.retry.delay > 0:
                    await asyncio.sleep(flight.retry.delay)
            result = await self._attempts(req.method, req.path, req.authority, headers,
                                          req.body, flight.cluster, flight.router(),
                                          self._peer, self._use_tls, first)
        except asyncio.CancelledError:
            return  # the caller left: `_fast_cancel` logged it
        except Exception as exc:  # noqa: BLE001 - as in Downstream._serve
            flight.conn.answered_fast(req, error_response(exc), False)
            return
        self._answer_fast(flight, result)

    def _answer_fast(self, flight: _InFlight, result: _Result) -> None:
        result.response.headers.append(("x-request-id", flight.rid))
        self._record("source", flight.req, flight.conn, result, flight.start, flight.span,
                     flight.parent, flight.service, mtls=None, request_id=flight.rid)
        flight.conn.answered_fast(flight.req, result.response, True)

    def _fast_cancel(self, flight: _InFlight) -> None:
        """The caller left mid-request (DC): free what the try holds, as `_attempts` does."""
        if flight.gone:
            return
        flight.gone = True
        if flight.task is not None:
            flight.task.cancel()  # `_attempts` and `_try` clean up on cancellation
        elif flight.upstream is not None:
            flight.upstream.listener = None
            flight.upstream.abort()  # this connection's answer has nowhere to go
            flight.cluster.balancer.finished(flight.host)
            flight.cluster.slots.release(flight.lease, reusable=False)
        self._record_gone(flight.req, flight.conn, flight.start, flight.span, flight.parent,
                          flight.service, flight.rid)

    async def _route(self, req: HttpRequest, target: _Target, start: float) -> _Result:
        vs = target.virtual_service
        headers = req.headers
        route_name = ""
        response_ops: tuple[HeaderOps, ...]
        mirrors: tuple[Destination, ...]
        if vs is None:
            destination = target.default
            path, authority = req.path, req.authority
            request_headers, response_ops = headers, ()
            route_timeout, policy, fault, mirrors = None, None, None, ()
        else:
            decision = vs.decide(Request(req.method, req.path, req.authority, headers,
                                         port=target.port),
                                 self.rng, labels=self.workload.labels,
                                 namespace=self.workload.namespace)
            if isinstance(decision, NoRoute):
                return _local(decision.reply, "route_not_found")
            if isinstance(decision, Redirect):
                return _Result(Response(decision.status, [("location", decision.location)], b""),
                               details="redirect")
            if isinstance(decision, DirectResponse):
                return _Result(Response(decision.status, [("content-type", "text/plain")],
                                         decision.body), details="direct_response")
            assert isinstance(decision, Forward)
            route = decision.route
            route_name = route.name
            destination = decision.destination
            path, authority = decision.path, decision.authority
            request_headers = decision.request_headers(headers)
            response_ops = decision.response_ops
            route_timeout, policy, fault = route.timeout, route.retries, route.fault
            mirrors = decision.mirrors
        extra: tuple[str, ...] = ()
        if fault is not None:
            injected = fault.decide(self.rng)
            extra = injected.flags
            if injected.delay:
                await asyncio.sleep(injected.delay)
            if injected.abort is not None:
                result = _local(injected.abort, "fault_filter_abort")
                result.flags = extra
                return result
        result = await self._forward(req, destination, path, authority, request_headers,
                                     route_timeout, policy)
        result.flags = extra + result.flags
        result.route = route_name
        for ops in response_ops:
            fixed: dict[str, str] = dict(result.response.headers)
            ops.apply(fixed)
            result.response.headers = list(fixed.items())
        for mirror in mirrors:
            self._spawn(self._mirror(req, mirror, path, authority, request_headers))
        return result

    def _cluster(self, destination: Destination) -> Cluster | flags.LocalReply:
        """The live cluster for a destination (created or refreshed for the current config)."""
        mesh = self.mesh
        cluster = self._by_destination.get(destination)
        if cluster is not None and cluster.version == mesh.version:
            return cluster
        service = mesh.services.get(destination.host)
        default_port = service.ports[0] if service else (destination.port or 80)
        name = destination.cluster_name(default_port)
        cluster = self._clusters.get(name)
        dr = mesh.destination_rules.get(destination.host)
        if destination.subset is not None and (dr is None or not dr.has_subset(destination.subset)):
            return flags.NO_CLUSTER
        port = destination.port or default_port
        policy = dr.policy(destination.subset, port) if dr else TrafficPolicy()
        if cluster is None or cluster.policy != policy:
            cluster = Cluster(name, policy, self.rng)
            self._clusters[name] = cluster
        endpoints = list(service.endpoints) if service else []
        if destination.subset is not None and dr is not None:
            labels = dr.subsets[destination.subset][0]
            endpoints = [e for e in endpoints if all(e.labels.get(k) == v for k, v in labels.items())]
        assert self.loop is not None
        cluster.set_endpoints(endpoints, self.loop.time())
        cluster.version = mesh.version
        if len(self._by_destination) > 4096:
            self._by_destination.clear()
        self._by_destination[destination] = cluster
        return cluster

    async def _forward(self, req: HttpRequest, destination: Destination, path: str,
                       authority: str, headers: Mapping[str, str], route_timeout: float | None,
                       policy: retries.RetryPolicy | None) -> _Result:
        loop = self.loop
        assert loop is not None
        found = self._cluster(destination)
        if isinstance(found, flags.LocalReply):
            return _local(found, "cluster_not_found")
        cluster = found
        if policy is None:
            policy = cluster.default_retries
        timeout = retries.request_timeout(route_timeout, headers)
        state = retries.RetryState(policy, start=loop.time(), timeout=timeout, rng=self.rng,
                                   retry_slot=cluster.slots.pool)
        key = None
        if isinstance(cluster.balancer, ConsistentHash):
            key = cluster.balancer.key.of(headers, Request(req.method, path).query, None)
        return await self._attempts(req.method, path, authority, headers, req.body, cluster,
                                    Router(state, cluster, key), self._peer, self._use_tls)

    def _use_tls(self, endpoint: Endpoint, policy: TrafficPolicy) -> bool:
        """Auto-mTLS: TLS to endpoints with a sidecar unless they (or the DR) say DISABLE."""
        if policy.tls_mode is not None:
            return policy.tls_mode == "ISTIO_MUTUAL" and self.tls is not None
        return (self.tls is not None and endpoint.sidecar
                and endpoint.mtls_mode != authz.DISABLE)

    async def _attempts(self, method: str, path: str, authority: str, headers: Mapping[str, str],
                        body: bytes, cluster: Cluster, router: Router, peer: str | None,
                        use_tls: Callable[[Endpoint, TrafficPolicy], bool],
                        first: _InFlight | None = None) -> _Result:
        """Drive the request's `Router`: each try it asks for is admitted, sent and reported
        back, until it says finish. `first`: a try the fast path sent that did not end in a
        response; report it first."""
        loop = self.loop
        assert loop is not None
        endpoint: Endpoint | None = None
        while True:
            sent: tuple[Upstream, asyncio.Future[Response]] | None = None
            if first is not None:
                host, endpoint, until, lease, tls = first.host, first.endpoint, None, first.lease, first.tls
                sent_at, attempt = first.sent_at, router.state.attempts
                if first.upstream is not None and first.waiter is not None:
                    sent = (first.upstream, first.waiter)
                first = None
            else:
                step = router.next_try(loop.time())
                if not isinstance(step, Try):
                    return self._finish(step, cluster, endpoint if router.host else None, None)
                host, until, attempt = step.host, step.until, step.attempt
                endpoint = cluster.endpoints[host]
                admitted = cluster.slots.admit()
                if admitted is not None and admitted.connection is None:
                    await cluster.slots.wait(admitted)
                if admitted is None:
                    overflow = router.on_result(retries.Outcome.of(retries.OVERFLOW), loop.time())
                    assert isinstance(overflow, retries.Finish)
                    return self._finish(overflow, cluster, endpoint, None)
                lease = admitted
                cluster.balancer.started(host)
                sent_at = loop.time()
                tls = use_tls(endpoint, cluster.policy)
            response: Response | None = None
            try:
                outcome, response = await self._try(
                    method, path, authority, headers, body, host, tls, attempt, until, peer,
                    cluster.policy.connection_pool.max_requests_per_connection,
                    endpoint.principal if tls else None, sent)
            finally:
                cluster.balancer.finished(host)
                cluster.slots.release(lease, reusable=response is not None and response.keep_alive)
            now = loop.time()
            decision = router.on_result(outcome, now)
            if isinstance(decision, retries.Finish):
                return self._finish(decision, cluster, endpoint, response, (now - sent_at) * 1000.0)
            if decision.delay > 0:
                await asyncio.sleep(decision.delay)

    def _finish(self, decision: retries.Finish, cluster: Cluster, endpoint: Endpoint | None,
                response: Response | None, upstream_ms: float | None = None) -> _Result:
        if decision.reply is not None:
            result = _local(decision.reply, "upstream_reset_before_response_started"
                            if decision.reply.status == 503 else "local_reply")
            result.flags = decision.flags
        else:
            assert response is not None
            out = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP]
            if upstream_ms is not None:
                out.append(("x-envoy-upstream-service-time", str(round(upstream_ms))))
            result = _Result(Response(response.status, out, response.body), decision.flags,
                             upstream_ms=upstream_ms)
        result.endpoint = endpoint
        result.cluster = cluster.name
        return result

    async def _try(self, method: str, path: str, authority: str, headers: Mapping[str, str],
                   body: bytes, host: str, tls: bool, attempt: int, until: float | None,
                   peer: str | None, per_connection: int = 0, identity: str | None = None,
                   sent: tuple[Upstream, asyncio.Future[Response]] | None = None,
                   ) -> tuple[retries.Outcome, Response | None]:
        """One attempt on one host: returns the outcome and the response (if one came).
        `per_connection`: `maxRequestsPerConnection` (0 = keep connections alive);
        `identity`: the SPIFFE id the server must present over mTLS (secure naming);
        `sent`: the fast path already sent this try on a kept-alive connection."""
        loop = self.loop
        assert loop is not None
        data = request_bytes(method, path, authority, headers, body, attempt, peer)
        timer: asyncio.TimerHandle | None = None
        for fresh in (False, True):
            conn = None
            if sent is not None:
                conn, waiter = sent
                sent = None
                reused = True  # the fast path only sends on kept-alive connections
            else:
                idle = None if fresh else self._idle.get((host, tls))
                while idle:
                    candidate = idle.pop()
                    if not candidate.closed:
                        conn = candidate
                        break
                try:
                    if conn is None:
                        conn = await self._connect(host, tls, until, identity)
                except _Timeout:
                    return retries.Outcome.of(retries.PER_TRY_TIMEOUT), None
                except (OSError, ssl.SSLError, asyncio.TimeoutError, security.IdentityError):
                    return retries.Outcome.of(retries.CONNECT_FAILURE), None
                reused = conn.requests > 0
                waiter = conn.send(data, method == "HEAD")
            if until is not None:
                timer = loop.call_at(until, _expire, waiter)
            try:
                response = await waiter
            except _Timeout:
                conn.abort()
                return retries.Outcome.of(retries.PER_TRY_TIMEOUT), None
            except asyncio.CancelledError:
                conn.abort()  # the caller left: this connection's answer has nowhere to go
                raise
            except ConnectionTerminated:
                if reused and not fresh:
                    continue  # a kept-alive connection the upstream had closed: once more, fresh
                return retries.Outcome.of(retries.CONNECTION_TERMINATION), None
            finally:
                if timer is not None:
                    timer.cancel()
            self._keep_or_close(conn, host, tls, response.keep_alive, per_connection)
            return retries.Outcome(retries.RESPONSE, response.status, conn.special), response
        raise AssertionError("unreachable")

    def _keep_or_close(self, conn: Upstream, host: str, tls: bool, keep_alive: bool,
                       per_connection: int) -> None:
        """After a response: back to the host's idle connections, or closed at its cap."""
        if per_connection and conn.requests >= per_connection:
            conn.close()
        elif keep_alive and not conn.closed:
            self._idle.setdefault((host, tls), []).append(conn)

    async def _connect(self, host: str, tls: bool, until: float | None,
                       identity: str | None = None) -> Upstream:
        """A new connection; over mTLS the server's certificate must carry `identity` (Istio's
        secure naming: a valid certificate of another workload is refused, flag UF)."""
        loop = self.loop
        assert loop is not None
        address, _, port = host.rpartition(":")
        limit = _CONNECT_TIMEOUT
        if until is not None:
            limit = min(limit, until - loop.time())
            if limit <= 0:
                raise _Timeout()
        context = self._client_tls if tls else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(host, loop), address, int(port), ssl=context,
                                       server_hostname="" if context else None), limit)
        except asyncio.TimeoutError:
            if until is not None and loop.time() >= until:
                raise _Timeout() from None
            raise
        if identity is not None:
            try:
                security.check_peer(conn.transport, identity)
            except security.IdentityError:
                conn.abort()
                raise
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _mirror(self, req: HttpRequest, destination: Destination, path: str,
                      authority: str, headers: Mapping[str, str]) -> None:
        """Fire and forget: one try, response discarded. The copy's Host is the request's
        (Istio >= 1.28) or Envoy's `-shadow` form when the mesh asks for it (see
        `MeshConfig.shadow_host_suffix` and `hosts.shadow_authority`)."""
        found = self._cluster(destination)
        if isinstance(found, flags.LocalReply):
            return
        assert self.loop is not None
        state = retries.RetryState(retries.NO_RETRIES, start=self.loop.time(), timeout=None,
                                   rng=self.rng)
        copy = dict(headers)
        trace = TraceContext.parse(copy.get("traceparent"))
        if trace is not None:
            copy["traceparent"] = TraceContext(trace.trace_id, trace.span_id, False).header
        if self.mesh.shadow_host_suffix:
            authority = shadow_authority(authority)
        await self._attempts(req.method, path, authority, copy, req.body, found,
                             Router(state, found), self._peer, self._use_tls)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- inbound -----------------------------------------------------------------------------

    async def _accept_inbound(self, inbound: _Inbound) -> None:
        loop = self.loop
        assert loop is not None
        while True:
            try:
                client, _ = await loop.sock_accept(inbound.sock)
            except (OSError, asyncio.CancelledError):
                return
            self._spawn(self._admit(client, inbound))

    async def _admit(self, client: socket.socket, inbound: _Inbound) -> None:
        """Sniff TLS from plaintext (PERMISSIVE serves both on one port, as Envoy's TLS
        inspector allows), then enforce the PeerAuthentication mode: a refused connection is
        reset, so the client sees no HTTP status at all."""
        loop = self.loop
        assert loop is not None
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            kind = await security.detect_protocol(client, timeout=30.0)
        except (asyncio.TimeoutError, OSError):
            kind = None
        if kind is None:
            client.close()
            return
        is_tls = kind == security.TLS
        if not authz.admits(self._mtls_mode, is_tls) or (is_tls and self._server_tls is None):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # linger 0: RST, "connection reset by peer"
            return
        try:
            await loop.connect_accepted_socket(
                lambda: Downstream(lambda r, c: self._inbound(r, c, inbound), inbound.connections),
                client, ssl=self._server_tls if is_tls else None)
        except (OSError, ssl.SSLError):
            client.close()

    async def _inbound(self, req: HttpRequest, conn: Downstream,
                       inbound: _Inbound) -> tuple[Response, bool]:
        loop = self.loop
        assert loop is not None
        start = loop.time()
        headers = req.headers
        peer = headers.pop(PEER_HEADER, None)
        _, span, parent = self._identify(headers)
        headers.pop("x-forwarded-client-cert", None)  # only this proxy may say who called
        decision = authz.authorize(
            self._authz, self.workload.namespace, self.workload.labels,
            authz.AuthzRequest(method=req.method, path=req.path, host=req.authority,
                               port=self.workload.port, headers=headers,
                               principal=conn.peer_principal,
                               source_ip=conn.remote.rpartition(":")[0] or None))
        if not decision.allowed:
            assert decision.reply is not None
            result = _local(decision.reply, decision.details)
        else:
            if conn.peer_der is not None:
                if conn.xfcc is None:  # once per connection: parsing a certificate is costly
                    conn.xfcc = security.xfcc(security.SpiffeId.parse(self.workload.principal),
                                              conn.peer_der)
                headers["x-forwarded-client-cert"] = conn.xfcc
            headers["x-forwarded-proto"] = "http"
            state = retries.RetryState(_INBOUND_RETRIES, start=start, timeout=None, rng=self.rng)
            result = await self._attempts(req.method, req.path, req.authority, headers, req.body,
                                          inbound.app, Router(state, inbound.app), None, _plaintext)
        self._record("destination", req, conn, result, start, span, parent, None,
                     mtls=conn.peer_principal is not None, source=_split_peer(peer))
        return result.response, True

    # -- admin -------------------------------------------------------------------------------

    async def _admin(self, req: HttpRequest, conn: Downstream) -> tuple[Response, bool]:
        import json

        path = req.path.split("?", 1)[0]
        if path in ("/stats/prometheus", "/metrics"):
            body, kind = self.metrics_text().encode(), "text/plain; version=0.0.4"
        elif path == "/config_dump":
            body, kind = json.dumps(self.config(), indent=1, default=str).encode(), "application/json"
        elif path in ("/ready", "/healthz/ready"):
            body, kind = b"LIVE", "text/plain"
        else:
            return Response(404, [("content-type", "text/plain")],
                             b"admin paths: /stats/prometheus /config_dump /ready"), True
        return Response(200, [("content-type", kind)], body), True

    # -- telemetry ---------------------------------------------------------------------------

    def _record(self, reporter: str, req: HttpRequest, conn: Downstream, result: _Result,
                start: float, span: TraceContext, parent: TraceContext | None,
                service: ServiceInfo | None, *, mtls: bool | None,
                source: tuple[str, str] | None = None, request_id: str | None = None) -> None:
        """Record a request's `_Result` (see `_log`); `request_id` None: read from `req`."""
        response = result.response
        self._log(reporter, req, conn, response.status, result.flags, result.details,
                  len(response.body), result.endpoint, result.upstream_ms, result.cluster,
                  result.route, start, span, parent, service,
                  req.header("x-request-id") if request_id is None else request_id,
                  mtls=mtls, source=source)

    def _log(self, reporter: str, req: HttpRequest, conn: Downstream, status: int,
             response_flags: tuple[str, ...], details: str, bytes_out: int, ep: Endpoint | None,
             upstream_ms: float | None, cluster: str, route: str, start: float,
             span: TraceContext, parent: TraceContext | None, service: ServiceInfo | None,
             request_id: str, *, mtls: bool | None, source: tuple[str, str] | None = None) -> None:
        """One request into the metrics, the access log and the spans."""
        assert self.loop is not None
        duration_ms = (self.loop.time() - start) * 1000.0
        flag_text = flags.format_flags(response_flags) if response_flags else "-"
        w = self.workload
        if reporter == "source":
            key: tuple[Any, ...] = ("s", service.fqdn if service else req.authority,
                                    ep.address if ep else None)
            base = self._bases.get(key)
            if base is None:
                base = self._bases[key] = (
                    "source", w.name, w.namespace, w.principal, w.labels.get("app", "unknown"),
                    w.labels.get("version", "unknown"),
                    ep.workload if ep else "unknown", ep.namespace if ep else "unknown",
                    (ep.principal or "unknown") if ep else "unknown",
                    ep.labels.get("app", "unknown") if ep else "unknown",
                    ep.labels.get("version", "unknown") if ep else "unknown",
                    service.fqdn if service else req.authority or "unknown",
                    service.name if service else "unknown",
                    service.namespace if service else "unknown", "http", "unknown")
        else:
            src_workload, src_ns = source or ("unknown", "unknown")
            key = ("d", src_workload, src_ns, conn.peer_principal)
            base = self._bases.get(key)
            if base is None:
                svc = w.labels.get("app", w.name)
                base = self._bases[key] = (
                    "destination", src_workload, src_ns, conn.peer_principal or "unknown",
                    "unknown", "unknown", w.name, w.namespace,
                    w.principal if mtls else "unknown", w.labels.get("app", "unknown"),
                    w.labels.get("version", "unknown"),
                    f"{svc}.{w.namespace}.svc.cluster.local", svc, w.namespace, "http",
                    "mutual_tls" if mtls else "none")
        self.telemetry.metrics.record(base, status, flag_text, duration_ms)
        wall = req.received
        self.telemetry.access.append((
            wall, req.method, req.path, status, flag_text, details, len(req.body), bytes_out,
            duration_ms, upstream_ms, req.header("x-forwarded-for"), req.header("user-agent"),
            request_id, req.authority, ep.address if ep else "", cluster, conn.local,
            conn.remote, route))
        self.telemetry.spans.append((
            span.trace_id, span.span_id, parent.span_id if parent else None, req.authority,
            req.path, w.name, reporter, wall, duration_ms, status, flag_text))


def _plaintext(endpoint: Endpoint, policy: TrafficPolicy) -> bool:
    """The hop from the inbound listener to the local app is never TLS."""
    return False


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(_Timeout())


def _split_peer(peer: str | None) -> tuple[str, str] | None:
    if not peer or "." not in peer:
        return None
    workload, _, namespace = peer.rpartition(".")
    return workload, namespace
