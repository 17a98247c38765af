"""Flagger's built-in metrics from Istio's destination-side counters, without Prometheus.

Flagger's Istio observer (fluxcd/flagger pkg/metrics/observers/istio.go) asks Prometheus:

    request-success-rate:
      sum(rate(istio_requests_total{reporter="destination", destination_workload_namespace="NS",
          destination_workload=~"TARGET", response_code!~"5.*"}[INTERVAL]))
      / sum(rate(istio_requests_total{reporter="destination", ...}[INTERVAL])) * 100
    request-duration:
      histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{
          reporter="destination", destination_workload_namespace="NS",
          destination_workload=~"TARGET"}[INTERVAL])) by (le))

The rates' ratio over a window is the ratio of the counters' increases over it, so labkit
scrapes the canary workload's sidecar (its Prometheus endpoint, over HTTP, as Prometheus
would), keeps the scrapes, and divides differences; p99 is interpolated inside the histogram
bucket as histogram_quantile does. Destination side on purpose: the caller's sidecar may retry
a canary's 503s into successes, the canary's own sidecar sees every failure.

`Scrapes` and the two value functions are pure; `scrape()` does the HTTP.
"""

from __future__ import annotations

import math
import urllib.request
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Counters", "Scrapes", "Series", "histogram_quantile", "istio_destination",
           "knative_revision", "parse", "request_duration", "request_success_rate", "scrape"]


@dataclass(frozen=True)
class Counters:
    """The destination-side counters of one workload at one moment."""

    requests: float = 0.0
    errors: float = 0.0  # response_code 5xx
    buckets: tuple[tuple[float, float], ...] = ()  # (le, cumulative count), le ascending, +Inf last

    def minus(self, earlier: Counters) -> Counters:
        """The increase since `earlier`; a counter that went down was reset (a new sidecar)
        and counts from zero, as Prometheus' rate() does."""
        if self.requests < earlier.requests:
            return self
        before = dict(earlier.buckets)
        return Counters(self.requests - earlier.requests, self.errors - earlier.errors,
                        tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets))


@dataclass(frozen=True)
class Series:
    """Which samples count: a request counter, a latency histogram (ms), and the labels that
    pick the canary's own series out of the exposition."""

    requests: str
    duration_bucket: str
    labels: tuple[tuple[str, str], ...]


def istio_destination(workload: str, namespace: str) -> Series:
    """Flagger's Istio queries: the destination side of the canary workload."""
    return Series("istio_requests_total", "istio_request_duration_milliseconds_bucket",
                  (("reporter", "destination"), ("destination_workload", workload),
                   ("destination_workload_namespace", namespace)))


def knative_revision(revision: str, namespace: str) -> Series:
    """Knative: the canary revision's queue-proxy counters (labkit.serving's metrics), the
    server side of that revision as Flagger's Knative queries read it from its ingress."""
    return Series("revision_request_count", "revision_request_latencies_bucket",
                  (("namespace_name", namespace), ("revision_name", revision)))


def parse(text: str, series: Series) -> Counters:
    """Sum the samples of `series` in a Prometheus text exposition."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if any(labels.get(k) != v for k, v in series.labels):
                continue
            # the parser names a counter's samples with a `_total` suffix even when the
            # exposition has none (Knative's revision_request_count)
            if sample.name in (series.requests, f"{series.requests}_total"):
                requests += sample.value
                if str(labels.get("response_code", "")).startswith("5"):
                    errors += sample.value
            elif sample.name == series.duration_bucket:
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Counters(requests, errors, tuple(sorted(buckets.items())))


def request_success_rate(window: Counters) -> float | None:
    """Non-5xx requests in % over the window; None when there were none (Flagger: no values)."""
    if window.requests <= 0:
        return None
    return (window.requests - window.errors) / window.requests * 100.0


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets: linear inside the
    bucket holding the rank; the highest finite bound when the rank falls in +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    counts = [n for _, n in buckets]
    i = bisect_left(counts, rank)
    le, count = buckets[i]
    if math.isinf(le):
        return buckets[-2][0] if len(buckets) > 1 else None
    lower, below = (buckets[i - 1][0], buckets[i - 1][1]) if i > 0 else (0.0, 0.0)
    if count == below:
        return le
    return lower + (le - lower) * (rank - below) / (count - below)


def request_duration(window: Counters) -> float | None:
    """p99 request duration in milliseconds over the window; None without requests."""
    if window.requests <= 0:
        return None
    return histogram_quantile(0.99, window.buckets)


class Scrapes:
    """Timed scrapes of one workload, enough to answer for windows up to `keep` seconds."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self._items: deque[tuple[float, Counters]] = deque()

    def add(self, now: float, counters: Counters) -> None:
        self._items.append((now, counters))
        while len(self._items) > 2 and self._items[1][0] <= now - self.keep:
            self._items.popleft()

    def window(self, seconds: float) -> Counters | None:
        """The increase over the last `seconds`: from the scrape closest to that long ago to the
        newest. None before two scrapes exist."""
        if len(self._items) < 2:
            return None
        now, newest = self._items[-1]
        start = now - seconds
        older = list(self._items)[:-1]
        _, earlier = min(older, key=lambda item: abs(item[0] - start))
        return newest.minus(earlier)


def scrape(metrics_url: str, series: Series, timeout: float = 5.0) -> Counters:
    """GET a Prometheus endpoint (a sidecar's, a Knative Service's) and sum `series`."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        return parse(response.read().decode(), series)
