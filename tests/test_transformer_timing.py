"""A transformer's Server-Timing: preprocess, predict (the round trip to the predictor) and
postprocess, then the predictor's own entries prefixed `predictor.`; the built-in transformer
and a kserve.Model transformer (data/models/iris-transformer) say the same names, and a custom
predictor reports its three stages."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Iterator

import orjson
import pytest
from inference_helpers import MODELS, call, model_server

from labkit.inference.custom import CustomModelHandler, Model
from labkit.inference.httpd import Request
from labkit.inference.timing import parse_server_timing, server_timing
from labkit.net import ReplicaProcess, free_port

NAME = "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [6.8, 2.8, 4.8, 1.4]
STAGES = ["preprocess", "predict", "postprocess"]
PREDICTOR = ["predictor.decode", "predictor.predict", "predictor.encode"]


def test_server_timing_nests_the_predictors_entries():
    header = server_timing([("preprocess", 0.001), ("predict", 0.0125)], "decode;dur=0.100, predict;dur=2.000")
    assert header == ("preprocess;dur=1.000, predict;dur=12.500, predictor.decode;dur=0.100, "
                      "predictor.predict;dur=2.000")
    assert parse_server_timing(header) == {"preprocess": 1.0, "predict": 12.5, "predictor.decode": 0.1,
                                           "predictor.predict": 2.0}
    assert server_timing([("predict", 0.002)], None) == "predict;dur=2.000"


class Doubler(Model):
    """A custom predictor: each stage changes the payload, so each must have run."""

    def preprocess(self, payload, headers=None):
        return {"instances": [[2 * x for x in row] for row in payload["instances"]]}

    async def predict(self, payload, headers=None, response_headers=None):
        return {"predictions": [sum(row) for row in payload["instances"]]}

    def postprocess(self, result, headers=None, response_headers=None):
        return {**result, "stages": 3}


def test_a_custom_predictor_reports_its_three_stages():
    model = Doubler("d")
    model.load()
    handler = CustomModelHandler([model])
    request = Request("POST", "/v1/models/d:predict", {}, orjson.dumps({"instances": [[1, 2]]}))

    pending = handler.handle(request)
    assert inspect.iscoroutine(pending)  # an inference call is answered asynchronously
    response = asyncio.run(pending)
    assert response.status == 200 and orjson.loads(response.body) == {"predictions": [6], "stages": 3}
    [timing] = [value for name, value in response.headers if name == "server-timing"]
    assert list(parse_server_timing(timing)) == STAGES
    # The handler's return value is the SDK's: no header added to response_headers.
    assert asyncio.run(model({"instances": [[1, 2]]}))[1] == {}


@pytest.fixture(scope="module")
def predictor() -> Iterator[ReplicaProcess]:
    with model_server(NAME, str(MODELS / "iris")) as server:
        yield server


def _serve(command: list[str], name: str) -> ReplicaProcess:
    port = free_port()
    process = ReplicaProcess([*command, "--http_port", str(port)], ready_path="/v2/health/ready",
                             name=name, port=port)
    process.start(timeout=60)
    return process


@pytest.mark.parametrize("kind", ["built-in", "kserve.Model"])
def test_a_transformer_times_its_stages_and_nests_the_predictors(predictor: ReplicaProcess, kind: str):
    if kind == "built-in":
        command = [sys.executable, "-m", "labkit.inference.transformer", "--predictor_host",
                   f"127.0.0.1:{predictor.port}", "--feature-names", ",".join(FEATURES),
                   "--labels", "setosa,versicolor,virginica"]
    else:
        command = [sys.executable, str(MODELS / "iris-transformer" / "model.py"), "--model_name", NAME,
                   "--predictor_host", f"127.0.0.1:{predictor.port}", "--enable_grpc=false"]
    front = _serve(command, f"transformer-{kind}")
    try:
        body = orjson.dumps({"instances": [dict(zip(FEATURES, ROW))]})
        status, doc, headers = call(front.port, "POST", f"/v1/models/{NAME}:predict", body,
                                    {"Content-Type": "application/json"})
    finally:
        front.stop()
    assert status == 200 and doc["predictions"] == ["versicolor"]
    hops = parse_server_timing(headers["server-timing"])
    assert list(hops) == STAGES + PREDICTOR
    # The round trip contains the predictor's whole answer.
    assert hops["predict"] >= sum(hops[name] for name in PREDICTOR)
