"""What a revision reports: a latency histogram and the Prometheus text a scraper reads.

Names follow Knative's own metrics so a student recognises them on a real cluster:
``revision_request_count`` and ``revision_request_latencies`` (queue-proxy, milliseconds,
Knative's buckets), ``autoscaler_desired_pods`` / ``autoscaler_actual_pods`` /
``autoscaler_stable_request_concurrency`` / ``autoscaler_panic_request_concurrency`` /
``autoscaler_panic_mode`` / ``autoscaler_excess_burst_capacity`` (autoscaler), and labkit's
``labkit_cold_start_seconds`` for measured replica starts. Rendering is plain text in the
Prometheus exposition format (version 0.0.4).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["LATENCY_BUCKETS_MS", "LatencyHistogram", "render"]

LATENCY_BUCKETS_MS = (
    5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900,
    1000, 2000, 5000, 10000, 20000, 50000, 100000,
)
"""Knative's request-latency buckets (ms)."""


class LatencyHistogram:
    """Request latencies (ms) in fixed buckets, plus counts by status code. Thread-safe."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self.codes: Counter[int] = Counter()
        self._lock = threading.Lock()

    def observe(self, seconds: float, status: int) -> None:
        ms = seconds * 1000
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, ms)] += 1
            self._sum += ms
            self.codes[status] += 1

    @property
    def count(self) -> int:
        return sum(self._counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound ms, requests at or below it), ending with (inf, total)."""
        with self._lock:
            counts = list(self._counts)
        out, running = [], 0
        for bound, n in zip([*self.buckets, float("inf")], counts):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float:
        """An estimate of the q-quantile in ms (the upper bound of its bucket)."""
        total = self.count
        if total == 0:
            return float("nan")
        for bound, running in self.cumulative():
            if running >= q * total:
                return bound
        return float("inf")

    @property
    def sum_ms(self) -> float:
        return self._sum


def _labels(labels: Mapping[str, object]) -> str:
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


Sample = tuple[str, Mapping[str, object], float]
"""(metric name, labels, value)."""

_HELP = {
    "revision_request_count": ("counter", "Requests answered by the queue-proxies"),
    "revision_request_latencies": ("histogram", "Request latency through the queue-proxy (ms)"),
    "autoscaler_desired_pods": ("gauge", "Pods the autoscaler wants"),
    "autoscaler_actual_pods": ("gauge", "Replica processes running or starting"),
    "autoscaler_ready_pods": ("gauge", "Replica processes ready"),
    "autoscaler_stable_request_concurrency": ("gauge", "Stable-window average concurrency"),
    "autoscaler_panic_request_concurrency": ("gauge", "Panic-window average concurrency"),
    "autoscaler_stable_requests_per_second": ("gauge", "Stable-window average RPS"),
    "autoscaler_panic_mode": ("gauge", "1 while the autoscaler is in panic mode"),
    "autoscaler_excess_burst_capacity": ("gauge", "Excess burst capacity (<0: activator in path)"),
    "activator_request_count": ("counter", "Requests the activator forwarded"),
    "labkit_cold_starts_total": ("counter", "Replica processes started"),
    "labkit_cold_start_seconds_sum": ("counter", "Total seconds from spawn to ready"),
}


def render(samples: Iterable[Sample],
           histograms: Iterable[tuple[str, Mapping[str, object], LatencyHistogram]] = ()) -> str:
    """Prometheus text for plain samples and histograms, one HELP/TYPE block per name."""
    by_name: dict[str, list[str]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append(f"{name}{_labels(labels)} {_number(value)}")
    for name, labels, histogram in histograms:
        lines = by_name.setdefault(name, [])
        for bound, running in histogram.cumulative():
            le = {**labels, "le": _number(bound)}
            lines.append(f"{name}_bucket{_labels(le)} {running}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.sum_ms)}")
        lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
    out = []
    for name, lines in by_name.items():
        kind, text = _HELP.get(name, ("untyped", name))
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"
