"""The sidecar's outbound fast path (`Sidecar._outbound_fast`) must behave exactly like the
general router: each case runs once on the default route (fast path) and once with a catch-all
VirtualService (general path), against an upstream scripted by request count, and both runs
must give the expected outcome and the same responses, access log, tries, forwarded headers
(in order) and bodies, pool and balancer state. The fast-path run must really have used the
fast path (`Sidecar.fast_path_requests`), or not, where the case says it must not."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httptools
import pytest

from labkit.mesh.proxy import Sidecar, _InFlight
from labkit.mesh.proxy_config import Endpoint, MeshConfig, ServiceInfo, Workload
from labkit.mesh.routing import VirtualService

SEED = 5
"""Seeds the sidecar's random choices; with it the first retry's back-off is 19 ms (checked in
`test_the_seed_gives_a_back_off_to_leave_in`), many loop turns for a caller to leave in."""
WARM = 2
"""Requests sent before each case so the sidecar holds a kept-alive upstream connection."""
DEADLINE = 5.0

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
_REPLIES = {
    "ok": _OK,
    "503": b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s",
    "grpc14": b"HTTP/1.1 200 OK\r\ngrpc-status: 14\r\ncontent-length: %d\r\n\r\n%s",
}


class _Upstream(asyncio.Protocol):
    """One connection to the scripted upstream: the n-th request after the warm-up gets
    `script[n]` ("ok", "503", "grpc14": answer; "close": close unanswered; "hold": never
    answer); past the script, "ok". Bodies are the request's number, to check the order."""

    def __init__(self, script: list[str], seen: list[dict[str, str]]) -> None:
        self.script = script
        self.seen = seen
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[str, str] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server's transport is a Transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.headers[":body"] = self.headers.get(":body", "") + body.decode()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        number = len(self.seen)
        self.seen.append(self.headers)
        self.headers = {}
        step = number - WARM
        action = self.script[step] if 0 <= step < len(self.script) else "ok"
        if action == "close":
            self.transport.close()
        elif action != "hold":
            body = str(number).encode()
            self.transport.write(_REPLIES[action] % (len(body), body))


@dataclass(frozen=True)
class Case:
    """One scenario and what both paths must produce for it."""

    script: tuple[str, ...]
    requests: int = 1
    pipelined: bool = False
    leave_after_tries: int = 0
    """Hang up once the upstream got this many tries (0: read the answers)."""
    leave_in_back_off: bool = False
    """Hang up once try 1 was answered and released, before the retry goes out."""
    status: tuple[str, ...] = ("200",)
    flags: tuple[str, ...] = ("-",)
    attempts: tuple[str, ...] = ("1",)
    fast: int = 1
    head: bytes = b""
    """Header lines the caller adds to its `GET /x` (with `body`: a POST)."""
    body: bytes = b""


CALLER_ID = "caller-request-1"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_CALLER_HEADERS = (b"User-Agent: lab/1\r\nX-Request-Id: " + CALLER_ID.encode() + b"\r\n"
                   b"Connection: keep-alive\r\nX-Forwarded-For: 10.0.0.9\r\n"
                   b"traceparent: 00-" + CALLER_TRACE.encode() + b"-00f067aa0ba902b7-01\r\n"
                   b"x-envoy-attempt-count: 9\r\nX-Custom: a b\r\n")

CASES = {
    "plain 200": Case(()),
    "grpc 14 retried once": Case(("grpc14",), attempts=("1", "2")),
    "grpc 14 until the retry limit": Case(("grpc14",) * 3, flags=("URX",), attempts=("1", "2", "3")),
    "app 503 is not retried": Case(("503",), status=("503",)),
    "stale kept-alive connection": Case(("close",), attempts=("1", "1")),
    "upstream closes every connection": Case(("close",) * 2, status=("503",), flags=("UC",),
                                             attempts=("1", "1")),
    "caller leaves mid-request": Case(("hold",), leave_after_tries=1, status=("0",),
                                      flags=("DC",)),
    "caller leaves during back-off": Case(("grpc14",), leave_in_back_off=True, status=("0",),
                                          flags=("DC",)),
    "caller leaves during the retry": Case(("grpc14", "hold"), leave_after_tries=2, status=("0",),
                                           flags=("DC",), attempts=("1", "2")),
    "3 requests in a row": Case((), requests=3, status=("200",) * 3, flags=("-",) * 3,
                                attempts=("1",) * 3, fast=3),
    "3 pipelined requests": Case((), requests=3, pipelined=True, status=("200",) * 3,
                                 flags=("-",) * 3, attempts=("1",) * 3),
    "the caller's ids and headers": Case((), head=_CALLER_HEADERS),
    "the caller's ids, retried": Case(("grpc14",), head=_CALLER_HEADERS, attempts=("1", "2")),
    "a body": Case((), head=b"content-type: text/plain\r\n", body=b"hello"),
    "a repeated header goes the general way": Case((), head=b"x-a: 1\r\nX-A: 2\r\n", fast=0),
    "a timeout header goes the general way": Case(
        (), head=b"x-envoy-upstream-rq-timeout-ms: 5000\r\n", fast=0),
    "HEAD goes the general way": Case((), head=b"x-head: 1\r\n", fast=0),
}


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll on every loop turn (a caller leaving in a back-off must not miss it)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}")
        await asyncio.sleep(0)


def _request(case: Case | None = None) -> bytes:
    if case is None:
        return b"GET /x HTTP/1.1\r\nhost: app\r\n\r\n"
    if case.body:
        return (b"POST /x HTTP/1.1\r\nhost: app\r\n%scontent-length: %d\r\n\r\n%s"
                % (case.head, len(case.body), case.body))
    method = b"HEAD" if case.head.startswith(b"x-head") else b"GET"
    return b"%s /x HTTP/1.1\r\nhost: app\r\n%s\r\n" % (method, case.head)


async def _read_response(reader: asyncio.StreamReader, head: bool = False,
                         ) -> tuple[str, bytes, list[str]]:
    status = (await reader.readline()).split()[1].decode()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    body = b"" if head else await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, sorted(headers)


async def _call(port: int, n: int, pipelined: bool = False,
                case: Case | None = None) -> list[tuple[str, bytes, list[str]]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _request(case)
    head = request.startswith(b"HEAD")
    try:
        if pipelined:
            writer.write(request * n)
            return [await _read_response(reader, head) for _ in range(n)]
        out = []
        for _ in range(n):
            writer.write(request)
            out.append(await _read_response(reader, head))
        return out
    finally:
        writer.close()


async def _leave(port: int, ready: Callable[[], bool]) -> None:
    """Send one request, and hang up the moment `ready()` holds (shutdown reaches the
    sidecar at once; a transport close would wait a loop turn)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nhost: app\r\n\r\n")
    await _until(ready, "the moment to leave")
    writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    writer.close()


@asynccontextmanager
async def _mesh(script: list[str], seen: list[dict[str, str]], general: bool = False,
                seed: int = SEED) -> AsyncIterator[Sidecar]:
    """A seeded client sidecar whose service `app` is the scripted upstream, warmed up.
    `general`: add a catch-all VirtualService, which sends every request the general way."""
    server = await asyncio.get_running_loop().create_server(
        lambda: _Upstream(script, seen), "127.0.0.1", 0)
    sidecar = Sidecar(Workload("load"), seed=seed)
    await sidecar.start()
    try:
        service = ServiceInfo("app", "default", (80,), (
            Endpoint(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", "app"),))
        catch_all = VirtualService.from_spec(
            {"hosts": ["app"], "http": [{"route": [{"destination": {"host": "app"}}]}]})
        sidecar.push(MeshConfig(1, {service.fqdn: service}, (catch_all,) if general else ()))
        await _call(sidecar.ports["outbound"], WARM)
        yield sidecar
    finally:
        await sidecar.close()
        server.close()


async def _run(case: Case, general: bool) -> dict[str, Any]:
    seen: list[dict[str, str]] = []
    async with _mesh(list(case.script), seen, general) as sidecar:
        port = sidecar.ports["outbound"]
        fast_before = sidecar.fast_path_requests

        def stats() -> dict[str, int]:
            return sidecar.config()["clusters"][0]["stats"]

        responses: list[tuple[str, bytes, list[str]]] = []
        if case.leave_in_back_off:  # try 1 judged and its slot released: the back-off began
            await _leave(port, lambda: len(seen) == WARM + 1 and stats()["upstream_rq_active"] == 0)
        elif case.leave_after_tries:
            await _leave(port, lambda: len(seen) == WARM + case.leave_after_tries)
        else:
            responses = await _call(port, case.requests, case.pipelined, case)
        # Settled: every entry logged and every task the sidecar started has ended (so a
        # retry that should not happen would have been sent by now).
        me = asyncio.current_task()
        await _until(lambda: len(sidecar.access_log()) == WARM + len(case.status)
                     and all(t is me or t.done() for t in asyncio.all_tasks()), "the sidecar to settle")
        cluster = next(iter(sidecar._clusters.values()))
        return {
            "responses": responses,
            "log": [line.split('"')[2].split()[:2] for line in sidecar.access_log()[WARM:]],
            "attempts": [h.get("x-envoy-attempt-count") for h in seen[WARM:]],
            "forwarded": [_masked(h) for h in seen[WARM:]],
            "logged": [_logged(line) for line in sidecar.access_log()[WARM:]],
            "stats": stats(),
            "active": sorted(cluster.balancer.active.values()),  # ports differ per run
            "fast": sidecar.fast_path_requests - fast_before,
        }


def _masked(headers: dict[str, str]) -> list[tuple[str, str]]:
    """Forwarded headers in order, with the ids a sidecar draws at random masked."""
    out = []
    for name, value in headers.items():
        if name == "x-request-id" and value != CALLER_ID:
            value = "<new id>"
        elif name == "traceparent":
            version, trace, _, sampled = value.split("-")
            value = "-".join((version, trace if trace == CALLER_TRACE else "<new trace>",
                              "<this hop's span>", sampled))
        out.append((name, value))
    return out


def _logged(line: str) -> tuple[str, ...]:
    """An access-log line's request line, forwarded-for, user agent, request id, authority."""
    quoted = line.split('"')
    rid = quoted[9] if quoted[9] == CALLER_ID else "<new id>"
    return quoted[1], quoted[5], quoted[7], rid, quoted[11]


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_and_general_path_agree(name: str) -> None:
    case = CASES[name]
    fast = asyncio.run(_run(case, general=False))
    general = asyncio.run(_run(case, general=True))
    assert fast.pop("fast") == case.fast  # the fast path really took the request(s)
    assert general.pop("fast") == 0
    assert fast == general
    # The expected outcome itself, so both paths breaking alike still fails.
    assert [entry[0] for entry in fast["log"]] == list(case.status)
    assert [entry[1] for entry in fast["log"]] == list(case.flags)
    assert fast["attempts"] == list(case.attempts)
    assert [status for status, _, _ in fast["responses"]] == \
        ([] if case.leave_after_tries or case.leave_in_back_off else list(case.status))
    if case.requests > 1:  # answers in request order: bodies are the upstream's request numbers
        assert [body for _, body, _ in fast["responses"]] == \
            [str(WARM + i).encode() for i in range(case.requests)]
    assert fast["stats"]["upstream_rq_active"] == 0 and fast["active"] == [0]


async def _first_back_off(seed: int) -> float:
    """The back-off the fast path chose for the first retry of a request (grpc status 14)."""
    seen: list[dict[str, str]] = []
    async with _mesh(["grpc14", "hold"], seen, seed=seed) as sidecar:
        _, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports["outbound"])
        writer.write(b"GET /x HTTP/1.1\r\nhost: app\r\n\r\n")

        def retry() -> Any:
            return next((c.inflight.retry for c in sidecar._downstreams
                         if isinstance(c.inflight, _InFlight) and c.inflight.retry is not None), None)

        await _until(lambda: retry() is not None, "the retry decision")
        writer.close()
        return float(retry().delay)


def test_the_seed_gives_a_back_off_to_leave_in() -> None:
    """"caller leaves during back-off" needs a first back-off of many loop turns."""
    assert asyncio.run(_first_back_off(SEED)) >= 0.010


@pytest.mark.parametrize("general", [False, True], ids=["fast path", "general path"])
def test_a_request_is_recorded_before_its_answer_is_written(general: bool,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever reads a sidecar's telemetry once the response arrived (a notebook drawing a
    trace, from another thread) must find the request in it."""
    from labkit.mesh import proxy_http

    recorded_at_write: list[int] = []

    async def scenario() -> None:
        async with _mesh([], [], general) as sidecar:
            write = proxy_http.Downstream._write

            def spy(self: proxy_http.Downstream, data: bytes, keep: bool) -> None:
                recorded_at_write.append(len(sidecar.telemetry.access))
                write(self, data, keep)

            monkeypatch.setattr(proxy_http.Downstream, "_write", spy)
            before = len(sidecar.telemetry.access)
            await _call(sidecar.ports["outbound"], 2)
            assert recorded_at_write == [before + 1, before + 2]

    asyncio.run(scenario())
