"""V1/V2 codec: strict shape x datatype x data checks, binary extension both ways."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.inference.protocol import (
    DATATYPES,
    ProtocolError,
    decode_infer_request,
    decode_v1_request,
    encode_infer_response,
    encode_v1_response,
)


def body(**doc: object) -> bytes:
    return orjson.dumps(doc)


def tensor(data: object, shape: list[int], datatype: str = "FP64", name: str = "x") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_flat_and_nested_data_give_the_same_array() -> None:
    flat = decode_infer_request(body(inputs=[tensor([1, 2, 3, 4], [2, 2])]))
    nested = decode_infer_request(body(inputs=[tensor([[1, 2], [3, 4]], [2, 2])]))
    assert np.array_equal(flat.inputs[0].array, nested.inputs[0].array)
    assert flat.inputs[0].array.dtype == np.float64 and flat.inputs[0].array.shape == (2, 2)


def test_id_parameters_and_outputs_are_read() -> None:
    request = decode_infer_request(body(
        id="42", parameters={"binary_data_output": True, "content_type": "np"},
        inputs=[tensor([1.0], [1, 1])],
        outputs=[{"name": "predict_proba", "parameters": {"binary_data": False}}, {"name": "predict"}],
    ))
    assert request.id == "42" and request.binary_output and request.outputs is not None
    assert [(o.name, o.binary) for o in request.outputs] == [("predict_proba", False), ("predict", True)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "inputs is missing or empty"),
        ({"inputs": []}, "inputs is missing or empty"),
        ({"inputs": {"a": 1}}, "inputs must be a list"),
        ({"inputs": [tensor([1, 2, 3], [2, 2])]}, r"inputs\[0\]: shape \[2, 2\] needs 4 elements, data has 3"),
        ({"inputs": [tensor([1, 2], [2], "FP99")]}, r"inputs\[0\]\.datatype: 'FP99' is not an OIP datatype"),
        ({"inputs": [tensor([1.5], [1], "INT64")]}, "INT64 needs integers"),
        ({"inputs": [tensor([2**63, -1], [2], "INT64")]}, r"within \[-9223372036854775808"),
        ({"inputs": [tensor([300], [1], "INT8")]}, r"within \[-128, 127\] for INT8"),
        ({"inputs": [tensor([-1], [1], "UINT8")]}, r"within \[0, 255\]"),
        ({"inputs": [tensor(["a"], [1], "FP32")]}, "FP32 needs numbers, got strings"),
        ({"inputs": [tensor([True], [1], "FP32")]}, "needs numbers, got booleans"),
        ({"inputs": [tensor([1], [1], "BOOL")]}, "BOOL needs booleans, got integers"),
        ({"inputs": [tensor([[1, 2], [3]], [3])]}, "rectangular"),
        ({"inputs": [tensor([1], [-1])]}, "shape must be a list of non-negative integers"),
        ({"inputs": [tensor([1], [True])]}, "shape must be a list of non-negative integers"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, r"inputs\[0\]\.data is missing"),
        ({"inputs": [tensor(1, [1])]}, r"data must be a list, got a number"),
        ({"inputs": [tensor([1], [1], name="")]}, r"name must be a non-empty string"),
        ({"inputs": [tensor([1], [1])], "id": 7}, "id must be a string"),
        ({"inputs": [tensor([1], [1])], "parameters": {"a": [1]}}, r"parameters\.a must be a string"),
        ({"inputs": [tensor([1], [1])], "outputs": [{"nom": "x"}]}, r"outputs\[0\] must be an object"),
        ({"inputs": [tensor([1], [1], "BYTES")]}, "BYTES tensors take strings"),
    ],
)
def test_bad_requests_name_the_field(doc: dict, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as err:
        decode_infer_request(orjson.dumps(doc))
    assert err.value.status == 400


def test_non_json_and_non_object() -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        decode_infer_request(b"{nope")
    with pytest.raises(ProtocolError, match="is empty"):
        decode_infer_request(b"")
    with pytest.raises(ProtocolError, match="must be a JSON object, got a list"):
        decode_infer_request(b"[1]")


def binary_request(arrays: list[tuple[str, np.ndarray]], extra: bytes = b"") -> tuple[bytes, str]:
    inputs = [
        {"name": n, "shape": list(a.shape), "datatype": dt,
         "parameters": {"binary_data_size": a.nbytes}}
        for n, a, dt in ((n, a, _dt(a)) for n, a in arrays)
    ]
    header = orjson.dumps({"inputs": inputs})
    return header + b"".join(a.tobytes() for _, a in arrays) + extra, str(len(header))


def _dt(array: np.ndarray) -> str:
    return next(k for k, v in DATATYPES.items() if v == array.dtype)


def test_binary_inputs_decode() -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.array([1, -2], dtype=np.int16)
    raw, length = binary_request([("a", a), ("b", b)])
    request = decode_infer_request(raw, length)
    assert np.array_equal(request.inputs[0].array, a) and request.inputs[0].array.dtype == np.float32
    assert np.array_equal(request.inputs[1].array, b)


def test_binary_sizes_must_add_up() -> None:
    raw, length = binary_request([("a", np.ones(4))], extra=b"xx")
    with pytest.raises(ProtocolError, match="add up to 32"):
        decode_infer_request(raw, length)
    header = orjson.dumps({"inputs": [{"name": "a", "shape": [3], "datatype": "FP64",
                                       "parameters": {"binary_data_size": 16}}]})
    with pytest.raises(ProtocolError, match="needs 3 x 8 = 24 bytes of FP64"):
        decode_infer_request(header + bytes(16), str(len(header)))
    with pytest.raises(ProtocolError, match="runs past the end"):
        decode_infer_request(header + bytes(4), str(len(header)))
    with pytest.raises(ProtocolError, match="must be an integer"):
        decode_infer_request(header, "ten")
    with pytest.raises(ProtocolError, match="but the body has"):
        decode_infer_request(header, str(len(header) + 1))


def test_binary_bytes_tensor() -> None:
    items = [b"ab", b"", b"xyz"]
    chunk = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = orjson.dumps({"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(chunk)}}]})
    request = decode_infer_request(header + chunk, str(len(header)))
    assert request.inputs[0].array.tolist() == items
    short = struct.pack("<I", 10) + b"ab"
    header = orjson.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(short)}}]})
    with pytest.raises(ProtocolError, match="runs past its tensor"):
        decode_infer_request(header + short, str(len(header)))


def test_response_json_and_binary() -> None:
    labels = np.array([0, 2], dtype=np.int64)
    proba = np.array([[0.5, 0.5], [0.1, 0.9]])
    payload, length = encode_infer_response("iris", None, "7", [("predict", labels, False)])
    assert length is None
    assert orjson.loads(payload) == {"model_name": "iris", "id": "7", "outputs": [
        {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}]}
    payload, length = encode_infer_response("iris", "v1", None,
                                            [("predict", labels, True), ("predict_proba", proba, False)])
    doc = orjson.loads(payload[:length])
    assert doc["model_version"] == "v1" and "id" not in doc
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.array_equal(np.frombuffer(payload[length:], dtype="<i8"), labels)
    assert doc["outputs"][1]["data"] == proba.ravel().tolist()


def test_string_labels_are_bytes_tensors() -> None:
    labels = np.array(["setosa", "virginica"])
    payload, _ = encode_infer_response("iris", None, None, [("predict", labels, False)])
    assert orjson.loads(payload)["outputs"][0] == {
        "name": "predict", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]}


def test_v1_roundtrip_and_errors() -> None:
    rows = decode_v1_request(b'{"instances": [[1, 2.5], [3, 4]]}')
    assert rows.dtype == np.float64 and rows.shape == (2, 2)
    assert decode_v1_request(b'{"inputs": [[1]]}').shape == (1, 1)
    assert orjson.loads(encode_v1_response(np.array([1, 0]))) == {"predictions": [1, 0]}
    for raw, message in [
        (b'{"rows": []}', "instances is missing"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"instances": [1, 2]}', r"instances\[0\] must be a list of numbers"),
        (b'{"instances": [[1], [1, 2]]}', "same number of features"),
        (b'{"instances": [["a"]]}', "flat list of numbers"),
        (b'{"instances": [[[1]]]}', "flat list of numbers"),
    ]:
        with pytest.raises(ProtocolError, match=message):
            decode_v1_request(raw)


NUMERIC = [k for k in DATATYPES if k not in ("BYTES", "FP16")]


@settings(max_examples=150, deadline=None)
@given(
    datatype=st.sampled_from(NUMERIC),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    binary=st.booleans(),
)
def test_any_valid_tensor_roundtrips(datatype: str, shape: list[int], seed: int, binary: bool) -> None:
    """Whatever a valid client encodes (JSON or binary), the server decodes to the same array,
    and the response encoder gives it back unchanged."""
    dtype = DATATYPES[datatype]
    rng = np.random.default_rng(seed)
    if dtype.kind == "b":
        array = rng.integers(0, 2, size=shape).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    else:
        array = rng.standard_normal(size=shape).astype(dtype)
    if binary:
        raw, length = binary_request([("t", array)])
        decoded = decode_infer_request(raw, length).inputs[0].array
    else:
        doc = {"inputs": [tensor(array.ravel().tolist(), shape, datatype, "t")]}
        decoded = decode_infer_request(orjson.dumps(doc)).inputs[0].array
    assert decoded.dtype == dtype and decoded.shape == tuple(shape)
    assert np.array_equal(decoded, array)
    payload, json_length = encode_infer_response("m", None, None, [("t", decoded, binary)])
    if binary:
        out = np.frombuffer(payload[json_length:], dtype=dtype).reshape(shape)
    else:
        out = np.array(orjson.loads(payload)["outputs"][0]["data"], dtype=dtype).reshape(shape)
    assert np.array_equal(out, array)
