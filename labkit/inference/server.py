"""The model server: one scikit-learn model behind KServe's V1 and V2 REST protocols.

Run it as a process, the way a KServe predictor container runs:

    python -m labkit.inference.server --model-name iris --storage-uri data/models/iris \
        --protocol v2 [--max-batch-size 32 --max-latency-ms 5]

It listens on $PORT (or --port) on 127.0.0.1 at once, so liveness answers while the model
loads; readiness turns 200 when the model is loaded, or stays 503 with the reason if it failed.
Cold start is reported in two parts, process start (interpreter, imports, listening) and model
load, in the log's READY line and under `labkit_startup` in `GET /v2`.

Each response carries a `Server-Timing` header (decode, queue, predict, encode in ms) so a
notebook can show where the predictor's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from labkit.http1 import BIND_ADDRESS
from labkit.inference.batcher import BatchConfig, Batcher
from labkit.inference.httpd import Request, Response, serve
from labkit.inference.protocol import (
    ProtocolError,
    RequestedOutput,
    datatype_of,
    decode_infer_request,
    decode_v1_request,
    encode_infer_response,
    encode_v1_response,
    error_body,
)
from labkit.inference.runtimes import LoadedModel, ModelLoadError, load_model
from labkit.inference.storage import StorageError, resolve_storage_uri
from labkit.inference.timing import server_timing

if TYPE_CHECKING:
    from labkit.inference.payload_logger import PayloadLogger

__all__ = ["ModelServer", "Route", "main", "parse_route", "process_age_seconds", "run",
           "stop_on_signals"]

SERVER_NAME = "labkit-inference"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "labkit_startup", "labkit_batcher"]
_JSON_OK = {"ready": True}


def process_age_seconds() -> float | None:
    """Seconds since this process was created (Linux /proc, 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat") as stat:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(now - started_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


class ModelServer:
    """Routes V1/V2 requests to one model; `handle` is the HTTP handler."""

    def __init__(
        self,
        model_name: str,
        storage_uri: str,
        *,
        model_format: str = "sklearn",
        protocol: str = "v2",
        model_version: str | None = None,
        batch: BatchConfig | None = None,
        logger: PayloadLogger | None = None,
    ) -> None:
        if protocol not in ("v1", "v2"):
            raise ValueError(f"protocol must be v1 or v2, got {protocol!r}")
        self.model_name = model_name
        self.storage_uri = storage_uri
        self.model_format = model_format
        self.protocol = protocol
        self.model_version = model_version
        self.batch = batch
        self.logger = logger
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        self.batcher: Batcher | None = None
        self.startup: dict[str, float | None] = {
            "process_start_seconds": None,
            "model_load_seconds": None,
        }

    # loading

    def load(self) -> None:
        """Resolve the storageUri and load the model; on failure keep the reason (not ready)."""
        started = time.perf_counter()
        try:
            path = resolve_storage_uri(self.storage_uri)
            self.model = load_model(self.model_name, path, self.model_format)
        except (StorageError, ModelLoadError) as exc:
            self.load_error = f"model {self.model_name} failed to load: {exc}"
            print(f"ERROR {self.load_error}", file=sys.stderr, flush=True)
            return
        self.startup["model_load_seconds"] = round(time.perf_counter() - started, 4)
        if self.batch is not None:
            self.batcher = Batcher(self.model.predict, self.batch)

    def _ready_model(self) -> LoadedModel:
        if self.model is not None:
            return self.model
        reason = self.load_error or f"model {self.model_name} is still loading"
        raise ProtocolError(f"Model with name {self.model_name} is not ready: {reason}", 503)

    # routing

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        try:
            response = self._route(request)
        except ProtocolError as exc:
            response = Response(exc.status, error_body(str(exc)))
        if self.logger is None or request.method != "POST" or not _is_inference(request.path):
            return response
        if isinstance(response, Response):
            self._log(request, response)
            return response
        return self._log_later(request, response)

    def _log(self, request: Request, response: Response) -> None:
        """As KServe's agent (pkg/logger/handler.go): the id is the request's Ce-Id header
        (labkit also takes the mesh's x-request-id), else a new uuid; the response is logged
        only when it is a 200."""
        assert self.logger is not None
        headers = request.headers
        request_id = headers.get("ce-id") or headers.get("x-request-id") or str(uuid.uuid4())
        self.logger.log(request_id, request.body,
                        response.body if response.status == 200 else None)

    async def _log_later(self, request: Request, pending: Awaitable[Response]) -> Response:
        response = await pending
        self._log(request, response)
        return response

    def _route(self, request: Request) -> Response | Awaitable[Response]:
        route = parse_route(request.method, request.path)
        if route.model is not None:
            self._check_model(route.model, route.version)
        if route.action == "infer":
            return self._infer(request)
        if route.action == "v1_predict":
            return self._v1_predict(request)
        if route.action == "v1_model":
            return _json(200, {"name": self.model_name, "ready": self.model is not None})
        return {
            "live": self._live,
            "ready": self._ready,
            "server": self._server_metadata,
            "alive": self._alive,
            "models": self._model_list,
            "model": self._model_metadata,
            "model_ready": self._model_ready,
        }[route.action]()

    def _check_model(self, name: str, version: str | None) -> None:
        if name != self.model_name:
            raise ProtocolError(
                f"Model with name {name} does not exist (this server serves {self.model_name})",
                404,
            )
        if version is not None and version != self.model_version:
            raise ProtocolError(f"Model {name} with version {version} not found", 404)

    # health and metadata

    def _alive(self) -> Response:
        return _json(200, {"status": "alive"})

    def _live(self) -> Response:
        return _json(200, {"live": True})

    def _ready(self) -> Response:
        if self.model is None:
            return _json(503, {"ready": False, "error": self._not_ready_reason()})
        return _json(200, _JSON_OK)

    def _model_ready(self) -> Response:
        if self.model is None:
            return _json(
                503, {"name": self.model_name, "ready": False, "error": self._not_ready_reason()}
            )
        return _json(200, {"name": self.model_name, "ready": True})

    def _not_ready_reason(self) -> str:
        return self.load_error or f"model {self.model_name} is still loading"

    def _model_list(self) -> Response:
        return _json(200, {"models": [self.model_name]})

    def _server_metadata(self) -> Response:
        return _json(
            200,
            {
                "name": SERVER_NAME,
                "version": SERVER_VERSION,
                "extensions": EXTENSIONS,
                "labkit_startup": self.startup,
                "labkit_batcher": None if self.batcher is None else {
                    "batches": self.batcher.batches, "rows": self.batcher.rows},
            },
        )

    def _model_metadata(self) -> Response:
        model = self._ready_model()
        features = model.n_features if model.n_features is not None else -1
        classes = getattr(model.estimator, "classes_", None)
        outputs = [{"name": "predict", "datatype": "FP64" if classes is None
                    else datatype_of(np.asarray(classes)), "shape": [-1]}]
        if "predict_proba" in model.outputs and classes is not None:
            outputs.append({"name": "predict_proba", "datatype": "FP64",
                            "shape": [-1, len(classes)]})
        doc: dict[str, Any] = {"name": self.model_name}
        if self.model_version is not None:
            doc["versions"] = [self.model_version]
        doc.update(
            platform="",
            inputs=[{"name": "input-0", "datatype": "FP64", "shape": [-1, features]}],
            outputs=outputs,
        )
        return _json(200, doc)

    # inference

    def _infer(self, request: Request) -> Response | Awaitable[Response]:
        started = time.perf_counter()
        model = self._ready_model()
        infer = decode_infer_request(
            request.body, request.headers.get("inference-header-content-length")
        )
        if len(infer.inputs) != 1:
            raise ProtocolError(
                f"model {self.model_name} takes one input tensor of shape [rows, features], "
                f"got {len(infer.inputs)} inputs"
            )
        rows = _rows(infer.inputs[0].array, model, "inputs[0]")
        wanted = infer.outputs or [RequestedOutput("predict", infer.binary_output)]
        for index, output in enumerate(wanted):
            if output.name not in model.outputs:
                raise ProtocolError(
                    f"outputs[{index}].name: model {self.model_name} has no output "
                    f"{output.name!r}; it has {', '.join(model.outputs)}"
                )
        decoded = time.perf_counter()

        def encode(results: list[np.ndarray]) -> Response:
            body, header_length = encode_infer_response(
                self.model_name, self.model_version, infer.id,
                [(o.name, r, o.binary) for o, r in zip(wanted, results)],
            )
            if header_length is None:
                return Response(200, body)
            return Response(200, body, "application/octet-stream",
                            (("inference-header-content-length", str(header_length)),))

        return self._answer(rows, [o.name for o in wanted], encode, decoded - started)

    def _v1_predict(self, request: Request) -> Response | Awaitable[Response]:
        started = time.perf_counter()
        model = self._ready_model()
        rows = _rows(decode_v1_request(request.body), model, "instances")
        return self._answer(rows, ["predict"], lambda results: Response(
            200, encode_v1_response(results[0])), time.perf_counter() - started)

    def _answer(self, rows: np.ndarray, outputs: list[str], encode: Encoder,
                decode_seconds: float) -> Response | Awaitable[Response]:
        """Predict each output (inline, or through the batcher) and encode the answer, with a
        Server-Timing header: decode, [queue,] predict, encode in milliseconds."""
        if self.batcher is not None:
            return self._answer_batched(rows, outputs, encode, decode_seconds)
        assert self.model is not None
        started = time.perf_counter()
        results = [_predict(self.model, rows, output) for output in outputs]
        return _timed(encode, results, [("decode", decode_seconds),
                                        ("predict", time.perf_counter() - started)])

    async def _answer_batched(self, rows: np.ndarray, outputs: list[str], encode: Encoder,
                              decode_seconds: float) -> Response:
        assert self.batcher is not None
        results, timing = [], [("decode", decode_seconds)]
        for output in outputs:
            try:
                share = await self.batcher.submit(rows, output)
            except ValueError as exc:
                return Response(400, error_body(f"model {self.model_name} cannot predict: {exc}"))
            results.append(share.predictions)
            timing += [("queue", share.queue_seconds), ("predict", share.predict_seconds)]
        return _timed(encode, results, timing)


Encoder = Callable[[list[np.ndarray]], Response]


def _timed(encode: Encoder, results: list[np.ndarray],
           timing: list[tuple[str, float]]) -> Response:
    started = time.perf_counter()
    response = encode(results)
    timing = [*timing, ("encode", time.perf_counter() - started)]
    response.headers = (("server-timing", server_timing(timing)), *response.headers)
    return response


def _is_inference(path: str) -> bool:
    return path.endswith(("/infer", ":predict"))


def _rows(array: np.ndarray, model: LoadedModel, where: str) -> np.ndarray:
    """The request's tensor as the model's 2-D input, or a 400 naming what does not fit."""
    if array.ndim != 2:
        raise ProtocolError(
            f"{where}: shape must be [rows, features], got {list(array.shape)}"
        )
    if array.dtype == object:
        raise ProtocolError(f"{where}: model {model.name} takes numbers, not BYTES")
    if model.n_features is not None and array.shape[1] != model.n_features:
        raise ProtocolError(
            f"{where}: model {model.name} expects {model.n_features} features per row, "
            f"got {array.shape[1]} (shape {list(array.shape)})"
        )
    return array


def _predict(model: LoadedModel, rows: np.ndarray, output: str) -> np.ndarray:
    try:
        return model.predict(rows, output)
    except ValueError as exc:  # scikit-learn's way of refusing input (NaN, infinities...)
        raise ProtocolError(f"model {model.name} cannot predict: {exc}") from None


def _json(status: int, doc: Any) -> Response:
    return Response(status, orjson.dumps(doc))


def _require(method: str, wanted: str, path: str) -> None:
    if method != wanted:
        raise ProtocolError(f"{path} takes {wanted}, not {method}", 405)


@dataclass(frozen=True)
class Route:
    """What a request asks for: `action`, and the model (and version) its path names."""

    action: str
    model: str | None = None
    version: str | None = None


_SIMPLE_ROUTES = {"/v2/health/live": "live", "/v2/health/ready": "ready", "/v2": "server",
                  "/v2/": "server", "/": "alive", "/v1/models": "models", "/v2/models": "models"}
_V2_ACTIONS = {"": "model", "ready": "model_ready", "infer": "infer"}


def parse_route(method: str, path: str) -> Route:
    """The V1/V2 route of `method path` (the routes KServe's model servers answer);
    ProtocolError 404 (no such route) or 405 (wrong method). Shared by the built-in model
    server and labkit.inference.custom."""
    if path.startswith("/v2/models/"):
        name, *rest = path[len("/v2/models/"):].split("/")
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in _V2_ACTIONS:
            raise ProtocolError(f"no route for {method} {path}", 404)
        route = Route(_V2_ACTIONS[action], name, version)
    elif path.startswith("/v1/models/"):
        name, colon, verb = path[len("/v1/models/"):].partition(":")
        if "/" in name or (colon and verb != "predict"):
            raise ProtocolError(f"no route for {method} {path}", 404)
        route = Route("v1_predict" if colon else "v1_model", name)
    elif path in _SIMPLE_ROUTES:
        route = Route(_SIMPLE_ROUTES[path])
    else:
        raise ProtocolError(f"no route for {method} {path}", 404)
    _require(method, "POST" if route.action in ("infer", "v1_predict") else "GET", path)
    return route


# ---------------------------------------------------------------------------------------------
# process entry point


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m labkit.inference.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--storage-uri", required=True)
    parser.add_argument("--model-format", default="sklearn")
    parser.add_argument("--model-version", default=None)
    parser.add_argument("--protocol", choices=["v1", "v2"], default="v2",
                        help="the protocol the InferenceService declares (both are served)")
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help="turn the batcher on with this many rows per predict")
    parser.add_argument("--max-latency-ms", type=float, default=5.0)
    parser.add_argument("--logger-url", default=None,
                        help="post every request/response as a CloudEvent here (KServe logger)")
    parser.add_argument("--logger-mode", choices=["all", "request", "response"], default="all")
    parser.add_argument("--inference-service", default=None,
                        help="the InferenceService named in logged events (default: model name)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--exit-on-load-failure", action="store_true",
                        help="exit with code 1 if the model does not load (as KServe's model "
                             "servers do, so the revision fails) instead of staying not ready")
    parser.add_argument("--host", default=BIND_ADDRESS)
    parser.add_argument("--port", type=int, default=None, help="default: $PORT")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    port = args.port if args.port is not None else int(os.environ.get("PORT", "8080"))
    batch = (BatchConfig(args.max_batch_size, args.max_latency_ms)
             if args.max_batch_size is not None else None)
    logger = None
    if args.logger_url:  # imported only when used: it adds httpx and cloudevents to the start
        from labkit.inference.payload_logger import LoggerTarget, PayloadLogger

        logger = PayloadLogger(LoggerTarget(
            args.logger_url, args.logger_mode,
            inference_service=args.inference_service or args.model_name,
            namespace=args.namespace,
            # KServe's agent sends the pod name as the source (--source-uri): it names the
            # revision that answered (<revision>-deployment-...), which tells versions apart.
            source=os.environ.get("HOSTNAME") or f"http://{args.host}:{port}/"))
    server = ModelServer(args.model_name, args.storage_uri, model_format=args.model_format,
                         protocol=args.protocol, model_version=args.model_version, batch=batch,
                         logger=logger)
    listener = await serve(server.handle, args.host, port)
    age = process_age_seconds()
    server.startup["process_start_seconds"] = round(age, 3) if age is not None else None
    loop = asyncio.get_running_loop()
    stop = stop_on_signals()
    await loop.run_in_executor(None, server.load)
    if server.model is None and args.exit_on_load_failure:
        listener.close()
        raise SystemExit(1)
    if server.model is not None:
        print(
            f"READY model={args.model_name} url=http://{args.host}:{port} "
            f"process_start={server.startup['process_start_seconds']}s "
            f"model_load={server.startup['model_load_seconds']}s",
            file=sys.stderr, flush=True,
        )
    await stop
    listener.close()
    if server.batcher is not None:
        server.batcher.close()
    if logger is not None:
        await logger.close()


def stop_on_signals() -> asyncio.Future[None]:
    """A future that SIGTERM (how the kubelet stops a pod) or SIGINT completes."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    return stop


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a server's `main` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    run(_run(_parse(argv)))


if __name__ == "__main__":
    main()
