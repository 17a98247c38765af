"""The model server as a real process, driven by real clients: plain HTTP, curl, tritonclient,
and the kserve SDK's REST client (run in its own venv: it pins packages labkit cannot share)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from inference_helpers import MODELS, REPO, EventSink, call, infer_body, model_server
from sklearn.datasets import load_digits, load_iris

from labkit.inference.runtimes import load_model
from labkit.inference.timing import parse_server_timing
from labkit.net import HOST, ReplicaProcess

IRIS_X, _ = load_iris(return_X_y=True)
IRIS = load_model("iris", MODELS / "iris")


@pytest.fixture(scope="module")
def iris() -> Iterator[ReplicaProcess]:
    with model_server("iris", str(MODELS / "iris"), "--model-version", "1") as server:
        yield server


# ---------------------------------------------------------------------------------------------
# health, metadata, routes


def test_health_and_metadata(iris: ReplicaProcess) -> None:
    assert call(iris.port, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert call(iris.port, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert call(iris.port, "GET", "/v2/models/iris/ready")[:2] == (200, {"name": "iris", "ready": True})
    assert call(iris.port, "GET", "/v2/models/iris/versions/1/ready")[0] == 200
    assert call(iris.port, "GET", "/v1/models/iris")[:2] == (200, {"name": "iris", "ready": True})
    status, meta, _ = call(iris.port, "GET", "/v2")
    assert status == 200 and "binary_tensor_data" in meta["extensions"]
    startup = meta["labkit_startup"]
    assert startup["process_start_seconds"] > 0 and startup["model_load_seconds"] > 0
    status, model, _ = call(iris.port, "GET", "/v2/models/iris")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in model["outputs"]] == ["predict", "predict_proba"]


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v2/models/nope", 404, "Model with name nope does not exist"),
        ("POST", "/v2/models/nope/infer", 404, "does not exist"),
        ("GET", "/v1/models/nope", 404, "does not exist"),
        ("GET", "/v2/models/iris/versions/9", 404, "Model iris with version 9 not found"),
        ("GET", "/v2/models/iris/infer", 405, "takes POST"),
        ("POST", "/v2/health/ready", 405, "takes GET"),
        ("GET", "/nowhere", 404, "no route for GET /nowhere"),
        ("POST", "/v1/models/iris:explain", 404, "no route"),
    ],
)
def test_unknown_routes_models_and_methods(iris: ReplicaProcess, method: str, path: str,
                                           status: int, message: str) -> None:
    got, doc, head = call(iris.port, method, path, b"{}" if method == "POST" else None)
    assert got == status and message in doc["error"]
    assert head["content-type"] == "application/json"


# ---------------------------------------------------------------------------------------------
# V2 and V1 over plain HTTP


def test_v2_infer_json(iris: ReplicaProcess) -> None:
    rows = IRIS_X[[0, 60, 120]].tolist()
    status, doc, head = call(iris.port, "POST", "/v2/models/iris/versions/1/infer",
                             infer_body(rows, id="req-1", outputs=[{"name": "predict"}, {"name": "predict_proba"}]),
                             {"Content-Type": "application/json"})
    assert status == 200 and doc["id"] == "req-1" and doc["model_name"] == "iris"
    predict, proba = doc["outputs"]
    assert predict == {"name": "predict", "shape": [3], "datatype": "INT64",
                       "data": IRIS.predict(np.array(rows)).tolist()}
    assert proba["shape"] == [3, 3]
    assert np.allclose(proba["data"], IRIS.predict(np.array(rows), "predict_proba").ravel())
    timing = parse_server_timing(head["server-timing"])
    assert list(timing) == ["decode", "predict", "encode"] and all(v >= 0 for v in timing.values())


def test_v1_predict(iris: ReplicaProcess) -> None:
    rows = IRIS_X[:5].tolist()
    status, doc, _ = call(iris.port, "POST", "/v1/models/iris:predict",
                          orjson.dumps({"instances": rows}))
    assert status == 200 and doc == {"predictions": IRIS.predict(np.array(rows)).tolist()}
    status, doc, _ = call(iris.port, "POST", "/v1/models/iris:predict", b'{"instances": [[1, 2]]}')
    assert status == 400 and "expects 4 features per row, got 2" in doc["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"", 400, "request body is empty"),
        (infer_body([[1.0, 2.0, 3.0]]), 400, "expects 4 features per row, got 3"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [4], "datatype": "FP64",
                                   "data": [1, 2, 3, 4]}]}), 400, "shape must be [rows, features]"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                   "data": [1, 2, 3]}]}), 400, "needs 4 elements, data has 3"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT32",
                                   "data": [1.5, 2, 3, 4]}]}), 400, "INT32 needs integers"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES",
                                   "data": ["a"]}]}), 400, "takes numbers, not BYTES"),
        (orjson.dumps({"inputs": []}), 400, "inputs is missing or empty"),
        (orjson.dumps({"id": "x"}), 400, "inputs is missing"),
        (infer_body([[1, 2, 3, 4]], outputs=[{"name": "explain"}]), 400,
         "has no output 'explain'; it has predict, predict_proba"),
        (orjson.dumps({"inputs": [{"name": "a", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]},
                                  {"name": "b", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
         400, "takes one input tensor"),
    ],
)
def test_v2_errors_are_json_with_the_right_status(iris: ReplicaProcess, body: bytes, status: int,
                                                  message: str) -> None:
    got, doc, _ = call(iris.port, "POST", "/v2/models/iris/infer", body)
    assert got == status and message in doc["error"], doc


def test_curl(iris: ReplicaProcess, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    rows = IRIS_X[:200].tolist() * 1  # > 1 KiB: curl sends Expect: 100-continue
    payload = tmp_path / "req.json"
    payload.write_bytes(infer_body(rows))
    done = subprocess.run([curl, "-sS", "-X", "POST", "-H", "Content-Type: application/json",
                           "--data-binary", f"@{payload}", f"{iris.url}/v2/models/iris/infer"],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["outputs"][0]["data"] == IRIS.predict(np.array(rows)).tolist()


def test_keep_alive_and_pipelining(iris: ReplicaProcess) -> None:
    body = infer_body([IRIS_X[0].tolist()])
    one = (b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
           % (len(body), body))
    with socket.create_connection((HOST, iris.port), timeout=10) as sock:
        sock.sendall(one + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b'{"live":true}'):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {received!r}"
            received += chunk
    assert received.index(b'"model_name"') < received.index(b'{"live":true}')


def test_malformed_http_gets_400_and_the_server_lives(iris: ReplicaProcess) -> None:
    with socket.create_connection((HOST, iris.port), timeout=10) as sock:
        sock.sendall(b"BLAH\x00 / HTTP/9\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    assert call(iris.port, "GET", "/v2/health/live")[0] == 200


# ---------------------------------------------------------------------------------------------
# tritonclient


def test_tritonclient_binary_and_json(iris: ReplicaProcess) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(f"{HOST}:{iris.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
        assert client.get_model_metadata("iris")["name"] == "iris"
        rows = IRIS_X[[0, 70, 140]]
        expected = IRIS.predict(rows)
        for datatype, array in (("FP64", rows), ("FP32", rows.astype(np.float32))):
            for binary in (True, False):
                tensor = httpclient.InferInput("input-0", list(array.shape), datatype)
                tensor.set_data_from_numpy(array, binary_data=binary)
                # JSON-only requests go without a Content-Type header unless one is given.
                for headers in (None, {"Content-Type": "application/json"}):
                    result = client.infer("iris", [tensor], request_id="r7", headers=headers)
                    assert np.array_equal(result.as_numpy("predict"), expected)
                    assert result.get_response()["id"] == "r7"
                proba = client.infer("iris", [tensor], outputs=[
                    httpclient.InferRequestedOutput("predict_proba", binary_data=binary)])
                assert np.allclose(proba.as_numpy("predict_proba"),
                                   IRIS.predict(rows, "predict_proba"), atol=1e-6)
        bad = httpclient.InferInput("input-0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.ones((1, 3), np.float32))
        with pytest.raises(Exception, match="expects 4 features per row, got 3"):
            client.infer("iris", [bad])
        with pytest.raises(Exception, match="does not exist"):
            client.infer("nope", [bad])
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# kserve SDK REST client (its own venv: kserve 0.21 pins cloudevents<2, labkit needs 2.2)

KSERVE_CLIENT = textwrap.dedent('''
    import asyncio, json, sys
    import numpy as np
    from kserve import InferenceRESTClient, RESTConfig, InferRequest, InferInput

    async def main(url):
        out = {}
        v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
        out["live"] = await v2.is_server_live(url)
        out["ready"] = await v2.is_model_ready(url, "iris")
        rows = np.array(json.loads(sys.argv[2]), dtype=np.float64)
        for binary in (False, True):
            tensor = InferInput("input-0", list(rows.shape), "FP64")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            response = await v2.infer(url, InferRequest("iris", [tensor], request_id="k1"), model_name="iris")
            out[f"v2_binary_{binary}"] = response.outputs[0].as_numpy().tolist()
            out["id"] = response.id
        await v2.close()
        v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
        out["v1"] = (await v1.infer(url, {"instances": rows.tolist()}, model_name="iris"))["predictions"]
        await v1.close()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
''')


def kserve_python() -> str | None:
    candidates = [os.environ.get("LABKIT_KSERVE_PYTHON"), str(REPO / "bench" / ".venv" / "kserve" / "bin" / "python")]
    for path in candidates:
        if path and Path(path).exists():
            return path
    return None


@pytest.mark.peer  # needs the kserve SDK venv that `make test` builds
def test_kserve_rest_client(iris: ReplicaProcess) -> None:
    python = kserve_python()
    if python is None:
        pytest.skip("no interpreter with the kserve SDK (set LABKIT_KSERVE_PYTHON or run "
                    "`python bench/bench_inference.py --setup-peers`)")
    rows = IRIS_X[[0, 70, 140]]
    done = subprocess.run([python, "-c", KSERVE_CLIENT, iris.url, orjson.dumps(rows.tolist()).decode()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = orjson.loads(done.stdout.strip().splitlines()[-1])
    expected = IRIS.predict(rows).tolist()
    assert out["live"] and out["ready"] and out["id"] == "k1"
    assert out["v2_binary_False"] == out["v2_binary_True"] == expected
    assert out["v1"] == expected


# ---------------------------------------------------------------------------------------------
# loading failures, batching, shutdown


def test_a_model_that_fails_to_load_leaves_the_server_live_but_not_ready(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"garbage, not a pickle")
    with model_server("broken", str(tmp_path), ready=False) as server:
        status, doc, _ = call(server.port, "GET", "/v2/health/ready")
        while status == 503 and "still loading" in doc["error"]:
            status, doc, _ = call(server.port, "GET", "/v2/health/ready")
        assert status == 503 and "cannot unpickle" in doc["error"]
        assert call(server.port, "GET", "/v2/health/live")[0] == 200
        status, doc, _ = call(server.port, "POST", "/v2/models/broken/infer", infer_body([[1.0]]))
        assert status == 503 and "broken is not ready" in doc["error"] and "cannot unpickle" in doc["error"]
        assert call(server.port, "GET", "/v2/models/broken/ready")[0] == 503
    assert "cannot unpickle" in server.log_tail(50)


def test_remote_storage_is_a_clear_not_ready_reason() -> None:
    with model_server("gcs", "gs://my-team-bucket/models/sklearn/iris", ready=False) as server:
        status, doc, _ = call(server.port, "GET", "/v2/health/ready")
        while "still loading" in doc.get("error", ""):
            status, doc, _ = call(server.port, "GET", "/v2/health/ready")
        assert status == 503 and "storageUri" in doc["error"] and "offline" in doc["error"]


def test_batcher_serves_concurrent_clients_their_own_rows() -> None:
    digits_x, _ = load_digits(return_X_y=True)
    forest = load_model("digits", MODELS / "digits-forest")
    with model_server("digits", str(MODELS / "digits-forest"), "--max-batch-size", "16",
                      "--max-latency-ms", "20") as server:
        results: dict[int, tuple[int, dict, dict]] = {}

        def client(index: int) -> None:
            rows = digits_x[index * 3 : index * 3 + 3].tolist()
            path = "/v2/models/digits/infer" if index % 2 else "/v1/models/digits:predict"
            body = infer_body(rows) if index % 2 else orjson.dumps({"instances": rows})
            results[index] = call(server.port, "POST", path, body)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for index, (status, doc, head) in results.items():
            expected = forest.predict(digits_x[index * 3 : index * 3 + 3]).tolist()
            got = doc["outputs"][0]["data"] if index % 2 else doc["predictions"]
            assert status == 200 and got == expected
            assert "queue;dur=" in head["server-timing"]
        assert len(results) == 12
        batcher = call(server.port, "GET", "/v2")[1]["labkit_batcher"]
        assert batcher["rows"] == 36 and 1 <= batcher["batches"] <= 12
        # Trees accept NaN (missing values) but refuse infinity.
        status, doc, _ = call(server.port, "POST", "/v2/models/digits/infer", *nan_request(64, np.inf))
        assert status == 400 and "cannot predict" in doc["error"] and "infinity" in doc["error"]


def nan_request(features: int, value: float = np.nan) -> tuple[bytes, dict[str, str]]:
    """A binary FP64 row holding a NaN or inf (JSON cannot carry them, binary tensors can)."""
    array = np.ones((1, features))
    array[0, 0] = value
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [1, features], "datatype": "FP64",
                                       "parameters": {"binary_data_size": array.nbytes}}]})
    return header + array.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def test_binary_nan_is_a_400_not_a_crash(iris: ReplicaProcess) -> None:
    status, doc, _ = call(iris.port, "POST", "/v2/models/iris/infer", *nan_request(4))
    assert status == 400 and "cannot predict" in doc["error"] and "NaN" in doc["error"]


def test_sigterm_stops_the_server_cleanly(wait_for: Callable[..., None]) -> None:
    with model_server("iris", str(MODELS / "iris")) as server:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)
        wait_for(lambda: server.poll() is not None, 20, "the server to exit")
        assert server.poll() == 0


def test_cli_help_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "labkit.inference.server", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--storage-uri" in done.stdout


def test_payload_logger_posts_request_and_response_cloudevents(wait_for: Callable[..., None]) -> None:
    sink = EventSink()
    try:
        with model_server("iris", str(MODELS / "iris"), "--logger-url", sink.url,
                          "--inference-service", "sklearn-iris") as server:
            body = infer_body([IRIS_X[0].tolist()])
            status, doc, _ = call(server.port, "POST", "/v2/models/iris/infer", body,
                                  {"X-Request-Id": "abc-1"})
            assert status == 200
            wait_for(lambda: len(sink.received) == 2, 20, "two logged events")
            assert call(server.port, "GET", "/v2/health/live")[0] == 200  # GETs are not logged
        events = {h["ce-type"]: (h, b) for h, b in sink.received}
        request_headers, request_body = events["org.kubeflow.serving.inference.request"]
        response_headers, response_body = events["org.kubeflow.serving.inference.response"]
        assert request_body == body and orjson.loads(response_body) == doc
        for headers in (request_headers, response_headers):
            assert headers["ce-id"] == "abc-1" and headers["ce-specversion"] == "1.0"
            assert headers["ce-inferenceservicename"] == "sklearn-iris"
            assert headers["ce-component"] == "predictor" and headers["ce-endpoint"] == "default"
            assert headers["content-type"] == "application/json"
    finally:
        sink.close()


def test_payload_logger_failures_do_not_fail_inference() -> None:
    with model_server("iris", str(MODELS / "iris"), "--logger-url", "http://127.0.0.1:9/",
                      "--logger-mode", "request") as server:
        for _ in range(3):
            assert call(server.port, "POST", "/v1/models/iris:predict",
                        b'{"instances": [[1, 2, 3, 4]]}')[0] == 200


def test_parse_server_timing() -> None:
    assert parse_server_timing(None) == {}
    assert parse_server_timing('queue;dur=1.5, predict;dur="2", predict;dur=1, cache;desc=hit') == {
        "queue": 1.5, "predict": 3.0, "cache": 0.0}
    with pytest.raises(ValueError, match="dur is not a number"):
        parse_server_timing("predict;dur=fast")
