"""How labkit's small HTTP apps run: on bare asyncio, on 127.0.0.1:$PORT, until SIGTERM/SIGINT.

The apps stay on the standard library so they start in tens of milliseconds (lab 01 measures
a cold start; a framework would dominate the number). What they share lives here: reading a
request head, noticing a stop signal, and serving until one, then stopping so that a
terminated pod really goes. Each app only says what one connection does; the event-display
sink (labkit.eventing.sink) serves through labkit.eventing.wire but stops on the same signals.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence

from labkit import http1

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "Answer",
    "Reply",
    "answering",
    "read_head",
    "serve_until_signalled",
    "signalled",
]

MAX_HEAD = http1.MAX_HEAD
"""Longest request head (request line and headers) an app reads, in bytes (431 beyond)."""
MAX_BODY = 8 * 1024 * 1024
"""Longest request body an app accepts, in bytes (413 beyond, before it is read)."""


def signalled() -> asyncio.Event:
    """An event set when this process gets SIGTERM (Kubernetes stopping the pod) or SIGINT
    (Ctrl-C); call it inside the running loop, before waiting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """The lines of the next request head (request line first, a single Content-Length if the
    request has a body), or None when the client is gone.

    The head is framed by labkit.http1: a malformed or oversized one raises `http1.HttpError`,
    which `serve_until_signalled` answers (400/413/431/...) before closing. The apps read
    Content-Length bodies themselves, so a chunked request is refused with 411 Length Required
    (RFC 9110 15.5.12) instead of being left unread on the connection.
    """
    try:
        head = await http1.read_request_head(reader)
    except ConnectionError:
        return None
    if head is None:
        return None
    if head.framing.kind == "chunked":
        raise http1.HttpError(411, "chunked request bodies are not accepted here; "
                                   "send a Content-Length")
    fields = [f"{k}: {v}" for k, v in head.headers if k.lower() != "content-length"]
    if head.framing.kind == "length":
        if head.framing.length > MAX_BODY:
            raise http1.HttpError(413, f"body of {head.framing.length} bytes; at most "
                                       f"{MAX_BODY} accepted")
        fields.append(f"Content-Length: {head.framing.length}")
    return [f"{head.method} {head.target} {head.version}", *fields, "", ""]


Reply = tuple[int, str, bytes] | tuple[int, str, bytes, Sequence[tuple[str, str]]]
"""(status, content type, body), optionally with more header fields (a Location, a Set-Cookie)."""
Answer = Callable[[http1.Request], Awaitable[Reply]]
"""What an app does with one whole request."""


def answering(answer: Answer) -> http1.Connection:
    """A connection that reads whole requests (labkit.http1 framing, bodies up to MAX_BODY) and
    writes `answer`'s response to each, on one keep-alive connection while the client allows.
    Each response carries `x-labkit-pod: <pid>`, so a student sees which replica answered."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await http1.read_request(reader, max_body=MAX_BODY, writer=writer)):
            status, content_type, body, *more = await answer(request)
            fields = "".join(f"{name}: {value}\r\n" for name, value in (more[0] if more else ()))
            head = (f"HTTP/1.1 {status} {http1.reason(status)}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{fields}"
                    f"x-labkit-pod: {os.getpid()}\r\n"
                    f"Connection: {'keep-alive' if request.keep_alive else 'close'}\r\n\r\n")
            writer.write(head.encode("latin-1") + (b"" if request.method == "HEAD" else body))
            await writer.drain()
            if not request.keep_alive:
                return

    return connection


def _refusal(err: http1.HttpError) -> bytes:
    body = json.dumps({"error": err.message}).encode()
    return (f"HTTP/1.1 {err.status} {http1.reason(err.status)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode("latin-1") + body


async def serve_until_signalled(connection: http1.Connection, port: int | None = None) -> None:
    """Serve `connection` for each client on BIND_ADDRESS (127.0.0.1):`port` ($PORT, else 8080, as Knative's
    samples) until SIGTERM or SIGINT.

    A request `read_head` cannot frame is answered with its status and a JSON error, then the
    connection closes; one that breaks mid-request (reset, truncated) just ends. On a signal the
    server stops accepting, then drops open keep-alive connections: a client holding one open
    must not keep a terminated pod alive (Python >= 3.12 waits for them in wait_closed).
    """

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await connection(reader, writer)
        except http1.HttpError as err:
            await http1.refuse(reader, writer, _refusal(err))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return

    if port is None:
        port = int(os.environ.get("PORT", "8080"))
    server = await http1.start_server(guarded, http1.BIND_ADDRESS, port)
    await signalled().wait()
    server.close()
    await asyncio.wait_for(server.wait_closed(), timeout=2.0)
