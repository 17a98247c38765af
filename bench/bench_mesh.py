"""What a labkit sidecar costs, against a direct call on loopback, in one run.

Each part runs in its own process, as in a pod: a 1 KB echo app, the load generator, and one
or two sidecars (`labkit.mesh.proxy.Sidecar` on uvloop). Paths measured:

- direct:         load -> app
- bare forwarder: load -> a policy-free uvloop + httptools forwarder -> app (the floor)
- bare + bookkeeping: the same forwarder doing only what any sidecar must do per request
                  whatever its policy (ids, trace span, a metric sample, access-log and span
                  entries, with labkit's own telemetry code): the floor for a Python sidecar
- 1 sidecar:      load -> client sidecar (outbound) -> app
- 2 sidecars:     load -> client sidecar -> server sidecar (inbound) -> app    (Istio's path)
- 2 sidecars mTLS: the same with mutual TLS between the sidecars

For each: latency percentiles at concurrency 1 and at a fixed 1000 req/s (open loop), maximum
throughput at concurrency 16, and the sidecars' CPU seconds per 1000 requests (from
/proc/<pid>/stat during the 1000 req/s run) and resident memory. The throughput at c=16 is
measured twice: with this script's load generator (uvloop + httptools, lighter than any real
client) and, when installed, with `hey` (a Go client, as Istio's fortio is). On two shared
cores the load generator's own CPU decides how much is left for the proxy, so the share of
direct depends on it; both are reported. Added latency per hop is
(path - direct) / number of sidecars. Targets (issue 4): added p90 per hop < 0.5 ms, >= 45 % of
direct throughput through one sidecar, <= 0.2 CPU-s per 1000 requests (0.4 with mTLS), < 60 MB.

    python bench/bench_mesh.py            # about a minute; writes bench/results/mesh.json
    python bench/bench_mesh.py --quick    # seconds; checks the script, numbers not meaningful
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import heyload

HERE = Path(__file__).resolve().parent
PAYLOAD = b"x" * 1024
TICKS = os.sysconf("SC_CLK_TCK")


# -- the processes -----------------------------------------------------------------------------


def _announce(**ports: Any) -> None:
    print(json.dumps(ports), flush=True)


def serve_app() -> None:
    """A 1 KB echo server on uvloop + httptools: fast, so the sidecar's cost shows."""
    import httptools
    import uvloop

    response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                b"content-length: %d\r\n\r\n" % len(PAYLOAD)) + PAYLOAD

    class App(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(response)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(App, "127.0.0.1", 0)
        _announce(port=server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_bare(args: argparse.Namespace) -> None:
    """The floor: a bare uvloop + httptools forwarder with one kept-alive upstream connection
    per client connection and no policy at all (the issue's reference point). `--bookkeeping`
    adds the per-request work no sidecar can skip: a new `x-request-id` and `traceparent`
    sent upstream, and one sample in the metrics, the access log and the spans."""
    import httptools
    import uvloop

    from labkit.mesh.telemetry import Telemetry, TraceContext, new_request_id

    telemetry = Telemetry() if args.bookkeeping else None
    labels = ("source", "load", "default", "unknown", "load", "unknown", "app", "default",
              "unknown", "app", "unknown", "app.default.svc.cluster.local", "app", "default",
              "http", "unknown")

    def record(method: bytes, url: bytes, rid: str, span: TraceContext, started: float,
               received: float, size_in: int, size_out: int) -> None:
        assert telemetry is not None
        ms = (time.monotonic() - started) * 1000.0
        telemetry.metrics.record(labels, 200, "-", ms)
        telemetry.access.append((received, method.decode(), url.decode(), 200, "-", "via_upstream",
                                 size_in, size_out, ms, ms, "", "", rid, "app:8000", "", "", "",
                                 "", ""))
        telemetry.spans.append((span.trace_id, span.span_id, None, "app:8000", url.decode(),
                                "load", "source", received, ms, 200, "-"))

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.body: list[bytes] = []
            self.done: asyncio.Future[bytes] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            assert self.done is not None
            self.done.set_result(b"".join(self.body))
            self.body = []

    class Downstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.head: list[bytes] = []
            self.body: list[bytes] = []
            self.queue: list[tuple[bytes, bytes]] = []
            self.wake: asyncio.Future[None] | None = None
            self.task: asyncio.Task[None] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url
            self.head = [b"POST " + url + b" HTTP/1.1"]

        def on_header(self, name: bytes, value: bytes) -> None:
            self.head.append(name + b": " + value)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.task is not None:
                self.task.cancel()

        def on_message_complete(self) -> None:
            books = None
            if telemetry is not None:
                rid, span = new_request_id(), TraceContext.start()
                self.head.append(b"x-request-id: " + rid.encode())
                self.head.append(b"traceparent: " + span.header.encode())
                books = (self.url, rid, span, time.monotonic(), time.time())
            self.queue.append((b"\r\n".join(self.head) + b"\r\n\r\n", b"".join(self.body), books))
            self.body = []
            if self.task is None:
                self.task = asyncio.get_running_loop().create_task(self.serve())
            elif self.wake is not None and not self.wake.done():
                self.wake.set_result(None)

        async def serve(self) -> None:
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(Upstream, "127.0.0.1", args.upstream)
            while True:
                if not self.queue:
                    self.wake = loop.create_future()
                    await self.wake
                    continue
                head, body, books = self.queue.pop(0)
                upstream.done = loop.create_future()
                upstream.transport.write(head + body)  # type: ignore[attr-defined]
                answer = await upstream.done
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n"  # type: ignore[attr-defined]
                                     % len(answer) + answer)
                if books is not None:
                    url, rid, span, started, received = books
                    record(b"POST", url, rid, span, started, received, len(body), len(answer))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Downstream, "127.0.0.1", 0)
        _announce(port=server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_sidecar(args: argparse.Namespace) -> None:
    """One sidecar: `client` routes Host `app` to `--upstream`; `server` delivers to the app."""
    import uvloop

    from labkit.mesh.proxy import Sidecar
    from labkit.mesh.proxy_config import Endpoint, MeshConfig, ServiceInfo, Workload

    tls = _load_certificate(args.cert) if args.cert else None

    async def main() -> None:
        if args.role == "client":
            sidecar = Sidecar(Workload("load", labels={"app": "load"}, service_account="load"),
                              seed=1, tls=tls)
            await sidecar.start()
            endpoint = Endpoint(f"127.0.0.1:{args.upstream}", "app", labels={"app": "app"},
                                sidecar=args.upstream_sidecar)
            service = ServiceInfo("app", "default", (8000,), (endpoint,))
            sidecar.push(MeshConfig(1, {service.fqdn: service}))
            _announce(port=sidecar.ports["outbound"])
        else:
            sidecar = Sidecar(Workload("app", labels={"app": "app"}, service_account="app"),
                              app_port=args.upstream, seed=2, tls=tls)
            await sidecar.start()
            sidecar.push(MeshConfig(1))
            _announce(port=sidecar.inbound_ports[next(iter(sidecar.inbound_ports))])
        await asyncio.Event().wait()

    uvloop.run(main())


def _load_certificate(path: str) -> Any:
    from cryptography import x509

    from labkit.mesh.security import SpiffeId, WorkloadCertificate

    data = json.loads(Path(path).read_text())
    cert = x509.load_pem_x509_certificate(data["cert"].encode())
    return WorkloadCertificate(SpiffeId.parse(data["id"]), cert, data["key"].encode(),
                               data["root"].encode())


def run_load(args: argparse.Namespace) -> None:
    """The load generator: keep-alive connections, httptools parsing; prints one JSON result."""
    import httptools
    import uvloop

    request = (f"POST /echo HTTP/1.1\r\nhost: {args.host}\r\ncontent-type: application/octet-stream\r\n"
               f"content-length: {len(PAYLOAD)}\r\n\r\n").encode() + PAYLOAD

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.done: asyncio.Future[int] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            if self.done is not None and not self.done.done():
                self.done.set_result(self.parser.get_status_code())

        def connection_lost(self, exc: Exception | None) -> None:
            if self.done is not None and not self.done.done():
                self.done.set_exception(ConnectionError("closed"))

        async def call(self) -> int:
            self.done = asyncio.get_running_loop().create_future()
            self.transport.write(request)  # type: ignore[attr-defined]
            return await self.done

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        conns = [(await loop.create_connection(Conn, "127.0.0.1", args.port))[1]
                 for _ in range(args.connections)]
        for conn in conns:  # warm every connection (and the sidecars' upstream pools)
            for _ in range(20):
                await conn.call()
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + args.seconds

        async def closed_loop(conn: Conn) -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t = time.perf_counter()
                if await conn.call() != 200:
                    errors += 1
                latencies.append(time.perf_counter() - t)

        async def open_loop() -> None:
            nonlocal errors
            free = list(conns)
            interval = 1.0 / args.rate
            due = time.perf_counter()
            tasks = set()

            async def one(conn: Conn) -> None:
                nonlocal errors
                t = time.perf_counter()
                if await conn.call() != 200:
                    errors += 1
                latencies.append(time.perf_counter() - t)
                free.append(conn)

            while due < end:
                now = time.perf_counter()
                if now < due:
                    await asyncio.sleep(due - now)
                if not free:
                    errors += 1  # all connections busy: count it, do not queue
                else:
                    task = loop.create_task(one(free.pop()))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                due += interval
            await asyncio.gather(*tasks)

        started = time.perf_counter()
        if args.rate:
            await open_loop()
        else:
            await asyncio.gather(*(closed_loop(c) for c in conns))
        elapsed = time.perf_counter() - started
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

        return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
                "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99)}

    print(json.dumps(uvloop.run(main())), flush=True)


# -- the orchestration -------------------------------------------------------------------------


class Proc:
    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{argv[0]} did not start")
        self.port = int(json.loads(line)["port"])

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def load(port: int, *, seconds: float, connections: int, rate: float = 0.0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "load", "--port", str(port), "--seconds",
                          str(seconds), "--connections", str(connections), "--rate", str(rate),
                          "--host", "app:8000"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    return json.loads(out.stdout)


def certificates(folder: Path) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    from labkit.mesh.security import CertificateAuthority

    ca = CertificateAuthority()
    paths = []
    for account in ("load", "app"):
        cert = ca.issue("default", account)
        path = folder / f"{account}.json"
        path.write_text(json.dumps({
            "id": cert.identity.uri, "key": cert.key_pem.decode(), "root": cert.root_pem.decode(),
            "cert": cert.certificate.public_bytes(serialization.Encoding.PEM).decode()}))
        paths.append(str(path))
    return paths[0], paths[1]


def hey_throughput(port: int, body: Path, seconds: float) -> dict[str, Any]:
    report = heyload.parse(heyload.run(f"http://127.0.0.1:{port}/echo", body, 16, seconds,
                                       content_type="application/octet-stream", host="app:8000"))
    return {"rps": report["rps"], "errors": report["bad"]}


def measure(name: str, entry: int, sidecars: list[Proc], seconds: float,
            body: Path | None) -> dict[str, Any]:
    """One round on one path: latency at c=1 and at 1000 req/s, throughput at c=16 (also with
    hey when `body` is given), CPU, RSS."""
    row: dict[str, Any] = {"path": name, "hops": len(sidecars)}
    row["c1"] = load(entry, seconds=seconds, connections=1)
    before = [s.cpu_seconds() for s in sidecars]
    row["rate1000"] = load(entry, seconds=seconds, connections=32, rate=1000)
    used = sum(s.cpu_seconds() - b for s, b in zip(sidecars, before))
    if sidecars:
        row["cpu_s_per_1000_per_sidecar"] = used / len(sidecars) / (row["rate1000"]["requests"] / 1000)
        row["rss_mb_max"] = max(s.rss_mb() for s in sidecars)
    row["c16"] = load(entry, seconds=seconds, connections=16)
    if body is not None:
        row["c16_hey"] = hey_throughput(entry, body, seconds)
    return row


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed of several rounds (the machine is shared): per measure, the round
    with the lowest p90 latency, the highest throughput, the lowest CPU."""
    out = dict(rows[0])
    for mode in ("c1", "rate1000"):
        out[mode] = min((r[mode] for r in rows), key=lambda m: m["p90_ms"])
    for mode in ("c16", "c16_hey"):
        if mode in out:
            out[mode] = max((r[mode] for r in rows), key=lambda m: m["rps"])
    if "cpu_s_per_1000_per_sidecar" in out:
        out["cpu_s_per_1000_per_sidecar"] = min(r["cpu_s_per_1000_per_sidecar"] for r in rows)
        out["rss_mb_max"] = max(r["rss_mb_max"] for r in rows)
    out["rounds"] = len(rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seconds, rounds = (0.5, 1) if args.quick else (3.0, args.rounds)
    procs: list[Proc] = []
    try:
        with tempfile.TemporaryDirectory(prefix="labkit-bench-mesh-") as tmp:
            client_cert, server_cert = certificates(Path(tmp))
            body = None
            if shutil.which("hey"):
                body = Path(tmp) / "payload"
                body.write_bytes(PAYLOAD)
            else:
                print("hey is not installed (make bench installs it): c=16 with this script's "
                      "load generator only", flush=True)
            app = Proc("app")
            bare = Proc("bare", "--upstream", str(app.port))
            booked = Proc("bare", "--upstream", str(app.port), "--bookkeeping")
            one = Proc("sidecar", "--role", "client", "--upstream", str(app.port))
            server = Proc("sidecar", "--role", "server", "--upstream", str(app.port))
            client = Proc("sidecar", "--role", "client", "--upstream", str(server.port),
                          "--upstream-sidecar")
            server_tls = Proc("sidecar", "--role", "server", "--upstream", str(app.port),
                              "--cert", server_cert)
            client_tls = Proc("sidecar", "--role", "client", "--upstream", str(server_tls.port),
                              "--upstream-sidecar", "--cert", client_cert)
            procs = [app, bare, booked, one, server, client, server_tls, client_tls]
            paths = [("direct", app.port, []), ("bare forwarder", bare.port, [bare]),
                     ("bare + bookkeeping", booked.port, [booked]),
                     ("1 sidecar", one.port, [one]), ("2 sidecars", client.port, [client, server]),
                     ("2 sidecars mTLS", client_tls.port, [client_tls, server_tls])]
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in paths}
            for round_number in range(1, rounds + 1):
                for name, port, sidecars in paths:  # interleaved: each path sees the same noise
                    row = measure(name, port, sidecars, seconds, body)
                    runs[name].append(row)
                    print(f"  round {round_number} {name:18s} c1 p90 {row['c1']['p90_ms']:.3f} ms | "
                          f"1000/s p90 {row['rate1000']['p90_ms']:.3f} ms | c16 "
                          f"{row['c16']['rps']:.0f} req/s"
                          + (f" (hey {row['c16_hey']['rps']:.0f})" if "c16_hey" in row else ""),
                          flush=True)
    finally:
        for proc in procs:
            proc.stop()
    results = [best(rows) for rows in runs.values()]
    summary = summarize(results)
    for line in summary["lines"]:
        print(line)
    out = HERE / "results" / "mesh.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "seconds_per_run": seconds, "rounds": rounds,
                               "best": results, "all_runs": runs, "summary": summary["numbers"]},
                              indent=1))
    print(f"wrote {out}")
    return 0


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    direct = results[0]
    numbers: dict[str, Any] = {}
    lines = []
    for row in results[1:]:
        hops = row["hops"]
        added = {f"{mode}_{p}": (row[mode][f"{p}_ms"] - direct[mode][f"{p}_ms"]) / hops
                 for mode in ("c1", "rate1000") for p in ("p50", "p90", "p99")}
        ratio = row["c16"]["rps"] / direct["c16"]["rps"]
        numbers[row["path"]] = {"added_ms_per_hop": added, "throughput_vs_direct": ratio,
                                "cpu_s_per_1000": row["cpu_s_per_1000_per_sidecar"],
                                "rss_mb": row["rss_mb_max"]}
        with_hey = ""
        if "c16_hey" in row:
            hey_ratio = row["c16_hey"]["rps"] / direct["c16_hey"]["rps"]
            numbers[row["path"]]["throughput_vs_direct_hey"] = hey_ratio
            with_hey = f" (hey: {hey_ratio:.0%})"
        lines.append(
            f"{row['path']:18s} added/hop c1 p50 {added['c1_p50']:.3f} p90 {added['c1_p90']:.3f} "
            f"p99 {added['c1_p99']:.3f} ms | 1000/s p50 {added['rate1000_p50']:.3f} p90 "
            f"{added['rate1000_p90']:.3f} p99 {added['rate1000_p99']:.3f} ms | c16 {ratio:.0%} of "
            f"direct{with_hey} | {row['cpu_s_per_1000_per_sidecar']:.3f} CPU-s/1000 | "
            f"{row['rss_mb_max']:.0f} MB")
    return {"numbers": numbers, "lines": lines}


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["app", "bare", "sidecar", "load"])
    parser.add_argument("--role", choices=["client", "server"])
    parser.add_argument("--upstream", type=int)
    parser.add_argument("--upstream-sidecar", action="store_true")
    parser.add_argument("--bookkeeping", action="store_true")
    parser.add_argument("--cert")
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--host", default="app")
    args = parser.parse_args(argv)
    if args.mode == "app":
        serve_app()
    elif args.mode == "bare":
        serve_bare(args)
    elif args.mode == "sidecar":
        serve_sidecar(args)
    else:
        run_load(args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("app", "bare", "sidecar", "load"):
        _child(sys.argv[1:])
    else:
        sys.exit(main())
