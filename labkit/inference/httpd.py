"""A lean HTTP/1.1 server on asyncio + httptools, for the model server's hot path.

A model server answers many small requests; a framework's routing, middleware and validation
layers cost more per request than a small model's predict. This server parses with httptools
(the parser uvicorn uses), keeps connections alive, answers pipelined requests in order, honours
`Expect: 100-continue` (curl sends it for bodies over 1 KiB), caps body size, and hands each
complete request to one handler function. The handler returns a Response, or an awaitable of
one when it must wait (for a batch).
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools
import orjson

__all__ = ["MAX_BODY_BYTES", "Handler", "Request", "Response", "serve"]

MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response | Awaitable[Response]]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def _error(status: int, message: str) -> Response:
    return Response(status, orjson.dumps({"error": message}))


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request, bool]] = deque()
        self.busy = False
        self._pending: asyncio.Future[None] | None = None  # the answer being awaited (one at a time: busy)
        self.closing = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server's is a Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length", "0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._fail(413, f"request body over {MAX_BODY_BYTES} bytes")
        elif self._headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY_BYTES:
            self._fail(413, f"request body over {MAX_BODY_BYTES} bytes")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        request = Request(
            self.parser.get_method().decode("latin-1"), path, self._headers, b"".join(self._body)
        )
        self.queue.append((request, self.parser.should_keep_alive()))
        if not self.busy:
            self._next()

    # answering

    def _next(self) -> None:
        while self.queue and not self.closing:
            request, keep_alive = self.queue.popleft()
            try:
                result = self.handler(request)
            except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the connection silently
                result = _error(500, f"internal error: {type(exc).__name__}: {exc}")
            if inspect.isawaitable(result):
                self.busy = True
                if self.transport:
                    self.transport.pause_reading()
                # kept: the event loop holds only a weak reference to a task
                self._pending = asyncio.ensure_future(self._finish(result, keep_alive))
                return
            self._send(result, keep_alive)

    async def _finish(self, pending: Awaitable[Response], keep_alive: bool) -> None:
        try:
            response = await pending
        except Exception as exc:  # noqa: BLE001 - as in _next
            response = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.busy = False
        if self.closing:
            return
        self._send(response, keep_alive)
        if self.transport and not self.closing:
            self.transport.resume_reading()
        self._next()

    def _send(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None or self.closing:
            return
        head = [
            b"HTTP/1.1 %d %s\r\n" % (response.status, _REASONS.get(response.status, b"")),
            b"content-type: %s\r\ncontent-length: %d\r\n"
            % (response.content_type.encode(), len(response.body)),
        ]
        for name, value in response.headers:
            head.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head) + response.body)
        if not keep_alive:
            self.closing = True
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        self._send(_error(status, message), keep_alive=False)
        self.closing = True


async def serve(handler: Handler, host: str, port: int) -> asyncio.base_events.Server:
    """Start serving `handler` on host:port; the caller owns the returned server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(handler), host, port, backlog=1024)
