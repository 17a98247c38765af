"""MetricTemplates evaluated by a real Prometheus that labkit starts: its configuration, the
targets it scrapes (live sidecars, the model monitor), and queries that agree with the built-in
metric and the monitor's own accuracy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from mesh_helpers import applied, get, meshed, one_route

import labkit.inference.kinds  # noqa: F401  (registers the labkit/model-monitor image)
from labkit import manifests
from labkit.cluster import LocalCluster
from labkit.eventing.events import Event, encode_binary
from labkit.flagger import metrics as builtin
from labkit.flagger import prometheus
from labkit.flagger.controller import CanaryController
from labkit.flagger.models import Canary, MetricTemplate
from labkit.flagger.templates import render_query
from labkit.inference.payload_logger import RESPONSE_TYPE
from labkit.mesh.control import control_plane

REPO = Path(__file__).resolve().parents[1]
MONITOR_YAML = (REPO / "data/manifests/model-monitor.yaml").read_text()
ACCURACY_YAML = (REPO / "data/manifests/flagger-model-accuracy.yaml").read_text()

# Flagger's built-in request-success-rate query (pkg/metrics/observers/istio.go) as a template,
# with the reporter as a template variable so the same query reads either side.
SUCCESS_RATE_YAML = """
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: success-rate, namespace: default}
spec:
  provider: {type: prometheus, address: "http://prometheus.istio-system:9090"}
  query: |
    sum(rate(istio_requests_total{reporter="{{ variables.reporter }}",
        destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}",
        response_code!~"5.*"}[{{ interval }}]))
    /
    sum(rate(istio_requests_total{reporter="{{ variables.reporter }}",
        destination_workload_namespace="{{ namespace }}",
        destination_workload=~"{{ target }}"}[{{ interval }}])) * 100
"""

# `interval: 1h` covers every sample the test's Prometheus holds.
CANARY_YAML = """
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: flaky, namespace: default}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: flaky}
  service: {port: 80}
  analysis:
    interval: 1m
    threshold: 2
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: destination-success
      templateRef: {name: success-rate}
      templateVariables: {reporter: destination}
      thresholdRange: {min: 99}
      interval: 1h
    - name: source-success
      templateRef: {name: success-rate}
      templateVariables: {reporter: source}
      thresholdRange: {min: 99}
      interval: 1h
    - name: accuracy
      templateRef: {name: model-accuracy}
      thresholdRange: {min: 94}
      interval: 1h
"""

needs_prometheus = pytest.mark.skipif(prometheus.find_binary() is None,
                                      reason=prometheus.missing_reason())


# --- configuration (no server) ---------------------------------------------------------------

def test_config_scrapes_the_target_file_at_the_interval(tmp_path: Path) -> None:
    config = json.loads(prometheus.config_text(tmp_path / "t.json", 0.25))
    assert config["global"]["scrape_interval"] == "250ms"
    job = config["scrape_configs"][0]
    assert job["honor_labels"] is True
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "t.json")]


def test_targets_file_names_each_endpoint_and_its_path() -> None:
    groups = json.loads(prometheus.targets_json([
        prometheus.ScrapeTarget("http://127.0.0.1:1234/stats/prometheus", {"pod_workload": "a"}),
        prometheus.ScrapeTarget("http://127.0.0.1:999/metrics")]))
    assert groups == [
        {"targets": ["127.0.0.1:1234"],
         "labels": {"pod_workload": "a", "__metrics_path__": "/stats/prometheus"}},
        {"targets": ["127.0.0.1:999"], "labels": {"__metrics_path__": "/metrics"}}]
    with pytest.raises(ValueError, match=r"scrape target 'localhost/metrics': need http://host:port"):
        prometheus.targets_json([prometheus.ScrapeTarget("localhost/metrics")])


def test_a_missing_binary_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(prometheus.BINARY_ENV, str(tmp_path / "nope"))
    assert prometheus.find_binary() is None
    assert prometheus.missing_reason() == f"${prometheus.BINARY_ENV}={tmp_path / 'nope'} is not an executable file"
    with pytest.raises(FileNotFoundError, match="is not an executable file"):
        prometheus.Prometheus().start()
    with pytest.raises(ValueError, match="scrape_interval: must be > 0"):
        prometheus.Prometheus(scrape_interval=0)


def test_the_canary_controller_asks_prometheus_through_this_provider() -> None:
    assert CanaryController.query is prometheus.query


# --- live ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    # the monitor's accuracy window = the rows labelled in the measured phase
    yield from meshed(MONITOR_YAML.replace('args: ["--window", "100"]', 'args: ["--window", "40"]'))


def predict_and_label(client: httpx.Client, monitor: str, first: int, rows: int,
                      correct: int) -> None:
    """Log `rows` one-row predictions of model digits v2 (label 1 each) as KServe's logger
    does, then give feedback: the first `correct` are right."""
    for i in range(first, first + rows):
        event = Event({"specversion": "1.0", "id": f"req-{i}", "source": "digits-v2-pod",
                       "type": RESPONSE_TYPE, "inferenceservicename": "digits",
                       "namespace": "default", "component": "predictor", "endpoint": "v2"},
                      orjson.dumps({"predictions": [1]}))
        headers, body = encode_binary(event)
        assert client.post(monitor + "/", headers=headers, content=body).status_code == 200
    feedback = [{"id": f"req-{i}", "label": 1 if i - first < correct else 7}
                for i in range(first, first + rows)]
    answer = client.post(monitor + "/feedback", json=feedback)
    assert answer.status_code == 200 and answer.json()["correct"] == correct, answer.text


@needs_prometheus
def test_templates_evaluated_by_prometheus_agree_with_the_builtin_and_the_monitor(
        mesh: LocalCluster) -> None:
    sleep = control_plane(mesh).client("default", "canary-load")
    flaky = control_plane(mesh).sidecar("flaky")
    monitor = mesh.url("Service", "model-monitor")
    client = httpx.Client(timeout=30)
    # phase 1, before Prometheus starts: every series the queries divide exists from its
    # first scrape (flaky answers 503 and 200 in turn)
    assert sorted(get(sleep, "/flaky", host="flaky").status_code for _ in range(20)) == [200] * 10 + [503] * 10
    predict_and_label(client, monitor, 0, 20, correct=15)

    targets = (prometheus.sidecar_targets(control_plane(mesh).sidecars())
               + prometheus.pod_targets(mesh.pods_of({"app": "model-monitor"})))
    with prometheus.Prometheus(targets, scrape_interval=0.25) as prom:
        prom.wait_for_scrape()
        before = httpx.get(flaky.metrics_url, timeout=10).text
        # phase 2: a retry hides each 503 from the caller; 32 of 40 predictions right
        with applied(mesh, one_route("flaky", retries="{attempts: 2, retryOn: 5xx}")):
            codes = [get(sleep, path, host="flaky").status_code for path in ("/flaky", "/") * 20]
        assert codes == [200] * 40
        predict_and_label(client, monitor, 20, 40, correct=32)
        after = httpx.get(flaky.metrics_url, timeout=10).text
        # a few more scrapes so that Prometheus' extrapolation is the same for every series
        prom.wait_for_scrape(after=time.time() + 4 * prom.scrape_interval)

        series = builtin.istio_destination("flaky", "default")
        expected_rate = builtin.request_success_rate(
            builtin.parse(after, series).minus(builtin.parse(before, series)))
        window = next(v["window"] for v in client.get(monitor + "/accuracy").json()["versions"]
                      if v["version"] == "v2")
        assert (expected_rate, window["labelled"], window["accuracy"]) == (40 / 60 * 100, 40, 0.8)

        canary = manifests.load_text(CANARY_YAML)[0]
        assert isinstance(canary, Canary)
        templates = {t.metadata.name: t for t in manifests.load_text(SUCCESS_RATE_YAML + "---\n" + ACCURACY_YAML)}
        values = {}
        for metric in canary.spec.analysis.metrics:
            assert metric.template_ref is not None
            template = templates[metric.template_ref.name]
            assert isinstance(template, MetricTemplate) and template.spec.provider.address is not None
            promql = render_query(template, canary, metric)
            assert "{{" not in promql and "[1h]" in promql
            values[metric.name] = CanaryController.query(template.spec.provider.address, promql)

    client.close()
    assert values["destination-success"] == pytest.approx(expected_rate, abs=1e-6)
    assert values["source-success"] == pytest.approx(100.0)     # what the caller saw
    assert values["accuracy"] == pytest.approx(window["accuracy"] * 100, abs=1e-6)
    # stopped: the cluster address is no longer answered by it
    with pytest.raises(OSError):
        prometheus.query(prometheus.ISTIO_ADDON, "up")


@needs_prometheus
def test_no_traffic_is_no_value_as_flagger_reads_it() -> None:
    with prometheus.Prometheus(scrape_interval=0.25) as prom:
        prom.set_targets([prometheus.ScrapeTarget(prom.url + "/metrics")])
        prom.wait_for_scrape()
        assert prom.query('up{job="labkit"}') == 1.0
        assert prom.query("sum(rate(istio_requests_total[1m]))") is None    # empty vector
        assert prom.query("sum(rate(up[1m])) / sum(rate(up[1m]))") is None  # 0/0 = NaN
        with pytest.raises(Exception, match="parse error"):
            prom.query("sum(")


PODINFO_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
spec:
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec:
      containers: [{name: podinfo, image: labkit/httpbin, env: [{name: VERSION, value: VERSION_HERE}]}]
"""

ACCURACY_CANARY_YAML = """
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: default}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 50
    stepWeight: 50
    metrics:
    - {name: accuracy, templateRef: {name: model-accuracy}, thresholdRange: {min: 94}, interval: 1h}
"""


@needs_prometheus
def test_a_live_canary_is_rolled_back_on_the_accuracy_prometheus_computes(
        mesh: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait_for: Callable[..., None]) -> None:
    monkeypatch.setenv("LABKIT_FLAGGER_STATE", str(tmp_path / "state"))
    monitor = mesh.url("Service", "model-monitor")
    client = httpx.Client(timeout=30)
    predict_and_label(client, monitor, 1000, 10, correct=5)  # both series exist from the start
    with prometheus.Prometheus(prometheus.pod_targets(mesh.pods_of({"app": "model-monitor"})),
                               scrape_interval=0.25) as prom:
        prom.wait_for_scrape()
        predict_and_label(client, monitor, 2000, 10, correct=5)
        prom.wait_for_scrape(after=time.time() + 4 * prom.scrape_interval)
        mesh.apply(ACCURACY_YAML + "---\n" + PODINFO_YAML.replace("VERSION_HERE", "v1"))
        mesh.apply(ACCURACY_CANARY_YAML)

        def events() -> list[str]:
            return [e["message"] for e in mesh.get("Canary", "podinfo", "default").status.detail["events"]]

        try:
            mesh.apply(PODINFO_YAML.replace("VERSION_HERE", "v2"))
            wait_for(lambda: mesh.get("Canary", "podinfo", "default").status.detail["status"]["phase"]
                     == "Failed", 60, "the rollback")
        finally:
            found = events()
            mesh.delete("flagger.app/v1beta1/Canary", "podinfo", "default")
    client.close()
    assert "Halt podinfo.default advancement accuracy 50.00 < 94" in found, found
    assert "Rolling back podinfo.default failed checks threshold reached 2" in found
