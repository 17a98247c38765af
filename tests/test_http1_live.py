"""Every component framed by labkit.http1, over real sockets: a malformed request gets 400, an
oversized head 431, an oversized body 413 (before the body is sent), each with a short body,
and the connection is closed; a good request still works on the same kind of connection.

Components: the eventing wire server (broker, channel, sink), the queue-proxy's server (also
the ingress and activator), the apps served by labkit.apps.serve (hello here) and the
function app. Each socket read is bounded by a timeout, so a hang fails instead of stalling.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from labkit import http1
from labkit.core.loop import BackgroundLoop
from labkit.eventing import wire
from labkit.net import HOST, ReplicaProcess, python_command
from labkit.serving import queue_proxy
from labkit.serving.queue_proxy import HttpServer, QueueProxy

BOUND = 10.0  # seconds: only a hang reaches it
MALFORMED = b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"
BIG_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (http1.MAX_HEAD + 10) + b"\r\n\r\n"
BIG_BODY = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
BAD_LENGTH = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
SMUGGLE = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\n")


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send `data`, read one response; (status, headers, body, whether the server closed)."""

    async def run() -> tuple[int, dict[str, str], bytes, bool]:
        reader, writer = await asyncio.open_connection(HOST, port, limit=http1.MAX_HEAD)
        try:
            writer.write(data)
            response = await http1.read_response(reader, "GET")
            if response.keep_alive:  # prove it: a second request on the connection is answered
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                closed = (await http1.read_response(reader, "GET")).status == 0
            else:
                closed = await reader.read(1) == b""
        finally:
            writer.close()
        headers = {k.lower(): v for k, v in response.headers}
        return response.status, headers, response.body, closed

    async def bounded() -> tuple[int, dict[str, str], bytes, bool]:
        return await asyncio.wait_for(run(), BOUND)

    return asyncio.run(bounded())


def assert_refusals(port: int, *, json_body: bool) -> None:
    for data, status in ((MALFORMED, 400), (BIG_HEAD, 431), (BIG_BODY, 413),
                         (BAD_LENGTH, 400), (SMUGGLE, 400)):
        got, headers, body, closed = exchange(port, data)
        assert (got, closed) == (status, True), (data[:40], got, body)
        assert 0 < len(body) < 300 and headers.get("connection") == "close"
        if json_body:
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["error"]


@pytest.fixture(scope="module")
def loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop("test-http1-live")
    yield loop
    loop.close()


def test_wire_server_refuses_and_still_serves(loop: BackgroundLoop) -> None:
    seen: list[wire.Request] = []

    async def handler(request: wire.Request) -> wire.Response:
        seen.append(request)
        return wire.json_response(202, {"got": len(request.body)})

    server = loop.run(wire.serve(handler, max_body=1000))
    try:
        assert_refusals(server.port, json_body=True)
        assert seen == []  # nothing reached the handler
        chunked = (b"POST /e?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
        status, _, body, closed = exchange(server.port, chunked)
        assert (status, json.loads(body), closed) == (202, {"got": 3}, False)
        assert (seen[0].path, seen[0].query, seen[0].body) == ("/e", "x=1", b"abc")
        # 1001 bytes in chunks: refused once the running total passes the limit.
        over = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"3E9\r\n"
                + b"a" * 1001 + b"\r\n0\r\n\r\n")
        assert exchange(server.port, over)[0] == 413
    finally:
        async def stop() -> None:
            server.close()
            await server.wait_closed()

        loop.run(stop())


def test_wire_client_reports_a_malformed_response_as_connection_error(loop: BackgroundLoop
                                                                      ) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        await writer.drain()

    async def run() -> str:
        server = await http1.start_server(bad, HOST)
        client = wire.Client()
        try:
            await client.request("POST", f"http://{HOST}:{server.port}/", timeout=BOUND)
        except ConnectionError as err:
            return str(err)
        finally:
            client.close()
            server.close()
            await server.wait_closed()
        return "no error"

    assert "malformed response" in loop.run(run())


def test_queue_proxy_refuses_and_still_forwards(loop: BackgroundLoop) -> None:
    async def upstream(request: wire.Request) -> wire.Response:
        return wire.Response(200, request.body or b"ok")

    backend = loop.run(wire.serve(upstream))
    proxy = QueueProxy(loop, backend.port, revision="r1")
    proxy.start()
    try:
        assert_refusals(proxy.port, json_body=False)
        status, headers, body, closed = exchange(
            proxy.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert (status, body, closed, headers["x-labkit-revision"]) == (200, b"hello", False, "r1")
    finally:
        proxy.close()
        loop.run(_close(backend))


def test_http_server_body_limit_is_configurable(loop: BackgroundLoop) -> None:
    async def echo(request: queue_proxy.Request) -> queue_proxy.Response:
        return queue_proxy.Response(200, "OK", [], request.body)

    server = HttpServer(loop, echo, max_body=4)
    server.start()
    try:
        ok = exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd")
        assert ok[0] == 200 and ok[2] == b"abcd"
        assert exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde")[0] == 413
    finally:
        server.close()


async def _close(server: http1.Server) -> None:
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("module", ["labkit.apps.hello", "labkit.apps.function"])
def test_apps_refuse_with_json_and_still_serve(module: str) -> None:
    with ReplicaProcess(python_command(module), name=module.rsplit(".", 1)[1]) as app:
        assert_refusals(app.port, json_body=True)
        chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        if module.endswith("hello"):
            assert exchange(app.port, chunked)[0] == 411  # hello reads Content-Length bodies only
        status, _, _, closed = exchange(app.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, closed) == (200, False)


def test_function_app_takes_chunked_uploads() -> None:
    with ReplicaProcess(python_command("labkit.apps.function"), name="function") as app:
        body = json.dumps({"instances": [[0] * 64]}).encode()
        data = (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Expect: 100-continue\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        status, _, answer, _ = exchange(app.port, data)
        assert status == 200 and len(json.loads(answer)["predictions"]) == 1
