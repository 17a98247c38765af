"""A subscriber for labs and tests: event display, dead-letter sink, flaky or slow function.

Like Knative's `event_display` sample it accepts every CloudEvent POSTed to it and remembers
it; GET /events lists what arrived (attributes, data, the status it answered, the attempt
number per event id). Behaviour is configured like a container, by environment variables,
so the same app runs in-process (`InProcessSink`, for tests) or as a replica process
(image `labkit/event-display`, `python -m labkit.apps.event_display`):

    SINK_FAIL_FIRST=N      answer SINK_FAIL_STATUS (default 503) to the first N attempts of
                           every event id (a subscriber that recovers: retries, then success)
    SINK_FAIL_RATE=p       fail each attempt with probability p (seeded by SINK_SEED)
    SINK_FAIL_STATUS=code  the failure status
    SINK_RETRY_AFTER=s     send `Retry-After: s` with each failure (for 429/503 and retryAfterMax)
    SINK_HANG_FIRST=N      do not answer the first N attempts of each event for
                           SINK_HANG_SECONDS (default 30): a hanging subscriber
    SINK_FUNCTION=name     echo | summary | thumbnail: compute a result from the event;
                           summary/thumbnail read the file named by `subject` in SINK_DATA_DIR
    SINK_REPLY_TYPE=type   answer 200 with a reply event of this type carrying the result
                           (source SINK_REPLY_SOURCE, default /labkit/event-display)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.core.loop import BackgroundLoop
from labkit.eventing.events import Event, EventError, decode_request, encode_binary
from labkit.eventing.wire import Request, Response, Server, json_error, json_response, serve

__all__ = [
    "InProcessSink",
    "SinkApp",
    "SinkBehaviour",
    "event_display_manifest",
    "make_thumbnail",
    "received_from",
    "summarize_text",
    "wait_received",
]


@dataclass(frozen=True)
class SinkBehaviour:
    fail_first: int = 0
    fail_rate: float = 0.0
    fail_status: int = 503
    retry_after: int | None = None
    hang_first: int = 0
    hang_seconds: float = 30.0
    function: str | None = None
    data_dir: str | None = None
    reply_type: str | None = None
    reply_source: str = "/labkit/event-display"
    seed: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SinkBehaviour:
        """Read the SINK_* variables; ValueError names a bad one."""
        def number(name: str, default: float | None, kind: type = int) -> Any:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from None

        function = env.get("SINK_FUNCTION") or None
        if function not in (None, "echo", "summary", "thumbnail"):
            raise ValueError(f"SINK_FUNCTION must be echo, summary or thumbnail, got {function!r}")
        return cls(fail_first=number("SINK_FAIL_FIRST", 0), fail_rate=number(
            "SINK_FAIL_RATE", 0.0, float), fail_status=number("SINK_FAIL_STATUS", 503),
            retry_after=number("SINK_RETRY_AFTER", None),
            hang_first=number("SINK_HANG_FIRST", 0),
            hang_seconds=number("SINK_HANG_SECONDS", 30.0, float), function=function,
            data_dir=env.get("SINK_DATA_DIR") or None,
            reply_type=env.get("SINK_REPLY_TYPE") or None,
            reply_source=env.get("SINK_REPLY_SOURCE") or "/labkit/event-display",
            seed=number("SINK_SEED", 0))


def summarize_text(path: Path) -> dict[str, Any]:
    """A text file's summary: what the lab's "file uploaded -> function" computes."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    return {"name": path.name, "lines": len(lines), "words": len(text.split()),
            "characters": len(text), "firstLine": lines[0][:80] if lines else ""}


def make_thumbnail(path: Path, size: int = 64) -> dict[str, Any]:
    """Write a PNG thumbnail beside the image (thumb-<name>.png) and describe it."""
    from PIL import Image

    with Image.open(path) as image:
        original = image.size
        image.thumbnail((size, size))
        target = path.with_name(f"thumb-{path.stem}.png")
        image.save(target, format="PNG")
        return {"name": path.name, "original": list(original), "thumbnail": target.name,
                "size": list(image.size)}


class SinkApp:
    """The request handler and the record of what arrived."""

    def __init__(self, behaviour: SinkBehaviour | None = None) -> None:
        self.behaviour = behaviour or SinkBehaviour()
        self.records: list[dict[str, Any]] = []
        self._attempts: Counter[str] = Counter()
        self._random = random.Random(self.behaviour.seed)
        self._lock = threading.Lock()

    async def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path in ("/", "/healthz"):
            return Response(200, b"ready\n")
        if request.method == "GET" and request.path == "/events":
            with self._lock:
                return json_response(200, list(self.records))
        if request.method == "DELETE" and request.path == "/events":
            with self._lock:
                self.records.clear()
                self._attempts.clear()
            return Response(204)
        if request.method != "POST":
            return json_error(405, f"method {request.method} not allowed")
        try:
            event = decode_request(request.headers, request.body)
        except EventError as err:
            return json_error(err.status, err.message)
        key = f"{event.source}\x00{event.id}"
        with self._lock:
            self._attempts[key] += 1
            number = self._attempts[key]
        status, reply = await self._respond(event, number)
        record = {"time": time.time(), "attempt": number, "status": status,
                  "attributes": dict(event.attributes), "data": _data_text(event.data),
                  "prefer": request.headers.get("prefer"),
                  "contentType": request.headers.get("content-type")}
        with self._lock:
            self.records.append(record)
        if reply is None:
            if status < 300:
                return Response(status)
            headers = {} if self.behaviour.retry_after is None else {
                "retry-after": str(self.behaviour.retry_after)}
            return Response(status, json.dumps({"error": "simulated failure"}).encode(), headers)
        headers, body = encode_binary(reply)
        return Response(200, body, headers)

    async def _respond(self, event: Event, number: int) -> tuple[int, Event | None]:
        b = self.behaviour
        if number <= b.hang_first:
            await asyncio.sleep(b.hang_seconds)
            return 504, None
        if number <= b.fail_first or (b.fail_rate and self._random.random() < b.fail_rate):
            return b.fail_status, None
        result = self._compute(event)
        if b.reply_type is None or result is None:
            return 200 if b.reply_type else 202, None
        reply = Event({"specversion": "1.0", "id": str(uuid.uuid4()), "source": b.reply_source,
                       "type": b.reply_type, "subject": event.attributes.get("subject", event.id),
                       "datacontenttype": "application/json"},
                      json.dumps(result).encode())
        return 200, reply

    def _compute(self, event: Event) -> dict[str, Any] | None:
        b = self.behaviour
        if b.function in (None, "echo"):
            return {"echo": _data_text(event.data), "type": event.type}
        name = str(event.attributes.get("subject", ""))
        path = Path(b.data_dir or ".") / Path(name).name
        try:
            return summarize_text(path) if b.function == "summary" else make_thumbnail(path)
        except OSError as err:
            return {"name": name, "error": str(err)}


def _data_text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii"),
                "sha256": hashlib.sha256(data).hexdigest()}


class InProcessSink:
    """A SinkApp served on a background thread: a real HTTP subscriber without a process."""

    def __init__(self, behaviour: SinkBehaviour | None = None, *, port: int = 0) -> None:
        self.app = SinkApp(behaviour)
        self._port = port
        self._loop: BackgroundLoop | None = None
        self._server: Server | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InProcessSink:
        self._loop = BackgroundLoop(name="labkit-sink")
        self._server = self._loop.run(serve(self.app.handle, port=self._port))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def received(self, *, successful_only: bool = True) -> list[dict[str, Any]]:
        with self.app._lock:
            records = list(self.app.records)
        return [r for r in records if r["status"] < 300 or not successful_only]

    def stop(self) -> None:
        if self._loop is not None:
            server = self._server
            if server is not None:
                async def close() -> None:  # asyncio servers are closed on their own loop
                    server.close()

                self._loop.run(close())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> InProcessSink:  # Self needs Python 3.11
        return self.start() if self._loop is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def received_from(url: str, *, successful_only: bool = True,
                  timeout: float = 10.0) -> list[dict[str, Any]]:
    """What an event-display app at `url` recorded (GET /events)."""
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/events", timeout=timeout) as answer:
        records = json.loads(answer.read())
    return [r for r in records if r["status"] < 300 or not successful_only]


def main() -> None:
    """Serve a SinkApp on $PORT with the SINK_* behaviour (the event-display image)."""
    import sys

    from labkit.apps.serve import signalled

    raw_port = os.environ.get("PORT", "")
    if not raw_port.isdigit():
        sys.exit(f"event-display: PORT must be a port number, got {raw_port!r}")
    try:
        behaviour = SinkBehaviour.from_env(os.environ)
    except ValueError as err:
        sys.exit(f"event-display: {err}")

    async def run() -> None:
        server = await serve(SinkApp(behaviour).handle, port=int(raw_port))
        await signalled().wait()
        server.close()

    asyncio.run(run())


def wait_received(url: str, count: int, *, timeout: float = 30.0,
                  match: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Poll an event-display app until `count` matching events arrived; return them.

    Raises TimeoutError saying how many arrived, so a notebook cell fails with a reason.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in received_from(url) if match is None or match(r)]
        if len(records) >= count:
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: {len(records)} of {count} events arrived within "
                               f"{timeout:g} s")
        time.sleep(0.05)  # polling a condition with a deadline


def event_display_manifest(name: str, env: Mapping[str, str] | None = None, *,
                           replicas: int = 1) -> str:
    """YAML for an event-display Deployment and a Service of the same name in front of it."""
    variables = "".join(f"\n        - {{name: {key}, value: {json.dumps(str(value))}}}"
                        for key, value in (env or {}).items())
    env_block = f"\n        env:{variables}" if variables else ""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: display
        image: labkit/event-display{env_block}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
"""
