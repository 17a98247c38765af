"""The queue-proxy: the sidecar in front of every replica, and the HTTP plumbing of the data path.

In Knative each pod runs the user container behind a queue-proxy that

- enforces ``containerConcurrency`` as a hard limit: at most CC requests reach the container at
  once, up to 10 x CC more wait in the pod, and one more is answered **503** at once (a
  "breaker"); CC = 0 means no limit;
- ends a request that takes longer than the revision's ``timeoutSeconds`` with **504**;
- counts every request the moment it arrives (so a queued request counts as concurrency) and
  reports each second the time-weighted average concurrency and the request rate, with the
  requests proxied by the activator (header ``K-Proxy-Request: activator``) counted apart so
  the autoscaler counts them once.

Here the queue-proxy is an asyncio server on the cluster's event loop, one per replica, on its
own loopback port, keeping kept-alive connections to its replica. The server and upstream pool
below are shared by the ingress and the activator; messages are framed by labkit.http1 (limits,
chunked, keep-alive), and whole bodies are buffered (Content-Length or chunked in;
Content-Length out), which keeps each hop to a few hundred microseconds on a laptop.

Each answer the queue-proxy forwards gets one more ``Server-Timing`` line, ``queue-proxy;dur=``
(milliseconds), after whatever the container sent: the time the request spent in this hop, the
breaker's queue included, the call to the container excluded. It is a labkit addition (Knative
reports these times as metrics, not headers) so a notebook can see the hop per request.

Followed: knative/serving ``pkg/queue/{handler.go,breaker.go}``, networking
``pkg/http/stats/request.go``, per /work/shared/reference/knative-kpa.md section 6.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from labkit import http1
from labkit.core.loop import BackgroundLoop
from labkit.net import HOST
from labkit.serving.constants import QUEUE_PROXY_QUEUE_FACTOR

__all__ = [
    "MAX_BODY",
    "PROBE_HEADER",
    "PROXY_HEADER",
    "SERVER_TIMING",
    "Breaker",
    "HttpServer",
    "QueueFull",
    "QueueProxy",
    "Request",
    "RequestStats",
    "Response",
    "Stat",
    "UpstreamPool",
    "error_response",
    "read_request",
    "read_response",
    "timing_entry",
]

PROXY_HEADER = "K-Proxy-Request"
"""Set to "activator" on requests the activator forwards."""
PROBE_HEADER = "K-Network-Probe"
"""A probe the queue-proxy answers itself (is my container ready?) instead of forwarding."""
SERVER_TIMING = "Server-Timing"
"""Each hop appends its own line; HTTP lets a list-valued field repeat, so nothing is rewritten."""
REVISION_RESPONSE_HEADER = "x-labkit-revision"
"""labkit-only: which revision answered, so a student can watch a traffic split."""
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "content-length",
})
_NO_BODY = frozenset({204, 304})
MAX_BODY = 64 * 1024 * 1024
"""Largest request body a platform hop accepts (413 beyond). Knative streams bodies and has no
such limit; labkit buffers each body whole, so it caps them to keep a laptop's memory safe."""


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 messages


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def keep_alive(self) -> bool:
        return http1.keep_alive(self.version, self.headers)

    def encode(self, extra: list[tuple[str, str]] | None = None) -> bytes:
        """The request as sent upstream: kept alive, with a Content-Length body."""
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in _HOP_BY_HOP]
        lines += [f"{k}: {v}" for k, v in extra or ()]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def encode(self, keep_alive: bool, method: str = "GET",
               extra: list[tuple[str, str]] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in _HOP_BY_HOP]
        lines += [f"{k}: {v}" for k, v in extra or ()]
        if self.status not in _NO_BODY:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if method == "HEAD" or self.status in _NO_BODY else head + self.body


def timing_entry(name: str, seconds: float) -> str:
    """One W3C Server-Timing metric, `name;dur=<milliseconds>`."""
    return f"{name};dur={seconds * 1000:.3f}"


def error_response(status: int, message: str) -> Response:
    """A plain-text answer made by the platform itself (503 overload, 504 timeout, ...)."""
    return Response(status, http1.reason(status), [("Content-Type", "text/plain; charset=utf-8")],
                    (message.rstrip("\n") + "\n").encode())


async def read_request(reader: asyncio.StreamReader, max_body: int | None = None,
                       writer: asyncio.StreamWriter | None = None) -> Request | None:
    """The next request on a connection, or None when the client closed it; a request that
    cannot be framed raises `http1.HttpError` (answer its status, then close)."""
    parsed = await http1.read_request(reader, max_body=max_body, writer=writer)
    if parsed is None:
        return None
    return Request(parsed.method, parsed.target, parsed.version, parsed.headers, parsed.body)


async def read_response(reader: asyncio.StreamReader, method: str) -> Response:
    parsed = await http1.read_response(reader, method)
    return Response(parsed.status, parsed.reason, parsed.headers, parsed.body, parsed.keep_alive)


class UpstreamPool:
    """Kept-alive connections to one backend (host, port), reused request after request."""

    def __init__(self, port: int, host: str = HOST, max_idle: int = 64) -> None:
        self.host = host
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._max_idle = max_idle

    async def send(self, request: Request, extra: list[tuple[str, str]] | None = None
                   ) -> Response:
        """Send and read the answer; a kept-alive connection the backend closed meanwhile
        is replaced once (nothing was answered on it, so the retry is safe)."""
        data = request.encode(extra)
        while True:
            reused = bool(self._idle)
            reader, writer = self._idle.pop() if reused else await asyncio.open_connection(
                self.host, self.port, limit=http1.MAX_HEAD)
            try:
                writer.write(data)
                response = await read_response(reader, request.method)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                if reused:
                    continue
                raise
            except BaseException:  # cancelled (a timeout): the connection state is unknown
                writer.close()
                raise
            if response.keep_alive and len(self._idle) < self._max_idle:
                self._idle.append((reader, writer))
            else:
                writer.close()
            return response

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """An HTTP/1.1 server on a free loopback port of the cluster's loop, calling `handler`.

    A request that cannot be framed, or whose body exceeds `max_body`, is answered
    400/413/431/501/505 in plain text (as Knative's Go servers answer) and the connection closed.
    """

    def __init__(self, loop: BackgroundLoop, handler: Handler,
                 extra_headers: Callable[[Request, Response], list[tuple[str, str]]] | None = None,
                 *, max_body: int = MAX_BODY) -> None:
        self._loop = loop
        self._handler = handler
        self._extra = extra_headers
        self._max_body = max_body
        self._server: http1.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> int:
        self.port = self._loop.run(self._start())
        return self.port

    async def _start(self) -> int:
        self._server = await http1.start_server(self._serve, HOST, 0)
        return self._server.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await read_request(reader, self._max_body, writer)
                except http1.HttpError as exc:
                    await http1.refuse(reader, writer,
                                       error_response(exc.status, exc.message).encode(False))
                    return
                if request is None:
                    return
                try:
                    response = await self._handler(request)
                except Exception as exc:  # a bug must cost one request, not the connection
                    response = error_response(500, f"{type(exc).__name__}: {exc}")
                keep_alive = request.keep_alive
                extra = self._extra(request, response) if self._extra else None
                writer.write(response.encode(keep_alive, request.method, extra))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return

    def close(self) -> None:
        if self._server is not None and self._loop.running:
            self._loop.run(self._close())
        self._server = None

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


# ---------------------------------------------------------------------------------------------
# Concurrency limit and statistics


class QueueFull(Exception):
    """More requests than the breaker's slots plus its queue: answered 503 at once."""


class Breaker:
    """Knative's breaker: `capacity` requests run, `queue_depth` more wait (in order)."""

    def __init__(self, capacity: int, queue_depth: int) -> None:
        self.capacity = capacity
        self.total_slots = capacity + queue_depth
        self.pending = 0  # running + waiting
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def enter(self) -> None:
        """Take a place in the pod (running or queued), or raise QueueFull."""
        if self.pending >= self.total_slots:
            raise QueueFull(f"pending request queue full ({self.total_slots} requests)")
        self.pending += 1

    def leave(self) -> None:
        self.pending -= 1

    async def acquire(self) -> None:
        """Wait for a running slot, first come first served."""
        if self.active < self.capacity and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over as we gave up: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self.active -= 1


class Stat(NamedTuple):
    """One reporting period of one pod (or of the activator for one revision)."""

    time: float
    concurrency: float
    proxied_concurrency: float
    rps: float
    proxied_rps: float
    requests: int


class RequestStats:
    """Time-weighted concurrency and request counts over a reporting period.

    Concurrency is integrated over time (requests x seconds), so a request present for half a
    second adds 0.5 to the period's average; every arrival counts toward the rate.
    """

    def __init__(self, now: float) -> None:
        self._last_change = now
        self._period_start = now
        self.concurrency = 0
        self.proxied_concurrency = 0
        self._area = 0.0
        self._proxied_area = 0.0
        self._count = 0
        self._proxied_count = 0

    def _advance(self, now: float) -> None:
        elapsed = now - self._last_change
        if elapsed > 0:
            self._area += self.concurrency * elapsed
            self._proxied_area += self.proxied_concurrency * elapsed
            self._last_change = now

    def arrive(self, now: float, proxied: bool = False) -> None:
        self._advance(now)
        self.concurrency += 1
        self._count += 1
        if proxied:
            self.proxied_concurrency += 1
            self._proxied_count += 1

    def depart(self, now: float, proxied: bool = False) -> None:
        self._advance(now)
        self.concurrency -= 1
        if proxied:
            self.proxied_concurrency -= 1

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing counted since the last report."""
        return self.concurrency == 0 and self._count == 0 and self._area == 0

    def report(self, now: float) -> Stat:
        """The averages since the previous report; starts a new period."""
        self._advance(now)
        period = now - self._period_start
        if period <= 0:
            stat = Stat(now, float(self.concurrency), float(self.proxied_concurrency), 0.0, 0.0,
                        0)
        else:
            stat = Stat(now, self._area / period, self._proxied_area / period,
                        self._count / period, self._proxied_count / period, self._count)
        self._period_start = now
        self._area = self._proxied_area = 0.0
        self._count = self._proxied_count = 0
        return stat


# ---------------------------------------------------------------------------------------------
# The queue-proxy


class QueueProxy:
    """The sidecar of one replica: breaker, timeout, statistics, latency observations."""

    QUEUE_DEPTH_FACTOR = QUEUE_PROXY_QUEUE_FACTOR
    """Knative queues 10 x containerConcurrency requests in the pod."""

    def __init__(
        self,
        loop: BackgroundLoop,
        replica_port: int,
        *,
        revision: str,
        container_concurrency: int = 0,
        timeout_seconds: float = 300.0,
        observe: Callable[[float, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`observe(seconds, status)` is called for every answered request (for histograms)."""
        self.revision = revision
        self.container_concurrency = container_concurrency
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._observe = observe
        self._upstream = UpstreamPool(replica_port)
        self.breaker = (
            Breaker(container_concurrency, self.QUEUE_DEPTH_FACTOR * container_concurrency)
            if container_concurrency > 0 else None
        )
        self.stats = RequestStats(clock())
        self.container_ready = True
        self._server = HttpServer(loop, self._handle, self._tag)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def in_flight(self) -> int:
        return self.stats.concurrency

    def start(self) -> int:
        return self._server.start()

    def close(self) -> None:
        self._server.close()
        self._upstream.close()

    def _tag(self, _request: Request, _response: Response) -> list[tuple[str, str]]:
        return [(REVISION_RESPONSE_HEADER, self.revision)]

    async def _handle(self, request: Request) -> Response:
        if request.header(PROBE_HEADER) is not None:
            ok = self.container_ready
            return Response(200 if ok else 503, "OK" if ok else "Service Unavailable",
                            [("Content-Type", "text/plain")], b"queue\n" if ok else b"")
        proxied = request.header(PROXY_HEADER) == "activator"
        start = self._clock()
        self.stats.arrive(start, proxied)
        try:
            response = await self._limited(request, start)
        finally:
            end = self._clock()
            self.stats.depart(end, proxied)
        if self._observe is not None:
            self._observe(end - start, response.status)
        return response

    async def _limited(self, request: Request, start: float) -> Response:
        breaker = self.breaker
        if breaker is None:
            return await self._forward(request, start)
        try:
            breaker.enter()
        except QueueFull as exc:
            return error_response(503, f"overload: {exc}")
        try:
            return await self._forward(request, start, breaker)
        finally:
            breaker.leave()

    async def _forward(self, request: Request, start: float,
                       breaker: Breaker | None = None) -> Response:
        async def run() -> Response:
            if breaker is not None:
                await breaker.acquire()
            try:
                sent = self._clock()
                response = await self._upstream.send(request)
            finally:
                if breaker is not None:
                    breaker.release()
            # From `sent` on the time is the container's; what is left after is a few statements.
            response.headers.append((SERVER_TIMING, timing_entry("queue-proxy", sent - start)))
            return response

        try:
            return await asyncio.wait_for(run(), self.timeout_seconds or None)
        except asyncio.TimeoutError:
            return error_response(
                504, f"request timeout: no answer within timeoutSeconds={self.timeout_seconds:g}")
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return error_response(502, f"the user container did not answer: {exc}")
