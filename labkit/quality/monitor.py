"""The model monitor: KServe's payload-logger sink, feedback, accuracy metrics, a Flagger gate.

Run it as a process (image `labkit/model-monitor`):

    python -m labkit.apps.model_monitor [--port 8080] [--window 100]

and point an InferenceService's `spec.predictor.logger.url` (or the model server's
`--logger-url`) at it. HTTP API, all JSON unless said:

    POST /           a logged CloudEvent (binary or structured): `...inference.request` is
                     remembered, `...inference.response` recorded as predictions under its id
                     and version (one per both: a mirrored copy, same id, another version,
                     is kept beside the answer; a copy logged after its label is joined then)
    POST /feedback   {"id": "<request id>", "label": <true label>} or a list of such objects;
                     a request of several rows takes "label": [one per row]. 200 with
                     {"accepted", "duplicates", "rows", "correct"} (rows and correct count
                     each version's rows: a mirrored request's twice); 400 malformed or missing
                     field, 404 unknown id, 409 conflicting label or no logged response; the
                     body {"error": "<where>: <why>", "at": "<where>"}; nothing is counted then
    GET  /accuracy   {"window": N, "versions": [{"namespace", "model", "version",
                     "version_from", "predictions", "labelled", "correct", "accuracy",
                     "window": {"labelled", "correct", "accuracy"}}]}  (accuracy: 0-1 or null)
    POST /gate       a Flagger webhook call; see labkit.quality.gate (200 / 403 / 412 / 400)
    GET  /metrics    Prometheus text:
                       model_predictions_total{namespace,model,version}       rows predicted
                       model_feedback_total{namespace,model,version,correct}  rows labelled,
                         correct="true"/"false", so accuracy is a PromQL ratio
                       model_logged_events_total{type}            request / response events
                       model_monitor_rejected_total{path,code}    refused requests (path "other"
                         for unknown paths)
                       model_gate_checks_total{namespace,model,version,result}
    GET  /           {"status": "ok"} (readiness)

Where Prometheus scrapes /metrics, accuracy is a Flagger MetricTemplate like any other metric
(percent, over the analysis interval; `{{ namespace }}` and `{{ interval }}` are Flagger's):

    sum(increase(model_feedback_total{namespace="{{ namespace }}", model="digits",
        version="v2", correct="true"}[{{ interval }}]))
    / sum(increase(model_feedback_total{namespace="{{ namespace }}", model="digits",
        version="v2"}[{{ interval }}])) * 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)

from labkit.apps.serve import signalled
from labkit.eventing.events import EventError, decode_request
from labkit.http1 import BIND_ADDRESS
from labkit.inference.httpd import Request, Response, serve
from labkit.inference.payload_logger import REQUEST_TYPE, RESPONSE_TYPE
from labkit.quality.gate import GateError, judge, parse_webhook
from labkit.quality.ledger import Accuracy, Counted, FeedbackError, Ledger
from labkit.quality.payloads import PayloadError, read_response

__all__ = ["Monitor", "main"]

# `*_created` series double the exposition and mean nothing to a student.
disable_created_metrics()

_VERSION_LABELS = ["namespace", "model", "version"]


class _Refused(Exception):
    def __init__(self, status: int, at: str, message: str) -> None:
        super().__init__(message)
        self.status, self.at, self.message = status, at, message


class Monitor:
    """The HTTP handler (`handle`) over a Ledger; one asyncio loop calls it, so no locks."""

    def __init__(self, ledger: Ledger | None = None, window: int = 100) -> None:
        self.ledger = ledger or Ledger()
        if not 1 <= window <= self.ledger.max_window:
            raise ValueError(f"window must be 1-{self.ledger.max_window}, got {window}")
        self.window = window
        self.registry = CollectorRegistry()
        self._predictions = Counter("model_predictions", "rows predicted, by serving version",
                                    _VERSION_LABELS, registry=self.registry)
        self._feedback = Counter("model_feedback", "rows labelled by feedback, correct or not",
                                 [*_VERSION_LABELS, "correct"], registry=self.registry)
        self._events = Counter("model_logged_events", "payload-logger events received",
                               ["type"], registry=self.registry)
        self._rejected = Counter("model_monitor_rejected", "requests refused", ["path", "code"],
                                 registry=self.registry)
        self._gates = Counter("model_gate_checks", "Flagger gate answers",
                              [*_VERSION_LABELS, "result"], registry=self.registry)
        self._routes = {("POST", "/"): self._event, ("POST", "/feedback"): self._feedback_call,
                        ("POST", "/gate"): self._gate, ("GET", "/accuracy"): self._accuracy,
                        ("GET", "/metrics"): self._metrics, ("GET", "/"): self._ok}

    def handle(self, request: Request) -> Response:
        action = self._routes.get((request.method, request.path))
        known = any(path == request.path for _, path in self._routes)
        try:
            if action is None:
                raise _Refused(405 if known else 404, "path",
                               f"no route for {request.method} {request.path}; routes: "
                               + ", ".join(f"{m} {p}" for m, p in sorted(self._routes)))
            return action(request)
        except _Refused as refused:
            # unknown paths share one label value, so a scanner cannot grow the series
            self._rejected.labels(request.path if known else "other", str(refused.status)).inc()
            body = {"error": f"{refused.at}: {refused.message}", "at": refused.at}
            return Response(refused.status, orjson.dumps(body))

    # the payload logger's events

    def _event(self, request: Request) -> Response:
        try:
            event = decode_request(request.headers, request.body)
        except EventError as exc:
            raise _Refused(exc.status, "event", exc.message) from None
        self._events.labels(_short_type(event.type)).inc()
        if event.type == REQUEST_TYPE:
            self.ledger.record_request(event.id)
            return _json(200, {"id": event.id, "recorded": "request"})
        if event.type != RESPONSE_TYPE:
            raise _Refused(400, "ce-type", f"{event.type!r}: expected {REQUEST_TYPE} or "
                                           f"{RESPONSE_TYPE} (KServe's payload logger)")
        try:
            served = read_response(event.attributes, event.data)
        except PayloadError as exc:
            raise _Refused(400, "event", str(exc)) from None
        logged = self.ledger.record_response(event.id, served)
        if logged.new:
            self._predictions.labels(served.namespace, served.model, served.version).inc(
                len(served.predicted))
        if logged.counted is not None:
            self._count_feedback(logged.counted)
        return _json(200, {"id": event.id, "recorded": "response", "duplicate": not logged.new,
                           "version": served.version, "rows": len(served.predicted)})

    # feedback

    def _feedback_call(self, request: Request) -> Response:
        doc = _body(request)
        single = isinstance(doc, dict)
        items = [doc] if single else doc
        if not isinstance(items, list) or not items:
            raise _Refused(400, "body", "expected {\"id\": ..., \"label\": ...} or a non-empty "
                                        "list of them")
        pairs, where = [], []
        for index, item in enumerate(items):
            at = "" if single else f"[{index}]"
            if not isinstance(item, dict):
                raise _Refused(400, at or "body", "expected an object with id and label")
            for field in ("id", "label"):
                if field not in item:
                    raise _Refused(400, f"{at}.{field}".lstrip("."), "missing")
            pairs.append((item["id"], item["label"]))
            where.append(at)
        try:
            joined = self.ledger.join(pairs, where)
        except FeedbackError as exc:
            raise _Refused(exc.status, exc.at.lstrip("."), exc.message) from None
        for result in joined:
            if not result.duplicate:
                for counted in result.counts:
                    self._count_feedback(counted)
        fresh = [r for r in joined if not r.duplicate]
        return _json(200, {"accepted": len(fresh), "duplicates": len(joined) - len(fresh),
                           "rows": sum(r.rows for r in fresh),
                           "correct": sum(r.correct for r in fresh)})

    def _count_feedback(self, counted: Counted) -> None:
        self._feedback.labels(*counted.key, "true").inc(counted.correct)
        self._feedback.labels(*counted.key, "false").inc(counted.rows - counted.correct)

    # readings

    def _accuracy(self, _: Request) -> Response:
        versions = []
        for key in self.ledger.versions():
            total = self.ledger.accuracy(key)
            recent = self.ledger.accuracy(key, self.window)
            versions.append({
                "namespace": key[0], "model": key[1], "version": key[2],
                "version_from": self.ledger.version_from(key),
                "predictions": self.ledger.predictions(key), **_reading(total),
                "window": _reading(recent),
            })
        return _json(200, {"window": self.window, "versions": versions})

    def _metrics(self, _: Request) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def _ok(self, _: Request) -> Response:
        return _json(200, {"status": "ok"})

    # the Flagger webhook

    def _gate(self, request: Request) -> Response:
        try:
            config = parse_webhook(_body(request))
        except GateError as exc:
            at, _, why = str(exc).partition(": ")
            raise _Refused(400, at, why) from None
        if config.window > self.ledger.max_window:
            raise _Refused(400, "metadata.window", f"{config.window} is over the "
                           f"{self.ledger.max_window} rows kept per version")

        def reading(version: str | None) -> Accuracy | None:
            if version is None:
                return None
            return self.ledger.accuracy((config.namespace, config.model, version), config.window)

        verdict = judge(config, reading(config.canary) or Accuracy(0, 0),
                        reading(config.primary) if config.max_drop is not None else None)
        reason = verdict.reason
        if verdict.result == "insufficient":
            reason += self._known_versions(config.namespace, config.model)
        self._gates.labels(config.namespace, config.model, config.canary, verdict.result).inc()
        print(f"gate {config.namespace}/{config.model} canary={config.canary} "
              f"phase={config.phase or '-'}: {verdict.status} {reason}", file=sys.stderr,
              flush=True)
        return _json(verdict.status, {
            "result": verdict.result, "reason": reason, "namespace": config.namespace,
            "model": config.model, "phase": config.phase,
            "canary": {"version": config.canary, **_reading(verdict.canary)},
            "primary": None if verdict.primary is None
            else {"version": config.primary, **_reading(verdict.primary)},
        })

    def _known_versions(self, namespace: str, model: str) -> str:
        seen = [k[2] for k in self.ledger.versions() if k[:2] == (namespace, model)]
        if not seen:
            return f" (no predictions logged for model {model} in namespace {namespace})"
        return f" (versions seen for {namespace}/{model}: {', '.join(seen)})"


def _reading(reading: Accuracy) -> dict[str, Any]:
    return {"labelled": reading.labelled, "correct": reading.correct,
            "accuracy": reading.accuracy}


def _short_type(kind: str) -> str:
    return {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}.get(kind, "other")


def _body(request: Request) -> Any:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, "body", f"not JSON: {exc}") from None


def _json(status: int, doc: Any) -> Response:
    return Response(status, orjson.dumps(doc))


# ---------------------------------------------------------------------------------------------
# process entry point


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m labkit.apps.model_monitor",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, help="default: $PORT, else 8080")
    parser.add_argument("--window", type=int, default=100,
                        help="most recent labelled rows per version in GET /accuracy's window")
    parser.add_argument("--max-predictions", type=int, default=100_000,
                        help="requests kept for joining (each with every version's "
                             "prediction); the oldest are forgotten")
    args = parser.parse_args(argv)
    if not 1 <= args.window <= Ledger().max_window:
        parser.error(f"--window: {args.window} is outside 1-{Ledger().max_window}")
    if args.max_predictions < 1:
        parser.error(f"--max-predictions: {args.max_predictions} must be at least 1")
    return args


async def _run(args: argparse.Namespace) -> None:
    port = args.port if args.port is not None else int(os.environ.get("PORT", "8080"))
    monitor = Monitor(Ledger(max_predictions=args.max_predictions), window=args.window)
    stop = signalled()
    listener = await serve(monitor.handle, BIND_ADDRESS, port)
    print(f"READY model-monitor url=http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await stop.wait()
    listener.close()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(_run(_parse(argv)))
