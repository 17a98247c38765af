"""A KServe transformer: pre-processing before the predictor, post-processing after it.

In KServe a transformer is a container in front of the predictor: it receives the client's
V1/V2 request, changes it (`preprocess`), calls the predictor (whose address it is given as
`--predictor_host`), and changes the answer (`postprocess`). Here a transformer is a Python
program that calls `serve(preprocess=..., postprocess=...)`; the InferenceService controller
runs it with KServe's arguments (`--model_name`, `--predictor_host`, `--protocol`) and $PORT.

Only JSON inference calls (`:predict`, `/infer`) go through the hooks; health, metadata and
binary-tensor requests are passed through unchanged. Each answer's `Server-Timing` lists
`preprocess`, `predictor` (the whole predictor hop) and `postprocess`, followed by the
predictor's own entries prefixed `predictor.`, so a notebook can draw where the time went.

Run as a module it is a ready-made transformer (image `labkit/feature-transformer`):
`--feature-names a,b,c` turns V1 instances given as objects ({"a": 1, ...}) into rows, and
`--labels x,y,z` turns class indices in `predictions` into names.
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

from labkit.inference.httpd import Request, Response
from labkit.inference.httpd import serve as serve_http
from labkit.inference.protocol import ProtocolError, decode_json, error_body

__all__ = ["Hook", "Transformer", "feature_hooks", "serve"]

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
            timing.append(("predictor", time.perf_counter() - started))
            content = answer.content
            if hooked and answer.status_code == 200 and self.postprocess is not None:
                started = time.perf_counter()
                result = _hook(self.postprocess, decode_json(content, "predictor response"),
                               "postprocess")
                content = orjson.dumps(result)
                timing.append(("postprocess", time.perf_counter() - started))
        except ProtocolError as exc:
            return Response(exc.status, error_body(str(exc)))
        server_timing = ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in timing)
        inner = answer.headers.get("server-timing")
        if inner:
            server_timing += ", " + ", ".join(f"predictor.{part.strip()}"
                                              for part in inner.split(","))
        headers_out = [("server-timing", server_timing)]
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
    parser.add_argument("--http_port", type=int, default=None, help="default: $PORT")
    if extra:
        parser.add_argument("--feature-names", default=None)
        parser.add_argument("--labels", default=None)
        return parser.parse_args(argv)
    args, _ = parser.parse_known_args(argv)
    return args


async def _run(args: argparse.Namespace, preprocess: Hook | None, postprocess: Hook | None) -> None:
    port = args.http_port if args.http_port is not None else int(os.environ.get("PORT", "8080"))
    transformer = Transformer(f"http://{args.predictor_host}", preprocess, postprocess)
    listener = await serve_http(transformer.handle, "127.0.0.1", port)
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
