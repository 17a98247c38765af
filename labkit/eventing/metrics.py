"""Observability for brokers and channels: Prometheus counters and an event log.

Per broker (or channel): events accepted and rejected at the ingress. Per trigger (or
subscription): events delivered, retried, dead-lettered and dropped, and the delivery latency
from acceptance to the subscriber's 2xx. The names follow the `<owner>_events_*` shape of
Knative's broker metrics, with the owner and route as labels, e.g.

    trigger_events_delivered_total{namespace_name="default",broker_name="b",trigger_name="t"} 3

The event log records what happened to each event (accepted, each attempt, retry, dead letter,
reply) with a sequence number, so a notebook can fetch it incrementally and show a table and a
timeline (`event_table`, `plot_timeline`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "LATENCY_BUCKETS",
    "EventLog",
    "EventingMetrics",
    "event_table",
    "metric_value",
    "parse_metrics",
    "plot_timeline",
]

# `*_created` timestamps double the exposition and mean nothing to a student.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


class EventingMetrics:
    """Counters for one ingress (`owner`: broker or channel) and its routes (trigger or
    subscription). Thread-safe (prometheus_client's metrics are)."""

    def __init__(self, owner: str = "broker", route: str = "trigger") -> None:
        self.owner = owner
        self.route = route
        self.registry = CollectorRegistry()
        owner_labels = ["namespace_name", f"{owner}_name"]
        route_labels = [*owner_labels, f"{route}_name"]
        self._accepted = Counter(f"{owner}_events_accepted", "events answered 2xx at the ingress",
                                 owner_labels, registry=self.registry)
        self._rejected = Counter(f"{owner}_events_rejected", "requests refused at the ingress",
                                 [*owner_labels, "response_code"], registry=self.registry)
        self._outcomes = {
            name: Counter(f"{route}_events_{name}", help_text, route_labels,
                          registry=self.registry)
            for name, help_text in (
                ("delivered", "events the subscriber answered 2xx"),
                ("retried", "failed attempts that were scheduled for another try"),
                ("dead_lettered", "events delivered to the dead-letter sink"),
                ("dropped", "events given up without a dead-letter sink (lost)"),
            )
        }
        self._latency = Histogram(f"{route}_delivery_latency_seconds",
                                  "time from acceptance to the subscriber's 2xx", route_labels,
                                  buckets=LATENCY_BUCKETS, registry=self.registry)

    def accepted(self, namespace: str, owner: str, count: int = 1) -> None:
        self._accepted.labels(namespace, owner).inc(count)

    def rejected(self, namespace: str, owner: str, status: int) -> None:
        self._rejected.labels(namespace, owner, str(status)).inc()

    def outcome(self, what: str, namespace: str, owner: str, route: str,
                latency: float | None = None) -> None:
        """Count `what` (delivered, retried, dead_lettered, dropped) for one route."""
        self._outcomes[what].labels(namespace, owner, route).inc()
        if what == "delivered" and latency is not None:
            self._latency.labels(namespace, owner, route).observe(max(latency, 0.0))

    def text(self) -> bytes:
        """The Prometheus text exposition (what a scrape of the metrics URL returns)."""
        return generate_latest(self.registry)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted label pairs): value}."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric_value(samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
                 **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(value for (sample, pairs), value in samples.items()
               if sample == name and wanted <= set(pairs))


class EventLog:
    """A bounded, thread-safe log of what happened to events, each record numbered (`seq`)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, what: str, **fields: Any) -> None:
        with self._lock:
            self._records.append({"seq": next(self._seq), "time": time.time(), "what": what,
                                  **fields})

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Records numbered above `seq`, oldest first."""
        with self._lock:
            return [r for r in self._records if r["seq"] > seq]


_TABLE_COLUMNS = ("seq", "time", "what", "trigger", "type", "id", "attempt", "status", "detail")


def event_table(records: Iterable[Mapping[str, Any]]) -> Any:
    """A pandas DataFrame of log records, time as seconds since the first record."""
    import pandas as pd

    rows = [dict(r) for r in records]
    frame = pd.DataFrame(rows, columns=[c for c in _TABLE_COLUMNS
                                        if any(c in r for r in rows)] or list(_TABLE_COLUMNS))
    if "time" in frame and len(frame):
        frame["time"] = (frame["time"] - frame["time"].min()).round(3)
    return frame


_MARKERS = {"accepted": ("o", "tab:blue"), "delivered": ("s", "tab:green"),
            "retry": ("x", "tab:orange"), "dead_letter": ("v", "tab:red"),
            "dropped": ("X", "black"), "reply": ("^", "tab:purple")}


def plot_timeline(records: Sequence[Mapping[str, Any]], ax: Any = None) -> Any:
    """Events on a time axis, one row per trigger (ingress on top), marker per happening."""
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(9, 3))
    shown = [r for r in records if r["what"] in _MARKERS]
    if not shown:
        ax.set_title("no events yet")
        return ax
    start = min(r["time"] for r in shown)
    rows = ["ingress"] + sorted({str(r["trigger"]) for r in shown if r.get("trigger")})
    for what, (marker, colour) in _MARKERS.items():
        points = [(r["time"] - start, rows.index(str(r.get("trigger") or "ingress")))
                  for r in shown if r["what"] == what]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker=marker, color=colour, label=what, s=30)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("seconds since the first event")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return ax
