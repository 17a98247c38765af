"""Model-quality monitoring: logged predictions, feedback joined by request id, accuracy per
version, Prometheus counters and the Flagger gate, over real model servers and real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from inference_helpers import MODELS, REPO, model_server
from prometheus_client.parser import text_string_to_metric_families

import labkit.inference.kinds  # noqa: F401  (registers the labkit/model-monitor image)
from labkit.cluster import LocalCluster
from labkit.core.images import image_command
from labkit.eventing.events import Event, encode_binary
from labkit.inference.payload_logger import REQUEST_TYPE, RESPONSE_TYPE
from labkit.net import HOST, ReplicaProcess
from labkit.quality.gate import GateConfig, GateError, judge, parse_webhook
from labkit.quality.ledger import Accuracy, FeedbackError, Ledger
from labkit.quality.payloads import PayloadError, Served, read_response

HOLDOUT = np.loadtxt(MODELS / "digits-holdout.csv", delimiter=",", skiprows=1, dtype=int)
LABELS, PIXELS = HOLDOUT[:, 0], HOLDOUT[:, 1:].astype(float)
MEASURED = json.loads((MODELS / "digits-versions.json").read_text())["versions"]
REVISION_POD = "digits-predictor-00002-deployment-1"


# ---------------------------------------------------------------------------------------------
# payloads: what a logged response says


def v2_body(labels: list[Any], version: str | None = None) -> bytes:
    doc: dict[str, Any] = {"model_name": "digits", "id": "x", "outputs": [
        {"name": "predict", "datatype": "INT64", "shape": [len(labels)], "data": labels}]}
    if version:
        doc["model_version"] = version
    return orjson.dumps(doc)


def test_version_comes_from_model_version_then_revision_then_endpoint() -> None:
    attrs = {"inferenceservicename": "digits", "namespace": "lab", "endpoint": "canary",
             "source": REVISION_POD}
    served = read_response(attrs, v2_body([3, 4], "v2"))
    assert (served.namespace, served.model, served.version, served.version_from,
            served.predicted) == ("lab", "digits", "v2", "model_version", (3, 4))
    v1 = orjson.dumps({"predictions": [7]})
    assert read_response(attrs, v1).version == "digits-predictor-00002"
    assert read_response(attrs, v1).version_from == "revision"
    by_endpoint = read_response({**attrs, "source": "http://127.0.0.1:8080/"}, v1)
    assert (by_endpoint.version, by_endpoint.version_from) == ("canary", "endpoint")


@pytest.mark.parametrize(("body", "attrs", "message"), [
    (b"\x00\x01binary", {"inferenceservicename": "m"}, "not JSON"),
    (orjson.dumps({"outputs": [{"name": "predict_proba", "data": [0.1]}]}),
     {"inferenceservicename": "m"}, "no `predict` output"),
    (orjson.dumps({"predictions": [[1, 2]]}), {"inferenceservicename": "m"},
     r"predictions\[0\]"),
    (orjson.dumps({"predictions": [1]}), {}, "ce-inferenceservicename"),
    (orjson.dumps({"result": 1}), {"inferenceservicename": "m"}, "neither a V1"),
    (b"", {"inferenceservicename": "m"}, "no body"),
])
def test_unscorable_responses_are_named(body: bytes, attrs: dict[str, str], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        read_response(attrs, body)


# ---------------------------------------------------------------------------------------------
# ledger: joining feedback


def served(version: str, *labels: Any) -> Served:
    return Served("default", "digits", version, "model_version", labels)


def ledger_with(*predictions: tuple[str, Served]) -> Ledger:
    ledger = Ledger(max_window=50)
    for request_id, prediction in predictions:
        assert ledger.record_response(request_id, prediction).new
    return ledger


def test_feedback_joins_by_id_counts_duplicates_once_and_refuses_conflicts() -> None:
    ledger = ledger_with(("a", served("v1", 3)), ("b", served("v1", 5)), ("c", served("v2", 1)))
    assert not ledger.record_response("a", served("v1", 9)).new  # a repeated event counts once
    joined = ledger.join([("a", 3), ("b", 6), ("a", 3)], ["[0]", "[1]", "[2]"])
    assert [(j.correct, j.duplicate) for j in joined] == [(1, False), (0, False), (1, True)]
    assert ledger.accuracy(("default", "digits", "v1")) == Accuracy(2, 1)
    assert ledger.predictions(("default", "digits", "v1")) == 2
    with pytest.raises(FeedbackError) as conflict:
        ledger.join([("b", 5)], [""])
    assert conflict.value.status == 409 and "already labelled 6" in conflict.value.message
    with pytest.raises(FeedbackError) as unknown:
        ledger.join([("zzz", 1)], ["[0]"])
    assert (unknown.value.status, unknown.value.at) == (404, "[0].id")


def test_a_batch_with_one_bad_item_changes_nothing() -> None:
    ledger = ledger_with(("a", served("v1", 3)), ("b", served("v1", 5)))
    with pytest.raises(FeedbackError) as bad:
        ledger.join([("a", 3), ("b", "5")], ["[0]", "[1]"])
    assert bad.value.at == "[1].label"
    assert "is a string, the model predicts numbers" in str(bad.value)
    assert ledger.accuracy(("default", "digits", "v1")) == Accuracy(0, 0)
    assert [j.duplicate for j in ledger.join([("a", 3), ("b", 5)], ["", ""])] == [False, False]


def test_several_rows_take_one_label_each_and_the_window_keeps_the_latest() -> None:
    ledger = ledger_with(("a", served("v1", 1, 2, 3)), ("b", served("v1", 4, 4)))
    with pytest.raises(FeedbackError, match="3 row"):
        ledger.join([("a", 1)], [""])
    ledger.join([("a", [1, 2, 0])], [""])
    ledger.join([("b", [9, 9])], [""])
    key = ("default", "digits", "v1")
    assert ledger.accuracy(key) == Accuracy(5, 2)
    assert ledger.accuracy(key, window=2) == Accuracy(2, 0)
    assert ledger.accuracy(key, window=4) == Accuracy(4, 1)
    with pytest.raises(ValueError, match="over the 50 rows"):
        ledger.accuracy(key, window=51)


def test_requests_without_a_logged_response_are_explained() -> None:
    ledger = Ledger()
    ledger.record_request("r1")
    with pytest.raises(FeedbackError) as missing:
        ledger.join([("r1", 1)], [""])
    assert missing.value.status == 409 and "response was not" in missing.value.message


def test_a_mirrored_copy_is_kept_beside_the_answer_and_both_are_labelled() -> None:
    """Istio's mirror keeps the request id: one id, two versions, each counted on its rows,
    also when the copy is logged after the label arrived."""
    ledger = ledger_with(("m1", served("v1", 7, 2)), ("m2", served("v1", 5)))
    assert ledger.record_response("m1", served("v3", 7, 3)).new  # the mirrored copy
    joined = ledger.join([("m1", [7, 3]), ("m2", 5)], ["[0]", "[1]"])
    assert [(j.rows, j.correct) for j in joined] == [(4, 3), (1, 1)]
    late = ledger.record_response("m2", served("v3", 4))  # the copy of m2, after its label
    assert late.new and late.counted is not None and (late.counted.rows, late.counted.correct) == (1, 0)
    assert ledger.accuracy(("default", "digits", "v1")) == Accuracy(3, 2)
    assert ledger.accuracy(("default", "digits", "v3")) == Accuracy(3, 2)
    assert not ledger.record_response("m1", served("v3", 0, 0)).new  # repeated: not counted
    assert ledger.accuracy(("default", "digits", "v3")) == Accuracy(3, 2)


def test_oldest_predictions_are_forgotten_past_the_bound() -> None:
    ledger = Ledger(max_predictions=2)
    for request_id in ("a", "b", "c"):
        ledger.record_response(request_id, served("v1", 1))
    with pytest.raises(FeedbackError) as gone:
        ledger.join([("a", 1)], [""])
    assert gone.value.status == 404
    assert ledger.join([("c", 1)], [""])[0].correct == 1


# ---------------------------------------------------------------------------------------------
# gate: Flagger's webhook


def webhook(**metadata: Any) -> dict[str, Any]:
    return {"name": "digits", "namespace": "default", "phase": "Progressing",
            "checksum": "abc", "metadata": metadata}


@pytest.mark.parametrize(("payload", "message"), [
    ([], "body: expected"),
    ({"name": "digits", "metadata": {"canary": "v2"}}, "namespace: missing"),
    (webhook(minAccuracy="90"), "metadata.canary: required"),
    (webhook(canary="v2"), "set minAccuracy and/or maxDrop"),
    (webhook(canary="v2", minAccuracy="0.9"), "did you mean 90"),
    (webhook(canary="v2", minAccuracy="ninety"), "not a number"),
    (webhook(canary="v2", minAccuracy="120"), "outside 0-100"),
    (webhook(canary="v2", maxDrop="2"), "metadata.primary: required with maxDrop"),
    (webhook(canary="v2", minAccuracy="90", minSamples=50), "values are strings"),
    (webhook(canary="v2", minAccuracy="90", minSamples="0"), "whole number >= 1"),
    (webhook(canary="v2", minAccuracy="90", minAcuracy="90"), "metadata.minAcuracy: unknown"),
    (webhook(canary="v2", minAccuracy="90", window="20"), "smaller than minSamples"),
])
def test_bad_webhook_payloads_name_the_field(payload: Any, message: str) -> None:
    with pytest.raises(GateError, match=message):
        parse_webhook(payload)


def test_webhook_metadata_becomes_the_gate_config() -> None:
    config = parse_webhook(webhook(canary="v2", primary="v1", maxDrop="2", minSamples="100",
                                   window="200", model="digits-isvc"))
    assert config == GateConfig("default", "digits-isvc", "v2", "v1", None, 2.0, 100, 200,
                                "Progressing")
    assert parse_webhook(webhook(canary="v2", minAccuracy="90")).model == "digits"


def test_gate_passes_fails_and_waits_for_samples() -> None:
    both = GateConfig("default", "digits", "v2", "v1", min_accuracy=90, max_drop=2,
                      min_samples=100)
    good = judge(both, Accuracy(200, 195), Accuracy(200, 192))
    assert (good.status, good.result) == (200, "pass")
    assert "97.50%" in good.reason and "drop -1.50 points <= maxDrop 2" in good.reason
    low = judge(both, Accuracy(200, 170), Accuracy(200, 192))
    assert (low.status, low.result) == (403, "fail") and "below minAccuracy 90%" in low.reason
    dropped = judge(both, Accuracy(200, 184), Accuracy(200, 192))  # 92 %: above 90, 4 points down
    assert dropped.status == 403 and "drop 4.00 points > maxDrop 2" in dropped.reason
    few = judge(both, Accuracy(200, 195), Accuracy(99, 99))
    assert (few.status, few.result) == (412, "insufficient") and "version v1 has 99" in few.reason
    alone = GateConfig("default", "digits", "v2", min_accuracy=90, min_samples=100)
    assert judge(alone, Accuracy(100, 90), None).status == 200  # the bound is inclusive


# ---------------------------------------------------------------------------------------------
# live: model servers logging to the monitor process


@pytest.fixture(scope="module")
def live() -> Iterator[dict[str, Any]]:
    """The monitor (started from its image) and two model servers logging to it: v1, and v3
    in a pod named like a Knative revision's (its V1 answers carry no version)."""
    command = image_command("labkit/model-monitor")
    assert command is not None and command[-1] == "labkit.apps.model_monitor"
    monitor = ReplicaProcess(command, name="model-monitor")
    monitor.start(timeout=60)
    url = f"http://{HOST}:{monitor.port}"
    logger = ("--logger-url", url + "/", "--inference-service", "digits")
    servers = [
        model_server("digits", str(MODELS / "digits-v1"), *logger, "--model-version", "v1",
                     "--logger-mode", "response"),
        model_server("digits", str(MODELS / "digits-v3"), *logger, "--model-version", "v3",
                     env={"HOSTNAME": REVISION_POD}),
    ]
    try:
        with ExitStack() as stack, ThreadPoolExecutor(2) as pool:  # two imports of sklearn at once
            v1, v3 = pool.map(stack.enter_context, servers)
            client = stack.enter_context(httpx.Client(timeout=30))
            yield {"url": url, "client": client, "v1": v1, "v3": v3, "monitor": monitor}
    finally:
        monitor.stop()


def infer(client: httpx.Client, base: str | int, rows: np.ndarray, request_id: str) -> list[int]:
    """V2 predictions for `rows` from a server (its URL, or its port on 127.0.0.1)."""
    body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                        "data": rows.tolist()}]}
    url = base if isinstance(base, str) else f"http://{HOST}:{base}"
    answer = client.post(url + "/v2/models/digits/infer", json=body,
                         headers={"ce-id": request_id})
    assert answer.status_code == 200, answer.text
    return answer.json()["outputs"][0]["data"]


def versions(live: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """GET /accuracy's rows by version."""
    doc = live["client"].get(live["url"] + "/accuracy").json()
    return {v["version"]: v for v in doc["versions"]}


def gate(live: dict[str, Any], **metadata: str) -> httpx.Response:
    return live["client"].post(live["url"] + "/gate", json=webhook(**metadata))


def counter(live: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels`."""
    text = live["client"].get(live["url"] + "/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_accuracy_per_version_matches_the_held_out_measurement(
        live: dict[str, Any], wait_for: Callable[..., None]) -> None:
    client, rows = live["client"], len(LABELS)
    said = {"v1": [], "v3": []}  # type: dict[str, list[int]]
    for version, size in (("v1", 4), ("v3", 10)):  # several rows per request: a label per row
        for start in range(0, rows, size):
            said[version] += infer(client, live[version].port, PIXELS[start:start + size],
                                   f"{version}-{start}")
    wait_for(lambda: all(versions(live).get(v, {}).get("predictions") == rows for v in said),
             30, "every prediction logged")
    assert gate(live, canary="v1", minAccuracy="90", minSamples="100").status_code == 412

    feedback = [{"id": f"{v}-{start}", "label": LABELS[start:start + size].tolist()}
                for v, size in (("v1", 4), ("v3", 10)) for start in range(0, rows, size)]
    answer = client.post(live["url"] + "/feedback", json=feedback)
    assert answer.status_code == 200, answer.text
    expected = {v: int(np.sum(np.array(said[v]) == LABELS)) for v in said}
    assert answer.json() == {"accepted": rows // 4 + rows // 10, "duplicates": 0, "rows": 2 * rows,
                             "correct": expected["v1"] + expected["v3"]}

    table = versions(live)
    for version in said:
        assert table[version]["labelled"] == rows and table[version]["correct"] == expected[version]
        assert table[version]["version_from"] == "model_version"
        assert round(table[version]["accuracy"], 4) == MEASURED[version]["holdout_accuracy"]
        assert counter(live, "model_predictions_total", version=version) == rows
        assert counter(live, "model_feedback_total", version=version,
                       correct="true") == expected[version]
        assert counter(live, "model_feedback_total", version=version,
                       correct="false") == rows - expected[version]
    window = table["v3"]["window"]  # the monitor's default window: the last 100 labelled rows
    assert window["labelled"] == 100
    assert window["correct"] == int(np.sum(np.array(said["v3"][-100:]) == LABELS[-100:]))
    assert counter(live, "model_logged_events_total", type="request") >= rows // 10  # v3's
    assert table["v1"]["accuracy"] - table["v3"]["accuracy"] > 0.05  # v3 is the bad version

    good = gate(live, canary="v1", minAccuracy="94", minSamples="100")
    assert good.status_code == 200 and good.json()["result"] == "pass", good.text
    bad = gate(live, canary="v3", primary="v1", maxDrop="2", minSamples="100")
    assert bad.status_code == 403 and bad.json()["result"] == "fail"
    assert "maxDrop 2" in bad.json()["reason"] and bad.json()["primary"]["labelled"] == rows
    windowed = gate(live, canary="v3", minAccuracy="94", minSamples="100", window="100")
    assert windowed.json()["canary"] == {"version": "v3", **window}
    assert windowed.status_code == (200 if window["accuracy"] >= 0.94 else 403)
    unseen = gate(live, canary="v9", minAccuracy="90")
    assert unseen.status_code == 412
    assert "versions seen for default/digits: " in unseen.json()["reason"]
    assert unseen.json()["reason"].endswith("v1, v3)")
    assert counter(live, "model_gate_checks_total", version="v3") == 2


def test_revision_from_pod_name_and_failed_answers_are_not_predictions(
        live: dict[str, Any], wait_for: Callable[..., None]) -> None:
    client, port = live["client"], live["v3"].port
    refused = client.post(f"http://{HOST}:{port}/v1/models/digits:predict",
                          json={"instances": [[1, 2, 3]]}, headers={"ce-id": "rev-bad"})
    assert refused.status_code == 400
    answer = client.post(f"http://{HOST}:{port}/v1/models/digits:predict",
                         json={"instances": PIXELS[:2].tolist()}, headers={"ce-id": "rev-1"})
    assert answer.status_code == 200
    wait_for(lambda: "digits-predictor-00002" in versions(live), 30, "the revision's prediction")
    row = versions(live)["digits-predictor-00002"]
    assert (row["version_from"], row["predictions"]) == ("revision", 2)
    # the failed request was logged (request event) but its 400 answer was not
    answers: list[httpx.Response] = []

    def answered() -> bool:
        answers.append(client.post(live["url"] + "/feedback", json={"id": "rev-bad", "label": 1}))
        return answers[-1].status_code != 404

    wait_for(answered, 30, "the request event")
    assert answers[-1].status_code == 409 and "response was not" in answers[-1].json()["error"]
    ok = client.post(live["url"] + "/feedback", json={"id": "rev-1", "label": LABELS[:2].tolist()})
    assert ok.status_code == 200 and ok.json()["rows"] == 2


def log_response(live: dict[str, Any], request_id: str, *labels: int,
                 version: str | None = None) -> None:
    """Post a logged response event straight to the monitor, as KServe's agent would (the
    answer names `version` as `model_version` when given, else it is the endpoint's)."""
    answer_body: dict[str, Any] = {"predictions": list(labels)}
    if version is not None:
        answer_body["model_version"] = version
    event = Event({"specversion": "1.0", "id": request_id, "source": "probe-pod",
                   "type": RESPONSE_TYPE, "inferenceservicename": "probe",
                   "namespace": "default", "component": "predictor", "endpoint": "default"},
                  orjson.dumps(answer_body))
    headers, body = encode_binary(event)
    answer = live["client"].post(live["url"] + "/", headers=headers, content=body)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("body", "status", "where"), [
    (b"{not json", 400, "body"),
    (b"[]", 400, "body"),
    (b'{"label": 3}', 400, "id"),
    (b'{"id": "bad-0"}', 400, "label"),
    (b'[{"id": "bad-0", "label": 4}, {"id": "nope", "label": 1}]', 404, "[1].id"),
    (b'{"id": "bad-0", "label": "4"}', 400, "label"),
    (b'[{"id": "bad-0", "label": [1, 2]}]', 400, "[0].label"),
])
def test_bad_feedback_is_refused_with_a_json_reason(live: dict[str, Any], body: bytes,
                                                    status: int, where: str) -> None:
    log_response(live, "bad-0", 4)
    before = counter(live, "model_feedback_total", model="probe")
    answer = live["client"].post(live["url"] + "/feedback", content=body,
                                 headers={"content-type": "application/json"})
    assert answer.status_code == status and answer.json()["at"] == where, answer.text
    assert answer.json()["error"].startswith(where)
    assert counter(live, "model_feedback_total", model="probe") == before


def test_duplicate_feedback_counts_once_and_a_different_label_conflicts(
        live: dict[str, Any]) -> None:
    client, url = live["client"], live["url"]
    log_response(live, "dup-1", 7)
    log_response(live, "dup-1", 7)  # the same event twice is one prediction
    first = client.post(url + "/feedback", json={"id": "dup-1", "label": 7})
    assert first.json() == {"accepted": 1, "duplicates": 0, "rows": 1, "correct": 1}
    again = client.post(url + "/feedback", json=[{"id": "dup-1", "label": 7}])
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 1,
                                                         "rows": 0, "correct": 0}
    other = client.post(url + "/feedback", json={"id": "dup-1", "label": 3})
    assert other.status_code == 409 and "already labelled 7" in other.json()["error"]
    assert counter(live, "model_feedback_total", model="probe", version="default") == 1


def test_one_monitor_scores_the_answer_and_its_mirrored_copy(live: dict[str, Any]) -> None:
    client, url = live["client"], live["url"]
    log_response(live, "mirror-1", 7, 2, version="live")
    log_response(live, "mirror-1", 7, 3, version="shadow")  # the copy: same id
    both = client.post(url + "/feedback", json={"id": "mirror-1", "label": [7, 3]})
    assert both.json() == {"accepted": 1, "duplicates": 0, "rows": 4, "correct": 3}
    log_response(live, "mirror-2", 1, version="live")
    assert client.post(url + "/feedback", json={"id": "mirror-2", "label": 1}).json()["rows"] == 1
    log_response(live, "mirror-2", 1, version="shadow")  # logged after its label: counted now
    probe = {v["version"]: v for v in client.get(url + "/accuracy").json()["versions"]
             if v["model"] == "probe"}
    assert (probe["live"]["labelled"], probe["live"]["correct"]) == (3, 2)
    assert (probe["shadow"]["labelled"], probe["shadow"]["correct"]) == (3, 3)
    assert counter(live, "model_feedback_total", model="probe", version="shadow", correct="true") == 3


def test_bad_events_and_routes(live: dict[str, Any]) -> None:
    client, url = live["client"], live["url"]
    not_event = client.post(url + "/", content=b"{}", headers={"content-type": "application/json"})
    assert not_event.status_code == 400 and "ce-specversion" in not_event.json()["error"]
    other = Event({"specversion": "1.0", "id": "e1", "source": "s", "type": "com.example.x",
                   "inferenceservicename": "digits"}, b"{}")
    headers, body = encode_binary(other)
    wrong = client.post(url + "/", headers=headers, content=body)
    assert wrong.status_code == 400 and wrong.json()["at"] == "ce-type"
    binary = Event({"specversion": "1.0", "id": "e2", "source": "s", "type": RESPONSE_TYPE,
                    "inferenceservicename": "digits"}, b"\x00\x01")
    headers, body = encode_binary(binary)
    assert client.post(url + "/", headers=headers, content=body).status_code == 400
    request = Event({"specversion": "1.0", "id": "e3", "source": "s", "type": REQUEST_TYPE}, b"{}")
    headers, body = encode_binary(request)
    assert client.post(url + "/", headers=headers, content=body).json()["recorded"] == "request"
    assert client.get(url + "/feedback").status_code == 405
    assert client.get(url + "/nowhere").status_code == 404
    assert client.post(url + "/gate", content=b"nope").json()["at"] == "body"
    assert counter(live, "model_monitor_rejected_total", path="/", code="400") >= 3


# ---------------------------------------------------------------------------------------------
# the monitor as cluster objects, a model Deployment logging to it by Kubernetes' service vars

MODEL_DEPLOYMENT = """\
apiVersion: v1
kind: Service
metadata:
  name: digits
spec:
  selector: {{app: digits}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: digits
spec:
  replicas: 1
  selector:
    matchLabels: {{app: digits}}
  template:
    metadata:
      labels: {{app: digits, version: v2}}
    spec:
      containers:
        - name: model
          image: kserve/sklearnserver
          command: ["{python}", "-m", "labkit.inference.server"]
          args: ["--model-name", "digits", "--storage-uri", "{models}/digits-v2",
                 "--model-version", "v2", "--logger-mode", "response",
                 "--logger-url=http://$(MODEL_MONITOR_SERVICE_HOST):$(MODEL_MONITOR_SERVICE_PORT)/"]
          readinessProbe:
            httpGet: {{path: /v2/health/ready, port: 8080}}
"""


def test_monitor_manifest_and_a_model_deployment_logging_to_it(
        cluster: LocalCluster, write: Callable[[str, str], Path], wait_for: Callable[..., None]) -> None:
    cluster.apply(str(REPO / "data" / "manifests" / "model-monitor.yaml"))
    cluster.apply(write("digits.yaml", MODEL_DEPLOYMENT.format(python=sys.executable,
                                                               models=MODELS)))
    monitor, model = cluster.url("Service", "model-monitor"), cluster.url("Service", "digits")
    with httpx.Client(timeout=30) as client:
        said = infer(client, model, PIXELS[:60], "dep-1")
        wait_for(lambda: client.get(monitor + "/accuracy").json()["versions"], 30, "the log")
        answer = client.post(monitor + "/feedback", json={"id": "dep-1",
                                                          "label": LABELS[:60].tolist()})
        assert answer.json()["correct"] == int(np.sum(np.array(said) == LABELS[:60]))
        verdict = client.post(monitor + "/gate", json=webhook(canary="v2", minAccuracy="80"))
    assert verdict.status_code == 200 and verdict.json()["canary"]["labelled"] == 60


ISVC = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: digits
spec:
  predictor:{canary}
    logger: {{mode: response, url: "{url}"}}
    model:
      modelFormat: {{name: sklearn}}
      protocolVersion: v2
      storageUri: {models}/{model}
"""


def test_an_inference_service_canary_is_told_apart_by_revision(
        cluster: LocalCluster, write: Callable[[str, str], Path], wait_for: Callable[..., None]) -> None:
    """KServe v1beta1 sends endpoint "default" for both revisions of a canary; the pod name
    (ce-source) still names the revision, so accuracy is per revision."""
    cluster.apply(str(REPO / "data" / "manifests" / "model-monitor.yaml"))
    monitor = cluster.url("Service", "model-monitor")
    for model, canary in (("digits-v1", ""), ("digits-v3", "\n    canaryTrafficPercent: 50")):
        cluster.apply(write(f"{model}.yaml", ISVC.format(canary=canary, url=monitor + "/",
                                                         models=MODELS, model=model)))
    url = cluster.url("InferenceService", "digits")
    with httpx.Client(timeout=30) as client:
        for i in range(60):
            infer(client, url, PIXELS[i:i + 1], f"isvc-{i}")
        seen = {"client": client, "url": monitor}
        wait_for(lambda: sum(v["predictions"] for v in versions(seen).values()) == 60, 30,
                 "60 predictions")
        table = versions(seen)
        assert sorted(table) == ["digits-predictor-00001", "digits-predictor-00002"]
        assert all(v["version_from"] == "revision" and v["predictions"] > 0
                   for v in table.values())
        answer = client.post(monitor + "/feedback", json=[
            {"id": f"isvc-{i}", "label": int(LABELS[i])} for i in range(60)])
        assert answer.json()["rows"] == 60
        table = versions(seen)
    assert all(v["labelled"] == v["predictions"] for v in table.values())


def test_monitor_cli_refuses_a_bad_window() -> None:
    done = subprocess.run([sys.executable, "-m", "labkit.apps.model_monitor", "--window", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--window: 0 is outside 1-10000" in done.stderr
