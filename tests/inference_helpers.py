"""Helpers for the model-server tests: run the real server process and talk plain HTTP."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from labkit.net import HOST, ReplicaProcess, python_command

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "data" / "models"


@contextmanager
def model_server(name: str, storage_uri: str, *args: str, ready: bool = True,
                 env: dict[str, str] | None = None) -> Iterator[ReplicaProcess]:
    """`python -m labkit.inference.server` on a free port; waits for /v2/health/ready if asked."""
    server = ReplicaProcess(
        python_command("labkit.inference.server", "--model-name", name,
                       "--storage-uri", storage_uri, *args),
        ready_path="/v2/health/live", name=f"model-server-{name}", env=env,
    )
    server.start(timeout=60)
    try:
        if ready:
            deadline = time.monotonic() + 60
            while call(server.port, "GET", "/v2/health/ready")[0] != 200:
                assert server.running, server.log_tail()
                assert time.monotonic() < deadline, "model did not become ready:\n" + server.log_tail()
                time.sleep(0.02)
        yield server
    finally:
        server.stop()


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    """One request on a fresh connection: (status, JSON body or {"raw": bytes}, headers)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        head = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = {"raw": raw}
    return response.status, doc, head


def infer_body(rows: list[list[float]], datatype: str = "FP64", **extra: object) -> bytes:
    shape = [len(rows), len(rows[0]) if rows else 0]
    return orjson.dumps({"inputs": [{"name": "input-0", "shape": shape, "datatype": datatype,
                                     "data": rows}], **extra})


class EventSink:
    """A real HTTP receiver on a free port that keeps every request (headers, body)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []  # type: list[tuple[dict[str, str], bytes]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
