"""The sidecar's HTTP/1.1 connections on asyncio Protocols with `httptools` parsing: a client's
connection to a listener (`Downstream`: parse, answer in order, limits) and a kept-alive
connection to an upstream host (`Upstream`: one request at a time), plus the request and
response bytes the proxy writes.

Why it is built this way (see `labkit.mesh.proxy`): a sidecar's overhead is what lab 03
measures, so there is no framework, one task per client connection rather than per request,
and header lines stay bytes as parsed, decoded only when a decision needs them
(`HttpRequest.headers`). Bodies are buffered whole; there is no streaming, HTTP/2 or WebSocket.
Malformed input is answered as Envoy does (400, 413, 431) and the connection closed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Protocol

import httptools

from labkit.mesh import security

__all__ = [
    "HOP_BY_HOP",
    "HOP_BY_HOP_BYTES",
    "NOT_FORWARDED",
    "NOT_FORWARDED_BYTES",
    "PEER_HEADER",
    "ConnectionTerminated",
    "Downstream",
    "FastHandler",
    "FastRequest",
    "Handler",
    "HttpRequest",
    "RawHeaders",
    "Response",
    "Upstream",
    "error_response",
    "request_bytes",
    "request_wire",
    "response_wire",
]
_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                        "trailer", "upgrade", "content-length", "host", "expect"})
PEER_HEADER = "x-envoy-peer-metadata-id"
"""Carries the caller's `<workload>.<namespace>` to the server sidecar and is removed there
(Istio's metadata exchange uses `x-envoy-peer-metadata[-id]` for the same purpose)."""
NOT_FORWARDED = HOP_BY_HOP | {"x-envoy-attempt-count", PEER_HEADER}
# The same names as bytes, for the paths that handle header lines without decoding them.
HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
NOT_FORWARDED_BYTES = frozenset(name.encode() for name in NOT_FORWARDED)


class FastRequest(Protocol):
    """A request a listener's fast handler took without a task (the sidecar's `_InFlight`)."""

    def cancel(self) -> None:
        """The caller left: free what the request holds and log it."""


_REASONS = {s.value: s.phrase for s in HTTPStatus}


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = \
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("latin-1")
    return line


def _render(status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool,
            head_only: bool = False) -> bytes:
    return response_wire(status, ["".join([f"{k}: {v}\r\n" for k, v in headers]).encode("latin-1")],
                          body, keep_alive, head_only)


def response_wire(status: int, lines: list[bytes], body: bytes, keep_alive: bool,
                   head_only: bool = False) -> bytes:
    """A response as written to the client: status line, header `lines` ("name: value\r\n"
    each), the framing this proxy sets, and the body unless HEAD."""
    head = b"".join([_status_line(status), *lines, b"content-length: %d\r\n%s" % (
        len(body), b"\r\n" if keep_alive else b"connection: close\r\n\r\n")])
    return head if head_only else head + body


RawHeaders = list[tuple[bytes, bytes]]
"""Header lines as parsed: (lower-case name, value), in order, repeats kept."""


def _header_dict(raw: RawHeaders) -> dict[str, str]:
    """Decoded headers; a repeated header's values joined with commas (RFC 9110 5.3)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


class HttpRequest:
    """One parsed request. `headers` (decoded, mutable) is built on first use: the outbound
    fast path forwards the `raw` header lines without ever decoding them."""

    __slots__ = (
        "_headers",
        "authority",
        "body",
        "keep_alive",
        "method",
        "path",
        "raw",
        "received",
        "target",
    )

    def __init__(self, method: str, target: str, raw: RawHeaders, body: bytes,
                 keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.raw = raw
        self._headers: dict[str, str] | None = None
        self.body = body
        self.keep_alive = keep_alive
        self.received = 0.0
        authority = self.header("host")
        path = target
        if not target.startswith("/") and "://" in target:  # absolute form (proxy request)
            url = httptools.parse_url(target.encode("latin-1"))
            host = url.host.decode("latin-1") if url.host else ""
            authority = f"{host}:{url.port}" if url.port else host
            path = (url.path or b"/").decode("latin-1")
            if url.query:
                path += "?" + url.query.decode("latin-1")
        self.authority = authority
        self.path = path

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = _header_dict(self.raw)
        return self._headers

    def header(self, name: str) -> str:
        """One header's value ("" when absent), without building `headers` for it."""
        if self._headers is not None:
            return self._headers.get(name, "")
        key = name.encode("latin-1")
        values = [value for have, value in self.raw if have == key]
        return b",".join(values).decode("latin-1")


class Response:
    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes,
                 keep_alive: bool = True) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


Handler = Callable[["HttpRequest", "Downstream"], Awaitable[tuple[Response, bool]]]
FastHandler = Callable[["HttpRequest", "Downstream"], "FastRequest | None"]
"""Takes a request without a task when it can (see `FastRequest`), else returns None."""


def error_response(exc: Exception) -> Response:
    """A bug must not take the listener down: 500, and the connection closes."""
    return Response(500, [("content-type", "text/plain")], f"labkit sidecar error: {exc!r}".encode())


class _BadRequest(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status


class Downstream(asyncio.Protocol):
    """One client connection to a listener: parses requests, answers them in order.

    A request is answered either by `fast` (callbacks, no task; at most one at a time, taken
    only when nothing else of this connection is queued or being served) or by `handler` in
    the connection's serving task. Requests that arrive while a fast one is in flight wait in
    the queue, so answers keep the order of requests."""

    def __init__(self, handler: Handler, open_set: set[Downstream],
                 fast: FastHandler | None = None) -> None:
        self.handler = handler
        self.fast = fast
        self.inflight: FastRequest | None = None
        self.open_set = open_set  # the listener's open connections, cut when it closes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_principal: str | None = None
        self.peer_der: bytes | None = None
        self.xfcc: str | None = None
        self.remote = ""
        self.local = ""
        self._url = b""
        self._raw: RawHeaders = []
        self._expect = b""
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._queue: deque[HttpRequest] = deque()
        self._serving: asyncio.Task[None] | None = None
        self._active = False
        self._wake: asyncio.Future[None] | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server's is a Transport
        self.open_set.add(self)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else ""
        self.local = f"{sock[0]}:{sock[1]}" if sock else ""
        if transport.get_extra_info("ssl_object") is not None:
            self.peer_der = security.peer_certificate_der(transport)
            identity = security.identity_from_der(self.peer_der) if self.peer_der else None
            self.peer_principal = identity.uri if identity else None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except _BadRequest as exc:
            self._fail(exc.status, str(exc))
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrade is not supported by labkit's sidecar")
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _BadRequest):
                self._fail(cause.status, str(cause))
            else:
                self._fail(400, "Bad Request")

    def _fail(self, status: int, body: str) -> None:
        """Malformed input: answer once and close (Envoy answers 400 / 431 and closes)."""
        if self.transport is not None and not self._closed:
            self.transport.write(_render(status, [("content-type", "text/plain")], body.encode(), False))
            self.transport.close()
        self._closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.open_set.discard(self)
        if self._active and self._serving is not None:
            # The client went away mid-request (Envoy's DC): stop the work, free the upstream.
            self._serving.cancel()
        if self.inflight is not None:
            self.inflight.cancel()
        self._notify()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._raw = []
        self._expect = b""
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > _MAX_HEAD:
            raise _BadRequest(431, "Request Header Fields Too Large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD:
            raise _BadRequest(431, "Request Header Fields Too Large")
        key = name.lower()
        if key == b"expect":
            self._expect = value
        self._raw.append((key, value))

    def on_headers_complete(self) -> None:
        if self._expect.lower() == b"100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > _MAX_BODY:
            raise _BadRequest(413, "Payload Too Large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        request = HttpRequest(method, self._url.decode("latin-1"), self._raw,
                               b"".join(self._body), self.parser.should_keep_alive())
        request.received = time.time()
        if self.fast is not None and self.inflight is None and not self._active \
                and not self._queue:
            self.inflight = self.fast(request, self)
            if self.inflight is not None:
                return
        self._queue.append(request)
        if self.inflight is None:
            self._resume_queue()

    def _resume_queue(self) -> None:
        if self._serving is None:
            # One task per connection, not per request: a keep-alive client pays for it once.
            self._serving = asyncio.get_running_loop().create_task(self._serve())
        else:
            self._notify()

    @staticmethod
    def _rendered(request: HttpRequest, response: Response, keep: bool) -> tuple[bytes, bool]:
        keep = keep and request.keep_alive
        return _render(response.status, response.headers, response.body, keep,
                       request.method == "HEAD"), keep

    def answer(self, request: HttpRequest, response: Response, keep: bool) -> None:
        """Write the response to `request` (closing the connection unless `keep`)."""
        self._write(*self._rendered(request, response, keep))

    def _write(self, data: bytes, keep: bool) -> None:
        if self._closed or self.transport is None:
            return
        self.transport.write(data)
        if not keep:
            self.transport.close()
            self._closed = True

    def answered_fast(self, request: HttpRequest, response: Response, keep: bool) -> None:
        """The fast path's answer: write it, then serve what queued up meanwhile."""
        self.answered_raw(*self._rendered(request, response, keep))

    def answered_raw(self, data: bytes, keep: bool) -> None:
        """`answered_fast` with the response already rendered."""
        self.inflight = None
        self._write(data, keep)
        if self._queue and not self._closed:
            self._resume_queue()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if not self._queue:
                self._wake = loop.create_future()
                await self._wake
                continue
            request = self._queue.popleft()
            self._active = True
            try:
                response, keep = await self.handler(request, self)
            except asyncio.CancelledError:
                return
            except Exception as exc:  # noqa: BLE001 - a bug must not take the listener down
                response, keep = error_response(exc), False
            finally:
                self._active = False
            if self._closed or self.transport is None:
                return
            self.answer(request, response, keep)


def request_bytes(method: str, path: str, authority: str, headers: Mapping[str, str],
                   body: bytes, attempt: int, peer: str | None) -> bytes:
    """One try's request as sent upstream. `peer` (outbound only): this proxy numbers the
    tries and names its workload; inbound forwards to the app as is."""
    dropped = NOT_FORWARDED if peer is not None else HOP_BY_HOP
    lines = "".join([f"{k}: {v}\r\n" for k, v in headers.items() if k not in dropped])
    return request_wire(method, path, authority, [lines.encode("latin-1")], body, attempt, peer)


def request_wire(method: str, path: str, authority: str, lines: list[bytes], body: bytes,
                  attempt: int, peer: str | None) -> bytes:
    """`request_bytes` from header `lines` ("name: value\r\n" each) already filtered."""
    own = b"x-envoy-attempt-count: %d\r\n%s: %s\r\n" % (
        attempt, PEER_HEADER.encode(), peer.encode("latin-1")) if peer is not None else b""
    length = b"content-length: %d\r\n" % len(body) \
        if body or method in ("POST", "PUT", "PATCH") else b""
    return b"".join([f"{method} {path} HTTP/1.1\r\nhost: {authority}\r\n".encode("latin-1"),
                     *lines, own, length, b"\r\n", body])


class ConnectionTerminated(Exception):
    """The upstream closed or reset the connection before a complete response."""


_RETRY_HEADERS = frozenset({b"grpc-status", b"x-envoy-ratelimited"})
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_NO_HEADERS: Mapping[str, str] = {}


class _Listener(Protocol):
    """Who takes a response by callback instead of a future (`Upstream.send_to`)."""

    def responded(self, status: int, headers: RawHeaders, body: bytes, keep: bool) -> None: ...

    def failed(self, exc: Exception) -> None: ...


class Upstream(asyncio.Protocol):
    """One kept-alive connection to an upstream host: one request at a time. The response
    goes to a future (`send`) or, without one, to a listener's callbacks (`send_to`).

    `loop` is kept because `asyncio.get_running_loop()` costs a getpid() system call per use
    on Python 3.11, and `send` runs once per request."""

    def __init__(self, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.requests = 0
        self.waiter: asyncio.Future[Response] | None = None
        self.listener: _Listener | None = None
        self._head = False
        self._status = 0
        self._headers: RawHeaders = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._bounded = False
        self.special: Mapping[str, str] = _NO_HEADERS
        """The response headers a retry policy looks at (`retries.RetryPolicy.retriable`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server's is a Transport

    def send(self, data: bytes, head: bool) -> asyncio.Future[Response]:
        waiter = self.loop.create_future()
        self._start(data, head, waiter, None)
        return waiter

    def send_to(self, data: bytes, listener: _Listener) -> None:
        """Send a request (not HEAD) whose response goes to `listener`."""
        self._start(data, False, None, listener)

    def _start(self, data: bytes, head: bool, waiter: asyncio.Future[Response] | None,
               listener: _Listener | None) -> None:
        assert self.transport is not None
        self.waiter = waiter
        self.listener = listener
        self._head = head
        self._status = 0
        self._headers = []
        self._body = []
        self._headers_done = False
        self._bounded = False
        self.special = _NO_HEADERS
        self.requests += 1
        self.transport.write(data)

    def _awaited(self) -> bool:
        return self.listener is not None or (self.waiter is not None and not self.waiter.done())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._lose(ConnectionTerminated("upstream sent a malformed response"))

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in _FRAMING_HEADERS:
            self._bounded = True
        elif key in _RETRY_HEADERS:
            self.special = {**self.special, key.decode("latin-1"): value.decode("latin-1")}
        self._headers.append((key, value))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._headers_done = True
        if self._head or self._status in (204, 304):
            self._complete(keep=False)  # httptools cannot know a HEAD reply has no body

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._awaited():
            self._complete(self.parser.should_keep_alive())

    def _complete(self, keep: bool) -> None:
        waiter, self.waiter = self.waiter, None
        listener, self.listener = self.listener, None
        if not keep:
            self.close()
        body = b"".join(self._body)
        if listener is not None:
            listener.responded(self._status, self._headers, body, keep)
        elif waiter is not None and not waiter.done():
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._headers]
            waiter.set_result(Response(self._status, headers, body, keep))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._awaited():
            if self._headers_done and not self._bounded:  # body delimited by close
                self._complete(keep=False)
            else:
                self._fail(ConnectionTerminated("connection terminated"))

    def _lose(self, exc: Exception) -> None:
        self.close()
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.failed(exc)
        elif waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

