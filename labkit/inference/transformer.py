"""A KServe transformer: pre-processing before the predictor, post-processing after it.

In KServe a transformer is a container in front of the predictor: it receives the client's
V1/V2 request, changes it (`preprocess`), calls the predictor (whose address it is given as
`--predictor_host`), and changes the answer (`postprocess`). Here a transformer is a Python
program that calls `serve(preprocess=..., postprocess=...)`; the InferenceService controller
runs it with KServe's arguments (`--model_name`, `--predictor_host`, `--protocol`) and $PORT.

Only JSON inference calls (`:predict`, `/infer`) go through the hooks; health, metadata and
binary-tensor requests are passed through unchanged. Each answer's `Server-Timing` lists
`preprocess`, `predict` (the whole round trip to the predictor, as KServe times a
transformer's predict) and `postprocess`, followed by the predictor's own entries prefixed
`predictor.` (`labkit.inference.timing`), so a notebook can draw where the time went.

Run as a module it is a ready-made transformer (image `labkit/feature-transformer`):
`--feature-names a,b,c` turns V1 instances given as objects ({"a": 1, ...}) into rows, and
`--labels x,y,z` turns class indices in `predictions` into names.

A student's own transformer is a kserve.Model subclass (labkit.inference.custom) whose
`preprocess` and `postprocess` are overridden and whose default `predict` forwards to the
predictor: `PredictorConfig` and `PredictorClient` below are that call, as the kserve SDK makes it
(python/kserve/kserve/model.py `Model.predict`, `_http_predict`; predictor_config.py;
inference_client.py `InferenceRESTClient.infer`, 0.21).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson

from labkit.http1 import BIND_ADDRESS
from labkit.inference.httpd import Request, Response
from labkit.inference.httpd import serve as serve_http
from labkit.inference.infer_types import InferenceError, InferRequest, InferResponse
from labkit.inference.protocol import ProtocolError, decode_json, error_body
from labkit.inference.timing import server_timing, stage_times

__all__ = ["Hook", "PredictorClient", "PredictorConfig", "Transformer", "feature_hooks",
           "listen_port", "serve"]

FORWARDABLE_HEADERS = ("x-request-id", "x-b3-traceid", "authorization")
"""The request headers the SDK passes on to the predictor (kserve model.py _FORWARDABLE_HEADERS)."""


def listen_port(http_port: int | None) -> int:
    """$PORT (Knative's runtime contract) wins over --http_port: KServe's controller passes
    `--http_port 8080`, the port Knative gives the container on a cluster, while labkit gives
    each replica a free port in $PORT."""
    port = os.environ.get("PORT")
    return int(port) if port else http_port or 8080


# ---------------------------------------------------------------------------------------------
# the kserve SDK's side of a transformer: its call to the predictor


class PredictorConfig:
    """kserve.PredictorConfig: where and how a transformer's default `predict` calls the
    predictor. `ModelServer` builds one from `--predictor_host`, `--predictor_protocol` (v1 or
    v2 over REST), `--predictor_use_ssl`, `--predictor_request_timeout_seconds` (600) and
    `--predictor_request_retries` (0), as the SDK does."""

    def __init__(self, predictor_host: str | None, predictor_protocol: str = "v1",
                 predictor_use_ssl: bool = False, predictor_request_timeout_seconds: int = 600,
                 predictor_request_retries: int = 0, predictor_health_check: bool = False) -> None:
        self.predictor_host = predictor_host
        self.predictor_protocol = predictor_protocol
        self.predictor_use_ssl = predictor_use_ssl
        self.predictor_request_timeout_seconds = predictor_request_timeout_seconds
        self.predictor_request_retries = predictor_request_retries
        self.predictor_health_check = predictor_health_check

    @property
    def predictor_base_url(self) -> str:
        return f"{'https' if self.predictor_use_ssl else 'http'}://{self.predictor_host}"

    # the SDK's short aliases
    @property
    def protocol(self) -> str:
        return self.predictor_protocol

    @property
    def timeout(self) -> int:
        return self.predictor_request_timeout_seconds

    @property
    def retries(self) -> int:
        return self.predictor_request_retries

    @property
    def use_ssl(self) -> bool:
        return self.predictor_use_ssl


class PredictorClient:
    """The REST call of kserve.Model's default `predict` (`_http_predict` on the SDK's
    InferenceRESTClient): the payload from `preprocess` as JSON to
    `/v1/models/<name>:predict` or `/v2/models/<name>/infer` on the predictor; the answer as a
    dict (V1) or an InferResponse (V2). A non-2xx answer raises httpx.HTTPStatusError with the
    SDK's message, which the server turns into KServe's generic 500 body."""

    def __init__(self, config: PredictorConfig) -> None:
        self.config = config
        # Retries cover connection failures only, as httpx's transport retries do in the SDK.
        self.client = httpx.AsyncClient(
            timeout=config.timeout,
            transport=httpx.AsyncHTTPTransport(retries=config.retries))

    def url(self, model_name: str) -> str:
        protocol = self.config.protocol
        if protocol == "v1":
            return f"{self.config.predictor_base_url}/v1/models/{model_name}:predict"
        if protocol == "v2":
            return f"{self.config.predictor_base_url}/v2/models/{model_name}/infer"
        # grpc-v2 is the SDK's third protocol; labkit serves REST only.
        raise NotImplementedError(f"predictor protocol {protocol!r} is not served locally; "
                                  "use --predictor_protocol v1 or v2")

    async def infer(self, model_name: str, payload: dict[str, Any] | InferRequest,
                    headers: dict[str, str] | None = None,
                    response_headers: dict[str, str] | None = None,
                    ) -> dict[str, Any] | InferResponse:
        url = self.url(model_name)
        sent = {"content-type": "application/json",
                **{k: v for k, v in (headers or {}).items() if k in FORWARDABLE_HEADERS}}
        # As the SDK: plain orjson, so a numpy array left in a dict fails here as on a cluster.
        body = orjson.dumps(payload.to_rest() if isinstance(payload, InferRequest) else payload)
        answer = await self.client.post(url, content=body, headers=sent)
        if not answer.is_success:
            raise _status_error(answer)
        times = stage_times.get()
        if times is not None:  # the served request's Server-Timing shows the predictor's own
            times.predictor = answer.headers.get("server-timing")
        if response_headers is not None:
            response_headers.update(answer.headers)
        if "inference-header-content-length" in answer.headers:
            raise InferenceError("the predictor answered with binary tensors; a transformer "
                                 "here reads JSON answers only")
        doc = decode_json(answer.content, "predictor response")
        if self.config.protocol == "v2":
            return InferResponse.from_rest(doc)
        return doc

    async def aclose(self) -> None:
        await self.client.aclose()


def _status_error(answer: httpx.Response) -> httpx.HTTPStatusError:
    """The SDK's error for a predictor's non-2xx answer (InferenceRESTClient.
    _construct_http_status_error): the predictor's `error` text, its status and the URL."""
    error: Any = ""
    if answer.headers.get("content-type") == "application/json":
        try:
            error = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            error = answer.text
        if isinstance(error, dict) and "error" in error:
            error = error["error"]
    message = f"{error}, '{answer.status_code} {answer.reason_phrase}' for url '{answer.url}'"
    return httpx.HTTPStatusError(message, request=answer.request, response=answer)


# ---------------------------------------------------------------------------------------------
# the built-in transformer: hooks around a pass-through

Hook = Callable[[dict[str, Any]], dict[str, Any]]

_PASS_HEADERS = ("content-type", "inference-header-content-length")


class Transformer:
    """The HTTP handler: hooks around a keep-alive client to the predictor."""

    def __init__(self, predictor_url: str, preprocess: Hook | None = None,
                 postprocess: Hook | None = None) -> None:
        self.client = httpx.AsyncClient(base_url=predictor_url, timeout=300.0)
        self.preprocess = preprocess
        self.postprocess = postprocess

    async def handle(self, request: Request) -> Response:
        hooked = (request.method == "POST"
                  and (request.path.endswith(":predict") or request.path.endswith("/infer"))
                  and "inference-header-content-length" not in request.headers)
        timing: list[tuple[str, float]] = []
        body = request.body
        try:
            if hooked and self.preprocess is not None:
                started = time.perf_counter()
                body = orjson.dumps(_hook(self.preprocess, decode_json(body), "preprocess"))
                timing.append(("preprocess", time.perf_counter() - started))
            started = time.perf_counter()
            headers = {k: v for k, v in request.headers.items() if k in _PASS_HEADERS}
            try:
                answer = await self.client.request(request.method, request.path, content=body,
                                                   headers=headers)
            except httpx.HTTPError as exc:
                return Response(502, error_body(f"transformer: predictor did not answer: {exc}"))
            timing.append(("predict", time.perf_counter() - started))
            content = answer.content
            if hooked and answer.status_code == 200 and self.postprocess is not None:
                started = time.perf_counter()
                result = _hook(self.postprocess, decode_json(content, "predictor response"),
                               "postprocess")
                content = orjson.dumps(result)
                timing.append(("postprocess", time.perf_counter() - started))
        except ProtocolError as exc:
            return Response(exc.status, error_body(str(exc)))
        headers_out = [("server-timing", server_timing(timing, answer.headers.get("server-timing")))]
        if "inference-header-content-length" in answer.headers:
            headers_out.append(("inference-header-content-length",
                                answer.headers["inference-header-content-length"]))
        return Response(answer.status_code, content,
                        answer.headers.get("content-type", "application/json"),
                        tuple(headers_out))


def _hook(hook: Hook, doc: Any, name: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProtocolError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    try:
        return hook(doc)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ProtocolError(f"{name} failed: {type(exc).__name__}: {exc}") from None


def feature_hooks(feature_names: Sequence[str] | None,
                  labels: Sequence[str] | None) -> tuple[Hook | None, Hook | None]:
    """The ready-made transformer's hooks: named features in, class names out (V1)."""

    def preprocess(doc: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for index, item in enumerate(doc["instances"]):
            if isinstance(item, dict):
                missing = [n for n in feature_names or () if n not in item]
                if missing:
                    raise ValueError(f"instances[{index}] lacks {', '.join(missing)}")
                item = [item[n] for n in feature_names or ()]
            rows.append(item)
        return {**doc, "instances": rows}

    def postprocess(doc: dict[str, Any]) -> dict[str, Any]:
        names = list(labels or ())
        return {**doc, "predictions": [names[p] if isinstance(p, int) and 0 <= p < len(names)
                                       else p for p in doc["predictions"]]}

    return (preprocess if feature_names else None), (postprocess if labels else None)


def _parse(argv: Sequence[str] | None, extra: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictor_host", required=True, help="host:port of the predictor")
    parser.add_argument("--model_name", default=None)
    parser.add_argument("--protocol", default="v1")
    parser.add_argument("--http_port", type=int, default=None,
                        help="used when $PORT is unset (Knative sets it, and it wins)")
    parser.add_argument("--workers", type=int, default=1,
                        help="accepted (KServe passes containerConcurrency); one process serves")
    if extra:
        parser.add_argument("--feature-names", default=None)
        parser.add_argument("--labels", default=None)
        return parser.parse_args(argv)
    args, _ = parser.parse_known_args(argv)
    return args


async def _run(args: argparse.Namespace, preprocess: Hook | None, postprocess: Hook | None) -> None:
    port = listen_port(args.http_port)
    transformer = Transformer(f"http://{args.predictor_host}", preprocess, postprocess)
    listener = await serve_http(transformer.handle, BIND_ADDRESS, port)
    try:
        await asyncio.Event().wait()  # until the process is stopped
    finally:
        listener.close()
        await transformer.client.aclose()


def serve(preprocess: Hook | None = None, postprocess: Hook | None = None,
          argv: Sequence[str] | None = None) -> None:
    """Run this process as a transformer (the call a transformer program ends with)."""
    args = _parse(argv, extra=False)
    asyncio.run(_run(args, preprocess, postprocess))


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv, extra=True)
    hooks = feature_hooks(args.feature_names.split(",") if args.feature_names else None,
                          args.labels.split(",") if args.labels else None)
    asyncio.run(_run(args, *hooks))


if __name__ == "__main__":
    main()
