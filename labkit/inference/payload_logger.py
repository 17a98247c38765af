"""KServe's payload logger: every inference request and response sent on as a CloudEvent.

With `logger: {url, mode}` on a component, KServe's agent sidecar posts each payload to `url`
as a binary-mode CloudEvent of type `org.kubeflow.serving.inference.request` or
`...inference.response`, the request id as the event id (so a request and its response pair
up), and the extensions `inferenceservicename`, `namespace`, `component` and `endpoint`.
`mode` picks what is sent: all, request or response.

Logging never slows or fails an inference: events are posted in the background, at most
`max_pending` at a time (more are dropped and counted), and a failed post is counted and
reported on stderr, not retried.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import httpx

from labkit.eventing.events import Event, encode_binary

__all__ = ["REQUEST_TYPE", "RESPONSE_TYPE", "LoggerTarget", "PayloadLogger"]

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


@dataclass(frozen=True)
class LoggerTarget:
    url: str
    mode: str = "all"
    inference_service: str = ""
    namespace: str = "default"
    component: str = "predictor"
    endpoint: str = "default"
    source: str = "http://localhost/"

    def __post_init__(self) -> None:
        if self.mode not in ("all", "request", "response"):
            raise ValueError(f"invalid logger type {self.mode!r}: use all, request or response")


class PayloadLogger:
    def __init__(self, target: LoggerTarget, max_pending: int = 1000) -> None:
        self.target = target
        self.max_pending = max_pending
        self.client = httpx.AsyncClient(timeout=10.0)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._pending: set[asyncio.Task[None]] = set()

    def log(self, request_id: str, request: bytes | None, response: bytes | None) -> None:
        """Queue the events `mode` asks for; returns at once."""
        mode = self.target.mode
        if mode in ("all", "request") and request is not None:
            self._queue(request_id, REQUEST_TYPE, request)
        if mode in ("all", "response") and response is not None:
            self._queue(request_id, RESPONSE_TYPE, response)

    def _queue(self, request_id: str, kind: str, body: bytes) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        target = self.target
        event = Event({
            "specversion": "1.0", "id": request_id, "source": target.source, "type": kind,
            "datacontenttype": "application/json",
            "inferenceservicename": target.inference_service, "namespace": target.namespace,
            "component": target.component, "endpoint": target.endpoint,
        }, body)
        task = asyncio.get_running_loop().create_task(self._post(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, event: Event) -> None:
        headers, body = encode_binary(event)
        try:
            answer = await self.client.post(self.target.url, headers=headers, content=body)
            problem = None if answer.status_code < 300 else f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            self.sent += 1
            return
        self.failed += 1
        if self.failed == 1 or self.failed % 100 == 0:
            print(f"WARNING: payload logger: posting to {self.target.url} failed ({problem}); "
                  f"{self.failed} failed so far", file=sys.stderr, flush=True)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        await self.client.aclose()
