"""The V1 and V2 (Open Inference Protocol) wire formats: decode requests, encode responses.

Everything a client can get wrong is caught here and raised as ProtocolError with the HTTP
status and a message naming the field (`inputs[0].shape`), so the server answers
`{"error": "..."}` and never lets a bad payload reach the model. V2 tensors are checked as
shape x datatype x data: the element count must equal the product of the shape, and every
element must fit the datatype.

Triton's binary tensor data extension (what `tritonclient` sends by default) is supported both
ways: a request body is a JSON header of `Inference-Header-Content-Length` bytes followed by raw
tensors whose sizes are in `parameters.binary_data_size`; outputs asked for with
`binary_data: true` (or the request parameter `binary_data_output: true`) come back the same way.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

__all__ = [
    "DATATYPES",
    "InferRequest",
    "ProtocolError",
    "RequestedOutput",
    "Tensor",
    "datatype_of",
    "decode_infer_request",
    "decode_json",
    "decode_v1_request",
    "encode_infer_response",
    "encode_v1_response",
    "error_body",
]

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""OIP datatype -> the numpy dtype of its elements (little-endian, as the binary extension sends)."""

# Which numpy kinds of JSON-decoded data each datatype accepts: JSON has no int/float split a
# client can rely on (1 vs 1.0), so float tensors take integers, but integer tensors refuse
# fractions and booleans stay booleans.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


class ProtocolError(ValueError):
    """A request the protocol forbids; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None
    parameters: dict[str, Any]
    binary_output: bool
    """The default for outputs not named in `outputs` (request parameter binary_data_output)."""


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def decode_json(body: bytes, what: str = "request body") -> Any:
    if not body:
        raise ProtocolError(f"{what} is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype for a numpy array (strings and objects are BYTES)."""
    if array.dtype.kind in "OUS":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if name != "BYTES" and dtype == array.dtype.newbyteorder("<"):
            return name
    raise ProtocolError(f"cannot send numpy dtype {array.dtype} as an OIP tensor", status=500)


# ---------------------------------------------------------------------------------------------
# V2 requests


def decode_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse and validate a V2 inference request (JSON, or JSON + binary tensors)."""
    binary: memoryview | bytes
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
            ) from None
        if not 0 < size <= len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length is {size} but the body has {len(body)} bytes"
            )
        header, binary = body[:size], memoryview(body)[size:]
    doc = decode_json(header)
    if not isinstance(doc, dict):
        raise ProtocolError(f"request body must be a JSON object, got {_kind(doc)}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id must be a string, got {_kind(request_id)}")
    parameters = _parameters(doc.get("parameters"), "parameters")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(
            "inputs is missing or empty: send a list of tensors "
            '[{"name", "shape", "datatype", "data"}]'
            if raw_inputs in (None, [])
            else f"inputs must be a list of tensors, got {_kind(raw_inputs)}"
        )
    offset = 0
    inputs = []
    for index, raw in enumerate(raw_inputs):
        tensor, used = _decode_tensor(raw, f"inputs[{index}]", binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise ProtocolError(
            f"the body carries {len(binary)} bytes of binary tensor data but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(doc.get("outputs"), binary_output),
        parameters=parameters,
        binary_output=binary_output,
    )


def _decode_tensor(raw: Any, where: str, binary: memoryview | bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where} must be an object with name, shape, datatype, data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}.name must be a non-empty string")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}.datatype: {datatype!r} is not an OIP datatype; use one of "
            f"{', '.join(DATATYPES)}"
        )
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"{where}.shape must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    parameters = _parameters(raw.get("parameters"), f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in raw:
            raise ProtocolError(f"{where} has both data and parameters.binary_data_size; send one")
        array, used = _binary_array(binary, offset, size, datatype, count, where)
    else:
        if "data" not in raw:
            raise ProtocolError(f"{where}.data is missing (or send binary data with binary_data_size)")
        array, used = _json_array(raw["data"], datatype, shape, where), 0
    try:
        array = array.reshape(shape)
    except ValueError:  # reshape of a 0-size array to an impossible shape
        raise ProtocolError(f"{where}: data do not fit shape {shape}") from None
    return Tensor(name, datatype, shape, array, parameters), used


def _json_array(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = math.prod(shape)
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data must be a list, got {_kind(data)}")
    if datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(item, str) for item in flat):
            raise ProtocolError(f"{where}.data: BYTES tensors take strings in JSON")
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            array = np.array(data)
        except (ValueError, OverflowError):
            raise ProtocolError(
                f"{where}.data: nested lists must be rectangular (same length at each level)"
            ) from None
        dtype = DATATYPES[datatype]
        if array.size and dtype.kind in "iu" and array.dtype.kind in "fO":
            # numpy falls back to float64 when ints straddle the int64/uint64 boundary.
            array = _exact_integers(data, dtype, datatype, where)
        if array.size and array.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
            raise ProtocolError(
                f"{where}.data: datatype {datatype} needs {_wanted(dtype)}, got "
                f"{_found(array)}"
            )
        if dtype.kind in "iu" and array.size:
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise ProtocolError(
                    f"{where}.data: values must be within [{info.min}, {info.max}] for {datatype}"
                )
        array = array.astype(dtype, copy=False).ravel()
    if array.size != count:
        raise ProtocolError(
            f"{where}: shape {shape} needs {count} elements, data has {array.size}"
        )
    return array


def _exact_integers(data: list[Any], dtype: np.dtype[Any], datatype: str, where: str) -> np.ndarray:
    flat = _flatten(data)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
        raise ProtocolError(f"{where}.data: datatype {datatype} needs integers")
    try:
        return np.array(flat, dtype=dtype)
    except OverflowError:
        info = np.iinfo(dtype)
        raise ProtocolError(
            f"{where}.data: values must be within [{info.min}, {info.max}] for {datatype}"
        ) from None


def _binary_array(
    binary: memoryview | bytes, offset: int, size: Any, datatype: str, count: int, where: str
) -> tuple[np.ndarray, int]:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{where}.parameters.binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise ProtocolError(
            f"{where}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} bytes left)"
        )
    chunk = bytes(binary[offset : offset + size])
    if datatype == "BYTES":
        items = _split_bytes(chunk, where)
        if len(items) != count:
            raise ProtocolError(
                f"{where}: shape needs {count} elements, binary data has {len(items)}"
            )
        array = np.empty(count, dtype=object)
        array[:] = items
        return array, size
    dtype = DATATYPES[datatype]
    if size != count * dtype.itemsize:
        raise ProtocolError(
            f"{where}: shape needs {count} x {dtype.itemsize} = {count * dtype.itemsize} bytes "
            f"of {datatype}, binary_data_size is {size}"
        )
    return np.frombuffer(chunk, dtype=dtype), size


def _split_bytes(chunk: bytes, where: str) -> list[bytes]:
    """BYTES in binary form: each element is a 4-byte little-endian length, then the bytes."""
    items, at = [], 0
    while at < len(chunk):
        if at + 4 > len(chunk):
            raise ProtocolError(f"{where}: truncated BYTES element length at byte {at}")
        (length,) = struct.unpack_from("<I", chunk, at)
        at += 4
        if at + length > len(chunk):
            raise ProtocolError(f"{where}: BYTES element at byte {at - 4} runs past its tensor")
        items.append(chunk[at : at + length])
        at += length
    return items


def _requested_outputs(raw: Any, default_binary: bool) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProtocolError(f"outputs must be a list of {{name, parameters}}, got {_kind(raw)}")
    wanted = []
    for index, item in enumerate(raw):
        where = f"outputs[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"{where} must be an object with a string name")
        parameters = _parameters(item.get("parameters"), f"{where}.parameters")
        binary = parameters.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise ProtocolError(f"{where}.parameters.binary_data must be true or false")
        wanted.append(RequestedOutput(item["name"], binary))
    return wanted


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where} must be an object, got {_kind(raw)}")
    for key, value in raw.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ProtocolError(f"{where}.{key} must be a string, number or boolean")
    return raw


# ---------------------------------------------------------------------------------------------
# V2 responses


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray, bool]],
) -> tuple[bytes, int | None]:
    """The response body and, if any output is binary, its JSON header length.

    `outputs` holds (name, array, binary) in the order to send.
    """
    tensors = []
    chunks = []
    for name, array, binary in outputs:
        datatype = datatype_of(array)
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            raw = _to_bytes(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            tensor["data"] = [_text(item) for item in array.ravel().tolist()]
        else:
            tensor["data"] = array.ravel()
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = tensors
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _to_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    parts = []
    for item in array.ravel().tolist():
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def _text(item: Any) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


# ---------------------------------------------------------------------------------------------
# V1


def decode_v1_request(body: bytes) -> np.ndarray:
    """`{"instances": [[...], ...]}` (or `inputs`, as KServe also accepts) -> a 2-D float array."""
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise ProtocolError(f"request body must be a JSON object, got {_kind(doc)}")
    key = "inputs" if "inputs" in doc else "instances"
    rows = doc.get(key)
    if rows is None:
        raise ProtocolError('instances is missing: send {"instances": [[feature, ...], ...]}')
    if not isinstance(rows, list) or not rows:
        raise ProtocolError(f"{key} must be a non-empty list of rows, got {_kind(rows)}")
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            raise ProtocolError(f"{key}[{index}] must be a list of numbers, got {_kind(row)}")
    try:
        array = np.array(rows)
    except (ValueError, OverflowError):
        raise ProtocolError(f"{key}: every row must have the same number of features") from None
    if array.ndim != 2 or (array.size and array.dtype.kind not in "iuf"):
        raise ProtocolError(f"{key}: each row must be a flat list of numbers, got {_found(array)}")
    return array.astype(np.float64, copy=False)


def encode_v1_response(predictions: np.ndarray) -> bytes:
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


# ---------------------------------------------------------------------------------------------
# Messages


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _wanted(dtype: np.dtype[Any]) -> str:
    return {"b": "booleans", "u": "integers", "i": "integers", "f": "numbers"}[dtype.kind]


def _found(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "O": "mixed or nested values", "f": "non-integer numbers",
            "i": "integers", "u": "integers"}.get(array.dtype.kind, str(array.dtype))


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major elements of nested lists."""
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat
