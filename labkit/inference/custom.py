"""KServe custom models without the kserve SDK: the `kserve.Model` contract, served by labkit.

A student's custom predictor subclasses `Model` and overrides `load`, `preprocess`, `predict`
and `postprocess`, with the names and signatures of the kserve SDK (python/kserve/kserve/
model.py, `Model`; https://kserve.github.io/website/docs/model-serving/predictive-inference/
frameworks/custom-predictor). The SDK itself cannot be installed beside labkit (it pins
cloudevents<2), so this module carries the same contract, re-exports the request/response
objects of labkit.inference.infer_types (`InferRequest`, `InferInput`, `InferResponse`,
`InferOutput`, `get_predict_input`, `get_predict_response`, `InvalidInput`, `InferenceError`)
and serves them over V1 and V2 REST with labkit's model server (labkit.inference.server
routes, labkit.inference.protocol codecs). A class written for KServe ports unchanged; only
the import differs:

    try:                                            # on a cluster, in the image
        from kserve import Model, ModelServer, model_server
        from kserve.utils.utils import get_predict_input, get_predict_response
    except ImportError:                             # here: the same names, one module
        from labkit.inference.custom import (Model, ModelServer, model_server,
                                             get_predict_input, get_predict_response)

    class Iris(Model):
        def load(self): ...; self.ready = True
        def predict(self, payload, headers=None, response_headers=None): ...

    if __name__ == "__main__":
        parser = argparse.ArgumentParser(parents=[model_server.parser])
        args, _ = parser.parse_known_args()
        model = Iris(args.model_name); model.load()
        ModelServer().start([model])

(data/models/iris-custom/model.py is a complete one; kserve.errors' `InvalidInput` and
`InferenceError` are here too.)

A transformer is the same kind of class with `preprocess` and `postprocess` overridden and
`predict` left alone: the default `predict` sends the preprocessed payload to the predictor
given by `--predictor_host` (KServe's controller passes it, with `--model_name` and
`--http_port`) over V1 or V2 REST (`--predictor_protocol`, or the older `--protocol`), as
kserve.Model does (labkit.inference.transformer.PredictorClient). A predictor's error answer
comes back as KServe's 500 `{"error": "HTTPStatusError : <the predictor's error>, '<status>
<reason>' for url '<url>'"}`. data/models/iris-transformer/model.py is a complete one.

Two ways to run it, both what an InferenceService predictor container can say:

- `python model.py --model_name=iris` (KServe's way: the file's `__main__` starts
  `ModelServer().start([model])`). This is the one to use in YAML: the same
  `spec.predictor.containers[0]` (`command: [python, model.py]`, `args: [--model_name=iris]`)
  works on a real cluster, whose image has the file and the kserve SDK, and here, where labkit
  runs the command with its own interpreter beside the notebook.
- `python -m labkit.inference.custom --model-class pkg.module:Class --model-name iris`, for a
  class with no `__main__` block (`module:Class` may also be `path/to/file.py:Class`). It
  constructs `Class(name)`, calls `load()` and serves; a real cluster has no such module.

The server listens on $PORT (Knative sets it; labkit gives each replica a free one), else
`--http_port`, else 8080 (KServe's default). As KServe's ModelServer, it answers only once a
model is ready (it loads before it listens), and refuses to start with no ready model.
Errors are KServe's (python/kserve/kserve/errors.py): a handler that raises gives
`500 {"error": "<ExceptionType> : <message>"}` (`InferenceError`: the message alone),
`InvalidInput` 400, an unknown model 404, a model not ready 503, `NotImplementedError` 501;
the traceback goes to the log and the server keeps serving.

Each answer has a `Server-Timing` header with the stages kserve.Model times (its latency log
and histograms): `preprocess`, `predict` and `postprocess`, in milliseconds; for a transformer
`predict` is the round trip to the predictor, and the predictor's own entries follow, prefixed
`predictor.` (`labkit.inference.timing`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
import time
import traceback
import types
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from labkit.http1 import BIND_ADDRESS
from labkit.inference.httpd import Request, Response, serve
from labkit.inference.infer_types import (
    InferenceError,
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    InvalidInput,
    get_predict_input,
    get_predict_response,
)
from labkit.inference.protocol import (
    ProtocolError,
    RequestedOutput,
    decode_infer_request,
    decode_json,
    encode_infer_response,
    error_body,
)
from labkit.inference.server import parse_route, process_age_seconds, run, stop_on_signals
from labkit.inference.timing import StageTimes, stage_times
from labkit.inference.transformer import PredictorClient, PredictorConfig, listen_port

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InvalidInput",
    "Model",
    "ModelServer",
    "PredictorConfig",
    "get_predict_input",
    "get_predict_response",
    "load_class",
    "main",
    "model_server",
]

DEFAULT_HTTP_PORT = 8080
"""KServe's ModelServer default REST port (and the port Knative gives the user container)."""

_predictor_config: PredictorConfig | None = None
"""The process's predictor config, set by ModelServer() from its arguments (kserve.context's
set_predictor_config; the SDK keeps it in a context variable, one per process in effect)."""


# ---------------------------------------------------------------------------------------------
# the contract


class Model:
    """kserve.Model's contract: override `load`, `preprocess`, `predict`, `postprocess`.

    Each handler may be a plain or an `async` method, as in the SDK. `predict` gets the
    request body as a dict (V1) or an InferRequest (V2), after `preprocess`, and returns a dict
    (V1: `{"predictions": [...]}`) or an InferResponse (V2); `get_predict_input` and
    `get_predict_response` do the usual conversions. `ready` is the readiness the server
    reports: set it in `load`. With `return_response_headers=True`, `predict` and
    `postprocess` also get a `response_headers` dict to add headers to the answer.
    """

    def __init__(self, name: str, predictor_config: PredictorConfig | None = None,
                 return_response_headers: bool = False) -> None:
        self.name = name
        self.ready = False
        # kserve 0.14-0.16 took a PredictorConfig here; 0.17+ reads the one ModelServer() made
        # from --predictor_host and friends. Both work: a given one wins.
        self._given_predictor_config = predictor_config
        self._predictor_client: PredictorClient | None = None
        self.required_response_headers = return_response_headers
        self.enable_latency_logging = False

    @property
    def predictor_config(self) -> PredictorConfig | None:
        return self._given_predictor_config or _predictor_config

    def load(self) -> bool:
        """Load the model (from /mnt/models on a cluster); set and return `self.ready`."""
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        return self.ready

    def validate(self, payload: Any) -> Any:
        # kserve.Model.validate: V2 checks "inputs" when the predictor protocol is v2.
        config = self.predictor_config
        key = "inputs" if config is not None and config.protocol == "v2" else "instances"
        if isinstance(payload, dict) and key in payload and not isinstance(payload[key], list):
            raise InvalidInput(f'Expected "{key}" to be a list')
        return payload

    async def preprocess(self, payload: dict[str, Any] | InferRequest,
                         headers: dict[str, str] | None = None) -> Any:
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> Any:
        """A transformer's predict: send the preprocessed payload to the predictor
        (`--predictor_host`, which KServe's controller passes) over V1 or V2 REST and return
        its answer for `postprocess`. A predictor overrides it."""
        config = self.predictor_config
        if config is None or not config.predictor_host:
            # The SDK's messages ("Could not find PredictorConfig." / "...predictor_host."), 501.
            raise NotImplementedError(
                f"Could not find predictor_host. (model {self.name} does not implement predict() "
                "and was given no --predictor_host to forward to)")
        if self._predictor_client is None or self._predictor_client.config is not config:
            self._predictor_client = PredictorClient(config)
        return await self._predictor_client.infer(self.name, payload, headers, response_headers)

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None) -> Any:
        return result

    def get_input_types(self) -> list[dict[str, Any]]:
        return []

    def get_output_types(self) -> list[dict[str, Any]]:
        return []

    async def __call__(self, body: Any, headers: dict[str, str] | None = None,
                       ) -> tuple[Any, dict[str, str]]:
        """preprocess -> validate -> predict -> postprocess, as kserve.Model.__call__."""
        response_headers: dict[str, str] = {}
        extra = (response_headers,) if self.required_response_headers else ()
        payload = await _stage("preprocess", lambda: self.preprocess(body, headers))
        payload = self.validate(payload)
        result = await _stage("predict", lambda: self.predict(payload, headers, *extra))
        result = await _stage("postprocess", lambda: self.postprocess(result, headers, *extra))
        return result, response_headers


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _stage(name: str, handler: Callable[[], Any]) -> Any:
    """Run one handler, plain or async, and note its time for the request's Server-Timing
    (as kserve.Model.__call__ times each stage for its latency log and histograms)."""
    started = time.perf_counter()
    result = await _maybe_await(handler())
    times = stage_times.get()
    if times is not None:
        times.stages.append((name, time.perf_counter() - started))
    return result


# ---------------------------------------------------------------------------------------------
# serving


class CustomModelHandler:
    """The HTTP handler: V1 and V2 REST for a set of Models, with KServe's error bodies."""

    def __init__(self, models: Sequence[Model]) -> None:
        self.models = {model.name: model for model in models}
        # The models were loaded before the server started (by the student's code), so only
        # the process start is known, as labkit's own server reports it.
        self.startup: dict[str, float | None] = {"process_start_seconds": None,
                                                 "model_load_seconds": None}

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        try:
            return self._route(request)
        except ProtocolError as exc:
            return Response(exc.status, error_body(str(exc)))

    def _route(self, request: Request) -> Response | Awaitable[Response]:
        route = parse_route(request.method, request.path)
        model = self._model(route.model) if route.model is not None else None
        if route.action in ("infer", "v1_predict"):
            assert model is not None
            return self._infer(model, request, v2=route.action == "infer")
        if route.action == "model":
            assert model is not None
            return _json(200, {"name": model.name, "versions": None, "platform": "",
                               "inputs": model.get_input_types(),
                               "outputs": model.get_output_types()})
        if route.action in ("model_ready", "v1_model"):
            assert model is not None
            return _json(200 if model.ready else 503, {"name": model.name, "ready": model.ready})
        if route.action == "ready":
            ready = all(m.ready for m in self.models.values())
            return _json(200 if ready else 503, {"ready": ready})
        if route.action == "models":
            return _json(200, {"models": list(self.models)})
        if route.action == "server":
            return _json(200, {"name": "labkit-custom-model", "version": "0.1.0",
                               "extensions": ["labkit_startup"],
                               "labkit_startup": self.startup})
        return _json(200, {"status": "alive"} if route.action == "alive" else {"live": True})

    def _model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise ProtocolError(f"Model with name {name} does not exist.", 404)
        return model

    async def _infer(self, model: Model, request: Request, v2: bool) -> Response:
        if not model.ready:
            return Response(503, error_body(f"Model with name {model.name} is not ready."))
        wanted: list[RequestedOutput] | None = None
        binary_default = False
        try:
            if v2:
                decoded = decode_infer_request(
                    request.body, request.headers.get("inference-header-content-length"))
                wanted, binary_default = decoded.outputs, decoded.binary_output
                body: Any = InferRequest(
                    model.name, [InferInput(t.name, t.shape, t.datatype, t.array, t.parameters)
                                 for t in decoded.inputs],
                    decoded.id, decoded.parameters, decoded.outputs)
            else:
                body = decode_json(request.body)
                if not isinstance(body, dict):
                    raise ProtocolError("request body must be a JSON object")
            times = StageTimes()
            token = stage_times.set(times)
            try:
                result, headers = await model(body, request.headers)
            finally:
                stage_times.reset(token)
            response = _encode(model, result, wanted, binary_default)
        except ProtocolError as exc:
            return Response(exc.status, error_body(str(exc)))
        except Exception as exc:  # noqa: BLE001 (the student's code: answer as KServe does, keep serving)
            return _error_response(exc)
        response.headers = (("server-timing", times.header()), *response.headers, *headers.items())
        return response


def _error_response(exc: Exception) -> Response:
    """KServe's exception handlers (python/kserve/kserve/errors.py): status and body."""
    print("ERROR Exception:", file=sys.stderr)  # as KServe logs it, with the traceback
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    if isinstance(exc, InvalidInput):
        return Response(400, error_body(str(exc)))
    if isinstance(exc, InferenceError):
        return Response(500, error_body(str(exc)))
    if isinstance(exc, NotImplementedError):
        return Response(501, error_body(str(exc)))
    return Response(500, error_body(f"{type(exc).__name__} : {exc}"))


def _encode(model: Model, result: Any, wanted: list[RequestedOutput] | None,
            binary_default: bool) -> Response:
    """A handler's result as the HTTP answer: an InferResponse in V2's encoding (binary where
    the request asked for it), anything else as JSON."""
    if not isinstance(result, InferResponse):
        try:
            return Response(200, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY))
        except TypeError as exc:
            raise InferenceError(f"model {model.name} returned a {type(result).__name__} that "
                                 f"is not JSON: {exc}") from None
    binary = {o.name: o.binary for o in wanted or []}
    body, header_length = encode_infer_response(
        result.model_name, result.model_version, result.id,
        [(o.name, o.as_numpy(), binary.get(o.name, binary_default)) for o in result.outputs])
    if header_length is None:
        return Response(200, body)
    return Response(200, body, "application/octet-stream",
                    (("inference-header-content-length", str(header_length)),))


def _json(status: int, doc: Any) -> Response:
    return Response(status, orjson.dumps(doc))


def _parser() -> argparse.ArgumentParser:
    """kserve.model_server.parser's arguments (the ones a container's args set); parse it with
    parse_known_args, as KServe's samples do, so arguments meant for a cluster pass."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--http_port", type=int, default=None,
                        help=f"REST port when $PORT is unset (Knative sets $PORT, which wins; "
                             f"default {DEFAULT_HTTP_PORT})")
    parser.add_argument("--grpc_port", type=int, default=8081, help="accepted; gRPC is not served")
    parser.add_argument("--workers", type=int, default=1, help="accepted; one process serves")
    parser.add_argument("--model_name", default="model",
                        help="the model name deployed in the model server")
    parser.add_argument("--predictor_host", default=None,
                        help="host[:port] of the predictor a transformer calls (KServe's "
                             "controller passes it)")
    parser.add_argument("--protocol", choices=["v1", "v2", "grpc-v2"], default=None,
                        help="the older name of --predictor_protocol (KServe's docs use it)")
    parser.add_argument("--predictor_protocol", choices=["v1", "v2", "grpc-v2"], default=None,
                        help="how a transformer calls the predictor (default v1)")
    parser.add_argument("--predictor_use_ssl", type=lambda v: v.lower() == "true", default=False)
    parser.add_argument("--predictor_request_timeout_seconds", type=int, default=600)
    parser.add_argument("--predictor_request_retries", type=int, default=0)
    parser.add_argument("--enable_grpc", type=lambda v: v.lower() == "true", default=False)
    parser.add_argument("--configure_logging", type=lambda v: v.lower() == "true", default=False)
    parser.add_argument("--log_config_file", default=None)
    parser.add_argument("--enable_latency_logging", type=lambda v: v.lower() == "true",
                        default=False)
    parser.add_argument("--max_threads", type=int, default=4)
    parser.add_argument("--max_asyncio_workers", type=int, default=None)
    return parser


model_server = types.SimpleNamespace(parser=_parser())
"""Stands for the `kserve.model_server` module: `model_server.parser` is its argument parser."""


class ModelServer:
    """kserve.ModelServer: `ModelServer().start([model])` serves until SIGTERM."""

    def __init__(self, http_port: int | None = None, grpc_port: int | None = None,
                 workers: int = 1, predictor_config: PredictorConfig | None = None,
                 **_: Any) -> None:
        global _predictor_config
        args = model_server.parser.parse_known_args()[0]
        # Knative's runtime contract: serve on $PORT. On a cluster it is 8080, the port KServe's
        # controller also passes as --http_port; here labkit picks a free one, so $PORT wins
        # and the same container args work in both places.
        self.http_port = listen_port(http_port if http_port is not None else args.http_port)
        self.host = BIND_ADDRESS  # loopback on a laptop (labkit.http1.BIND_ADDRESS)
        # As kserve 0.21's ModelServer: the predictor config comes from the process arguments
        # (kserve reads only --predictor_protocol; --protocol, the name its transformer docs
        # still use, counts here when --predictor_protocol is absent).
        _predictor_config = predictor_config or PredictorConfig(
            predictor_host=args.predictor_host,
            predictor_protocol=args.predictor_protocol or args.protocol or "v1",
            predictor_use_ssl=args.predictor_use_ssl,
            predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
            predictor_request_retries=args.predictor_request_retries)

    def start(self, models: Sequence[Model]) -> None:
        if not models:
            raise RuntimeError("ModelServer.start needs at least one model")
        if not any(model.ready for model in models):
            # As KServe's ModelServer (NoModelReady): a pod with no ready model fails to start.
            raise RuntimeError(f"no model is ready: {', '.join(m.name for m in models)}; "
                               "load() must set self.ready = True")
        run(self._serve(models))

    async def _serve(self, models: Sequence[Model]) -> None:
        handler = CustomModelHandler(models)
        listener = await serve(handler.handle, self.host, self.http_port)
        age = process_age_seconds()
        handler.startup["process_start_seconds"] = round(age, 3) if age is not None else None
        print(f"READY models={','.join(m.name for m in models)} "
              f"url=http://{self.host}:{self.http_port} "
              f"process_start={round(age, 3) if age is not None else None}s",
              file=sys.stderr, flush=True)
        await stop_on_signals()
        listener.close()


# ---------------------------------------------------------------------------------------------
# python -m labkit.inference.custom --model-class module:Class --model-name NAME


def load_class(spec: str) -> type[Model]:
    """`pkg.module:Class` or `path/to/file.py:Class` -> the class (a clear error if not)."""
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name:
        raise SystemExit(f"--model-class {spec!r}: write module:Class or file.py:Class")
    try:
        if where.endswith(".py"):
            path = Path(where).resolve()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None or not path.is_file():
                raise SystemExit(f"--model-class {spec!r}: no file {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        raise SystemExit(f"--model-class {spec!r}: cannot import {where}: {exc}") from exc
    found = getattr(module, name, None)
    if not isinstance(found, type):
        raise SystemExit(f"--model-class {spec!r}: {where} has no class {name!r}")
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labkit.inference.custom",
                                     description=__doc__, parents=[_parser()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-class", required=True, help="module:Class or file.py:Class")
    parser.add_argument("--model-name", dest="model_name", help="the same as --model_name")
    args, _ = parser.parse_known_args(argv)
    sys.path.insert(0, os.getcwd())  # as `python model.py` would find the student's modules
    model = load_class(args.model_class)(args.model_name)
    if not model.ready:
        model.load()
    ModelServer(http_port=args.http_port).start([model])


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the student's file imports
    # labkit.inference.custom, and its InvalidInput must be the class the handler checks.
    from labkit.inference import custom

    custom.main()
