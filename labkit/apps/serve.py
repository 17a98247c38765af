"""How labkit's small HTTP apps run: on bare asyncio, on 127.0.0.1:$PORT, until SIGTERM/SIGINT.

The apps stay on the standard library so they start in tens of milliseconds (lab 01 measures
a cold start; a framework would dominate the number). What they share lives here: reading a
request head, noticing a stop signal, and serving until one, then stopping so that a
terminated pod really goes. Each app only says what one connection does; the event-display
sink (labkit.eventing.sink) serves through labkit.eventing.wire but stops on the same signals.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

__all__ = ["MAX_HEAD", "read_head", "serve_until_signalled", "signalled"]

MAX_HEAD = 64 * 1024
"""Longest request head (request line and headers) an app reads, in bytes."""

Connection = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def signalled() -> asyncio.Event:
    """An event set when this process gets SIGTERM (Kubernetes stopping the pod) or SIGINT
    (Ctrl-C); call it inside the running loop, before waiting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """The lines of the next request head (request line first), or None when the client is
    gone or sent a head longer than `MAX_HEAD`: either way the connection is over."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    return head.decode("latin-1").split("\r\n")


async def serve_until_signalled(connection: Connection, port: int | None = None) -> None:
    """Serve `connection` for each client on 127.0.0.1:`port` ($PORT, else 8080, as Knative's
    samples) until SIGTERM or SIGINT.

    A connection that breaks mid-request (reset, truncated, unparsable) just ends. On a signal
    the server stops accepting, then drops idle keep-alive connections: a client holding one
    open must not keep a terminated pod alive (Python >= 3.12 waits for them in wait_closed).
    """
    open_writers: set[asyncio.StreamWriter] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_writers.add(writer)
        try:
            await connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            open_writers.discard(writer)
            writer.close()

    if port is None:
        port = int(os.environ.get("PORT", "8080"))
    server = await asyncio.start_server(tracked, "127.0.0.1", port, limit=MAX_HEAD)
    await signalled().wait()
    server.close()
    for writer in list(open_writers):
        writer.close()
    await asyncio.wait_for(server.wait_closed(), timeout=2.0)
