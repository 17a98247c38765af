"""flagger.templates: the value Flagger reads from a Prometheus answer, over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from labkit.flagger.templates import prometheus_query, query_value


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": f"p{i}"}, "value": [1700000000.0, v]} for i, v in enumerate(values)]}}


@pytest.fixture()
def prometheus() -> Iterator[tuple[str, list[str]]]:
    """A server answering /api/v1/query with two series (a query without `sum()`); the
    queries it was asked are recorded."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(vector("12.5", "97.5")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()


def test_several_series_give_the_last_value_as_in_flagger(prometheus: tuple[str, list[str]]) -> None:
    address, asked = prometheus
    assert prometheus_query(address, 'rate(x{a="b"}[1m])') == 97.5
    assert asked == ["/api/v1/query?query=rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29"]


def test_one_series_a_scalar_and_no_series() -> None:
    assert query_value(vector("0.25")) == 0.25
    assert query_value({"status": "success", "data": {"resultType": "scalar",
                                                       "result": [1700000000.0, "3"]}}) == 3.0
    assert query_value(vector()) is None


def test_an_error_answer_names_prometheus_error() -> None:
    with pytest.raises(RuntimeError, match="prometheus: parse error"):
        query_value({"status": "error", "errorType": "bad_data", "error": "parse error"})
