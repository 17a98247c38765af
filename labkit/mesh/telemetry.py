"""Telemetry of one sidecar: Istio's standard metrics, Envoy's access log, trace spans.

Sources: https://istio.io/latest/docs/reference/config/metrics/ (metric names and labels),
Envoy's default histogram buckets (Istio keeps them), Istio's default text access-log format
(`EnvoyTextLogFormat`), and W3C Trace Context (https://www.w3.org/TR/trace-context/).

Recording must cost next to nothing per request (the sidecar's overhead budget is a fraction of
a millisecond), so a request adds one tuple to a bounded deque and bumps counters in dicts keyed
by label tuples; text is only built when someone reads it, by prometheus_client (a collector
turns a snapshot of the counters into metric families, `generate_latest` writes them).
"""

from __future__ import annotations

import random
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NamedTuple

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = [
    "DURATION_BUCKETS_MS",
    "LABEL_NAMES",
    "AccessRecord",
    "Metrics",
    "Span",
    "Telemetry",
    "TraceContext",
    "merge_spans",
    "new_ids",
    "new_request_id",
]

DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)
"""Envoy's default histogram bounds, which `istio_request_duration_milliseconds` uses."""

# Labels fixed for one (reporter, peer, service) combination; response_code and
# response_flags are appended per request.
LABEL_NAMES: tuple[str, ...] = (
    "reporter", "source_workload", "source_workload_namespace", "source_principal",
    "source_app", "source_version", "destination_workload", "destination_workload_namespace",
    "destination_principal", "destination_app", "destination_version", "destination_service",
    "destination_service_name", "destination_service_namespace", "request_protocol",
    "connection_security_policy", "response_code", "response_flags",
)


_IDS = random.Random()  # ids need not be seeded or secret, only unique; os.urandom costs a syscall


_UUID_BITS = (1 << 128) - 1 - (0xF << 76) - (0xC << 60)
_UUID_V4 = (0x4 << 76) | (0x8 << 60)


def new_request_id() -> str:
    """A UUIDv4 string, as Envoy generates for `x-request-id` (version nibble 4, variant 10xx;
    the bits are set arithmetically: this runs once per request)."""
    return _uuid(f"{_IDS.getrandbits(128) & _UUID_BITS | _UUID_V4:032x}")


def _uuid(h: str) -> str:
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


_BOTH_BITS = (_UUID_BITS << 192) | ((1 << 192) - 1)
_BOTH_V4 = _UUID_V4 << 192


def new_ids() -> tuple[str, TraceContext]:
    """`new_request_id()` and `TraceContext.start()` from one random draw: what a client
    sidecar needs for a request that carries neither."""
    h = f"{_IDS.getrandbits(320) & _BOTH_BITS | _BOTH_V4:080x}"
    trace_id, span_id = h[32:64], h[64:]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # all-zero ids are invalid
        return _uuid(h), TraceContext.start()
    return _uuid(h), TraceContext(trace_id, span_id)


def _hex_id(bits: int) -> str:
    return f"{_IDS.getrandbits(bits) or 1:0{bits // 4}x}"


_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class TraceContext(NamedTuple):
    """A W3C `traceparent`: version 00, 32-hex trace id, 16-hex parent span id, flags.
    (A named tuple: one is made per request and per proxy, so it must be cheap.)"""

    trace_id: str
    span_id: str
    sampled: bool = True

    @classmethod
    def parse(cls, header: str | None) -> TraceContext | None:
        """None for a missing or malformed header (the spec says: start a new trace)."""
        if not header:
            return None
        parts = header.strip().split("-")
        if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
            return None
        try:
            int(parts[1], 16), int(parts[2], 16)
            sampled = bool(int(parts[3], 16) & 1)
        except ValueError:
            return None
        if parts[1] == _ZERO_TRACE or parts[2] == _ZERO_SPAN:
            return None
        return cls(parts[1], parts[2], sampled)

    @staticmethod
    def new_span_id() -> str:
        return _hex_id(64)

    @classmethod
    def start(cls) -> TraceContext:
        """A fresh trace, as a sidecar with a tracer starts one when the app sent none."""
        ids = f"{_IDS.getrandbits(192):048x}"  # both ids from one draw: once per request
        trace_id, span_id = ids[:32], ids[32:]
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # all-zero ids are invalid
            return cls(_hex_id(128), _hex_id(64))
        return cls(trace_id, span_id)

    def child(self) -> TraceContext:
        return TraceContext(self.trace_id, self.new_span_id(), self.sampled)

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


@dataclass(frozen=True)
class Span:
    """One proxy's part of a request, enough to draw a timeline: times are wall-clock seconds."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    workload: str
    reporter: str
    start: float
    duration_ms: float
    status: int
    flags: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AccessRecord:
    """The fields of Istio's default text access-log line for one request."""

    start: float
    method: str
    path: str
    status: int
    flags: str
    details: str
    bytes_in: int
    bytes_out: int
    duration_ms: float
    upstream_ms: float | None
    forwarded_for: str
    user_agent: str
    request_id: str
    authority: str
    upstream_host: str
    upstream_cluster: str
    downstream_local: str
    downstream_remote: str
    route_name: str

    def line(self) -> str:
        """Formatted as Envoy's `EnvoyTextLogFormat`, which Istio uses by default."""
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.start))
        millis = int((self.start % 1) * 1000)
        upstream = "-" if self.upstream_ms is None else str(round(self.upstream_ms))

        def dash(value: str) -> str:
            return value or "-"

        return (
            f'[{when}.{millis:03d}Z] "{self.method} {self.path} HTTP/1.1" {self.status} '
            f'{self.flags} {dash(self.details)} - "-" {self.bytes_in} {self.bytes_out} '
            f'{round(self.duration_ms)} {upstream} "{dash(self.forwarded_for)}" '
            f'"{dash(self.user_agent)}" "{dash(self.request_id)}" "{dash(self.authority)}" '
            f'"{dash(self.upstream_host)}" {dash(self.upstream_cluster)} - '
            f"{dash(self.downstream_local)} {dash(self.downstream_remote)} - "
            f"{dash(self.route_name)}"
        )


class Metrics:
    """`istio_requests_total` and `istio_request_duration_milliseconds` for one proxy.

    `record(base, code, flags, ms)`: `base` is the tuple of the first 16 label values (see
    LABEL_NAMES), built once per peer and reused, so a request costs one dict lookup, three
    list updates and a bisect; label text is made only when the metrics are read.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[tuple[str, ...], int, str], list[float]] = {}
        self._registry = CollectorRegistry()  # private: two sidecars in one process each have one
        self._registry.register(_Collector(self))

    def record(self, base: tuple[str, ...], code: int, flags: str, duration_ms: float) -> None:
        key = (base, code, flags)
        row = self._counts.get(key)
        if row is None:
            # [count, sum, bucket counts..., +Inf]
            row = self._counts[key] = [0, 0.0] + [0] * (len(DURATION_BUCKETS_MS) + 1)
        row[0] += 1
        row[1] += duration_ms
        row[2 + bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1

    def samples(self) -> list[tuple[dict[str, str], int, float]]:
        """(labels, request count, duration sum in ms) per label set."""
        out = []
        for (base, code, flags), row in list(self._counts.items()):
            out.append((dict(zip(LABEL_NAMES, (*base, str(code), flags))), int(row[0]), row[1]))
        return out

    def total(self, **labels: str) -> int:
        """Requests whose labels include all of `labels` (e.g. response_code="503")."""
        return sum(n for have, n, _ in self.samples()
                   if all(have.get(k) == v for k, v in labels.items()))

    def prometheus(self) -> str:
        """Prometheus text exposition format (version 0.0.4), rendered by prometheus_client from
        a snapshot of the counters (the hot path never touches prometheus_client objects)."""
        return generate_latest(self._registry).decode()

    def families(self) -> Iterator[Metric]:
        """The two metric families, built from a snapshot of the counters."""
        # list(row) copies each row in one C call, so a row's count, sum and buckets agree
        # even while the event loop records requests
        rows = [(key, list(row)) for key, row in list(self._counts.items())]
        requests = CounterMetricFamily("istio_requests_total", "Requests this proxy handled",
                                       labels=LABEL_NAMES)
        durations = HistogramMetricFamily("istio_request_duration_milliseconds",
                                          "Request duration in milliseconds", labels=LABEL_NAMES)
        for (base, code, flags), row in rows:
            values = (*base, str(code), flags)
            requests.add_metric(values, row[0])
            cumulative = list(accumulate(row[2:]))
            durations.add_metric(values, list(zip(_LE, cumulative)), row[1])
        yield requests
        yield durations


# Envoy writes bucket bounds with fmt's "{:.32g}" (source/server/admin/prometheus_stats.cc:
# "print the bucket in a fixed point (non-scientific) format"), so 1800000 stays "1800000".
_LE = (*(format(bound, ".32g") for bound in DURATION_BUCKETS_MS), "+Inf")


class _Collector(Collector):
    """Hands a `Metrics`' families to prometheus_client's registry at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()


class Telemetry:
    """Everything one sidecar records; bounded so a long-running notebook does not grow."""

    def __init__(self, *, keep: int = 10_000) -> None:
        self.metrics = Metrics()
        # Field tuples in AccessRecord order, and for spans in Span order with the name as
        # (authority, path): building the objects waits for a reader.
        self.access: deque[tuple[Any, ...]] = deque(maxlen=keep)
        self.spans: deque[tuple[Any, ...]] = deque(maxlen=keep)

    def access_records(self) -> list[AccessRecord]:
        return [AccessRecord(*fields) for fields in list(self.access)]

    def access_log(self, last: int | None = None) -> list[str]:
        records = self.access_records()
        return [r.line() for r in (records[-last:] if last else records)]

    def span_list(self) -> list[Span]:
        return [Span(trace, span, parent, f"{authority}{path.split('?', 1)[0]}", *rest)
                for trace, span, parent, authority, path, *rest in list(self.spans)]

    def span_dicts(self, trace_id: str | None = None) -> list[dict[str, object]]:
        return [s.as_dict() for s in self.span_list() if trace_id in (None, s.trace_id)]


def merge_spans(sources: Iterable[Telemetry], trace_id: str | None = None) -> list[dict[str, object]]:
    """Spans of several sidecars in start order: one request's path through the mesh."""
    spans = [s for t in sources for s in t.span_dicts(trace_id)]
    return sorted(spans, key=lambda s: float(s["start"]))  # type: ignore[arg-type]  # span_dicts' start: a float
