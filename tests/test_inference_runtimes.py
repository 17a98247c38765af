"""Model loading: skops is safe, joblib warns, bad folders and files say what is wrong."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from labkit.inference.runtimes import ModelLoadError, load_model, supported_formats

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "data" / "models"
IRIS_X, IRIS_Y = load_iris(return_X_y=True)


def test_committed_iris_model_predicts_like_a_fresh_fit(capsys: pytest.CaptureFixture[str]) -> None:
    model = load_model("iris", MODELS / "iris")
    fresh = LogisticRegression(max_iter=1000, random_state=0).fit(IRIS_X, IRIS_Y)
    assert np.array_equal(model.predict(IRIS_X), fresh.predict(IRIS_X))
    assert model.n_features == 4 and set(model.outputs) == {"predict", "predict_proba"}
    assert model.predict(IRIS_X[:3], "predict_proba").shape == (3, 3)
    assert "runs any code" in capsys.readouterr().err  # the pickle warning is visible


def test_skops_loads_without_the_pickle_warning(capsys: pytest.CaptureFixture[str]) -> None:
    model = load_model("iris", MODELS / "iris-skops")
    assert model.path.suffix == ".skops"
    assert "runs any code" not in capsys.readouterr().err
    assert np.array_equal(model.predict(IRIS_X), load_model("i", MODELS / "iris").predict(IRIS_X))


def test_skops_refuses_untrusted_types(tmp_path: Path) -> None:
    import skops.io

    skops.io.dump({"model": Path("/etc")}, tmp_path / "model.skops")  # a type skops does not trust
    with pytest.raises(ModelLoadError, match="not trusted"):
        load_model("x", tmp_path)


def test_digits_forest_has_100_trees() -> None:
    model = load_model("digits", MODELS / "digits-forest")
    assert len(model.estimator.estimators_) == 100 and model.n_features == 64


def test_wrong_feature_count_names_the_model() -> None:
    model = load_model("iris", MODELS / "iris")
    with pytest.raises(ValueError, match="model iris expects 4 features per row, got 3"):
        model.predict(np.ones((1, 3)))


def test_folder_problems(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model file in this folder"):
        load_model("x", tmp_path)
    joblib.dump(LinearRegression().fit([[0], [1]], [0, 1]), tmp_path / "model.joblib")
    joblib.dump(LinearRegression().fit([[0], [1]], [0, 1]), tmp_path / "model.pkl")
    with pytest.raises(ModelLoadError, match="more than one model file"):
        load_model("x", tmp_path)


def test_corrupt_and_wrong_objects(tmp_path: Path) -> None:
    (tmp_path / "bad.joblib").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelLoadError, match="cannot unpickle"):
        load_model("x", tmp_path / "bad.joblib")
    (tmp_path / "bad.skops").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a readable skops file"):
        load_model("x", tmp_path / "bad.skops")
    joblib.dump({"weights": [1, 2]}, tmp_path / "dict.joblib")
    with pytest.raises(ModelLoadError, match="dict, which has no predict"):
        load_model("x", tmp_path / "dict.joblib")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="unknown model file type '.onnx'"):
        load_model("x", tmp_path / "model.onnx")


def test_unsupported_format_lists_the_supported() -> None:
    assert "sklearn" in supported_formats()
    with pytest.raises(ModelLoadError, match="modelFormat 'tensorflow' is not supported.*sklearn"):
        load_model("x", MODELS / "iris", "tensorflow")


def test_regressor_has_only_predict(tmp_path: Path) -> None:
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), tmp_path / "model.joblib")
    model = load_model("line", tmp_path)
    assert set(model.outputs) == {"predict"}
    assert model.predict(np.array([[0.5]]))[0] == pytest.approx(1.0)
