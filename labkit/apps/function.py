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

Errors get a 4xx answer whose ``error`` names what was wrong.
"""

from __future__ import annotations

import json
import os
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PIXELS = 64


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


def make_handler(model: DigitModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections open, so warm requests do not pay a TCP handshake each.
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the body would wait ~40 ms
        # for the client's delayed ACK on every kept-alive request.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/":
                self.reply(HTTPStatus.OK, {"status": "ready", "init": model.init})
            elif url.path == "/predict":
                self.predict_example(parse_qs(url.query).get("index", ["0"])[0])
            else:
                self.reply(HTTPStatus.NOT_FOUND, {"error": f"path {url.path!r}: not found (try / or /predict)"})

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/predict":
                self.reply(HTTPStatus.NOT_FOUND, {"error": f"path {self.path!r}: POST only to /predict"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                instances = parse_instances(body)
            except ValueError as exc:
                self.reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            self.reply(HTTPStatus.OK, {"predictions": model.predict(instances)})

        def predict_example(self, raw_index: str) -> None:
            count = len(model.examples)
            if not raw_index.isdigit() or int(raw_index) >= count:
                self.reply(HTTPStatus.BAD_REQUEST, {"error": f"index: expected an integer 0..{count - 1}, got {raw_index!r}"})
                return
            index = int(raw_index)
            digit = model.predict([model.examples[index].tolist()])[0]
            self.reply(HTTPStatus.OK, {"index": index, "predictions": [digit]})

        def reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet: a per-request log line on stderr would slow the warm path."""

    return Handler


def main() -> None:
    raw_port = os.environ.get("PORT", "")
    if not raw_port.isdigit():
        sys.exit(f"labkit.apps.function: environment variable PORT must be a port number, got {raw_port!r}")
    model = load_model()
    # Bind only once initialised: a platform routes traffic to an instance when its port answers.
    server = ThreadingHTTPServer(("127.0.0.1", int(raw_port)), make_handler(model))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
