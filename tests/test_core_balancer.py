"""The Service balancer cuts live connections on close without asyncio logging an error.

Lab 00 once committed an "Exception in callback StreamReaderProtocol ... CancelledError"
traceback: on Python < 3.12 asyncio.streams' own done-callback crashes on a cancelled
connection handler (CPython gh-113538), and closing a cluster cancels the handlers of
kept-alive connections. These tests hold a connection open mid-exchange while closing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from labkit.core.balancer import L4Balancer
from labkit.core.loop import BackgroundLoop
from labkit.net import HOST


def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # The backend spawns its own task for the reason the balancer does (see L4Balancer).
    async def copy() -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()

    asyncio.get_running_loop().create_task(copy()).add_done_callback(lambda _: writer.close())


@pytest.fixture
def loop_errors() -> Iterator[tuple[BackgroundLoop, list[dict]]]:
    loop = BackgroundLoop()
    errors: list[dict] = []
    loop.loop.call_soon_threadsafe(loop.loop.set_exception_handler, lambda _loop, context: errors.append(context))
    try:
        yield loop, errors
    finally:
        loop.close()


def _balancer_with_echo_backend(loop: BackgroundLoop) -> L4Balancer:
    async def start_backend() -> int:
        server = await asyncio.start_server(_echo, HOST, 0)
        return int(server.sockets[0].getsockname()[1])

    balancer = L4Balancer(loop)
    balancer.set_backends([(HOST, loop.run(start_backend()))])
    balancer.start()
    return balancer


def _open_exchange(port: int) -> socket.socket:
    """A client connection that has had one answer through the balancer and stays open."""
    client = socket.create_connection((HOST, port), timeout=10)
    client.sendall(b"ping")
    assert client.recv(4) == b"ping"
    return client


def test_close_with_an_open_connection_logs_nothing_and_cuts_the_client(loop_errors):
    loop, errors = loop_errors
    balancer = _balancer_with_echo_backend(loop)
    assert balancer.port is not None
    client = _open_exchange(balancer.port)
    balancer.close()
    assert client.recv(4) == b"", "the client should see its connection closed"
    client.close()
    loop.run(asyncio.sleep(0))  # let any done-callback run before looking
    assert errors == []


def test_loop_shutdown_with_an_open_connection_logs_nothing(loop_errors):
    loop, errors = loop_errors
    balancer = _balancer_with_echo_backend(loop)
    assert balancer.port is not None
    client = _open_exchange(balancer.port)
    loop.run(loop._cancel_all())  # what BackgroundLoop.close() does to tasks still running
    assert client.recv(4) == b""
    client.close()
    assert errors == []
