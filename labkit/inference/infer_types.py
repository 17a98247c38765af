"""The kserve SDK's request, response and error types, without the SDK.

`InferRequest` / `InferInput` and `InferResponse` / `InferOutput` carry V2 tensors with the
attribute and method names of kserve.protocol.infer_type (name, shape, datatype, data,
parameters, `as_numpy`, `set_data_from_numpy`, `to_rest`); `get_predict_input` and
`get_predict_response` convert as kserve.utils.utils does; `InvalidInput` and
`InferenceError` are kserve.errors' (400 and 500). Pure data: labkit.inference.custom serves
them, decoding and encoding the wire format with labkit.inference.protocol.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from labkit.inference.protocol import DATATYPES, RequestedOutput, datatype_of

__all__ = [
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "InferenceError",
    "InvalidInput",
    "get_predict_input",
    "get_predict_response",
]


# ---------------------------------------------------------------------------------------------
# errors, as kserve.errors names them


class InvalidInput(ValueError):
    """Bad input from the client: 400."""


class InferenceError(RuntimeError):
    """The model failed on a valid request: 500 with this message."""


# ---------------------------------------------------------------------------------------------
# V2 request and response objects (kserve.protocol.infer_type)


class _Tensor:
    """What InferInput and InferOutput share: name, shape, datatype, data, parameters."""

    def __init__(self, name: str, shape: list[int], datatype: str, data: Any = None,
                 parameters: dict[str, Any] | None = None) -> None:
        self.name = name
        self.shape = list(shape)
        self.datatype = datatype.upper()
        self.parameters = parameters
        self._array: np.ndarray | None = data if isinstance(data, np.ndarray) else None
        self._data = None if self._array is not None else data

    @property
    def data(self) -> Any:
        """The elements, row-major, as a list (JSON's form)."""
        if self._data is None and self._array is not None:
            self._data = self._array.ravel().tolist()
        return self._data

    @data.setter
    def data(self, data: Any) -> None:
        self._data, self._array = data, None

    def as_numpy(self) -> np.ndarray:
        """The tensor as a numpy array of its shape."""
        if self._array is not None:
            return self._array.reshape(self.shape)
        dtype = np.dtype(object) if self.datatype == "BYTES" else _dtype(self.datatype)
        return np.array(self._data, dtype=dtype).reshape(self.shape)

    def set_data_from_numpy(self, tensor: np.ndarray, binary_data: bool = False) -> None:
        """Set the data from an array whose datatype and shape match this tensor's."""
        if not isinstance(tensor, np.ndarray):
            raise InferenceError("input_tensor must be a numpy array")
        if datatype_of(tensor) != self.datatype:
            raise InferenceError(f"got unexpected datatype {datatype_of(tensor)} from numpy "
                                 f"array, expected {self.datatype}")
        if list(tensor.shape) != self.shape:
            raise InferenceError(f"got unexpected numpy array shape {list(tensor.shape)}, "
                                 f"expected {self.shape}")
        self._array, self._data = tensor, None
        if binary_data:
            self.parameters = {**(self.parameters or {}), "binary_data": True}

    def to_dict(self) -> dict[str, Any]:
        doc = {"name": self.name, "shape": self.shape, "datatype": self.datatype,
               "data": self.data}
        if self.parameters:
            doc["parameters"] = self.parameters
        return doc


def _dtype(datatype: str) -> np.dtype[Any]:
    if datatype not in DATATYPES:
        raise InvalidInput(f"invalid datatype {datatype} in the input")
    return DATATYPES[datatype]


class InferInput(_Tensor):
    """One input tensor of a V2 request."""


class InferOutput(_Tensor):
    """One output tensor of a V2 response."""


class InferRequest:
    """A V2 inference request: `inputs` (InferInput), `id`, `parameters`, `request_outputs`."""

    def __init__(self, model_name: str, infer_inputs: list[InferInput],
                 request_id: str | None = None, parameters: dict[str, Any] | None = None,
                 request_outputs: list[RequestedOutput] | None = None,
                 model_version: str | None = None) -> None:
        self.model_name = model_name
        self.inputs = infer_inputs
        self.id = request_id
        self.parameters = parameters
        self.request_outputs = request_outputs
        self.model_version = model_version

    def get_input_by_name(self, name: str) -> InferInput | None:
        return next((i for i in self.inputs if i.name == name), None)

    def to_rest(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"inputs": [i.to_dict() for i in self.inputs]}
        if self.id is not None:
            doc["id"] = self.id
        if self.parameters:
            doc["parameters"] = self.parameters
        return doc


class InferResponse:
    """A V2 inference response: `outputs` (InferOutput), `id`, `model_name`."""

    def __init__(self, response_id: str | None, model_name: str, infer_outputs: list[InferOutput],
                 model_version: str | None = None,
                 parameters: dict[str, Any] | None = None) -> None:
        self.id = response_id
        self.model_name = model_name
        self.outputs = infer_outputs
        self.model_version = model_version
        self.parameters = parameters

    def get_output_by_name(self, name: str) -> InferOutput | None:
        return next((o for o in self.outputs if o.name == name), None)

    @classmethod
    def from_rest(cls, doc: dict[str, Any]) -> InferResponse:
        """A V2 JSON response body (a predictor's answer to a transformer) as an InferResponse,
        as kserve.protocol.infer_type.InferResponse.from_rest reads it."""
        try:
            outputs = [InferOutput(o["name"], o["shape"], o["datatype"], o.get("data"),
                                   o.get("parameters")) for o in doc["outputs"]]
            return cls(doc.get("id"), doc["model_name"], outputs, doc.get("model_version"),
                       doc.get("parameters"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"not a V2 inference response: missing or malformed {exc}") from None

    def to_rest(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"model_name": self.model_name}
        if self.model_version is not None:
            doc["model_version"] = self.model_version
        if self.id is not None:
            doc["id"] = self.id
        if self.parameters:
            doc["parameters"] = self.parameters
        doc["outputs"] = [o.to_dict() for o in self.outputs]
        return doc


def get_predict_input(payload: dict[str, Any] | InferRequest) -> np.ndarray:
    """The rows to predict on: V1 `instances` (or `inputs`), or the V2 request's first input,
    as kserve.utils.utils.get_predict_input gives them."""
    if isinstance(payload, InferRequest):
        return payload.inputs[0].as_numpy()
    rows = payload.get("instances", payload.get("inputs"))
    if not isinstance(rows, list):
        raise InvalidInput('Expected "instances" to be a list')
    return np.asarray(rows)


def get_predict_response(payload: dict[str, Any] | InferRequest, result: Any,
                         model_name: str) -> dict[str, Any] | InferResponse:
    """The response for `result`: V1 `{"predictions": [...]}`, or a V2 InferResponse with one
    output `output-0`, as kserve.utils.utils.get_predict_response makes them."""
    array = np.asarray(result)
    if not isinstance(payload, InferRequest):
        return {"predictions": array.tolist()}
    output = InferOutput("output-0", list(array.shape), datatype_of(array), array)
    return InferResponse(payload.id or str(uuid.uuid4()), model_name, [output])
