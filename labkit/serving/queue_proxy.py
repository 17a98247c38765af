"""The queue-proxy: the sidecar in front of every replica, and the HTTP plumbing of the data path.

In Knative each pod runs the user container behind a queue-proxy that

- enforces ``containerConcurrency`` as a hard limit: at most CC requests reach the container at
  once, up to 10 x CC more wait in the pod, and one more is answered **503** at once (a
  "breaker"); CC = 0 means no limit;
- applies the revision's three request limits (`labkit.serving.timeouts`): ``timeoutSeconds``
  and ``responseStartTimeoutSeconds`` end a request whose answer has not started with **504**
  ``request timeout``; ``idleTimeoutSeconds`` does that too, and ends a started answer that
  went that long without a byte by appending ``request timeout`` to what was sent (Knative's
  ``timeoutWriter``). labkit adds ``x-labkit-timeout: <field>=<seconds>`` to say which fired.
  The time a request waits in the breaker's queue counts, as Knative's timeout handler wraps
  the breaker. A labkit hop buffers whole bodies, so a client sees a cut answer at once, at
  its end; on Knative it would have had the first bytes already. When the app declared a
  Content-Length, Knative's Go server then closes the connection short instead of ending the
  body cleanly; labkit re-frames every body, so the client always gets the clean ending;
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

Followed: knative/serving ``pkg/queue/{handler.go,breaker.go}``, ``pkg/http/handler/timeout.go``,
``pkg/queue/sharedmain/handlers.go``, networking ``pkg/http/stats/request.go``, per
/work/shared/reference/knative-kpa.md section 6.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from labkit import http1
from labkit.core.loop import BackgroundLoop
from labkit.net import HOST
from labkit.serving.constants import QUEUE_PROXY_QUEUE_FACTOR
from labkit.serving.timeouts import (
    TIMEOUT_BODY,
    Deadline,
    RequestTimeouts,
    next_deadline,
)

__all__ = [
    "MAX_BODY",
    "PROBE_HEADER",
    "PROXY_HEADER",
    "SERVER_TIMING",
    "TIMEOUT_HEADER",
    "Breaker",
    "HttpServer",
    "LimitReached",
    "QueueFull",
    "QueueProxy",
    "Request",
    "RequestStats",
    "RequestWatch",
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
TIMEOUT_HEADER = "x-labkit-timeout"
"""labkit-only: which request limit cut the answer (`<field>=<seconds>`); Knative's body is the
same for all three."""
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


# ---------------------------------------------------------------------------------------------
# Request limits (Knative's timeout handler)

T = TypeVar("T")


class LimitReached(Exception):
    """A request limit fired: the request is cut at `deadline`."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__(f"{deadline.limit} reached")
        self.deadline = deadline


class RequestWatch:
    """One request under Knative's timeout handler (``pkg/http/handler/timeout.go``): waits are
    held to `labkit.serving.timeouts.next_deadline`, which every byte of the answer moves on.
    It keeps what arrived (the head, the raw body) to answer as Knative does when cut."""

    def __init__(self, limits: RequestTimeouts, start: float, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.start = start
        self._clock = clock
        self.last_write: float | None = None
        self._head: bytes | None = None
        self._raw = bytearray()

    async def within(self, awaitable: Awaitable[T]) -> T:
        """`awaitable`'s result, or LimitReached when the next deadline comes first."""
        deadline = next_deadline(self.limits, self.start, self.last_write)
        if deadline is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, max(deadline.at - self._clock(), 0.0))
        except asyncio.TimeoutError:
            raise LimitReached(deadline) from None

    def received(self, data: bytes, *, head: bool) -> None:
        """Bytes of the answer arrived (a whole head, or raw body bytes): a write by the app."""
        self.last_write = self._clock()
        if head:
            self._head, self._raw = data, bytearray()  # a final head replaces a 1xx one
        else:
            self._raw += data

    def answer(self, deadline: Deadline, message: str) -> Response:
        """What the client gets when `deadline` cuts the request: 504 `message` if nothing was
        answered yet, else the answer so far with `message` appended (``timeoutAndWriteError``
        writes it into the started answer; Go drops the late 504 status)."""
        tag = (TIMEOUT_HEADER, f"{deadline.limit}={self.limits.seconds(deadline.limit):g}")
        if self._head is None:
            # Go's WriteHeader(504) + WriteString: the body sniffs as text/plain.
            return Response(504, "Gateway Timeout",
                            [("Content-Type", "text/plain; charset=utf-8"), tag],
                            message.encode())
        lines = self._head.decode("latin-1").split("\r\n")
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = [(name, value.strip()) for name, _, value in
                   (line.partition(":") for line in lines[1:] if line)]
        chunked = any(n.lower() == "transfer-encoding" and "chunked" in v.lower()
                      for n, v in headers)
        body = _dechunk(bytes(self._raw)) if chunked else bytes(self._raw)
        return Response(int(status), reason, [*headers, tag], body + message.encode())


def _dechunk(raw: bytes) -> bytes:
    """The data of the chunks in `raw`, the last one possibly cut short."""
    data = bytearray()
    at = 0
    while (eol := raw.find(b"\r\n", at)) >= 0:
        size = int(raw[at:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        data += raw[eol + 2:eol + 2 + size]
        at = eol + 2 + size + 2
    return bytes(data)


class _WatchedReader:
    """The connection to the app as the timeout handler sees it: every read is held to the
    request's limits, and every read that returns bytes counts as a write of the answer.
    (The subset of StreamReader that `labkit.http1` reads responses with.)"""

    def __init__(self, reader: asyncio.StreamReader, watch: RequestWatch) -> None:
        self._reader = reader
        self._watch = watch

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        data = await self._watch.within(self._reader.readuntil(separator))
        self._watch.received(data, head=separator == b"\r\n\r\n")
        return data

    async def read(self, n: int = -1) -> bytes:
        data = await self._watch.within(self._reader.read(n))
        if data:
            self._watch.received(data, head=False)
        return data

    async def readexactly(self, n: int) -> bytes:
        # Piece by piece, so a body that trickles in keeps the idle timer from firing.
        parts: list[bytes] = []
        left = n
        while left:
            data = await self.read(min(left, 65536))
            if not data:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(data)
            left -= len(data)
        return b"".join(parts)


class UpstreamPool:
    """Kept-alive connections to one backend (host, port), reused request after request."""

    def __init__(self, port: int, host: str = HOST, max_idle: int = 64) -> None:
        self.host = host
        self.port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._max_idle = max_idle

    async def send(self, request: Request, extra: list[tuple[str, str]] | None = None,
                   watch: RequestWatch | None = None) -> Response:
        """Send and read the answer; a kept-alive connection the backend closed meanwhile
        is replaced once (nothing was answered on it, so the retry is safe). With a `watch`,
        each read is held to the request's limits (`LimitReached`; the connection is closed)."""
        data = request.encode(extra)
        while True:
            reused = bool(self._idle)
            reader, writer = self._idle.pop() if reused else await asyncio.open_connection(
                self.host, self.port, limit=http1.MAX_HEAD)
            try:
                writer.write(data)
                watched = reader if watch is None else _WatchedReader(reader, watch)
                response = await read_response(watched, request.method)  # type: ignore[arg-type]
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
                except Exception as exc:  # noqa: BLE001 - a bug must cost one request, not the connection
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
    """The sidecar of one replica: breaker, request limits, statistics, latency observations."""

    QUEUE_DEPTH_FACTOR = QUEUE_PROXY_QUEUE_FACTOR
    """Knative queues 10 x containerConcurrency requests in the pod."""

    def __init__(
        self,
        loop: BackgroundLoop,
        replica_port: int,
        *,
        revision: str,
        container_concurrency: int = 0,
        timeouts: RequestTimeouts = RequestTimeouts(300.0),
        observe: Callable[[float, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`observe(seconds, status)` is called for every answered request (for histograms)."""
        self.revision = revision
        self.container_concurrency = container_concurrency
        self.timeouts = timeouts
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
        watch = RequestWatch(self.timeouts, start, self._clock)
        try:
            if breaker is not None:
                await watch.within(breaker.acquire())
            try:
                sent = self._clock()
                response = await self._upstream.send(request, watch=watch)
            finally:
                if breaker is not None:
                    breaker.release()
        except LimitReached as cut:
            return watch.answer(cut.deadline, TIMEOUT_BODY)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return error_response(502, f"the user container did not answer: {exc}")
        # From `sent` on the time is the container's; what is left after is a few statements.
        response.headers.append((SERVER_TIMING, timing_entry("queue-proxy", sent - start)))
        return response
