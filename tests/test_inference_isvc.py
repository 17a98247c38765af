"""InferenceService live: the predictor as Knative revisions of the real model server, canary
rollout as KServe does it, a broken model update, scale to zero, KServe-shaped status."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from inference_helpers import MODELS, EventSink

from labkit.cluster import ApplyError, LocalCluster
from labkit.inference.isvc import inference_service
from labkit.inference.timing import parse_server_timing
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving

ISVC = "serving.kserve.io/v1beta1/InferenceService"
ROW = [5.1, 3.5, 1.4, 0.2]


def isvc(storage: str | Path, *, name: str = "iris", annotations: dict[str, str] | None = None,
         **predictor: Any) -> str:
    model = {"modelFormat": {"name": "sklearn"}, "protocolVersion": "v2", "storageUri": str(storage)}
    return yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"predictor": {**predictor, "model": model}},
    }, sort_keys=False)


def infer(url: str, name: str = "iris") -> tuple[int, dict, str | None]:
    body = orjson.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                     "data": ROW}]})
    request = urllib.request.Request(f"{url}/v2/models/{name}/infer", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, orjson.loads(response.read()), response.headers.get("x-labkit-revision")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read()), exc.headers.get("x-labkit-revision")


def predictor_status(cluster: LocalCluster, name: str = "iris") -> dict[str, Any]:
    return cluster.get(ISVC, name).status.detail["kserve"]["components"]["predictor"]


def split(cluster: LocalCluster, name: str = "iris") -> dict[str, int]:
    return {t["revisionName"]: t["percent"] for t in predictor_status(cluster, name)["traffic"]}


def test_apply_serve_and_report_status_like_kserve(cluster: LocalCluster) -> None:
    cluster.apply(isvc(MODELS / "iris"))
    url = cluster.url("InferenceService", "iris")
    assert url.startswith("http://127.0.0.1:")
    status, doc, revision = infer(url)
    assert status == 200 and doc["model_name"] == "iris" and doc["outputs"][0]["data"] == [0]
    assert revision == "iris-predictor-00001"
    kserve = cluster.get(ISVC, "iris").status.detail["kserve"]
    assert kserve["url"] == "http://iris.default.example.com"
    assert {c["type"]: c["status"] for c in kserve["conditions"]} == {
        "IngressReady": "True", "PredictorConfigurationReady": "True", "PredictorReady": "True",
        "PredictorRouteReady": "True", "Ready": "True"}
    predictor = kserve["components"]["predictor"]
    assert predictor["latestReadyRevision"] == predictor["latestRolledoutRevision"] == "iris-predictor-00001"
    assert predictor["traffic"] == [{"revisionName": "iris-predictor-00001", "percent": 100,
                                     "latestRevision": True}]
    assert kserve["modelStatus"]["transitionStatus"] == "UpToDate"
    [startup] = inference_service(cluster, "iris").startup_breakdown()
    assert startup["process_start_seconds"] > 0 and startup["model_load_seconds"] > 0
    assert startup["spawn_to_ready_seconds"] >= startup["model_load_seconds"]


def test_canary_promote_and_rollback(cluster: LocalCluster) -> None:
    cluster.apply(isvc(MODELS / "iris"))
    cluster.apply(isvc(MODELS / "iris-skops", canaryTrafficPercent=10))
    assert split(cluster) == {"iris-predictor-00002": 10, "iris-predictor-00001": 90}
    predictor = predictor_status(cluster)
    assert predictor["latestRolledoutRevision"] == "iris-predictor-00001"
    served = {infer(cluster.url("InferenceService", "iris"))[2] for _ in range(60)}
    assert served == {"iris-predictor-00001", "iris-predictor-00002"}  # seeded pick: both appear
    # Promote: remove the field.
    cluster.apply(isvc(MODELS / "iris-skops"))
    assert split(cluster) == {"iris-predictor-00002": 100}
    predictor = predictor_status(cluster)
    assert predictor["latestRolledoutRevision"] == "iris-predictor-00002"
    assert predictor["previousRolledoutRevision"] == "iris-predictor-00001"
    # A new canary, then rollback with 0 %.
    cluster.apply(isvc(MODELS / "iris", canaryTrafficPercent=20))
    assert split(cluster) == {"iris-predictor-00003": 20, "iris-predictor-00002": 80}
    cluster.apply(isvc(MODELS / "iris", canaryTrafficPercent=0))
    assert split(cluster) == {"iris-predictor-00003": 0, "iris-predictor-00002": 100}
    assert infer(cluster.url("InferenceService", "iris"))[2] == "iris-predictor-00002"


def test_a_broken_model_update_leaves_the_previous_revision_serving(
        cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.apply(isvc(MODELS / "iris"))
    (tmp_path / "model.joblib").write_bytes(b"definitely not a pickle")
    cluster.apply(isvc(tmp_path))
    kserve = cluster.get(ISVC, "iris").status.detail["kserve"]
    model_status = kserve["modelStatus"]
    assert model_status["transitionStatus"] == "BlockedByFailedLoad"
    assert model_status["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert "cannot unpickle" in model_status["lastFailureInfo"]["message"]
    assert kserve["components"]["predictor"]["latestReadyRevision"] == "iris-predictor-00001"
    status, _, revision = infer(cluster.url("InferenceService", "iris"))
    assert status == 200 and revision == "iris-predictor-00001"


def test_remote_storage_fails_the_apply_naming_the_field(cluster: LocalCluster,
                                                         child_pids: Callable[[], set[int]]) -> None:
    before = child_pids()
    with pytest.raises(ApplyError, match=r"spec\.predictor\.model\.storageUri: .*offline"):
        cluster.apply(isvc("gs://my-team-bucket/models/sklearn/iris"))
    assert child_pids() <= before


def test_scale_to_zero_and_cold_start_from_zero(cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    configure_serving(cluster, autoscaler=AutoscalerConfig(
        scale_to_zero_grace_period=1.0, allow_zero_initial_scale=True))
    cluster.apply(isvc(MODELS / "iris", minReplicas=0, annotations={
        "autoscaling.knative.dev/window": "6s", "autoscaling.knative.dev/initial-scale": "0"}))
    live = inference_service(cluster, "iris")
    assert live.predictor is not None
    revision = live.predictor.revision()
    assert revision.replica_count == 0
    status, doc, _ = infer(live.url)  # held by the activator while the model server starts
    assert status == 200 and doc["outputs"][0]["data"] == [0]
    [cold] = live.cold_starts()
    assert cold.from_zero and cold.seconds is not None
    [startup] = live.startup_breakdown()
    assert 0 < startup["model_load_seconds"] < cold.seconds
    wait_for(lambda: revision.replica_count == 0, 40, "scale to zero")


def test_transformer_in_front_of_the_predictor(cluster: LocalCluster) -> None:
    names = "sepal_length,sepal_width,petal_length,petal_width"
    doc = yaml.safe_load(isvc(MODELS / "iris"))
    doc["spec"]["predictor"]["model"]["protocolVersion"] = "v1"
    doc["spec"]["transformer"] = {"containers": [{
        "name": "kserve-container", "image": "labkit/feature-transformer",
        "args": ["--feature-names", names, "--labels", "setosa,versicolor,virginica"]}]}
    cluster.apply(yaml.safe_dump(doc))
    url = cluster.url("InferenceService", "iris")
    live = inference_service(cluster, "iris")
    assert live.transformer is not None and live.predictor is not None
    assert url == live.transformer.url != live.predictor.url
    instance = dict(zip(names.split(","), ROW))
    request = urllib.request.Request(f"{url}/v1/models/iris:predict", method="POST",
                                     data=orjson.dumps({"instances": [instance, ROW]}))
    with urllib.request.urlopen(request, timeout=60) as response:
        assert orjson.loads(response.read()) == {"predictions": ["setosa", "setosa"]}
        timing = response.headers["server-timing"]
    hops = parse_server_timing(timing)
    assert {"preprocess", "predict", "postprocess", "predictor.predict"} <= set(hops)
    assert hops["predict"] >= hops["predictor.predict"]  # the round trip includes the model call
    kserve = cluster.get(ISVC, "iris").status.detail["kserve"]
    conditions = {c["type"]: c["status"] for c in kserve["conditions"]}
    assert conditions["TransformerReady"] == conditions["Ready"] == "True"
    assert kserve["components"]["transformer"]["latestReadyRevision"] == "iris-transformer-00001"
    bad = urllib.request.Request(f"{url}/v1/models/iris:predict", method="POST",
                                 data=orjson.dumps({"instances": [{"sepal_length": 1}]}))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=60)
    assert err.value.code == 400 and "lacks sepal_width" in orjson.loads(err.value.read())["error"]


def test_logger_posts_cloudevents_and_needs_a_url(cluster: LocalCluster, wait_for: Callable[..., None]) -> None:
    with pytest.raises(ApplyError, match=r"spec\.predictor\.logger\.url: labkit needs"):
        cluster.apply(isvc(MODELS / "iris", logger={"mode": "all"}))
    sink = EventSink()
    try:
        cluster.apply(isvc(MODELS / "iris", logger={"mode": "response", "url": sink.url}))
        assert infer(cluster.url("InferenceService", "iris"))[0] == 200
        wait_for(lambda: len(sink.received) == 1, 20, "the logged response")
        headers, body = sink.received[0]
        assert headers["ce-type"] == "org.kubeflow.serving.inference.response"
        assert headers["ce-inferenceservicename"] == "iris" and headers["ce-namespace"] == "default"
        assert orjson.loads(body)["model_name"] == "iris"
    finally:
        sink.close()


def test_component_fields_become_knative_settings_and_tags_route(cluster: LocalCluster) -> None:
    cluster.apply(isvc(MODELS / "iris", minReplicas=1, maxReplicas=3, scaleMetric="rps",
                       scaleTarget=50, containerConcurrency=4, timeout=30,
                       annotations={"serving.kserve.io/enable-tag-routing": "true"}))
    cluster.apply(isvc(MODELS / "iris-skops", minReplicas=1, maxReplicas=3, scaleMetric="rps",
                       scaleTarget=50, containerConcurrency=4, timeout=30, canaryTrafficPercent=30,
                       annotations={"serving.kserve.io/enable-tag-routing": "true"}))
    live = inference_service(cluster, "iris")
    assert live.predictor is not None
    template = live.predictor.revision().template
    assert template.metadata.annotations == {
        "autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "3",
        "autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/target": "50"}
    assert template.spec.container_concurrency == 4 and template.spec.timeout_seconds == 30
    traffic = predictor_status(cluster)["traffic"]
    assert {(t["tag"], t["revisionName"], t["percent"]) for t in traffic} == {
        ("latest", "iris-predictor-00002", 30), ("prev", "iris-predictor-00001", 70)}
    assert infer(live.predictor.tag_url("prev"))[2] == "iris-predictor-00001"
    assert infer(live.predictor.tag_url("latest"))[2] == "iris-predictor-00002"
