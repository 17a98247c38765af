"""A KServe custom transformer for the iris classifier: the kserve SDK's transformer contract.

Clients send V1 rows whose features have names; the transformer turns them into the tensor the
predictor expects, the predictor (any iris model: `sklearn` from a storageUri, or the custom
one in ../iris-custom) classifies, and the transformer names the classes:

    POST /v1/models/<name>:predict
    {"instances": [{"sepal_length": 6.8, "sepal_width": 2.8, "petal_length": 4.8, "petal_width": 1.4}]}
    -> {"predictions": ["versicolor"], "classes": [1]}

Only `preprocess` and `postprocess` are written here. `predict` is kserve.Model's own: it
sends what `preprocess` returned to the predictor named by `--predictor_host` (KServe's
controller passes it, with `--model_name` and `--http_port`) over V1 REST, or V2 with
`--predictor_protocol=v2` (then `preprocess` builds an InferRequest and `postprocess` reads an
InferResponse). On a cluster this file goes into an image with the kserve SDK and the
InferenceService's `spec.transformer.containers` runs `python model.py`; here labkit runs the
same command, and without the SDK the import falls back to labkit.inference.custom.

    python model.py --model_name=iris --predictor_host=127.0.0.1:8081 --http_port=8080
"""

import argparse

import numpy as np

try:
    from kserve import InferInput, InferRequest, InferResponse, Model, ModelServer, model_server
    from kserve.errors import InvalidInput
except ImportError:  # labkit: the same contract without the SDK
    from labkit.inference.custom import (InferInput, InferRequest, InferResponse, InvalidInput,
                                         Model, ModelServer, model_server)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABELS = ["setosa", "versicolor", "virginica"]


class IrisTransformer(Model):
    """Named features in, class names out; the model call in between is the predictor's."""

    def __init__(self, name: str):
        super().__init__(name)
        self.ready = True  # nothing to load: the model lives in the predictor

    def preprocess(self, payload, headers=None):
        rows = []
        for index, instance in enumerate(payload["instances"]):
            if isinstance(instance, dict):
                missing = [f for f in FEATURES if f not in instance]
                if missing:  # the client's mistake: 400, and the predictor is not called
                    raise InvalidInput(f"instances[{index}] lacks {', '.join(missing)}")
                instance = [instance[f] for f in FEATURES]
            rows.append(instance)
        if self.predictor_config.protocol == "v2":
            array = np.asarray(rows, dtype=np.float64)
            tensor = InferInput(name="input-0", shape=list(array.shape), datatype="FP64")
            tensor.set_data_from_numpy(array)
            return InferRequest(model_name=self.name, infer_inputs=[tensor])
        return {"instances": rows}

    def postprocess(self, result, headers=None, response_headers=None):
        if isinstance(result, InferResponse):  # the V2 predictor's answer
            classes = result.outputs[0].as_numpy().tolist()
        else:
            classes = result["predictions"]
        return {"predictions": [LABELS[int(c)] for c in classes], "classes": classes}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer().start([IrisTransformer(args.model_name)])
