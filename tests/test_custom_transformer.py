"""KServe custom transformers: a kserve.Model with `preprocess` and `postprocess` whose default
`predict` calls the predictor over V1 or V2 REST, served by labkit.inference.custom, deployed as
`spec.transformer.containers` (its own Knative Service and revisions, given `--model_name`,
`--predictor_host` and `--http_port` as KServe's controller gives them), a predictor's error
passed back as the SDK passes it, and the same file under the real kserve SDK (peer)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
import pytest
import yaml
from inference_helpers import MODELS, REPO, call, model_server
from test_inference_server import kserve_python

from labkit.cluster import LocalCluster
from labkit.inference.isvc import inference_service, transformer_args
from labkit.net import ReplicaProcess, free_port

TRANSFORMER_FILE = MODELS / "iris-transformer" / "model.py"
SAMPLE = REPO / "data" / "manifests" / "samples" / "kserve" / "custom-transformer.yaml"
NAME = "sklearn-iris-transformer"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]  # the guide's rows: both versicolor
NAMED = {"instances": [dict(zip(FEATURES, row)) for row in ROWS]}
EXPECTED = {"predictions": ["versicolor", "versicolor"], "classes": [1, 1]}
JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------
# what the controller gives the container


def test_the_controller_appends_kserves_arguments_unless_given() -> None:
    assert transformer_args(["--predictor_protocol=v2"], "iris", "127.0.0.1:9", None) == [
        "--predictor_protocol=v2", "--model_name", "iris", "--predictor_host", "127.0.0.1:9",
        "--http_port", "8080"]
    # utils.IncludesArg: an argument equal to the flag or starting with it counts as given
    given = ["--model_name=mine", "--http_port", "9000"]
    assert transformer_args(given, "iris", "h:1", 4) == [
        *given, "--predictor_host", "h:1", "--workers", "4"]


# ---------------------------------------------------------------------------------------------
# the transformer process in front of a model server


@contextmanager
def transformer(predictor_port: int, protocol: str, python: str = sys.executable,
                ) -> Iterator[ReplicaProcess]:
    """The transformer file run as KServe's controller runs it, on a free port."""
    port = free_port()
    process = ReplicaProcess(
        [python, str(TRANSFORMER_FILE), f"--predictor_protocol={protocol}", "--model_name", NAME,
         "--predictor_host", f"127.0.0.1:{predictor_port}", "--http_port", str(port),
         "--enable_grpc=false"],  # the SDK would bind gRPC's 8081 by default
        ready_path="/v2/health/ready", name="iris-transformer", port=port)
    process.start(timeout=60)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def predictor() -> Iterator[ReplicaProcess]:
    with model_server(NAME, str(MODELS / "iris")) as server:
        yield server


def predict(port: int, body: dict) -> tuple[int, dict]:
    status, doc, _ = call(port, "POST", f"/v1/models/{NAME}:predict", orjson.dumps(body), JSON)
    return status, doc


def answers(predictor: ReplicaProcess, python: str) -> dict[str | tuple[str, str], tuple[int, dict]]:
    """What the transformer answers over each predictor protocol: the guide's rows, a row the
    predictor refuses (3 features), a row the transformer refuses (a feature missing)."""
    found: dict[str | tuple[str, str], tuple[int, dict]] = {}
    for protocol in ("v1", "v2"):
        with transformer(predictor.port, protocol, python) as front:
            found[protocol] = predict(front.port, NAMED)
            found[protocol, "predictor error"] = predict(front.port, {"instances": [[1, 2, 3]]})
            found[protocol, "client error"] = predict(front.port, {"instances": [{"sepal_length": 1}]})
    return found


@pytest.fixture(scope="module")
def labkit_answers(predictor: ReplicaProcess) -> dict[str | tuple[str, str], tuple[int, dict]]:
    return answers(predictor, sys.executable)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_preprocess_predictor_postprocess_over_each_protocol(
        labkit_answers: dict, predictor: ReplicaProcess, protocol: str) -> None:
    assert labkit_answers[protocol] == (200, EXPECTED)
    # the predictor alone has no names: preprocess and postprocess made the difference
    assert predict(predictor.port, {"instances": ROWS}) == (200, {"predictions": [1, 1]})
    assert predict(predictor.port, NAMED)[0] == 400


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a_predictor_error_comes_back_as_kserves_500(
        labkit_answers: dict, predictor: ReplicaProcess, protocol: str) -> None:
    # kserve.Model's predict raises httpx.HTTPStatusError with the predictor's error, status
    # and URL; the server's generic handler answers 500 "<type> : <message>".
    path = f"/v1/models/{NAME}:predict" if protocol == "v1" else f"/v2/models/{NAME}/infer"
    status, doc = labkit_answers[protocol, "predictor error"]
    assert status == 500
    assert doc["error"].startswith("HTTPStatusError : ") and "expects 4 features" in doc["error"]
    assert doc["error"].endswith(
        f", '400 Bad Request' for url 'http://127.0.0.1:{predictor.port}{path}'")
    # preprocess's own InvalidInput is the client's 400, before any predictor call
    assert labkit_answers[protocol, "client error"] == (
        400, {"error": "instances[0] lacks sepal_width, petal_length, petal_width"})


def test_an_unreachable_predictor_is_a_500_and_the_transformer_keeps_serving(
        predictor: ReplicaProcess) -> None:
    with transformer(free_port(), "v1") as front:
        status, doc = predict(front.port, NAMED)
        assert status == 500 and doc["error"].startswith("ConnectError : ")
        assert front.running and call(front.port, "GET", "/v2/health/ready")[0] == 200


def test_a_model_with_no_predictor_host_says_so_with_a_501() -> None:
    port = free_port()
    process = ReplicaProcess([sys.executable, str(TRANSFORMER_FILE), "--model_name", NAME],
                             ready_path="/v2/health/ready", name="lonely", port=port)
    process.start(timeout=60)
    try:
        status, doc = predict(process.port, NAMED)
    finally:
        process.stop()
    assert status == 501 and doc["error"].startswith("Could not find predictor_host.")


# ---------------------------------------------------------------------------------------------
# deployed from the sample: its own component and revisions


def test_the_sample_runs_the_transformer_as_its_own_component(
        cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the sample's workingDir is relative to the repository's root
    cluster.apply(SAMPLE)
    live = inference_service(cluster, NAME)
    assert live.transformer is not None and live.predictor is not None
    url = cluster.url("InferenceService", NAME)
    assert url == live.transformer.url != live.predictor.url
    port = int(url.rsplit(":", 1)[1])
    assert predict(port, NAMED) == (200, EXPECTED)
    status, doc = predict(port, {"instances": [[1, 2, 3]]})
    assert status == 500 and "'400 Bad Request' for url 'http://127.0.0.1:" in doc["error"]

    # what KServe's controller appended to the container's args
    assert live.transformer.obj is not None
    [container] = live.transformer.obj.spec.template.spec.containers
    predictor_host = live.predictor.url.split("://", 1)[1]
    assert container.args == ["--predictor_protocol=v2", "--model_name", NAME,
                              "--predictor_host", predictor_host, "--http_port", "8080"]

    kserve = cluster.get("serving.kserve.io/v1beta1/InferenceService", NAME).status.detail["kserve"]
    conditions = {c["type"]: c["status"] for c in kserve["conditions"]}
    assert conditions["TransformerReady"] == conditions["PredictorReady"] == "True"
    components = kserve["components"]
    assert components["transformer"]["latestReadyRevision"] == f"{NAME}-transformer-00001"
    assert components["predictor"]["latestReadyRevision"] == f"{NAME}-predictor-00001"

    # a change to the transformer only: a new transformer revision, the predictor's stays
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"]["transformer"]["containers"][0]["env"] = [{"name": "VERSION", "value": "2"}]
    cluster.apply(yaml.safe_dump(doc))
    kserve = cluster.get("serving.kserve.io/v1beta1/InferenceService", NAME).status.detail["kserve"]
    assert kserve["components"]["transformer"]["latestReadyRevision"] == f"{NAME}-transformer-00002"
    assert kserve["components"]["predictor"]["latestReadyRevision"] == f"{NAME}-predictor-00001"
    assert predict(int(cluster.url("InferenceService", NAME).rsplit(":", 1)[1]), NAMED) == (
        200, EXPECTED)


def test_the_sample_is_valid_for_kserves_crd(crd_validate: Callable[[str], str]) -> None:
    crd_validate(SAMPLE.read_text())


# ---------------------------------------------------------------------------------------------
# the same file under the real kserve SDK


@pytest.mark.peer  # needs the kserve SDK venv that `make test` builds
def test_the_same_transformer_file_answers_the_same_under_the_kserve_sdk(
        labkit_answers: dict, predictor: ReplicaProcess) -> None:
    python = kserve_python()
    if python is None:
        pytest.skip("no interpreter with the kserve SDK (set LABKIT_KSERVE_PYTHON or run "
                    "`python bench/bench_inference.py --setup-peers`)")
    assert answers(predictor, python) == labkit_answers
