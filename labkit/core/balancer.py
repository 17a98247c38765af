"""An L4 (TCP) load balancer, as kube-proxy gives each Service.

Each accepted connection goes to the next backend in round-robin order and bytes are copied both
ways until both sides close; requests on one kept-alive connection therefore all reach the same
pod, exactly as with a real ClusterIP. A backend that refuses is skipped for the next one, so a
pod that just died costs no failed connection while another is ready.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Sequence

from labkit.core.loop import BackgroundLoop
from labkit.net import HOST

__all__ = ["L4Balancer"]

Backend = tuple[str, int]
_CHUNK = 64 * 1024


class L4Balancer:
    def __init__(self, loop: BackgroundLoop, *, connect_timeout: float = 5.0) -> None:
        self._loop = loop
        self._connect_timeout = connect_timeout
        self._backends: tuple[Backend, ...] = ()
        self._next = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: Counter[Backend] = Counter()
        """Connections forwarded per backend since start (what a student can plot)."""
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._backends

    def set_backends(self, backends: Sequence[Backend]) -> None:
        """Replace the endpoint set; safe from any thread (one atomic rebinding)."""
        self._backends = tuple(backends)

    def start(self) -> int:
        """Listen on a free port of 127.0.0.1 (bound directly, so no port race); return it."""
        self.port = self._loop.run(self._start())
        return self.port

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._on_connection, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop listening and cut open connections; idempotent."""
        if self._server is not None and self._loop.running:
            self._loop.run(self._close())
        self._server = None

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain function, not a coroutine, so that asyncio.streams attaches no done-callback of
        # its own: on Python < 3.12 that callback calls task.exception() on a cancelled task and
        # logs "Exception in callback ... CancelledError" whenever close() cuts a live connection
        # (CPython gh-113538). Our own task, tracked from creation, ends cancelled quietly, and
        # even one cancelled before its first step still has its client connection closed.
        task = asyncio.get_running_loop().create_task(self._forward(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finished, writer))

    def _finished(self, writer: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        writer.close()
        self._tasks.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            return  # no ready endpoint: the client sees the connection closed
        upstream_reader, upstream_writer = upstream
        pipes = [
            asyncio.ensure_future(_pipe(reader, upstream_writer)),
            asyncio.ensure_future(_pipe(upstream_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            upstream_writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        backends = self._backends
        for _ in range(len(backends)):
            backend = backends[self._next % len(backends)]
            self._next += 1
            try:
                connection = await asyncio.wait_for(
                    asyncio.open_connection(*backend), self._connect_timeout
                )
            except (OSError, asyncio.TimeoutError):
                continue
            self.connections[backend] += 1
            return connection
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the half-close on (HTTP/1.0 clients rely on it)."""
    while data := await reader.read(_CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
