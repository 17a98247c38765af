"""The Prometheus text of the sidecar (`labkit.mesh.telemetry`) and of Knative Serving
(`labkit.serving.metrics`) parses with prometheus_client's own parser, keeps the real systems'
names, buckets and `le` strings, and round-trips any label value."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from labkit.flagger.metrics import istio_destination, knative_revision, parse
from labkit.mesh.telemetry import DURATION_BUCKETS_MS, LABEL_NAMES, Metrics
from labkit.serving.metrics import LATENCY_BUCKETS_MS, LatencyHistogram, le_text, render

AWKWARD = ['say "hi"', "back\\slash", "two\nlines", "all \\\"\n of them\\n", "ünïcode", ""]


def families(text: str) -> dict[str, tuple[str, list]]:
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def mesh_base(principal: str, reporter: str = "destination") -> tuple[str, ...]:
    values = dict.fromkeys(LABEL_NAMES[:-2], "x")
    values.update(reporter=reporter, source_principal=principal, destination_workload="podinfo",
                  destination_workload_namespace="test")
    return tuple(values[name] for name in LABEL_NAMES[:-2])


@pytest.mark.parametrize("value", AWKWARD)
def test_sidecar_label_values_round_trip(value: str) -> None:
    metrics = Metrics()
    metrics.record(mesh_base(value), 200, "-", 3.0)
    parsed = families(metrics.prometheus())
    kind, samples = parsed["istio_requests"]
    assert kind == "counter"
    assert [(s.name, s.labels["source_principal"], s.value) for s in samples] == \
        [("istio_requests_total", value, 1.0)]
    _, durations = parsed["istio_request_duration_milliseconds"]
    assert {s.labels["source_principal"] for s in durations} == {value}


def test_sidecar_histogram_has_envoys_buckets_sum_and_count() -> None:
    metrics = Metrics()
    for ms, code in ((0.5, 200), (0.51, 200), (5, 503), (600_000, 200), (10_000_000, 200)):
        metrics.record(mesh_base("p"), code, "-", ms)
    kind, samples = families(metrics.prometheus())["istio_request_duration_milliseconds"]
    assert kind == "histogram"
    ok = [s for s in samples if s.labels["response_code"] == "200"]
    buckets = [(s.labels["le"], s.value) for s in ok if s.name.endswith("_bucket")]
    # Envoy writes bounds in fixed point ("{:.32g}"): 1800000, never 1.8e+06
    assert [le for le, _ in buckets] == [f"{b:.32g}" for b in DURATION_BUCKETS_MS] + ["+Inf"]
    assert "1800000" in dict(buckets) and "3600000" in dict(buckets)
    cumulative = dict(buckets)
    assert (cumulative["0.5"], cumulative["1"], cumulative["600000"], cumulative["+Inf"]) == \
        (1, 2, 3, 4)
    by_name = {s.name: s.value for s in ok if not s.name.endswith("_bucket")}
    assert by_name == {"istio_request_duration_milliseconds_count": 4,
                       "istio_request_duration_milliseconds_sum": 0.5 + 0.51 + 600_000 + 10_000_000}


def test_flagger_reads_the_sidecar_text() -> None:
    metrics = Metrics()
    for code in (200,) * 9 + (503,):
        metrics.record(mesh_base("p"), code, "-", 7.0)
    metrics.record(mesh_base("p", reporter="source"), 503, "URX", 7.0)  # not Flagger's side
    counters = parse(metrics.prometheus(), istio_destination("podinfo", "test"))
    assert (counters.requests, counters.errors) == (10, 1)
    assert dict(counters.buckets)[10.0] == 10 and dict(counters.buckets)[5.0] == 0


def test_an_empty_sidecar_renders_both_families_without_samples() -> None:
    parsed = families(Metrics().prometheus())
    assert parsed == {"istio_requests": ("counter", []),
                      "istio_request_duration_milliseconds": ("histogram", [])}


def knative_labels(revision: str) -> dict[str, object]:
    return {"namespace_name": "default", "service_name": "web", "configuration_name": "web",
            "revision_name": revision}


@pytest.mark.parametrize("value", AWKWARD)
def test_serving_label_values_round_trip(value: str) -> None:
    histogram = LatencyHistogram()
    histogram.observe(0.012, 200)
    labels = knative_labels(value)
    text = render([("autoscaler_desired_pods", labels, 3)],
                  [("revision_request_latencies", labels, histogram)])
    parsed = families(text)
    assert [(s.labels["revision_name"], s.value) for s in parsed["autoscaler_desired_pods"][1]] \
        == [(value, 3.0)]
    assert {s.labels["revision_name"] for s in parsed["revision_request_latencies"][1]} == {value}


def test_serving_keeps_knatives_names_types_and_buckets() -> None:
    histogram = LatencyHistogram()
    for seconds, status in ((0.004, 200), (0.005, 200), (0.3, 503), (500.0, 200)):
        histogram.observe(seconds, status)
    labels = knative_labels("web-00001")
    samples = [("revision_request_count", {**labels, "response_code": code,
                                           "response_code_class": f"{code // 100}xx"}, n)
               for code, n in sorted(histogram.codes.items())]
    samples += [("autoscaler_panic_mode", labels, 0), ("labkit_cold_starts_total", labels, 2),
                ("activator_request_count", {"namespace_name": "default"}, 4)]
    text = render(samples, [("revision_request_latencies", labels, histogram)])
    parsed = families(text)
    # Knative's counters keep their names (no `_total`): exposed untyped, see _family
    assert [s.name for s in parsed["revision_request_count"][1]] == ["revision_request_count"] * 2
    assert parsed["activator_request_count"][0] == "unknown"
    assert parsed["labkit_cold_starts"][0] == "counter"
    assert parsed["autoscaler_panic_mode"][0] == "gauge"
    kind, latencies = parsed["revision_request_latencies"]
    assert kind == "histogram"
    buckets = [(s.labels["le"], s.value) for s in latencies if s.name.endswith("_bucket")]
    assert [le for le, _ in buckets] == [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]
    assert (dict(buckets)["5"], dict(buckets)["400"], dict(buckets)["+Inf"]) == (2, 3, 4)
    tail = {s.name: s.value for s in latencies if not s.name.endswith("_bucket")}
    assert tail == {"revision_request_latencies_count": 4,
                    "revision_request_latencies_sum": pytest.approx(4 + 5 + 300 + 500_000)}
    counters = parse(text, knative_revision("web-00001", "default"))
    assert (counters.requests, counters.errors) == (4, 1)


@pytest.mark.parametrize(("bound", "go"), [
    (5, "5"), (100000, "100000"), (1e6, "1e+06"), (1234567, "1.234567e+06"), (0.25, "0.25"),
    (1e-05, "1e-05"), (float("inf"), "+Inf"),
])
def test_le_is_written_as_gos_client_writes_it(bound: float, go: str) -> None:
    assert le_text(bound) == go
