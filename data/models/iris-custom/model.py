"""A KServe custom predictor for the iris model: the kserve SDK's custom-model contract.

On a cluster this file goes into an image with the kserve SDK (`pip install kserve`) and the
InferenceService runs `python model.py --model_name=iris-custom --model_dir=/mnt/models`
(KServe copies `STORAGE_URI` there). Here labkit runs the same command; without the SDK the
import falls back to labkit.inference.custom, which has the same names.

    python model.py --model_name=iris-custom --model_dir=data/models/iris --http_port=8080
"""

import argparse
from pathlib import Path

import joblib

try:
    from kserve import Model, ModelServer, model_server
    from kserve.utils.utils import get_predict_input, get_predict_response
except ImportError:  # labkit: the same contract without the SDK
    from labkit.inference.custom import (Model, ModelServer, get_predict_input,
                                         get_predict_response, model_server)

LABELS = ["setosa", "versicolor", "virginica"]


class IrisModel(Model):
    """V1: {"instances": [[4 features], ...]} -> {"predictions": [class, ...]};
    V2: one FP64/FP32 [rows, 4] input -> output-0, the classes."""

    def __init__(self, name: str, model_dir: str = "/mnt/models"):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.model = None

    def load(self) -> bool:
        (path,) = sorted(self.model_dir.glob("*.joblib"))  # one model file, as KServe expects
        self.model = joblib.load(path)
        self.ready = True
        return self.ready

    def preprocess(self, payload, headers=None):
        # V1 rows may name their features: {"sepal_length": ..., ...} -> a list in order.
        if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
            payload["instances"] = [list(row.values()) if isinstance(row, dict) else row
                                    for row in payload["instances"]]
        return payload

    def predict(self, payload, headers=None, response_headers=None):
        rows = get_predict_input(payload)
        return get_predict_response(payload, self.model.predict(rows), self.name)

    def postprocess(self, result, headers=None, response_headers=None):
        if isinstance(result, dict):  # V1: name the classes
            result["labels"] = [LABELS[int(c)] for c in result["predictions"]]
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", default="/mnt/models")
    args, _ = parser.parse_known_args()
    model = IrisModel(args.model_name, args.model_dir)
    model.load()
    ModelServer().start([model])
