"""KServe custom models: the kserve.Model contract served by labkit.inference.custom over V1 and
V2, KServe's error bodies, a custom predictor as an InferenceService container, and the same
file under the real kserve SDK (peer) answering the same."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from inference_helpers import MODELS, call, infer_body
from sklearn.datasets import load_iris
from test_inference_server import kserve_python

from labkit.cluster import LocalCluster
from labkit.inference import custom
from labkit.inference.custom import InferInput, InferRequest, InferResponse, Model
from labkit.inference.runtimes import load_model
from labkit.manifests import ManifestError, load
from labkit.net import ReplicaProcess, free_port

IRIS_FILE = MODELS / "iris-custom" / "model.py"
IRIS_X, _ = load_iris(return_X_y=True)
EXPECTED = load_model("iris", MODELS / "iris").predict(IRIS_X[[0, 70, 140]]).tolist()
ROWS = IRIS_X[[0, 70, 140]].tolist()
JSON = {"Content-Type": "application/json"}  # the kserve SDK decides V2 JSON vs binary by it

# A predictor that fails the ways a student's code does; "boom" is its model name.
FAILING = textwrap.dedent('''
    try:
        from kserve import Model
        from kserve.errors import InferenceError, InvalidInput
        from kserve.utils.utils import get_predict_input
    except ImportError:
        from labkit.inference.custom import (InferenceError, InvalidInput, Model,
                                             get_predict_input)

    class Failing(Model):
        def load(self):
            self.ready = True
            return True

        async def predict(self, payload, headers=None):
            rows = get_predict_input(payload)
            first = float(rows[0][0])
            if first < 0:
                raise InvalidInput("features must be non-negative")
            if first == 13:
                raise InferenceError("the model backend is down")
            if first == 7:
                return {"not json": object()}
            return {"predictions": [1 / (first - 1)]}  # ZeroDivisionError for 1.0
''')


# ---------------------------------------------------------------------------------------------
# the contract, in process


class Doubler(Model):
    """Sync preprocess, async predict, sync postprocess: the SDK allows each either way."""

    def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        return {"instances": [[2 * x for x in row] for row in payload["instances"]]}

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Any:
        if response_headers is not None:
            response_headers["x-rows"] = str(len(payload["instances"]))
        return {"predictions": [sum(row) for row in payload["instances"]]}

    def postprocess(self, result: Any, headers: dict[str, str] | None = None,
                    response_headers: dict[str, str] | None = None) -> Any:
        return {**result, "post": True}


@pytest.mark.parametrize("headers_wanted", [False, True])
def test_handlers_run_in_kserve_order(headers_wanted: bool) -> None:
    model = Doubler("d", return_response_headers=headers_wanted)
    assert model.load() and model.ready
    result, headers = asyncio.run(model({"instances": [[1, 2], [3, 4]]}))
    assert result == {"predictions": [6, 14], "post": True}
    assert headers == ({"x-rows": "2"} if headers_wanted else {})


def test_the_base_predict_says_it_is_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="model m does not implement predict"):
        asyncio.run(Model("m")({"instances": [[1]]}))


def test_validate_refuses_instances_that_are_not_a_list() -> None:
    with pytest.raises(custom.InvalidInput, match='Expected "instances" to be a list'):
        Model("m").validate({"instances": 3})


def test_v2_objects_and_helpers() -> None:
    tensor = InferInput("x", [2, 2], "FP32", [1, 2, 3, 4])
    assert tensor.as_numpy().dtype == np.float32 and tensor.as_numpy().shape == (2, 2)
    with pytest.raises(custom.InferenceError, match="unexpected datatype FP64"):
        tensor.set_data_from_numpy(np.zeros((2, 2)))
    with pytest.raises(custom.InferenceError, match=r"unexpected numpy array shape \[3\]"):
        tensor.set_data_from_numpy(np.zeros(3, dtype=np.float32))
    tensor.set_data_from_numpy(np.ones((2, 2), dtype=np.float32))
    assert tensor.data == [1.0, 1.0, 1.0, 1.0]
    request = InferRequest("m", [tensor], request_id="r1")
    assert request.get_input_by_name("x") is tensor and request.get_input_by_name("y") is None
    assert request.to_rest()["inputs"][0]["shape"] == [2, 2]
    response = custom.get_predict_response(request, np.array([0, 2]), "m")
    assert isinstance(response, InferResponse) and response.id == "r1"
    assert response.to_rest()["outputs"] == [
        {"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 2]}]
    assert custom.get_predict_response({"instances": []}, np.array([1.5]), "m") == {
        "predictions": [1.5]}
    assert custom.get_predict_input({"inputs": [[1, 2]]}).tolist() == [[1, 2]]
    with pytest.raises(custom.InvalidInput):
        custom.get_predict_input({"instances": "rows"})


def test_load_class_errors_name_the_problem(tmp_path: Path) -> None:
    for spec, message in [("nocolon", "write module:Class"),
                          ("labkit.nope:X", "cannot import labkit.nope"),
                          ("labkit.inference.custom:Nope", "has no class 'Nope'"),
                          (f"{tmp_path}/missing.py:X", "no file")]:
        with pytest.raises(SystemExit, match=message):
            custom.load_class(spec)
    (tmp_path / "mine.py").write_text("class Mine:\n    pass\n")
    assert custom.load_class(f"{tmp_path}/mine.py:Mine").__name__ == "Mine"


def test_model_server_prefers_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    assert custom.ModelServer(http_port=8080).http_port == 9123  # Knative's $PORT contract
    monkeypatch.delenv("PORT")
    assert custom.ModelServer(http_port=8085).http_port == 8085


# ---------------------------------------------------------------------------------------------
# served, as processes


@contextmanager
def served(command: list[str], cwd: Path | None = None,
           port: int | None = None) -> Iterator[ReplicaProcess]:
    """A custom model server process on a free $PORT, once it answers /v2/health/ready."""
    server = ReplicaProcess(command, ready_path="/v2/health/ready", name="custom-model",
                            cwd=str(cwd) if cwd else None, port=port)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


def iris_command(python: str = sys.executable, http_port: int = 8080) -> list[str]:
    # KServe's way: the file starts ModelServer().start([model]) itself. labkit serves on $PORT
    # whatever --http_port says (on a cluster both are 8080); the SDK takes --http_port.
    return [python, str(IRIS_FILE), "--model_name=iris-custom", f"--model_dir={MODELS / 'iris'}",
            f"--http_port={http_port}"]


@pytest.fixture(scope="module")
def iris() -> Iterator[ReplicaProcess]:
    with served(iris_command()) as server:
        yield server


def test_v1_predict_runs_preprocess_predict_postprocess(iris: ReplicaProcess) -> None:
    status, doc, head = call(iris.port, "POST", "/v1/models/iris-custom:predict",
                             orjson.dumps({"instances": ROWS}))
    assert status == 200 and head["content-type"] == "application/json"
    assert doc == {"predictions": EXPECTED,
                   "labels": [["setosa", "versicolor", "virginica"][c] for c in EXPECTED]}
    named = [dict(zip(["sl", "sw", "pl", "pw"], row)) for row in ROWS]  # preprocess's job
    assert call(iris.port, "POST", "/v1/models/iris-custom:predict",
                orjson.dumps({"instances": named}))[1]["predictions"] == EXPECTED


def test_v2_infer_json_and_metadata(iris: ReplicaProcess) -> None:
    status, doc, _ = call(iris.port, "POST", "/v2/models/iris-custom/infer",
                          infer_body(ROWS, id="req-7"))
    assert status == 200 and doc["id"] == "req-7" and doc["model_name"] == "iris-custom"
    assert doc["outputs"] == [{"name": "output-0", "shape": [3], "datatype": "INT64",
                               "data": EXPECTED}]
    assert call(iris.port, "GET", "/v2/models/iris-custom/ready")[:2] == (
        200, {"name": "iris-custom", "ready": True})
    assert call(iris.port, "GET", "/v2/models")[1] == {"models": ["iris-custom"]}
    assert call(iris.port, "GET", "/v2/models/iris-custom")[1]["name"] == "iris-custom"
    status, doc, _ = call(iris.port, "POST", "/v2/models/other/infer", infer_body(ROWS))
    assert status == 404 and doc == {"error": "Model with name other does not exist."}
    status, doc, _ = call(iris.port, "POST", "/v2/models/iris-custom/infer", b"{")
    assert status == 400 and "not valid JSON" in doc["error"]


def test_tritonclient_binary_tensors(iris: ReplicaProcess) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{iris.port}")
    try:
        assert client.is_server_live() and client.is_model_ready("iris-custom")
        tensor = triton.InferInput("input-0", [3, 4], "FP64")
        tensor.set_data_from_numpy(np.array(ROWS), binary_data=True)
        result = client.infer("iris-custom", [tensor],
                              outputs=[triton.InferRequestedOutput("output-0", binary_data=True)])
        assert result.as_numpy("output-0").tolist() == EXPECTED
    finally:
        client.close()


def test_a_predictor_that_raises_gets_kserve_error_bodies_and_the_server_lives(
        tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(FAILING)
    command = [sys.executable, "-m", "labkit.inference.custom", "--model-class",
               "failing:Failing", "--model-name", "boom"]
    with served(command, cwd=tmp_path) as server:
        def predict(first: float) -> tuple[int, dict]:
            got = call(server.port, "POST", "/v1/models/boom:predict",
                       orjson.dumps({"instances": [[first, 0.0]]}))
            return got[0], got[1]

        assert predict(1.0) == (500, {"error": "ZeroDivisionError : float division by zero"})
        assert predict(-1.0) == (400, {"error": "features must be non-negative"})
        assert predict(13.0) == (500, {"error": "the model backend is down"})
        status, doc = predict(7.0)
        assert status == 500 and "returned a dict that is not JSON" in doc["error"]
        assert predict(3.0) == (200, {"predictions": [0.5]})  # still serving
        assert server.running
        log = server.log_tail(200)
    assert "Traceback" in log and "ZeroDivisionError" in log and "failing.py" in log


def test_a_model_that_never_becomes_ready_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "lazy.py").write_text(textwrap.dedent('''
        import labkit.inference.custom as kserve

        class Lazy(kserve.Model):
            def load(self):
                return False  # forgot self.ready = True
    '''))
    done = subprocess.run([sys.executable, "-m", "labkit.inference.custom", "--model-class",
                           "lazy:Lazy", "--model-name", "lazy"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PORT": str(free_port())})
    assert done.returncode != 0 and "no model is ready: lazy" in done.stderr


# ---------------------------------------------------------------------------------------------
# deployed as an InferenceService predictor


def custom_isvc(name: str = "iris-custom") -> str:
    """The YAML a real cluster takes too (its image holds model.py and the kserve SDK)."""
    return yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"containers": [{
            "name": "kserve-container", "image": "docker.io/student/iris-custom:v1",
            "command": ["python", "model.py"],
            "args": [f"--model_name={name}", f"--model_dir={MODELS / 'iris'}",
                     "--http_port=8080"],
            "workingDir": str(IRIS_FILE.parent),
        }]}},
    }, sort_keys=False)


def test_custom_predictor_as_an_inference_service(cluster: LocalCluster) -> None:
    cluster.apply(custom_isvc())
    url = cluster.url("InferenceService", "iris-custom")
    port = int(url.rsplit(":", 1)[1])
    status, doc, _ = call(port, "POST", "/v1/models/iris-custom:predict",
                          orjson.dumps({"instances": ROWS}))
    assert status == 200 and doc["predictions"] == EXPECTED
    status, doc, _ = call(port, "POST", "/v2/models/iris-custom/infer", infer_body(ROWS))
    assert status == 200 and doc["outputs"][0]["data"] == EXPECTED
    kserve = cluster.get("serving.kserve.io/v1beta1/InferenceService", "iris-custom").status
    assert kserve.ready


def test_custom_predictor_yaml_is_valid_for_kserves_crd(crd_validate: Callable[[str], str]) -> None:
    crd_validate(custom_isvc())


def test_custom_predictor_problems_name_the_field() -> None:
    doc = yaml.safe_load(custom_isvc())
    doc["spec"]["predictor"]["model"] = {"modelFormat": {"name": "sklearn"}, "storageUri": "/m"}
    with pytest.raises(ManifestError, match=r"spec\.predictor: exactly one of \[model, sklearn, "
                                            r"containers\] must be specified"):
        load(yaml.safe_dump(doc))
    doc = yaml.safe_load(custom_isvc())
    del doc["spec"]["predictor"]["containers"][0]["command"]
    with pytest.raises(ManifestError, match=r"spec\.predictor\.containers\[0\]\.image: .*no "
                                            r"command"):
        load(yaml.safe_dump(doc))
    doc["spec"]["predictor"]["containers"] *= 2
    with pytest.raises(ManifestError, match="runs exactly one container"):
        load(yaml.safe_dump(doc))


# ---------------------------------------------------------------------------------------------
# the same file under the real kserve SDK


@pytest.mark.peer  # needs the kserve SDK venv that `make test` builds
def test_the_same_model_file_answers_the_same_under_the_kserve_sdk(tmp_path: Path) -> None:
    python = kserve_python()
    if python is None:
        pytest.skip("no interpreter with the kserve SDK (set LABKIT_KSERVE_PYTHON or run "
                    "`python bench/bench_inference.py --setup-peers`)")
    (tmp_path / "failing.py").write_text(FAILING)
    failing_main = ("import sys, kserve; sys.path.insert(0, '.'); from failing import Failing; "
                    "m = Failing('boom'); m.load(); kserve.ModelServer().start([m])")
    answers: dict[tuple[str, str | float], tuple[Any, ...]] = {}
    for who, python_for in (("labkit", sys.executable), ("kserve", python)):
        port = free_port()
        # no gRPC: the SDK would bind its default 8081, which another process may hold
        with served([*iris_command(python_for, port), "--enable_grpc=false"],
                    port=port) as server:
            answers[who, "v1"] = call(server.port, "POST", "/v1/models/iris-custom:predict",
                                      orjson.dumps({"instances": ROWS}), JSON)[:2]
            answers[who, "meta"] = call(server.port, "GET", "/v2/models/iris-custom")[:2]
            status, doc, _ = call(server.port, "POST", "/v2/models/iris-custom/infer",
                                  infer_body(ROWS, id="same"), JSON)
            answers[who, "v2"] = (status, doc["outputs"][0]["data"], doc["id"])
        command = ([python_for, "-c", failing_main] if who == "kserve" else
                   [python_for, "-m", "labkit.inference.custom", "--model-class",
                    "failing:Failing", "--model-name", "boom"])
        port = free_port()
        with served([*command, f"--http_port={port}", "--enable_grpc=false"],
                    cwd=tmp_path, port=port) as server:
            for first in (1.0, -1.0, 13.0):
                answers[who, first] = call(server.port, "POST", "/v1/models/boom:predict",
                                           orjson.dumps({"instances": [[first, 0.0]]}), JSON)[:2]
    for key in ("v1", "v2", "meta", 1.0, -1.0, 13.0):
        assert answers["labkit", key] == answers["kserve", key], key
    assert answers["labkit", "v1"][1]["predictions"] == EXPECTED
