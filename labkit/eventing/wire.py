"""HTTP/1.1 on bare asyncio: the broker's, channel's and sink's server and delivery client.

Why not a framework: the broker's hot path is "read one small POST, commit, answer 202" and
"POST one small event, read the status". A framework's routing, middleware and request objects
cost more than the work itself on a 2-core laptop, and the protocol subset needed is small:
Content-Length and chunked bodies, keep-alive, and a body limit checked *before* the body is
read (so an oversized upload is refused with 413 without buffering it).

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

from labkit.net import HOST

__all__ = [
    "Client",
    "ClientResponse",
    "Handler",
    "Request",
    "Response",
    "json_error",
    "json_response",
    "serve",
]

_MAX_HEAD = 64 * 1024
_REASONS = {
    200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


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


class _BodyTooLarge(Exception):
    def __init__(self, size: int | None) -> None:
        self.size = size


def _encode_response(response: Response, keep_alive: bool) -> bytes:
    reason = _REASONS.get(response.status, "Status")
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    for name, value in response.headers.items():
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(response.body)}")
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line!r}")
        key = name.strip().lower()
        value = value.strip()
        # Repeated headers join with a comma, as HTTP allows for list-valued fields.
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str],
                     max_body: int | None) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if max_body is not None and total > max_body:
                raise _BodyTooLarge(None)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    if length < 0:
        raise ValueError("negative Content-Length")
    if max_body is not None and length > max_body:
        raise _BodyTooLarge(length)
    return await reader.readexactly(length) if length else b""


async def serve(handler: Handler, *, host: str = HOST, port: int = 0,
                max_body: int | None = None) -> asyncio.Server:
    """Start serving on host:port (0: a free port; read it from the returned server)."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                try:
                    if len(parts) != 3:
                        raise ValueError(f"bad request line {lines[0]!r}")
                    method, target, version = parts
                    headers = _parse_headers(lines[1:])
                except ValueError as err:
                    writer.write(_encode_response(json_error(400, str(err)), False))
                    return
                try:
                    body = await _read_body(reader, headers, max_body)
                except _BodyTooLarge as err:
                    size = f"{err.size} bytes" if err.size is not None else "more"
                    message = f"request body is {size}; this endpoint accepts at most {max_body}"
                    # The unread body would desynchronise keep-alive: answer and close.
                    writer.write(_encode_response(json_error(413, message), False))
                    await writer.drain()
                    return
                except (ValueError, asyncio.IncompleteReadError) as err:
                    writer.write(_encode_response(json_error(400, f"bad body: {err}"), False))
                    return
                path, _, query = target.partition("?")
                try:
                    response = await handler(Request(method.upper(), path, query, headers, body))
                except Exception as err:  # noqa: BLE001 (a bug must answer 500, not hang up)
                    response = json_error(500, f"internal error: {type(err).__name__}: {err}")
                connection_header = headers.get("connection", "").lower()
                keep_alive = connection_header != "close" and (
                    version == "HTTP/1.1" or connection_header == "keep-alive")
                writer.write(_encode_response(response, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # the server is shutting down; this connection task is the top level
        finally:
            writer.close()

    return await asyncio.start_server(connection, host, port, limit=_MAX_HEAD)


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
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
            raise ConnectionError(f"{parts.netloc} closed the connection without a complete "
                                  f"response ({type(err).__name__})") from None

    async def _exchange(self, key: tuple[str, int], payload: bytes, method: str) -> ClientResponse:
        reused = bool(self._idle.get(key))
        reader, writer = await self._connect(key)
        try:
            try:
                writer.write(payload)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                if not reused:
                    raise
                # A kept-alive connection the server had closed: once more on a fresh one.
                writer.close()
                reader, writer = await self._open(key)
                writer.write(payload)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = _parse_headers(lines[1:])
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                body = b""
            elif "content-length" in headers or "chunked" in headers.get(
                    "transfer-encoding", "").lower():
                body = await _read_body(reader, headers, None)
            else:
                body = await reader.read()
                headers["connection"] = "close"
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            pool = self._idle.setdefault(key, [])
            if len(pool) < self._max_idle:
                pool.append((reader, writer))
            else:
                writer.close()
        return ClientResponse(status, headers, body)

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
            return await asyncio.open_connection(*key, limit=_MAX_HEAD)
        except OSError as err:
            raise ConnectionError(f"cannot connect to {key[0]}:{key[1]}: "
                                  f"{err.strerror or err}") from None

    def close(self) -> None:
        for pool in self._idle.values():
            for _reader, writer in pool:
                writer.close()
        self._idle.clear()
