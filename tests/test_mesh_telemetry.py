"""The sidecar's ids, trace context, metrics and span records (`labkit.mesh.telemetry`)."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from labkit.mesh.telemetry import (
    DURATION_BUCKETS_MS,
    LABEL_NAMES,
    Metrics,
    Telemetry,
    TraceContext,
    new_ids,
    new_request_id,
)

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
BASE = tuple(f"label{i}" for i in range(len(LABEL_NAMES) - 2))


def test_request_ids_are_distinct_uuid4() -> None:
    ids = [new_request_id() for _ in range(2000)]
    assert all(UUID_V4.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_new_ids_gives_a_uuid4_and_the_first_span_of_a_new_trace() -> None:
    drawn = [new_ids() for _ in range(2000)]
    assert all(UUID_V4.match(rid) for rid, _ in drawn)
    assert all(TRACEPARENT.match(span.header) and span.sampled for _, span in drawn)
    assert len({span.trace_id for _, span in drawn}) == len(drawn)
    assert all(TraceContext.parse(span.header) == span for _, span in drawn)


@pytest.mark.parametrize("header", [
    None, "", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # trace id one digit short
    "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent id
    "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",  # not hex
])
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(header: str | None) -> None:
    assert TraceContext.parse(header) is None


def test_a_child_span_keeps_the_trace_and_the_sampling_decision() -> None:
    parent = TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert parent is not None and not parent.sampled
    child = parent.child()
    assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
    assert child.header.endswith("-00")


def test_durations_fall_in_envoys_buckets_with_le_semantics() -> None:
    metrics = Metrics()
    for ms in (0.5, 0.51, 5, 600_000, 10_000_000):
        metrics.record(BASE, 200, "-", ms)
    text = metrics.prometheus()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}

    def bucket(le: str) -> float:
        return buckets[le]

    assert bucket("0.5") == 1  # a duration equal to a bound counts in that bucket
    assert bucket("1") == 2
    assert bucket("5") == 3
    assert bucket("600000") == 4
    assert bucket("+Inf") == 5
    assert len(DURATION_BUCKETS_MS) + 1 == len(buckets)
    assert any(s.name == "istio_request_duration_milliseconds_count" for s in samples)
    assert metrics.total(response_code="200") == 5


def test_a_span_is_named_by_authority_and_path_without_the_query() -> None:
    telemetry = Telemetry(keep=2)
    for n in range(3):
        telemetry.spans.append(("t" * 32, f"{n:016x}", None, "httpbin:8000", f"/get?n={n}",
                                "sleep", "source", 1.0 + n, 0.5, 200, "-"))
    spans = telemetry.span_list()
    assert [s.span_id for s in spans] == [f"{n:016x}" for n in (1, 2)]  # bounded: oldest gone
    assert {s.name for s in spans} == {"httpbin:8000/get"}
