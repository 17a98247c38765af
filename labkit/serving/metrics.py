"""What a revision reports: a latency histogram and the Prometheus text a scraper reads.

Names follow Knative's own metrics so a student recognises them on a real cluster:
``revision_request_count`` and ``revision_request_latencies`` (queue-proxy, milliseconds,
Knative's buckets), ``autoscaler_desired_pods`` / ``autoscaler_actual_pods`` /
``autoscaler_stable_request_concurrency`` / ``autoscaler_panic_request_concurrency`` /
``autoscaler_panic_mode`` / ``autoscaler_excess_burst_capacity`` (autoscaler), and labkit's
``labkit_cold_start_seconds`` for measured replica starts. `render` writes the Prometheus text
exposition format (version 0.0.4) through prometheus_client: a collector turns labkit's own
counters into metric families and `generate_latest` writes them.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

__all__ = ["LATENCY_BUCKETS_MS", "LatencyHistogram", "le_text", "render"]

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
        return self.snapshot()[0]

    def snapshot(self) -> tuple[list[tuple[float, int]], float]:
        """`cumulative()` and the sum in ms, read together (a scrape sees a consistent pair)."""
        with self._lock:
            counts, total_ms = list(self._counts), self._sum
        return list(zip([*self.buckets, float("inf")], accumulate(counts))), total_ms

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
    """Prometheus text for plain samples and histograms, one HELP/TYPE block per name, in the
    order the names first appear; rendered by prometheus_client on a private registry."""
    registry = CollectorRegistry()
    registry.register(_Families(list(samples), list(histograms)))
    return generate_latest(registry).decode()


def le_text(bound: float) -> str:
    """A bucket bound as Knative writes it: its metrics go through Go's Prometheus client,
    which formats `le` with strconv.FormatFloat(bound, 'g', -1, 64) ("5", "100000", "1e+06");
    prometheus_client's floatToGoString is that except for a trailing ".0" on whole numbers."""
    return floatToGoString(bound).removesuffix(".0")


class _Families(Collector):
    """Metric families from labkit's own counters (the samples and histograms given)."""

    def __init__(self, samples: Sequence[Sample],
                 histograms: Sequence[tuple[str, Mapping[str, object], LatencyHistogram]]) -> None:
        self._samples = samples
        self._histograms = histograms

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}

        def family(name: str) -> Metric:
            if name not in families:
                families[name] = _family(name)
            return families[name]

        for name, labels, value in self._samples:
            family(name).add_sample(name, _strings(labels), value)
        for name, labels, histogram in self._histograms:
            cumulative, total_ms = histogram.snapshot()
            strings = _strings(labels)
            histogram_family = family(name)
            for bound, running in cumulative:
                histogram_family.add_sample(f"{name}_bucket", {**strings, "le": le_text(bound)},
                                            running)
            histogram_family.add_sample(f"{name}_count", strings, cumulative[-1][1])
            histogram_family.add_sample(f"{name}_sum", strings, total_ms)
        yield from families.values()


def _family(name: str) -> Metric:
    """An empty family for `name`, typed as `_HELP` says."""
    kind, text = _HELP.get(name, ("untyped", name))
    if kind == "counter" and not name.endswith("_total"):
        # Knative's counters (OpenCensus through Go's client) have no `_total` suffix, but
        # prometheus_client writes every counter family's TYPE line as NAME_total (OpenMetrics'
        # rule). Keeping the name students type into PromQL matters more than the TYPE comment,
        # which PromQL ignores (rate() treats counters and untyped alike): these are untyped.
        return Metric(name, text, "unknown")
    if kind == "counter":  # the family is named without the suffix its samples carry
        return Metric(name.removesuffix("_total"), text, "counter")
    return Metric(name, text, "unknown" if kind == "untyped" else kind)


def _strings(labels: Mapping[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in labels.items()}
