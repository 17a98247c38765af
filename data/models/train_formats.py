"""Train the iris models of the other KServe model formats, reproducibly.

    python data/models/train_formats.py

- iris-xgboost/model.bst    XGBoost, `multi:softmax` (predicts the class), as KServe's xgboost
                            sample trains it (docs/samples/v1beta1/xgboost)
- iris-lightgbm/model.bst   LightGBM, `multiclass` (predicts class probabilities), as KServe's
                            lightgbm sample trains it (docs/samples/v1beta1/lightgbm)
- iris-onnx/model.onnx      the scikit-learn logistic regression of iris/ (train.py) converted
                            with skl2onnx: outputs `label` and `probabilities` (no ZipMap, so
                            both are plain tensors a V2 client can read)

Seeded and single-threaded, so running it again gives the same predictions.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_iris

from train import SEED, train_iris  # the logistic regression of data/models/iris

HERE = Path(__file__).resolve().parent


def train_xgboost(x: np.ndarray, y: np.ndarray) -> Any:
    import xgboost

    params = {"max_depth": 3, "eta": 0.1, "num_class": 3, "objective": "multi:softmax",
              "seed": SEED, "nthread": 1}
    return xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=20)


def train_lightgbm(x: np.ndarray, y: np.ndarray) -> Any:
    import lightgbm

    params = {"objective": "multiclass", "num_class": 3, "seed": SEED, "num_threads": 1,
              "deterministic": True, "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5}
    return lightgbm.train(params, lightgbm.Dataset(x, label=y), num_boost_round=20)


def save_booster(booster: Any, folder: str) -> Path:
    """Both boosters save with save_model; KServe's samples name the file model.bst."""
    path = HERE / folder / "model.bst"
    path.parent.mkdir(exist_ok=True)
    with warnings.catch_warnings():  # xgboost: "Saving model in the UBJSON format as default"
        warnings.simplefilter("ignore", UserWarning)
        booster.save_model(str(path))
    return path


def save_onnx() -> Path:
    from skl2onnx import to_onnx

    model = train_iris()
    onnx = to_onnx(model, np.zeros((1, 4), dtype=np.float32), target_opset=17,
                   options={id(model): {"zipmap": False}})
    path = HERE / "iris-onnx" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(onnx.SerializeToString())
    return path


def main() -> None:
    x, y = load_iris(return_X_y=True)
    for path in (save_booster(train_xgboost(x, y), "iris-xgboost"),
                 save_booster(train_lightgbm(x, y), "iris-lightgbm"), save_onnx()):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
