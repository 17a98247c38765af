"""HTTP/1.1 on bare asyncio: the broker's, channel's and sink's server and delivery client.

Why not a framework: the broker's hot path is "read one small POST, commit, answer 202" and
"POST one small event, read the status". A framework's routing, middleware and request objects
cost more than the work itself on a 2-core laptop, and the protocol subset needed is small:
Content-Length and chunked bodies, keep-alive, and a body limit checked *before* the body is
read (so an oversized upload is refused with 413 without buffering it).

Framing (limits, chunked, keep-alive) is labkit.http1's, shared with the queue-proxy and apps.
Server: `serve(handler, port=0, max_body=...)` calls `handler(Request) -> Response` per request.
Client: `Client.request(method, url, headers, body, timeout=...)` reuses idle connections per
host:port; it raises `ConnectionError` (no response) or `asyncio.TimeoutError` (cut off).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from labkit import http1
from labkit.http1 import BIND_ADDRESS

__all__ = [
    "Client",
    "ClientResponse",
    "Handler",
    "Request",
    "Response",
    "Server",
    "json_error",
    "json_response",
    "serve",
]

@dataclass(frozen=True)
class Request:
    """One request: header names lower-cased, path without the query string."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload).encode(), {"content-type": "application/json"})


Handler = Callable[[Request], Awaitable[Response]]
Server = http1.Server
"""What `serve` returns: `.sockets`, `close()` (cancels open connections), `wait_closed()`."""


def _encode_response(response: Response, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {http1.reason(response.status)}"]
    for name, value in response.headers.items():
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(response.body)}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _joined(fields: list[tuple[str, str]]) -> dict[str, str]:
    """Names lower-cased; a repeated field joined with commas, as RFC 9110 5.3 allows."""
    headers: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


async def serve(handler: Handler, *, host: str = BIND_ADDRESS, port: int = 0,
                max_body: int | None = None) -> Server:
    """Start serving on host:port (0: a free port; read it from the returned server).

    A request that cannot be framed (labkit.http1) is answered 400/413/431/501/505 with a JSON
    error and the connection closed; so is a body over `max_body`, before it is read.
    """

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await http1.read_request(reader, max_body=max_body, writer=writer)
                except http1.HttpError as err:
                    await http1.refuse(reader, writer,
                                       _encode_response(json_error(err.status, err.message), False))
                    return
                if request is None:
                    return
                path, _, query = request.target.partition("?")
                try:
                    response = await handler(Request(request.method.upper(), path, query,
                                                     _joined(request.headers), request.body))
                except Exception as err:  # noqa: BLE001 (a bug must answer 500, not hang up)
                    response = json_error(500, f"internal error: {type(err).__name__}: {err}")
                writer.write(_encode_response(response, request.keep_alive))
                await writer.drain()
                if not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return

    return await http1.start_server(connection, host, port)


def json_error(status: int, message: str) -> Response:
    """An error answer with a JSON body `{"error": message}` (what a student's client prints)."""
    return json_response(status, {"error": message})


@dataclass(frozen=True)
class ClientResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Client:
    """A keep-alive HTTP/1.1 client for the event loop it is used on."""

    def __init__(self, *, max_idle_per_host: int = 64) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader,
                                                     asyncio.StreamWriter]]] = {}
        self._max_idle = max_idle_per_host

    async def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                      body: bytes = b"", *, timeout: float | None = None) -> ClientResponse:
        """Send one request; `timeout` bounds the whole exchange (asyncio.TimeoutError)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ConnectionError(f"unsupported URL {url!r}: labkit delivers over http:// only")
        key = (parts.hostname, parts.port or 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc}",
                 f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        exchange = self._exchange(key, payload, method)
        try:
            if timeout is None:
                return await exchange
            return await asyncio.wait_for(exchange, timeout)
        except asyncio.IncompleteReadError as err:
            raise ConnectionError(f"{parts.netloc} closed the connection without a complete "
                                  f"response ({type(err).__name__})") from None
        except http1.HttpError as err:
            raise ConnectionError(f"{parts.netloc} sent a malformed response: {err}") from None

    async def _exchange(self, key: tuple[str, int], payload: bytes, method: str) -> ClientResponse:
        reused = bool(self._idle.get(key))
        reader, writer = await self._connect(key)
        try:
            try:
                writer.write(payload)
                await writer.drain()
                response = await http1.read_response(reader, method)
            except (asyncio.IncompleteReadError, ConnectionError):
                if not reused:
                    raise
                # A kept-alive connection the server had closed: once more on a fresh one.
                writer.close()
                reader, writer = await self._open(key)
                writer.write(payload)
                await writer.drain()
                response = await http1.read_response(reader, method)
        except BaseException:
            writer.close()
            raise
        if not response.keep_alive:
            writer.close()
        else:
            pool = self._idle.setdefault(key, [])
            if len(pool) < self._max_idle:
                pool.append((reader, writer))
            else:
                writer.close()
        return ClientResponse(response.status, _joined(response.headers), response.body)

    async def _connect(self, key: tuple[str, int]) -> tuple[asyncio.StreamReader,
                                                              asyncio.StreamWriter]:
        pool = self._idle.get(key)
        while pool:
            reader, writer = pool.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return await self._open(key)

    @staticmethod
    async def _open(key: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(*key, limit=http1.MAX_HEAD)
        except OSError as err:
            raise ConnectionError(f"cannot connect to {key[0]}:{key[1]}: "
                                  f"{err.strerror or err}") from None

    def close(self) -> None:
        for pool in self._idle.values():
            for _reader, writer in pool:
                writer.close()
        self._idle.clear()
