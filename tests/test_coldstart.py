"""A real cold start of the bundled function: a real process, real HTTP on loopback."""

from __future__ import annotations

import json
import re
import sys

import httpx
import pytest

from labkit import coldstart
from labkit.coldstart import ColdStartMeasurement, measure_cold_start
from labkit.net import ReplicaProcess, process_alive, python_command


@pytest.fixture(scope="module")
def measurement() -> ColdStartMeasurement:
    return measure_cold_start(warm_requests=10)


def test_cold_request_is_slower_than_warm_ones(measurement):
    # The cold path includes a process spawn and library imports (hundreds of ms); a warm
    # request is an in-memory prediction over a kept-alive connection. An order, not a time.
    assert measurement.cold_seconds > max(measurement.warm_seconds)
    assert measurement.cold_seconds > measurement.warm_p50
    assert measurement.slowdown > 1


def test_process_is_gone_afterwards(measurement):
    assert not process_alive(measurement.pid)


def test_breakdown_adds_up_and_names_the_apps_init(measurement):
    parts = measurement.cold_breakdown()
    assert next(iter(parts)) == "spawn + interpreter + readiness" and list(parts)[-1] == "first request"
    assert {"import", "model"} <= set(parts)
    assert sum(parts.values()) == pytest.approx(measurement.cold_seconds)
    assert len(measurement.warm_seconds) == 10
    text = measurement.summary()
    assert text.startswith("cold request :") and "warm requests: 10 x" in text and str(measurement) == text


def test_any_port_reading_command_works_without_an_init_report(tmp_path):
    # A user's own program, not labkit's app: the stdlib file server on the port in PORT.
    script = tmp_path / "serve.py"
    script.write_text(
        "import functools, http.server, os\n"
        "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.path.dirname(__file__))\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), handler).serve_forever()\n"
    )
    (tmp_path / "index.html").write_text("hi")
    m = measure_cold_start([sys.executable, str(script)], warm_requests=3, path="/index.html", timeout=30)
    assert m.app_init == {} and len(m.warm_seconds) == 3 and not process_alive(m.pid)


def test_failed_request_still_stops_the_process(monkeypatch):
    started: list[ReplicaProcess] = []

    class RecordingReplica(ReplicaProcess):  # the real thing, remembered so the test can find its pid
        def start(self, timeout: float = 30.0) -> float:
            started.append(self)
            return super().start(timeout)

    monkeypatch.setattr(coldstart, "ReplicaProcess", RecordingReplica)
    with pytest.raises(RuntimeError, match="GET /nowhere: HTTP 404"):
        measure_cold_start(warm_requests=1, path="/nowhere")
    assert len(started) == 1 and started[0].pid is not None
    assert not process_alive(started[0].pid)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="warm_requests: must be at least 1, got 0"):
        measure_cold_start(warm_requests=0)


def test_function_app_validates_requests_and_predicts():
    with ReplicaProcess(python_command("labkit.apps.function"), name="function") as app:
        ok = httpx.get(app.url + "/predict?index=3").json()
        assert ok == {"index": 3, "predictions": [3]}
        bad = httpx.post(app.url + "/predict", content=json.dumps({"instances": [[0] * 63 + ["x"]]}))
        assert bad.status_code == 400 and bad.json()["error"].startswith("instances[0][63]: expected a number")
        assert httpx.get(app.url + "/predict?index=-1").status_code == 400
        assert httpx.get(app.url + "/nope").status_code == 404


@pytest.mark.parametrize("body, message", [
    (b"{", "body: not valid JSON"),
    (b'{"x": 1}', 'body: expected an object with an "instances" list'),
    (b'{"instances": []}', "instances: expected a non-empty list"),
    (b'{"instances": [[1, 2]]}', "instances[0]: expected a list of 64 pixel values"),
    (b'{"instances": [[true' + b", 0" * 63 + b"]]}", "instances[0][0]: expected a number, got True"),
])
def test_function_rejects_bad_bodies_naming_the_field(body, message):
    from labkit.apps.function import parse_instances

    with pytest.raises(ValueError, match=re.escape(message)):
        parse_instances(body)
