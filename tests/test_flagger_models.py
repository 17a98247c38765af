"""Flagger's kinds as manifests, the CRD check of the examples, and the controller's pure helpers
(metrics from counters, hey commands, webhook hosts, query rendering)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labkit import manifests
from labkit.flagger import metrics
from labkit.flagger.loadtester import parse_hey
from labkit.flagger.models import Canary, MetricTemplate
from labkit.flagger.templates import render_query
from labkit.flagger.webhooks import service_of_host
from labkit.manifests import ManifestError

ROOT = Path(__file__).resolve().parents[1]
VALIDATE = ROOT.parent / "shared" / "crds" / "validate.py"
EXAMPLES = sorted((ROOT / "data" / "manifests").glob("flagger-*.yaml"))

CANARY = """\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(text)
    return [str(e) for e in info.value.errors]


def test_examples_load_and_pass_flaggers_crd() -> None:
    assert EXAMPLES, "data/manifests/flagger-*.yaml missing"
    for path in EXAMPLES:
        assert manifests.load_file(path)
    if not VALIDATE.exists():
        pytest.skip("../shared/crds/validate.py is not here")
    done = subprocess.run([sys.executable, str(VALIDATE), "--skip-unknown", *map(str, EXAMPLES)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK Canary/podinfo" in done.stdout and "OK MetricTemplate/not-found-percentage" in done.stdout


def test_a_valid_canary_has_flaggers_defaults() -> None:
    canary = manifests.load_text(CANARY)[0]
    assert isinstance(canary, Canary)
    assert canary.provider == "istio"
    assert canary.spec.analysis.interval_seconds == 60.0
    assert canary.spec.deadline_seconds == 600.0
    assert manifests.load_text(manifests.export(canary))[0] == canary


@pytest.mark.parametrize("change, expected", [
    (("stepWeight: 10", "stepWeight: 60"),
     "<string>:16: Canary/podinfo: spec.analysis.stepWeight: stepWeight 60 is larger than maxWeight 50"),
    (("min: 99", "min: 101"),
     "<string>:20: Canary/podinfo: spec.analysis.metrics[0].thresholdRange.min: request-success-rate is a percentage, 0 to 100; got 101"),
    (("- name: request-success-rate", "- name: accuracy"),
     "<string>:18: Canary/podinfo: spec.analysis.metrics[0].templateRef: metric 'accuracy' is not built in"),
    (("interval: 1m", 'interval: "60"'),
     "<string>:13: Canary/podinfo: spec.analysis.interval: invalid duration '60'"),
    (("    port: 9898\n", "    targetPort: 9898\n"), "<string>:10: Canary/podinfo: spec.service.port: required for provider istio"),
    (("kind: Deployment", "kind: StatefulSet"),
     "<string>:6: Canary/podinfo: spec.targetRef: provider 'istio' takes a apps/v1 Deployment target"),
    (("maxWeight: 50", "maxWeight: 150"), "<string>:15: Canary/podinfo: spec.analysis.maxWeight: must be <= 100"),
    (("threshold: 5", "treshold: 5"), "spec.analysis.treshold: unknown field 'treshold'; did you mean 'threshold'?"),
])
def test_bad_canaries_name_line_and_field(change: tuple[str, str], expected: str) -> None:
    found = errors(CANARY.replace(*change))
    assert any(e.startswith(expected) or expected in e for e in found), found


def test_ab_needs_iterations_and_step_weights_go_up() -> None:
    text = CANARY.replace("    stepWeight: 10\n", "    stepWeights: [5, 20, 10]\n    match:\n      - headers: {x-canary: {exact: insider}}\n")
    found = errors(text)
    assert any("spec.analysis.stepWeights[2]: must be larger than the step before (20)" in e for e in found)
    assert any("spec.analysis.iterations: A/B testing (analysis.match) needs iterations" in e for e in found)


def test_metric_template_provider() -> None:
    text = (ROOT / "data" / "manifests" / "flagger-metric-template.yaml").read_text()
    template = manifests.load_text(text)[0]
    assert isinstance(template, MetricTemplate)
    found = errors(text.replace("type: prometheus", "type: datadog"))
    assert any("spec.provider.type: labkit evaluates MetricTemplates with provider 'prometheus'" in e for e in found)
    canary = manifests.load_text(CANARY.replace(
        "      - name: request-success-rate\n        thresholdRange:\n          min: 99\n",
        "      - name: not-found\n        interval: 30s\n        templateRef: {name: not-found-percentage}\n"
        "        thresholdRange: {max: 5}\n"))[0]
    assert isinstance(canary, Canary)
    query = render_query(template, canary, canary.spec.analysis.metrics[0])
    assert 'destination_workload="podinfo"' in query and "[30s]" in query and "{{" not in query


# -- built-in metrics from counters -------------------------------------------------------------

EXPOSITION = """\
# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="200"} 90
istio_requests_total{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="503"} 10
istio_requests_total{reporter="source",destination_workload="podinfo",destination_workload_namespace="test",response_code="503"} 7
istio_requests_total{reporter="destination",destination_workload="podinfo-primary",destination_workload_namespace="test",response_code="500"} 50
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="200",le="10"} 50
istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="200",le="100"} 99
istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="200",le="+Inf"} 100
istio_request_duration_milliseconds_sum{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="200"} 1000
istio_request_duration_milliseconds_count{reporter="destination",destination_workload="podinfo",destination_workload_namespace="test",response_code="200"} 100
"""


def test_counters_keep_only_the_destination_side_of_the_workload() -> None:
    c = metrics.parse(EXPOSITION, metrics.istio_destination("podinfo", "test"))
    assert (c.requests, c.errors) == (100, 10)
    assert metrics.request_success_rate(c) == pytest.approx(90.0)
    # 99th of 100 requests: the end of the (10, 100] bucket
    assert metrics.request_duration(c) == pytest.approx(100.0)
    assert metrics.histogram_quantile(0.5, c.buckets) == pytest.approx(10.0)
    assert metrics.histogram_quantile(0.75, c.buckets) == pytest.approx(10 + 90 * 25 / 49)


def test_windows_are_counter_differences() -> None:
    s = metrics.Scrapes(keep=100)
    s.add(0.0, metrics.Counters(100, 10, ((10.0, 80.0), (float("inf"), 100.0))))
    assert s.window(10) is None
    s.add(10.0, metrics.Counters(200, 10, ((10.0, 180.0), (float("inf"), 200.0))))
    s.add(20.0, metrics.Counters(300, 60, ((10.0, 200.0), (float("inf"), 300.0))))
    last = s.window(10)
    assert last is not None and metrics.request_success_rate(last) == pytest.approx(50.0)
    both = s.window(20)
    assert both is not None and metrics.request_success_rate(both) == pytest.approx(75.0)
    assert metrics.request_success_rate(metrics.Counters()) is None
    # a counter reset (a new sidecar) counts from zero
    reset = metrics.Counters(5, 0).minus(metrics.Counters(300, 60))
    assert reset.requests == 5


# -- hey commands and webhook hosts -----------------------------------------------------------


def test_hey_commands_as_hey_reads_them() -> None:
    hey = parse_hey("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/")
    assert (hey.duration, hey.qps_per_worker, hey.concurrency, hey.url) == (
        60.0, 10.0, 2, "http://podinfo-canary.test:9898/")
    hey = parse_hey("hey -n 50 -m POST -H 'x-canary: insider' -d '{}' http://podinfo.test/echo")
    assert (hey.requests, hey.duration, hey.method, hey.headers, hey.body) == (
        50, None, "POST", {"x-canary": "insider"}, "{}")
    with pytest.raises(ValueError, match="runs hey commands"):
        parse_hey("curl http://podinfo/")
    with pytest.raises(ValueError, match="exactly one http:// URL"):
        parse_hey("hey -z 10s")


@pytest.mark.parametrize("host, expected", [
    ("flagger-loadtester", ("flagger-loadtester", "test")),
    ("flagger-loadtester.test", ("flagger-loadtester", "test")),
    ("gate.other.svc.cluster.local", ("gate", "other")),
    ("127.0.0.1", None), ("localhost", None), ("example.com.au", None),
])
def test_webhook_hosts_naming_services(host: str, expected: tuple[str, str] | None) -> None:
    assert service_of_host(host, "test") == expected


# -- the routing objects ---------------------------------------------------------------------

def test_router_objects_are_valid_mesh_config() -> None:
    from labkit.core.models import Deployment
    from labkit.flagger import router
    from labkit.flagger.analysis import Routes
    canary = manifests.load_text(CANARY.replace("    stepWeight: 10\n",
                                                "    stepWeight: 10\n    mirror: true\n    mirrorWeight: 20\n"))[0]
    target = Deployment.model_validate({
        "metadata": {"name": "podinfo"},
        "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                 "template": {"metadata": {"labels": {"app": "podinfo"}},
                              "spec": {"containers": [{"name": "app", "image": "labkit/httpbin"}]}}}},
        by_alias=True)
    assert isinstance(canary, Canary)
    primary = router.primary_deployment(canary, target)
    assert primary["metadata"]["name"] == "podinfo-primary"
    assert primary["spec"]["selector"]["matchLabels"] == {"app": "podinfo-primary"}
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == "podinfo-primary"
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in router.services(canary, target)}
    assert services == {"podinfo": {"app": "podinfo-primary"}, "podinfo-primary": {"app": "podinfo-primary"},
                        "podinfo-canary": {"app": "podinfo"}}
    mirrored = router.virtual_service(canary, Routes(100, 0, True))
    http = mirrored["spec"]["http"][0]
    assert http["mirror"] == {"host": "podinfo-canary"} and http["mirrorPercentage"] == {"value": 20}
    assert router.routes_of(mirrored["spec"], canary) == Routes(100, 0, True)
    ab = manifests.load_text(CANARY.replace("    stepWeight: 10\n",
                                            "    iterations: 2\n    match:\n      - headers: {x-canary: {exact: insider}}\n"))[0]
    assert isinstance(ab, Canary)
    split = router.virtual_service(ab, Routes(0, 100))
    assert [r.get("match") for r in split["spec"]["http"]] == [[{"headers": {"x-canary": {"exact": "insider"}}}], None]
    # the mesh accepts all of it as Istio config
    for body in [primary, *router.services(canary, target), *router.destination_rules(canary), mirrored, split]:
        assert manifests.load(body)
