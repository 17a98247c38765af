"""What one logged inference response says: the labels predicted and the version that served them.

KServe's payload logger posts the response body as the event data, with the request's id as
`id` and the extensions `inferenceservicename`, `namespace`, `component`, `endpoint`
(kserve/kserve pkg/logger/worker.go). Which *version* answered is not one field in KServe,
so it is read, in this order, from:

1. `model_version` in a V2 response: the model server names its version (`--model-version`);
2. the pod: the agent sends the pod name as `source` (pkg/webhook/admission/pod/agent_injector.go
   passes `--source-uri <pod name>`), and a Knative pod is named `<revision>-deployment-...`,
   so the revision is the version;
3. `endpoint`: "default" or "canary" in KServe v1alpha2. v1beta1 labels every revision
   "default", so without 1 or 2 a canary's predictions and the primary's mix under one
   version: one of the pitfalls lab 10 shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Label", "PayloadError", "Served", "label_kind", "read_response"]

Label = int | float | str | bool

# `<revision>-deployment-<replicaset hash>-<pod hash>` (labkit: `<revision>-deployment-<n>`)
_KNATIVE_POD = re.compile(r"^(?:.*/)?(?P<revision>[a-z0-9][-a-z0-9.]*?)-deployment-[-a-z0-9]+/?$")


class PayloadError(ValueError):
    """A logged event the monitor cannot read; the message names the field."""


@dataclass(frozen=True)
class Served:
    """One logged response: who served it and the label predicted for each input row."""

    namespace: str
    model: str
    version: str
    version_from: str
    """Where `version` came from: "model_version", "revision" or "endpoint"."""
    predicted: tuple[Label, ...]


def read_response(attributes: Mapping[str, Any], data: bytes | None) -> Served:
    """Read a `...inference.response` event; PayloadError names what does not fit."""
    if not data:
        raise PayloadError("data: the response event has no body")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"data: not JSON ({exc}); binary tensor responses cannot be "
                           "scored: ask for JSON outputs") from None
    if not isinstance(doc, dict):
        raise PayloadError("data: expected a V1 or V2 response object")
    predicted = _predicted(doc)
    version, version_from = _version(attributes, doc)
    model = str(attributes.get("inferenceservicename") or doc.get("model_name") or "")
    if not model:
        raise PayloadError("ce-inferenceservicename: missing, and the body has no model_name")
    return Served(str(attributes.get("namespace") or "default"), model, version, version_from,
                  predicted)


def label_kind(value: Any) -> str | None:
    """"number", "string" or "boolean" for a label; None for anything else (lists, null...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _predicted(doc: Mapping[str, Any]) -> tuple[Label, ...]:
    if "predictions" in doc:  # V1: {"predictions": [label, ...]}
        values, where = doc["predictions"], "predictions"
    elif "outputs" in doc:  # V2: the `predict` output tensor
        outputs = doc["outputs"]
        found = [o for o in outputs if isinstance(o, dict) and o.get("name") == "predict"] \
            if isinstance(outputs, list) else []
        if not found:
            raise PayloadError("outputs: no `predict` output to score (ask for it, or for no "
                               "outputs: the server then sends predict)")
        values, where = found[0].get("data"), "outputs[predict].data"
    else:
        raise PayloadError("data: neither a V1 (`predictions`) nor a V2 (`outputs`) response")
    if not isinstance(values, list) or not values:
        raise PayloadError(f"{where}: expected a non-empty list of labels")
    for index, value in enumerate(values):
        if label_kind(value) is None:
            raise PayloadError(f"{where}[{index}]: {value!r} is not a label (one class per row)")
    return tuple(values)


def _version(attributes: Mapping[str, Any], doc: Mapping[str, Any]) -> tuple[str, str]:
    if doc.get("model_version"):
        return str(doc["model_version"]), "model_version"
    pod = _KNATIVE_POD.match(str(attributes.get("source", "")))
    if pod:
        return pod["revision"], "revision"
    return str(attributes.get("endpoint") or "default"), "endpoint"
