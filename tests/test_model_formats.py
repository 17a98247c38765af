"""KServe's other model formats: XGBoost, LightGBM and ONNX load from data/models, are served over
V1 and V2 (tritonclient, binary and JSON), and a missing package or unknown format says which."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from inference_helpers import MODELS, call, infer_body, model_server
from sklearn.datasets import load_iris

from labkit.cluster import LocalCluster
from labkit.inference import runtimes
from labkit.inference.runtimes import FORMATS, ModelLoadError, format_problem, load_model
from labkit.net import ReplicaProcess

X, Y = load_iris(return_X_y=True)
ROWS = X[[0, 70, 140]]
FOLDERS = {"xgboost": "iris-xgboost", "lightgbm": "iris-lightgbm", "onnx": "iris-onnx"}


def train_formats() -> Any:
    """data/models/train_formats.py, the script that made the committed models (a script
    beside the models, with train.py, not a package: imported from that folder)."""
    sys.path.insert(0, str(MODELS))
    try:
        return importlib.import_module("train_formats")
    finally:
        sys.path.remove(str(MODELS))


def fresh(model_format: str) -> np.ndarray:
    """What the committed model predicts for every iris row, recomputed by retraining it with
    data/models/train_formats.py's own code (so the files are what that script makes)."""
    script = train_formats()
    if model_format == "xgboost":
        import xgboost

        return script.train_xgboost(X, Y).predict(xgboost.DMatrix(X))
    if model_format == "lightgbm":
        return script.train_lightgbm(X, Y).predict(X)
    return script.train_iris().predict(X)


# ---------------------------------------------------------------------------------------------
# the format table


def test_formats_are_kserves_names_with_their_runtimes() -> None:
    assert {name: f.serving_runtime for name, f in FORMATS.items()} == {
        "sklearn": "kserve-sklearnserver", "xgboost": "kserve-xgbserver",
        "lightgbm": "kserve-lgbserver", "onnx": "kserve-tritonserver"}
    assert runtimes.supported_formats() == ["sklearn", "xgboost", "lightgbm", "onnx"]


def test_unknown_format_names_what_serves_it_on_a_cluster() -> None:
    problem = format_problem("pytorch")
    assert problem is not None and "no runtime" in problem and "TorchServe" in problem
    with pytest.raises(ModelLoadError, match="modelFormat 'pytorch' is not supported here"):
        load_model("x", MODELS / "iris", "pytorch")


def test_missing_package_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "xgboost" else real(name, *a))
    assert "xgboost" not in runtimes.supported_formats()
    with pytest.raises(ModelLoadError, match="needs the Python package xgboost.*pip install "
                                             "xgboost-cpu"):
        load_model("x", MODELS / "iris-xgboost", "xgboost")
    from labkit.manifests import ManifestError, load

    manifest = yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"},
                                         "storageUri": str(MODELS / "iris-xgboost")}}}})
    with pytest.raises(ManifestError, match=r"spec\.predictor\.model\.modelFormat\.name: "
                                            r"modelFormat 'xgboost' cannot be served here: .*"
                                            r"pip install xgboost-cpu"):
        load(manifest)


def test_a_folder_without_the_formats_file_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no model file in this folder for modelFormat "
                                             r"onnx \(looked for \*\.onnx\)"):
        load_model("x", MODELS / "iris", "onnx")
    (tmp_path / "model.bst").write_bytes(b"not a booster")
    with pytest.raises(ModelLoadError, match="not a readable LightGBM model"):
        load_model("x", tmp_path, "lightgbm")
    with pytest.raises(ModelLoadError, match="not a readable XGBoost model"):
        load_model("x", tmp_path, "xgboost")
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="not a readable ONNX model"):
        load_model("x", tmp_path / "model.onnx", "onnx")


# ---------------------------------------------------------------------------------------------
# the committed models


@pytest.mark.parametrize("model_format", list(FOLDERS))
def test_committed_model_predicts_what_the_training_script_makes(model_format: str) -> None:
    model = load_model("iris", MODELS / FOLDERS[model_format], model_format)
    assert model.model_format == model_format and model.n_features == 4
    got = model.predict(X)
    assert np.allclose(got, fresh(model_format), atol=1e-6)
    classes = got.argmax(axis=1) if got.ndim == 2 else got
    assert (classes == Y).mean() > 0.9


def test_onnx_serves_the_graphs_own_outputs_too() -> None:
    model = load_model("iris", MODELS / "iris-onnx", "onnx")
    assert set(model.outputs) == {"predict", "predict_proba", "label", "probabilities"}
    # float32 in the graph, float64 in scikit-learn
    assert np.allclose(model.predict(X, "probabilities"),
                       train_formats().train_iris().predict_proba(X), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# served over V1 and V2


@pytest.fixture(scope="module", params=list(FOLDERS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, ReplicaProcess]]:
    model_format = request.param
    with model_server(model_format, str(MODELS / FOLDERS[model_format]),
                      "--model-format", model_format) as server:
        yield model_format, server


def test_v1_and_v2_json(served: tuple[str, ReplicaProcess]) -> None:
    model_format, server = served
    expected = load_model("x", MODELS / FOLDERS[model_format], model_format).predict(ROWS)
    status, doc, _ = call(server.port, "POST", f"/v1/models/{model_format}:predict",
                          orjson.dumps({"instances": ROWS.tolist()}))
    assert status == 200 and np.allclose(doc["predictions"], expected)
    status, doc, _ = call(server.port, "POST", f"/v2/models/{model_format}/infer",
                          infer_body(ROWS.tolist()))
    assert status == 200 and doc["outputs"][0]["shape"] == list(expected.shape)
    assert np.allclose(np.reshape(doc["outputs"][0]["data"], expected.shape), expected)
    status, doc, _ = call(server.port, "POST", f"/v2/models/{model_format}/infer",
                          infer_body([[1.0, 2.0, 3.0]]))
    assert status == 400 and "expects 4 features per row, got 3" in doc["error"]


def test_tritonclient_binary(served: tuple[str, ReplicaProcess]) -> None:
    import tritonclient.http as triton

    model_format, server = served
    expected = load_model("x", MODELS / FOLDERS[model_format], model_format).predict(ROWS)
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_model_ready(model_format)
        for datatype, dtype in (("FP64", np.float64), ("FP32", np.float32)):
            tensor = triton.InferInput("input-0", list(ROWS.shape), datatype)
            tensor.set_data_from_numpy(ROWS.astype(dtype), binary_data=True)
            result = client.infer(model_format, [tensor], outputs=[
                triton.InferRequestedOutput("predict", binary_data=True)])
            assert np.allclose(result.as_numpy("predict"), expected, atol=1e-6), datatype
    finally:
        client.close()


def test_unknown_format_leaves_the_server_not_ready_with_the_reason() -> None:
    with model_server("tf", str(MODELS / "iris"), "--model-format", "tensorflow",
                      ready=False) as server:
        status, doc, _ = call(server.port, "GET", "/v2/health/ready")
        while "still loading" in doc.get("error", ""):
            status, doc, _ = call(server.port, "GET", "/v2/health/ready")
        assert status == 503 and "modelFormat 'tensorflow' is not supported here" in doc["error"]


def test_an_onnx_inference_service(cluster: LocalCluster) -> None:
    cluster.apply(yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris-onnx"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2",
                                         "storageUri": str(MODELS / "iris-onnx")}}}}))
    port = int(cluster.url("InferenceService", "iris-onnx").rsplit(":", 1)[1])
    status, doc, _ = call(port, "POST", "/v2/models/iris-onnx/infer", orjson.dumps({
        "inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32",
                    "data": ROWS.ravel().tolist()}],
        "outputs": [{"name": "label"}, {"name": "probabilities"}]}))
    assert status == 200 and [o["name"] for o in doc["outputs"]] == ["label", "probabilities"]
    assert doc["outputs"][0]["data"] == train_formats().train_iris().predict(ROWS).tolist()
