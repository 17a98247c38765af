"""labkit.load against a local HTTP server with known delays and statuses (counts and order, not times)."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from labkit import load
from labkit.core.loop import BackgroundLoop
from labkit.net import HOST, free_port


@dataclass
class Recorder:
    port: int = 0
    connections: int = 0
    targets: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rec: Recorder) -> None:
    """/delay/<ms>, /status/<code>, /chunked, /trailers, /malformed, /close, /hang; else 200."""
    with rec.lock:
        rec.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split()[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            with rec.lock:
                rec.targets.append(target)
                rec.hosts.append(headers.get("host", ""))
                rec.bodies.append(body)
            path = target.split("://", 1)[-1].split("/", 1)[-1]
            status, extra, payload = 200, "", b"hello"
            if path.startswith("delay/"):
                await asyncio.sleep(int(path.split("/")[1]) / 1000)
            elif path.startswith("status/"):
                status = int(path.split("/")[1])
            elif path == "hang":
                await asyncio.sleep(30)
            if path == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
            elif path == "trailers":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n"
                             b"0\r\nDigest: sha-256=abc\r\nX-Done: 1\r\n\r\n")
            elif path == "malformed":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
            else:
                if path == "close":
                    extra = "Connection: close\r\n"
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n{extra}\r\n".encode() + payload)
            await writer.drain()
            if extra:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Recorder]:
    loop = BackgroundLoop("test-load-server")
    rec = Recorder(port=free_port())

    async def start() -> asyncio.AbstractServer:
        return await asyncio.start_server(lambda r, w: _handle(r, w, rec), HOST, rec.port)

    srv = loop.run(start())
    try:
        yield rec
    finally:
        async def stop() -> None:
            srv.close()

        loop.run(stop())
        loop.close()


@pytest.fixture
def rec(server: Recorder) -> Recorder:
    with server.lock:
        server.connections = 0
        server.targets.clear()
        server.hosts.clear()
        server.bodies.clear()
    return server


def test_counts_connections_and_percentile_order(rec: Recorder) -> None:
    result = load.run(rec.url + "/delay/5", requests=40, concurrency=4)
    assert result.requests == 40 and result.status_counts == {200: 40}
    assert result.connections == 4 == rec.connections  # keep-alive: one connection per worker
    assert len(rec.targets) == 40
    p = list(result.percentiles.values())
    assert result.min <= p[0] <= p[1] <= p[2] <= p[3] <= p[4] <= result.max
    assert result.min >= 0.005  # the server waits 5 ms before answering: a floor, not a timing
    assert sum(b.count for b in result.histogram()) == 40
    assert result.success_rate == 1.0 and result.bytes_received > 40 * 5


def test_compare_sends_each_targets_requests_in_turns_and_combines_them(rec: Recorder) -> None:
    runs = load.compare({"a": {"url": rec.url + "/a"}, "b": {"url": rec.url + "/status/503"}},
                        requests=7, rounds=3, concurrency=1)
    # turns of 3, 2 and 2 requests, target after target
    assert rec.targets == ["/a"] * 3 + ["/status/503"] * 3 + (["/a"] * 2 + ["/status/503"] * 2) * 2
    assert runs["a"].status_counts == {200: 7} and runs["b"].status_counts == {503: 7}
    assert len(runs["a"].latencies) == 7 and runs["a"].connections == 3  # a connection per turn
    assert runs["a"].url == rec.url + "/a" and runs["a"].concurrency == 1
    with pytest.raises(ValueError, match=r"requests must be an integer in the range \[3, inf\), got 2"):
        load.compare({"a": {"url": rec.url}}, requests=2, rounds=3)
    with pytest.raises(ValueError, match=r"target 'b': no url \(got \['proxy'\]\)"):
        load.compare({"a": {"url": rec.url}, "b": {"proxy": rec.url}}, requests=4, rounds=2)
    assert rec.targets == ["/a"] * 3 + ["/status/503"] * 3 + (["/a"] * 2 + ["/status/503"] * 2) * 2  # none sent


def test_status_codes_are_counted(rec: Recorder) -> None:
    result = load.run(rec.url + "/status/503", requests=10, concurrency=2)
    assert result.status_counts == {503: 10} and result.ok == 0 and result.success_rate == 0.0
    assert "Code 503 : 10 (100.0 %)" in result.summary()


def test_no_keepalive_opens_a_connection_per_request(rec: Recorder) -> None:
    result = load.run(rec.url + "/", requests=12, concurrency=3, keepalive=False)
    assert result.connections == 12 == rec.connections
    assert result.count(200) == 12


def test_server_closing_each_connection_is_followed(rec: Recorder) -> None:
    result = load.run(rec.url + "/close", requests=6, concurrency=1)
    assert result.count(200) == 6 and result.connections == 6


def test_chunked_bodies(rec: Recorder) -> None:
    result = load.run(rec.url + "/chunked", requests=5, concurrency=1)
    assert result.count(200) == 5 and result.connections == 1


def test_chunked_trailers_keep_the_connection_in_step(rec: Recorder) -> None:
    # Trailer fields after the last chunk are read, so the next response on the kept-alive
    # connection starts where it should (they used to be taken for the next status line).
    result = load.run(rec.url + "/trailers", requests=4, concurrency=1)
    assert result.count(200) == 4 and result.connections == 1 and not result.errors
    frame = len(b"5;x=y\r\nhello\r\n0\r\nDigest: sha-256=abc\r\nX-Done: 1\r\n\r\n")
    head = len(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert result.bytes_received == 4 * (head + frame)


def test_malformed_response_counts_as_bad_response(rec: Recorder) -> None:
    result = load.run(rec.url + "/malformed", requests=3, concurrency=1)
    assert result.count(load.ERROR_STATUS) == 3 and result.errors == {"bad response": 3}
    assert result.connections == 3  # a connection that framed a message wrongly is not reused


def test_qps_spreads_the_schedule(rec: Recorder) -> None:
    result = load.run(rec.url + "/", requests=11, concurrency=2, qps=50)
    assert result.requests == 11
    # request i is not sent before i/qps: 11 requests at 50 qps span at least 0.2 s
    assert result.duration >= 10 / 50


def test_duration_bounds_the_run(rec: Recorder) -> None:
    result = load.run(rec.url + "/", duration=0.3, concurrency=2, qps=20)
    # 20 qps for 0.3 s schedules requests at 0, 0.05, ..., 0.25
    assert result.requests == 6


def test_proxy_gets_absolute_form_and_headers_pass(rec: Recorder) -> None:
    result = load.run("http://httpbin:8000/get?x=1", requests=3, concurrency=1, proxy=rec.url,
                      headers={"x-user": "jason"})
    assert result.count(200) == 3
    assert rec.targets == ["http://httpbin:8000/get?x=1"] * 3
    assert rec.hosts == ["httpbin:8000"] * 3


def test_host_header_overrides_the_url(rec: Recorder) -> None:
    load.run(rec.url + "/headers", requests=2, concurrency=1, headers={"Host": "reviews"})
    assert rec.hosts == ["reviews", "reviews"] and rec.targets == ["/headers", "/headers"]


def test_post_body(rec: Recorder) -> None:
    result = load.run(rec.url + "/post", requests=3, concurrency=1, method="post", body="x" * 1024)
    assert result.method == "POST" and result.count(200) == 3
    assert rec.bodies == [b"x" * 1024] * 3


def test_errors_count_as_minus_one() -> None:
    result = load.run(f"http://{HOST}:{free_port()}/", requests=4, concurrency=2)
    assert result.status_counts == {load.ERROR_STATUS: 4}
    assert result.errors == {"connection refused": 4}
    assert result.connections == 0


def test_timeout_counts_as_minus_one(rec: Recorder) -> None:
    result = load.run(rec.url + "/hang", requests=2, concurrency=2, timeout=0.2)
    assert result.status_counts == {-1: 2} and result.errors == {"timeout": 2}


def test_bad_arguments_are_named() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"requests": 0}, "requests"), ({"concurrency": 0}, "concurrency"), ({"qps": -1}, "qps"),
        ({"duration": 0}, "duration"), ({"timeout": 0}, "timeout")]
    for kwargs, word in cases:
        with pytest.raises(ValueError, match=word):
            load.run("http://127.0.0.1:1/", **kwargs)
    with pytest.raises(ValueError, match="url"):
        load.run("https://example.com/", requests=1)
    with pytest.raises(ValueError, match="proxy"):
        load.run("http://a/", requests=1, proxy="socks5://x")


def test_percentile_interpolates() -> None:
    r = load.LoadResult("u", "GET", 1, 0, 1.0, {200: 5}, {}, (0.005, 0.001, 0.003, 0.002, 0.004), 1, 0)
    assert r.percentile(50) == pytest.approx(0.003)
    assert r.percentile(75) == pytest.approx(0.004)
    assert r.percentile(0) == r.min and r.percentile(100) == r.max
    assert [b.count for b in r.histogram()] == [1, 1, 3]  # (0.5,1] (1,2] (2,5] ms
    with pytest.raises(ValueError):
        r.percentile(101)


def test_durations_and_headers_parse() -> None:
    assert load.parse_duration("500ms") == 0.5
    assert load.parse_duration("2m") == 120 and load.parse_duration("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        load.parse_duration("fast")


def test_command_line(rec: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    load.add_load_arguments(parser)
    args = parser.parse_args([rec.url + "/status/418", "-n", "5", "-c", "1", "-H", "x-a: b", "--json"])
    assert load.run_load(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status_counts"] == {"418": 5} and out["requests"] == 5
    assert set(out["latency_ms"]) >= {"p50", "p75", "p90", "p99", "p99.9"}
    args = parser.parse_args([f"http://{HOST}:{free_port()}/", "-n", "1"])
    assert load.run_load(args) == 1
    assert "Code  -1 : 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args([rec.url, "-H", "no-colon"])
