"""A small, realistic "serverless function": a handwritten-digit classifier over HTTP.

Lab 01 scales this process from zero and times it, so its start-up does the work a real
function does on a cold start: the interpreter starts, heavy libraries are imported
(NumPy, scikit-learn) and a model is built (trained here on the 8x8 digits data set that
ships inside scikit-learn, so nothing is downloaded). Only then does it bind its port,
exactly like a container that is not "ready" until its handler is initialised. After
that, each request is a fast in-memory prediction, the "warm" path.

Run it as a replica: ``PORT=8080 python -m labkit.apps.function``. It binds 127.0.0.1.

HTTP interface (JSON):

- ``GET /`` — readiness and a breakdown of where the start-up time went
  (``{"status": "ready", "init": {"import_seconds": ..., "model_seconds": ...}}``).
- ``GET /predict?index=N`` — classify the N-th bundled example image (a convenient
  request for demos and timing).
- ``POST /predict`` with ``{"instances": [[64 pixel values 0..16], ...]}`` —
  classify the given images; answers ``{"predictions": [digit, ...]}``.

Errors get a 4xx answer whose ``error`` names what was wrong. It serves on bare asyncio through
labkit.apps.serve, as labkit's other apps do (``http.server`` would add its own framing rules).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from labkit import http1
from labkit.apps.serve import serve_until_signalled

PIXELS = 64
MAX_BODY = 1024 * 1024
"""Largest POST body, in bytes (413 beyond): about 4,000 images of 64 pixels as JSON."""


class DigitModel:
    """The function's state: a fitted classifier plus the bundled example images."""

    def __init__(self, pipeline: Any, examples: Any, import_seconds: float, model_seconds: float):
        self.pipeline = pipeline
        self.examples = examples
        self.init = {"import_seconds": round(import_seconds, 4), "model_seconds": round(model_seconds, 4)}

    def predict(self, instances: list[list[float]]) -> list[int]:
        return [int(d) for d in self.pipeline.predict(instances)]


def load_model() -> DigitModel:
    """Import the ML stack and train the classifier: the expensive, once-per-instance work.

    One BLAS/OpenMP thread: an instance serves one request at a time on a small CPU share
    (like a 1-vCPU Lambda), and extra threads only fight over the laptop's cores.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    started = time.perf_counter()
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    imported = time.perf_counter()
    images, labels = load_digits(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    pipeline.fit(images, labels)
    trained = time.perf_counter()
    return DigitModel(pipeline, images, imported - started, trained - imported)


def parse_instances(body: bytes) -> list[list[float]]:
    """Validate a POST body; raise ValueError naming the offending field."""
    try:
        payload = json.loads(body or b"null")
    except json.JSONDecodeError as exc:
        raise ValueError(f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise ValueError('body: expected an object with an "instances" list')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise ValueError("instances: expected a non-empty list of images")
    for i, row in enumerate(instances):
        if not isinstance(row, list) or len(row) != PIXELS:
            raise ValueError(f"instances[{i}]: expected a list of {PIXELS} pixel values")
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"instances[{i}][{j}]: expected a number, got {value!r}")
    return instances


Answer = tuple[HTTPStatus, dict[str, Any]]


def answer(model: DigitModel, method: str, target: str, body: bytes) -> Answer:
    """What the function replies to one request (status and JSON payload)."""
    url = urlsplit(target)
    if method == "POST":
        if url.path != "/predict":
            return HTTPStatus.NOT_FOUND, {"error": f"path {target!r}: POST only to /predict"}
        try:
            instances = parse_instances(body)
        except ValueError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        return HTTPStatus.OK, {"predictions": model.predict(instances)}
    if method not in ("GET", "HEAD"):
        return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"method {method}: use GET or POST"}
    if url.path == "/":
        return HTTPStatus.OK, {"status": "ready", "init": model.init}
    if url.path == "/predict":
        return predict_example(model, parse_qs(url.query).get("index", ["0"])[0])
    return HTTPStatus.NOT_FOUND, {"error": f"path {url.path!r}: not found (try / or /predict)"}


def predict_example(model: DigitModel, raw_index: str) -> Answer:
    count = len(model.examples)
    if not raw_index.isdigit() or int(raw_index) >= count:
        return HTTPStatus.BAD_REQUEST, {"error": f"index: expected an integer 0..{count - 1}, got {raw_index!r}"}
    index = int(raw_index)
    digit = model.predict([model.examples[index].tolist()])[0]
    return HTTPStatus.OK, {"index": index, "predictions": [digit]}


def _encode(status: int, payload: dict[str, Any], keep_alive: bool, head_only: bool) -> bytes:
    body = json.dumps(payload).encode()
    head = (f"HTTP/1.1 {status} {http1.reason(status)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


async def serve_connection(model: DigitModel, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
    """Requests on one kept-alive connection, one at a time (an instance serves one request at a
    time, like a 1-vCPU Lambda); a request labkit.http1 cannot frame gets 400/413/431 and the
    connection closes."""
    while True:
        try:
            request = await http1.read_request(reader, max_body=MAX_BODY, writer=writer)
        except http1.HttpError as exc:
            await http1.refuse(reader, writer,
                               _encode(exc.status, {"error": exc.message}, False, False))
            return
        if request is None:
            return
        status, payload = answer(model, request.method, request.target, request.body)
        writer.write(_encode(status, payload, request.keep_alive, request.method == "HEAD"))
        await writer.drain()
        if not request.keep_alive:
            return


def main() -> None:
    raw_port = os.environ.get("PORT", "")
    if not raw_port.isdigit():
        sys.exit(f"labkit.apps.function: environment variable PORT must be a port number, got {raw_port!r}")
    model = load_model()
    # Bind only once initialised: a platform routes traffic to an instance when its port answers.
    asyncio.run(serve_until_signalled(partial(serve_connection, model), int(raw_port)))


if __name__ == "__main__":
    main()
