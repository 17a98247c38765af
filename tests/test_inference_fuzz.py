"""Fuzzing the V2 infer endpoint of a real server process: whatever arrives, the answer is
200 or a 4xx with a JSON `{"error": ...}`, never a 5xx or a dead server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inference_helpers import MODELS, call, model_server

from labkit.net import ReplicaProcess

PATH = "/v2/models/iris/infer"
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
datatypes = st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT8", "UINT8", "BOOL", "BYTES",
                             "fp64", "", "COMPLEX"])
shapes = st.one_of(st.lists(st.integers(-2, 6), max_size=4), json_values)
numbers = st.one_of(st.integers(-300, 300), st.floats(-1e6, 1e6), st.booleans(), st.text(max_size=3))
tensors = st.fixed_dictionaries(
    {"name": st.one_of(st.just("input-0"), json_values), "shape": shapes, "datatype": datatypes},
    optional={
        "data": st.one_of(st.lists(numbers, max_size=12), st.lists(st.lists(numbers, max_size=5), max_size=4), json_values),
        "parameters": st.one_of(st.dictionaries(st.sampled_from(["binary_data_size", "content_type", "x"]),
                                                st.one_of(st.integers(-5, 64), st.text(max_size=3), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2)),
                                                max_size=2), json_values),
    },
)
requests = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensors, max_size=3), json_values)},
    optional={
        "id": json_values,
        "outputs": st.one_of(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba", "nope"])},
                                                            optional={"parameters": json_values}), max_size=3), json_values),
        "parameters": json_values,
    },
)


@pytest.fixture(scope="module")
def server() -> Iterator[ReplicaProcess]:
    with model_server("iris", str(MODELS / "iris")) as proc:
        yield proc


def check(server: ReplicaProcess, body: bytes, headers: dict[str, str] | None = None) -> None:
    status, doc, _ = call(server.port, "POST", PATH, body, headers)
    if status == 200:
        assert doc["outputs"][0]["name"] in ("predict", "predict_proba")
        return
    assert 400 <= status < 500, (status, doc, body[:300])
    assert isinstance(doc.get("error"), str) and doc["error"], (status, doc)


@FUZZ
@given(doc=requests)
def test_structured_payloads(server: ReplicaProcess, doc: dict[str, Any]) -> None:
    check(server, orjson.dumps(doc))


@FUZZ
@given(doc=json_values)
def test_any_json(server: ReplicaProcess, doc: Any) -> None:
    check(server, orjson.dumps(doc))


@FUZZ
@given(body=st.binary(max_size=200), header_length=st.one_of(st.none(), st.integers(-3, 220),
                                                                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=4)))
def test_raw_bytes_and_binary_headers(server: ReplicaProcess, body: bytes, header_length: Any) -> None:
    headers = None
    if header_length is not None:
        headers = {"Inference-Header-Content-Length": str(header_length)}
    check(server, body, headers)


@FUZZ
@given(rows=st.integers(0, 3), size=st.integers(-1, 100), trailing=st.binary(max_size=40),
       datatype=datatypes)
def test_binary_tensors_with_lying_sizes(server: ReplicaProcess, rows: int, size: int,
                                         trailing: bytes, datatype: str) -> None:
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [rows, 4], "datatype": datatype,
                                       "parameters": {"binary_data_size": size}}]})
    check(server, header + trailing, {"Inference-Header-Content-Length": str(len(header))})


@FUZZ
@given(doc=st.one_of(json_values, st.fixed_dictionaries({"instances": json_values}),
                     st.fixed_dictionaries({"instances": st.lists(st.lists(numbers, max_size=5), max_size=4)})))
def test_v1_predict(server: ReplicaProcess, doc: Any) -> None:
    status, body, _ = call(server.port, "POST", "/v1/models/iris:predict", orjson.dumps(doc))
    if status == 200:
        assert isinstance(body["predictions"], list)
        return
    assert 400 <= status < 500 and isinstance(body.get("error"), str), (status, body, doc)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_server_is_healthy_after_the_fuzzing(server: ReplicaProcess) -> None:
    """Runs after the fuzz tests in this module (same server): still live, ready, and small."""
    assert server.running
    assert call(server.port, "GET", "/v2/health/live")[0] == 200
    assert call(server.port, "GET", "/v2/health/ready")[0] == 200
    if Path("/proc").exists() and server.pid:
        assert rss_kib(server.pid) < 400 * 1024
