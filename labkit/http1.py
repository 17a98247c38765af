"""HTTP/1.1 framing with limits, shared by labkit's asyncio servers and clients.

The sidecar and the model server parse with httptools (their speed is measured); every other
server and client in labkit reads messages here, so a request is framed the same way whichever
component receives it. Followed: RFC 9112 (HTTP/1.1) sections 2.2, 3, 5, 6.1, 6.3, 7.1, 9.3 and
RFC 9110 sections 5.3, 8.6, 10.1.1, 15.5.14 (413), RFC 6585 section 5 (431).

- A request head (request line and header fields) longer than `max_head` is refused with 431;
  a body longer than `max_body` with 413 *before* it is read (from Content-Length, or from the
  chunk sizes as they arrive); a malformed head, a bad Content-Length (not digits, conflicting
  duplicates) or both Content-Length and Transfer-Encoding with 400 (RFC 9112 6.3 items 3-4);
  a transfer coding other than chunked with 501 (RFC 9112 6.1).
- Chunked bodies: hex sizes only (no sign, no `0x`), extensions checked and ignored, trailer
  fields returned apart from the header fields (RFC 9110 6.5 forbids merging them blindly).
- Every framing error is an `HttpError` carrying the status to answer; after one the byte
  stream has no known next message, so the connection must close (`refuse` does it politely).

Why not httptools here: a response to HEAD has a Content-Length but no body, and a response
without a length runs to the end of the connection; httptools' callbacks can express neither,
and `StreamReader.readuntil` (C) keeps the hand-written parse as fast as the parsers it
replaces (measured in the report of issue 12).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple

__all__ = [
    "BIND_ADDRESS",
    "MAX_HEAD",
    "Framing",
    "HttpError",
    "Request",
    "RequestHead",
    "Response",
    "Server",
    "keep_alive",
    "read_body",
    "read_request",
    "read_request_head",
    "read_response",
    "reason",
    "refuse",
    "start_server",
]

BIND_ADDRESS = os.environ.get("LABKIT_BIND_ADDRESS", "127.0.0.1")
"""Where labkit's servers listen: loopback only, unless a container built from `labkit export`'s
Dockerfile sets LABKIT_BIND_ADDRESS=0.0.0.0, so that other pods can reach it on a cluster."""

MAX_HEAD = 64 * 1024
"""Longest request line plus header fields (and, apart, trailer section), in bytes. Streams
that read with this module must be opened with at least this `limit`."""

_LINGER_SECONDS = 1.0
_LINGER_BYTES = 1 << 20
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = r"[\t\x20-\x7e\x80-\xff]"
_FIELD = re.compile(rf"({_TOKEN}):[ \t]*({_VALUE}*?)[ \t]*")
_FIELD_LINES = re.compile(rf"(?:{_TOKEN}:{_VALUE}*\r\n)*")
_FRAMING_NAMES = frozenset({"content-length", "transfer-encoding", "connection", "expect"})
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(r"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rf"([0-9A-Fa-f]{{1,16}})(?:[ \t]*;[ \t]*{_TOKEN}(?:[ \t]*=[ \t]*(?:{_TOKEN}|{_QUOTED}))?)*"
    .encode())
_DIGITS = re.compile(r"[0-9]{1,18}")
_NO_BODY_STATUS = frozenset({204, 304})


def reason(status: int) -> str:
    """The reason phrase of `status` (RFC 9110's wording)."""
    return _PHRASES.get(status, "Status")


_PHRASES = {int(s): s.phrase for s in HTTPStatus} | {413: "Content Too Large",
                                                     422: "Unprocessable Content"}


class HttpError(ValueError):
    """A message that cannot be framed; `status` is what a server answers (then it closes)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Framing(NamedTuple):
    """How the body of a message is delimited: `length` bytes, chunked, to the end of the
    connection (responses only) or absent. (A tuple: one is made per message.)"""

    kind: str  # "length" | "chunked" | "close" | "none"
    length: int = 0


_NONE = Framing("none")


class _Message:
    """`header(name)` for the message types (no state: they keep their own slots)."""

    __slots__ = ()
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The first value of field `name` (case-insensitive), None when absent."""
        return _first(self.headers, name)


@dataclass(slots=True)
class RequestHead(_Message):
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    framing: Framing
    size: int
    keep_alive: bool
    expect_continue: bool


@dataclass(slots=True)
class Request(_Message):
    """A whole request; header names keep their case, `header()` looks them up."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    keep_alive: bool = True


@dataclass(slots=True)
class Response(_Message):
    """A whole response; `size` counts the bytes it took on the wire."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    keep_alive: bool = True
    size: int = 0


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _options(values: list[str]) -> list[str]:
    """The comma-separated elements of a list-valued field's lines, lower-cased (RFC 9110 5.6.1)."""
    return [item.strip().lower() for value in values for item in value.split(",") if item.strip()]


def keep_alive(version: str, headers: list[tuple[str, str]]) -> bool:
    """Whether the connection persists after this message (RFC 9112 9.3): HTTP/1.1 unless
    `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`."""
    return _keep_alive(version, [v for k, v in headers if k.lower() == "connection"])


def _keep_alive(version: str, connection: list[str]) -> bool:
    if not connection:
        return version != "HTTP/1.0"
    if len(connection) == 1 and connection[0].lower() == "keep-alive":
        return True
    options = _options(connection)
    if "close" in options:
        return False
    return version != "HTTP/1.0" or "keep-alive" in options


def _body_framing(fields: dict[str, list[str]], version: str, *, request: bool,
                  bad: int) -> Framing:
    """The body length rules of RFC 9112 6.3 (items 3-7); `bad` is the status of an error."""
    lengths = fields.get("content-length")
    if lengths is not None and len(fields) == 1 and len(lengths) == 1 \
            and lengths[0].isascii() and lengths[0].isdigit() and len(lengths[0]) <= 18:
        return Framing("length", int(lengths[0]))  # the common case, decided in one test
    codings = _options(fields.get("transfer-encoding", []))
    if codings:
        if lengths:
            raise HttpError(bad, "both Content-Length and Transfer-Encoding: the body length "
                                 "is ambiguous (RFC 9112 6.3)")
        if version == "HTTP/1.0":
            raise HttpError(bad, "Transfer-Encoding in an HTTP/1.0 message (RFC 9112 6.1)")
        if codings[-1] != "chunked" or codings.count("chunked") > 1:
            if request:
                raise HttpError(bad, f"Transfer-Encoding {', '.join(codings)!r}: chunked must "
                                     "come last, once (RFC 9112 6.3)")
            return Framing("close")
        if len(codings) > 1:
            raise HttpError(501 if request else bad,
                            f"transfer coding {codings[0]!r} is not implemented; only chunked")
        return Framing("chunked")
    if lengths:
        values = {item.strip() for value in lengths for item in value.split(",")}
        if len(values) != 1:
            raise HttpError(bad, f"conflicting Content-Length values {sorted(values)}")
        (value,) = values
        if not _DIGITS.fullmatch(value):
            raise HttpError(bad, f"Content-Length {value!r} is not a non-negative integer")
        return Framing("length", int(value))
    return _NONE if request else Framing("close")


def _fields(block: str, bad: int) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """The field lines of `block` (each ending CRLF): all of them in order, and the values of
    those that frame the message by lower-cased name. One regex checks the whole block (a
    token, a colon, visible characters, CRLF; so no obs-fold, bare CR or LF, or whitespace
    before the colon), then plain string methods split it: this runs for every request on the
    platform's data path."""
    if not _FIELD_LINES.fullmatch(block):
        for line in block.split("\r\n")[:-1]:  # name the first bad line
            if not _FIELD.fullmatch(line):
                what = "obsolete line folding" if line[:1] in (" ", "\t") else "malformed field"
                raise HttpError(bad, f"{what}: {line[:80]!r}")
        raise HttpError(bad, "malformed header fields")
    headers = []
    framing: dict[str, list[str]] = {}
    for line in block.split("\r\n")[:-1]:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        headers.append((name, value))
        lowered = name.lower()
        if lowered in _FRAMING_NAMES:
            framing.setdefault(lowered, []).append(value)
    return headers, framing


async def _head(reader: asyncio.StreamReader, max_head: int, status: int, what: str) -> bytes:
    """One head, CRLF CRLF included; b"" when the peer closed before sending a byte."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial.strip(b"\r\n"):
                return b""
            raise HttpError(400, f"connection closed in the middle of the {what} head") from None
        except asyncio.LimitOverrunError:
            raise HttpError(status, f"{what} line and header fields exceed {max_head} bytes") \
                from None
        if len(head) > max_head:
            raise HttpError(status, f"{what} line and header fields exceed {max_head} bytes")
        # RFC 9112 2.2: empty lines before a request line are ignored (old clients send them).
        head = head.lstrip(b"\r\n")
        if head:
            return head


def _split_head(head: bytes, start_line: re.Pattern[str]) -> tuple[re.Match[str] | None, str, str]:
    """(the start line matched by `start_line` or None, its first 80 characters for an error
    message, the field block) of one head (CRLF CRLF included)."""
    text = head.decode("latin-1")
    end = text.index("\r\n")
    return start_line.fullmatch(text, 0, end), text[:min(end, 80)], text[end + 2:-2]


async def read_request_head(reader: asyncio.StreamReader, *,
                            max_head: int = MAX_HEAD) -> RequestHead | None:
    """The next request head on a connection, or None when the client closed it first."""
    head = await _head(reader, max_head, 431, "request")
    if not head:
        return None
    match, line, block = _split_head(head, _REQUEST_LINE)
    if match is None:
        raise HttpError(400, f"malformed request line {line!r}")
    if match[3] != "1":
        raise HttpError(505, f"HTTP/{match[3]}.{match[4]} is not supported; use HTTP/1.1")
    version = f"HTTP/1.{match[4]}"
    headers, fields = _fields(block, 400)
    framing = _body_framing(fields, version, request=True, bad=400)
    expect = fields.get("expect", [""])[0].lower() == "100-continue" and version == "HTTP/1.1"
    return RequestHead(match[1], match[2], version, headers, framing, len(head),
                       _keep_alive(version, fields.get("connection", [])), expect)


async def read_request(reader: asyncio.StreamReader, *, max_head: int = MAX_HEAD,
                       max_body: int | None = None,
                       writer: asyncio.StreamWriter | None = None) -> Request | None:
    """The next whole request, or None when the client closed the connection between requests.

    With `writer`, a request carrying `Expect: 100-continue` is told to go on once its length
    is accepted (RFC 9110 10.1.1), so curl does not wait a second before each upload.
    """
    head = await read_request_head(reader, max_head=max_head)
    if head is None:
        return None
    trailers: list[tuple[str, str]]
    if head.framing.kind == "none":
        body, trailers = b"", []
    else:
        if head.framing.kind == "length":
            _check_size(head.framing.length, max_body, 413)
        if writer is not None and head.expect_continue:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body, trailers, _ = await read_body(reader, head.framing, max_body=max_body,
                                            max_head=max_head)
    return Request(head.method, head.target, head.version, head.headers, body, trailers,
                   head.keep_alive)


async def read_response(reader: asyncio.StreamReader, method: str, *,
                        max_head: int = MAX_HEAD, max_body: int | None = None) -> Response:
    """The response to a `method` request. Errors are `HttpError(502)` (what a proxy answers
    for a broken upstream); `asyncio.IncompleteReadError` if the connection ended first."""
    while True:
        head = await _head(reader, max_head, 502, "status")
        if not head:
            raise asyncio.IncompleteReadError(b"", None)
        match, line, block = _split_head(head, _STATUS_LINE)
        if match is None or match[1] != "1":
            raise HttpError(502, f"not an HTTP/1.x status line: {line!r}")
        version, status = f"HTTP/1.{match[2]}", int(match[3])
        if not 100 <= status < 200 or status == 101:
            break  # an interim answer (100 Continue, 103 Early Hints) precedes the final one
    headers, fields = _fields(block, 502)
    persistent = _keep_alive(version, fields.get("connection", []))
    if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
        framing = _NONE  # RFC 9112 6.3 item 1, whatever the header fields say
    else:
        framing = _body_framing(fields, version, request=False, bad=502)
    body, trailers, size = await read_body(reader, framing, max_body=max_body,
                                           max_head=max_head, bad=502)
    return Response(version, status, match[4] or "", headers, body, trailers,
                    persistent and framing.kind != "close", len(head) + size)


def _check_size(size: int, max_body: int | None, status: int) -> None:
    if max_body is not None and size > max_body:
        raise HttpError(status, f"body of {size} bytes or more; at most {max_body} accepted")


async def read_body(reader: asyncio.StreamReader, framing: Framing, *,
                    max_body: int | None = None, max_head: int = MAX_HEAD,
                    bad: int = 400) -> tuple[bytes, list[tuple[str, str]], int]:
    """(body, trailer fields, bytes read) of a message framed as `framing`."""
    try:
        if framing.kind == "length":
            _check_size(framing.length, max_body, 413 if bad == 400 else bad)
            body = await reader.readexactly(framing.length) if framing.length else b""
            return body, [], framing.length
        if framing.kind == "chunked":
            return await _read_chunked(reader, max_body, max_head, bad)
        if framing.kind == "close":
            return await _read_to_end(reader, max_body, bad)
        return b"", [], 0
    except asyncio.IncompleteReadError as err:
        if bad != 400:
            raise  # a client tells "cut off" apart from "malformed"
        raise HttpError(400, f"connection closed {len(err.partial)} bytes into a body part of "
                             f"{err.expected}") from None


async def _read_to_end(reader: asyncio.StreamReader, max_body: int | None,
                       bad: int) -> tuple[bytes, list[tuple[str, str]], int]:
    parts: list[bytes] = []
    total = 0
    while data := await reader.read(65536):
        total += len(data)
        _check_size(total, max_body, bad)
        parts.append(data)
    return b"".join(parts), [], total


async def _line(reader: asyncio.StreamReader, bad: int) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(bad, "chunk size or trailer line too long") from None


async def _read_chunked(reader: asyncio.StreamReader, max_body: int | None, max_head: int,
                        bad: int) -> tuple[bytes, list[tuple[str, str]], int]:
    parts: list[bytes] = []
    total = wire = 0
    while True:
        line = await _line(reader, bad)
        wire += len(line)
        match = _CHUNK_LINE.fullmatch(line, 0, len(line) - 2)
        if match is None:
            raise HttpError(bad, f"bad chunk size line {line[:40]!r}")
        size = int(match[1], 16)
        if size == 0:
            break
        total += size
        _check_size(total, max_body, 413 if bad == 400 else bad)
        data = await reader.readexactly(size + 2)
        wire += size + 2
        if data[-2:] != b"\r\n":
            raise HttpError(bad, f"chunk of {size} bytes not followed by CRLF")
        parts.append(data[:-2])
    trailer_lines: list[bytes] = []
    budget = max_head
    while (line := await _line(reader, bad)) != b"\r\n":
        wire += len(line)
        budget -= len(line)
        if budget < 0:
            raise HttpError(431 if bad == 400 else bad, f"trailer fields exceed {max_head} bytes")
        trailer_lines.append(line)
    trailers = _fields(b"".join(trailer_lines).decode("latin-1"), bad)[0] if trailer_lines else []
    return b"".join(parts), trailers, wire + 2


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 answer: bytes) -> None:
    """Send `answer` (to a request that could not be framed) and close the connection.

    Closing a socket with unread input makes the kernel send a reset, which can destroy the
    answer before the client reads it; so the write side is shut first and the rest of the
    input is drained, bounded in bytes and time (nginx's lingering close does the same).
    """
    try:
        writer.write(answer)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        await asyncio.wait_for(_drain(reader), _LINGER_SECONDS)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        writer.close()


async def _drain(reader: asyncio.StreamReader) -> None:
    budget = _LINGER_BYTES
    while budget > 0 and (data := await reader.read(65536)):
        budget -= len(data)


Connection = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Server:
    """A listening socket whose connection tasks are its own: `close()` cancels them.

    asyncio.start_server given a coroutine wraps each connection in a task with a done
    callback that logs "CancelledError" when the task is cancelled at shutdown on Python
    < 3.12 (CPython gh-113538); as labkit.core.balancer does, the callback here is a plain
    function that starts and tracks its own task.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, writer))

    def _finished(self, writer: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        writer.close()
        self._tasks.discard(task)

    def close(self) -> None:
        """Stop listening and cancel every connection; call on the server's loop."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def start_server(connection: Connection, host: str, port: int = 0, *,
                       limit: int = MAX_HEAD) -> Server:
    """Serve `connection(reader, writer)` per client on host:port (0: a free port).

    (No default host: labkit.net imports subprocess, http.client and more, which the apps'
    cold start, measured in lab 01, would pay for.)"""
    server = Server(connection)
    server._server = await asyncio.start_server(server._accept, host, port, limit=limit)
    return server
