"""A fortio-like HTTP load generator: N requests or a duration, at a concurrency and a rate.

Istio's own tasks measure with fortio (`fortio load -c 2 -qps 0 -n 20 http://httpbin:8000/get`)
and read two things from it: how many calls got which status code, and the latency
percentiles. `run()` does the same from Python (and `labkit load URL` from a shell):

- `concurrency` connections, each an HTTP/1.1 keep-alive connection used by one worker at a
  time (as fortio's `-c`); `keepalive=False` opens a new connection per request.
- `qps` is the total target rate, 0 = as fast as possible. Requests are scheduled at fixed
  intervals from the start (request i is due at i/qps), so a slow answer delays only the
  requests behind it on that connection, not the schedule.
- Stop after `requests` requests, or after `duration` seconds (the default is fortio's 5 s
  when neither is given).
- `proxy` sends every request in absolute form (`GET http://host/path HTTP/1.1`) to an HTTP
  proxy, as `curl -x` does; the sidecar's outbound listener accepts that form.
- Latency is measured from the first byte written to the last byte of the response read.
  A socket error or timeout counts as status code -1, as fortio reports it.

The run happens on its own event loop in a background thread, so `run()` works from a
Jupyter cell (whose thread already runs a loop) and from plain scripts alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from labkit import http1
from labkit.params import check_range
from labkit.stats import percentile, percentiles

__all__ = [
    "ERROR_STATUS",
    "PERCENTILES",
    "Bucket",
    "LoadResult",
    "add_load_arguments",
    "compare",
    "parse_duration",
    "run",
    "run_async",
    "run_load",
]

ERROR_STATUS = -1
"""Status recorded for a request that got no HTTP response (connect error, reset, timeout)."""
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)
DEFAULT_DURATION = 5.0  # fortio's default -t
# 1-2-5 bucket bounds in milliseconds, 10 µs to 100 s: fine enough to read a sidecar's
# sub-millisecond overhead and wide enough for a 30 s timeout.
_BOUNDS_MS = tuple(m * 10.0 ** e for e in range(-2, 6) for m in (1, 2, 5)) + (float("inf"),)


@dataclass(frozen=True)
class Bucket:
    """Histogram bucket: `count` latencies in (low_ms, high_ms]."""

    low_ms: float
    high_ms: float
    count: int


@dataclass(frozen=True)
class LoadResult:
    """What a run measured. Latencies in seconds, in completion order."""

    url: str
    method: str
    concurrency: int
    requested_qps: float
    duration: float
    status_counts: dict[int, int]
    errors: dict[str, int]
    latencies: tuple[float, ...] = field(repr=False)
    connections: int
    bytes_received: int

    @property
    def requests(self) -> int:
        return sum(self.status_counts.values())

    @property
    def actual_qps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def ok(self) -> int:
        """Requests answered 2xx."""
        return sum(n for code, n in self.status_counts.items() if 200 <= code < 300)

    @property
    def success_rate(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    def count(self, status: int) -> int:
        return self.status_counts.get(status, 0)

    def percentile(self, p: float) -> float:
        """The p-th percentile latency (seconds), interpolated between the nearest samples
        (`labkit.stats.percentile`, numpy's default); NaN without samples."""
        return percentile(self.latencies, p)

    @property
    def percentiles(self) -> dict[float, float]:
        """p50, p75, p90, p99 and p99.9 in seconds."""
        return dict(zip(PERCENTILES, percentiles(self.latencies, PERCENTILES).tolist()))

    @property
    def mean(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.latencies else math.nan

    @property
    def min(self) -> float:
        return min(self.latencies) if self.latencies else math.nan

    @property
    def max(self) -> float:
        return max(self.latencies) if self.latencies else math.nan

    def histogram(self) -> list[Bucket]:
        """Latency counts per 1-2-5 bucket (ms), from the first to the last non-empty one."""
        counts = [0] * len(_BOUNDS_MS)
        for latency in self.latencies:
            ms = latency * 1000
            counts[next(i for i, b in enumerate(_BOUNDS_MS) if ms <= b)] += 1
        used = [i for i, n in enumerate(counts) if n]
        if not used:
            return []
        return [Bucket(_BOUNDS_MS[i - 1] if i else 0.0, _BOUNDS_MS[i], counts[i])
                for i in range(used[0], used[-1] + 1)]

    def summary(self) -> str:
        """fortio's report, shortened: rate, latency percentiles, histogram, status codes."""
        lines = [
            (f"{self.method} {self.url}: {self.requests} calls in {self.duration:.3f} s over "
             f"{self.connections} connection(s), concurrency {self.concurrency}, "
             f"target {'max' if not self.requested_qps else f'{self.requested_qps:g}'} qps, "
             f"actual {self.actual_qps:.1f} qps"),
        ]
        if self.latencies:
            lines.append(f"latency ms: min {self.min * 1000:.3f}  avg {self.mean * 1000:.3f}  "
                         f"max {self.max * 1000:.3f}")
            lines.append("percentiles ms: " + "  ".join(f"p{p:g} {v * 1000:.3f}" for p, v in self.percentiles.items()))
            cumulative = 0
            for b in self.histogram():
                cumulative += b.count
                lines.append(f"  > {b.low_ms:g} <= {b.high_ms:g} ms : {b.count} "
                             f"({100.0 * cumulative / len(self.latencies):.1f} %)")
        for code in sorted(self.status_counts):
            n = self.status_counts[code]
            lines.append(f"Code {code:>3} : {n} ({100.0 * n / self.requests:.1f} %)")
        for kind in sorted(self.errors):
            lines.append(f"  error {kind}: {self.errors[kind]}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (latencies summarised, in milliseconds)."""
        return {
            "url": self.url, "method": self.method, "concurrency": self.concurrency,
            "requested_qps": self.requested_qps, "actual_qps": self.actual_qps,
            "duration_seconds": self.duration, "requests": self.requests,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "errors": dict(sorted(self.errors.items())), "connections": self.connections,
            "bytes_received": self.bytes_received,
            "latency_ms": {"min": self.min * 1000, "mean": self.mean * 1000, "max": self.max * 1000,
                           **{f"p{p:g}": v * 1000 for p, v in self.percentiles.items()}},
            "histogram_ms": [[b.low_ms, b.high_ms, b.count] for b in self.histogram()],
        }

    def __str__(self) -> str:
        return self.summary()


# -- HTTP/1.1 on a connection ------------------------------------------------------------------


class _Target:
    """Where to connect and the request bytes to send there (built once per run)."""

    def __init__(self, url: str, method: str, headers: Mapping[str, str], body: bytes,
                 proxy: str | None, keepalive: bool) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url: expected http://host[:port]/path, got {url!r}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc
        self.host, self.port = parts.hostname, parts.port or 80
        if proxy is not None:
            pp = urllib.parse.urlsplit(proxy)
            if pp.scheme != "http" or not pp.hostname:
                raise ValueError(f"proxy: expected http://host:port, got {proxy!r}")
            self.host, self.port = pp.hostname, pp.port or 80
            path = f"http://{authority}{path}"  # absolute form, as to any forward proxy
        given = {k.lower(): (k, v) for k, v in headers.items()}
        head = [f"{method} {path} HTTP/1.1", f"Host: {given.pop('host', ('Host', authority))[1]}"]
        head += [f"{k}: {v}" for k, v in given.values() if k.lower() not in ("content-length", "connection")]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        if not keepalive:
            head.append("Connection: close")
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self.method = method
        self.keepalive = keepalive


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, int, bool]:
    """Read one response; return (status, bytes read, whether the connection stays open)."""
    response = await http1.read_response(reader, method)
    return response.status, response.size, response.keep_alive


class _Run:
    """Shared state of one load run: the schedule and the tallies."""

    def __init__(self, target: _Target, *, requests: int | None, duration: float | None, qps: float,
                 timeout: float) -> None:
        self.target = target
        self.limit = requests
        self.qps = qps
        self.timeout = timeout
        self.start = time.perf_counter()
        self.end = None if duration is None else self.start + duration
        self.issued = 0
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.connections = 0
        self.bytes = 0
        self.last_done = self.start

    def next_due(self) -> float | None:
        """Claim the next request; its due time, or None when the run is over."""
        if self.limit is not None and self.issued >= self.limit:
            return None
        due = self.start + self.issued / self.qps if self.qps else time.perf_counter()
        if self.end is not None and due >= self.end:
            return None
        self.issued += 1
        return due

    async def worker(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while (due := self.next_due()) is not None:
                # The event loop's timer clock is not perf_counter and may wake a hair early:
                # sleep again until the request is really due, so none is sent ahead of schedule.
                while (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                sent = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await _within(
                            asyncio.open_connection(self.target.host, self.target.port, limit=http1.MAX_HEAD),
                            self.timeout)
                        self.connections += 1
                    assert reader is not None
                    writer.write(self.target.request)
                    status, size, keep = await _within(_read_response(reader, self.target.method),
                                                       self.timeout)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                        http1.HttpError) as exc:
                    self.errors[_error_kind(exc)] += 1
                    status, size, keep = ERROR_STATUS, 0, False
                done = time.perf_counter()
                self.statuses[status] += 1
                self.latencies.append(done - sent)
                self.bytes += size
                self.last_done = max(self.last_done, done)
                if not (keep and self.target.keepalive) and writer is not None:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()


async def _within(awaitable: Any, timeout: float) -> Any:
    if hasattr(asyncio, "timeout"):  # Python >= 3.11: cheaper than wait_for's extra task
        async with asyncio.timeout(timeout):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
        return "connection reset"
    if isinstance(exc, http1.HttpError):
        return "bad response"
    return type(exc).__name__


def _check_args(requests: int | None, duration: float | None, concurrency: int, qps: float,
                timeout: float) -> None:
    if requests is not None and (isinstance(requests, bool) or requests < 1):
        raise ValueError(f"requests must be a positive count, got {requests!r}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if not qps >= 0:
        raise ValueError(f"qps must be >= 0 (0 = as fast as possible), got {qps!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")


async def run_async(url: str, *, requests: int | None = None, duration: float | None = None,
                    concurrency: int = 4, qps: float = 0.0, method: str = "GET",
                    headers: Mapping[str, str] | None = None, body: bytes | str = b"",
                    proxy: str | None = None, keepalive: bool = True, timeout: float = 10.0) -> LoadResult:
    """`run` for a caller already inside an event loop (same arguments)."""
    _check_args(requests, duration, concurrency, qps, timeout)
    if requests is None and duration is None:
        duration = DEFAULT_DURATION
    data = body.encode() if isinstance(body, str) else bytes(body)
    method = method.upper()
    target = _Target(url, method, headers or {}, data, proxy, keepalive)
    state = _Run(target, requests=requests, duration=duration, qps=qps, timeout=timeout)
    await asyncio.gather(*(state.worker() for _ in range(concurrency)))
    return LoadResult(
        url=url, method=method, concurrency=concurrency, requested_qps=qps,
        duration=state.last_done - state.start, status_counts=dict(sorted(state.statuses.items())),
        errors=dict(state.errors), latencies=tuple(state.latencies), connections=state.connections,
        bytes_received=state.bytes,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(url: str, *, requests: int | None = None, duration: float | None = None, concurrency: int = 4,
        qps: float = 0.0, method: str = "GET", headers: Mapping[str, str] | None = None,
        body: bytes | str = b"", proxy: str | None = None, keepalive: bool = True,
        timeout: float = 10.0) -> LoadResult:
    """Send load to `url` and measure it.

    `requests` (fortio -n) or `duration` seconds (-t; 5 s if neither is given);
    `concurrency` connections (-c); `qps` total target rate, 0 = max (-qps); `headers`
    (-H; a `Host` header here replaces the URL's, to address a service by name through a
    sidecar); `body` (-payload; a body makes the request carry a Content-Length);
    `proxy` an http://host:port forward proxy; `keepalive=False` opens a connection per
    request; `timeout` seconds per request (then it counts as -1).
    """
    _check_args(requests, duration, concurrency, qps, timeout)
    outcome: dict[str, Any] = {}

    def work() -> None:
        loop = _new_loop()
        try:
            outcome["result"] = loop.run_until_complete(run_async(
                url, requests=requests, duration=duration, concurrency=concurrency, qps=qps, method=method,
                headers=headers, body=body, proxy=proxy, keepalive=keepalive, timeout=timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=work, name="labkit-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def compare(targets: Mapping[str, Mapping[str, Any]], *, requests: int, rounds: int = 10,
            **common: Any) -> dict[str, LoadResult]:
    """Load several targets to compare them: `requests` each, sent in `rounds` turns, target
    after target, so that a machine that gets busier or quieter meanwhile weighs on every
    target alike (one whole run after another would charge the change to one of them).

    `targets` maps a name to `run`'s arguments for it (`url` and any others); `common` are
    arguments for all. Each target's result is its turns combined: latencies in the order
    measured, counts summed, duration the time its own turns took.
    """
    check_range("rounds", rounds, 1, integer=True)
    check_range("requests", requests, rounds, integer=True)
    for name, arguments in targets.items():
        if "url" not in arguments:
            raise ValueError(f"target {name!r}: no url (got {sorted(arguments)})")
        if "requests" in arguments or "duration" in arguments:
            raise ValueError(f"target {name!r}: requests are set for all targets, by compare's `requests`")
    turns: dict[str, list[LoadResult]] = {name: [] for name in targets}
    for turn in range(rounds):
        share = requests // rounds + (turn < requests % rounds)
        for name, arguments in targets.items():
            turns[name].append(run(**{**common, **arguments, "requests": share}))
    return {name: _combined(results) for name, results in turns.items()}


def _combined(results: Sequence[LoadResult]) -> LoadResult:
    first = results[0]
    return replace(
        first,
        duration=sum(r.duration for r in results),
        status_counts=dict(sum((Counter(r.status_counts) for r in results), Counter())),
        errors=dict(sum((Counter(r.errors) for r in results), Counter())),
        latencies=tuple(latency for r in results for latency in r.latencies),
        connections=sum(r.connections for r in results),
        bytes_received=sum(r.bytes_received for r in results),
    )


# -- command line: labkit load URL -------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """`10s`, `500ms`, `2m`, `1h` or a plain number of seconds."""
    t = text.strip()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if t.endswith(unit) and t[: -len(unit)].replace(".", "", 1).isdigit():
            return float(t[: -len(unit)]) * _UNITS[unit]
    try:
        value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 10s, 500ms, 2m, or seconds)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be > 0")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header; write -H 'Name: value'")
    return name.strip(), value.strip()


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `labkit load`, named like fortio's."""
    parser.add_argument("url", help="http://host:port/path to load")
    parser.add_argument("-n", "--requests", type=int, metavar="N", help="number of requests (default: use -t)")
    parser.add_argument("-t", "--duration", type=parse_duration, metavar="T",
                        help=f"how long to run, e.g. 10s (default {DEFAULT_DURATION:g}s when -n is not given)")
    parser.add_argument("-c", "--concurrency", type=int, default=4, metavar="C",
                        help="connections/workers in parallel (default 4)")
    parser.add_argument("-q", "--qps", type=float, default=0.0, metavar="QPS",
                        help="total target requests per second, 0 = max (default 0)")
    parser.add_argument("-X", "--method", default="GET", help="HTTP method (default GET, POST with -d)")
    parser.add_argument("-H", "--header", dest="headers", type=_header, action="append", default=[],
                        metavar="'NAME: VALUE'", help="extra request header (repeatable); Host too")
    parser.add_argument("-d", "--payload", default=None, help="request body (makes the default method POST)")
    parser.add_argument("-x", "--proxy", default=None, metavar="URL", help="send through this HTTP proxy")
    parser.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                        help="a new connection for every request")
    parser.add_argument("--timeout", type=parse_duration, default=10.0, metavar="T",
                        help="per-request timeout (default 10s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_load(args: argparse.Namespace) -> int:
    """Run `labkit load`; 0 when at least one request got an HTTP response, 1 when none did,
    2 for bad arguments."""
    method = args.method if args.payload is None or args.method != "GET" else "POST"
    try:
        result = run(args.url, requests=args.requests, duration=args.duration, concurrency=args.concurrency,
                     qps=args.qps, method=method, headers=dict(args.headers), body=args.payload or b"",
                     proxy=args.proxy, keepalive=args.keepalive, timeout=args.timeout)
    except ValueError as exc:
        print(f"labkit load: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0 if result.requests > result.count(ERROR_STATUS) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m labkit.load URL ...` works before the subcommand is registered."""
    parser = argparse.ArgumentParser(prog="labkit load", description="fortio-like HTTP load generator")
    add_load_arguments(parser)
    return run_load(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
