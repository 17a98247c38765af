"""CloudEvents over HTTP (binary and structured content modes), as a Knative broker sees them.

An event travels through labkit as an `Event`: the context attributes exactly as the producer
sent them plus the data as raw bytes. Keeping the producer's bytes is the point: Knative's broker
must not change `data`, must not add `time`, must not upgrade `specversion`, and must keep every
extension (reference §3.2). The official `cloudevents` SDK (2.x, `cloudevents.core`) is the
validator and the binary-mode encoder, but it is not allowed to *parse* the request, because
2.2.0 quietly fills in what is missing (a fresh `id`, `specversion` 1.0, `time` = now) and turns
JSON data into Python objects that it re-serialises with different whitespace. So the request is
read raw, the four required attributes are checked on the raw headers / JSON members, and then
the SDK's `CloudEvent` constructor validates the rest (optional attributes, extension names,
timestamps).

Errors are `EventError`s carrying the HTTP status a broker should answer: 400 for anything that
is not exactly one valid event (Knative answers 400 for batches, non-events, unknown spec versions,
unsupported formats and invalid JSON alike) and 413 for an oversized body.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, unquote

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import to_binary
from cloudevents.core.exceptions import (
    BaseCloudEventException,
    CloudEventValidationError,
)
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v03.event import CloudEvent as CloudEventV03
from cloudevents.core.v1.event import CloudEvent as CloudEventV1
from dateutil.parser import isoparse  # type: ignore[import-untyped]  # the SDK's own parser

__all__ = [
    "BATCH_CONTENT_TYPE",
    "REQUIRED_ATTRIBUTES",
    "SPEC_VERSIONS",
    "STRUCTURED_CONTENT_TYPE",
    "AttributeValue",
    "Event",
    "EventError",
    "attribute_text",
    "check_body_size",
    "decode_request",
    "encode",
    "encode_binary",
    "encode_structured",
    "from_cloudevent",
    "is_json_content_type",
    "to_cloudevent",
]

AttributeValue = str | int | bool
"""CloudEvents attribute values as labkit keeps them: JSON's string, integer and boolean."""

REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
SPEC_VERSIONS = ("1.0", "0.3")
STRUCTURED_CONTENT_TYPE = JSONFormat.CONTENT_TYPE  # application/cloudevents+json
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"

_SDK_EVENT_CLASSES = {"1.0": CloudEventV1, "0.3": CloudEventV03}
_JSON_MEDIA = re.compile(r"^[^/;\s]+/([^;\s]*\+)?json\s*(;|$)", re.IGNORECASE)
# The HTTP binding's header-value rule: printable ASCII stays, space, '"' and '%' and everything
# else are percent-encoded (the same set the SDK uses).
_HEADER_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in ' "%')
_INT32 = range(-(2**31), 2**31)


class EventError(ValueError):
    """A request that is not exactly one valid CloudEvent; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str, attribute: str | None = None) -> None:
        self.status = status
        self.message = message
        self.attribute = attribute
        super().__init__(message)


@dataclass(frozen=True)
class Event:
    """One CloudEvent: attributes as the producer sent them, data as raw bytes (or None).

    `attributes` holds every context attribute including `datacontenttype` and extensions;
    values are str, int or bool (int/bool only arrive through structured mode). The mapping is
    read-only so an event stored, filtered and delivered is the same event everywhere.
    """

    attributes: Mapping[str, AttributeValue]
    data: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))
        if self.data is not None and not isinstance(self.data, bytes):
            raise TypeError(f"Event.data must be bytes or None, got {type(self.data).__name__}")

    @property
    def id(self) -> str:
        return str(self.attributes["id"])

    @property
    def source(self) -> str:
        return str(self.attributes["source"])

    @property
    def type(self) -> str:
        return str(self.attributes["type"])

    @property
    def specversion(self) -> str:
        return str(self.attributes["specversion"])

    @property
    def datacontenttype(self) -> str | None:
        value = self.attributes.get("datacontenttype")
        return None if value is None else str(value)

    def with_attributes(self, **changes: AttributeValue | None) -> Event:
        """A copy with attributes added or replaced (a value of None removes the attribute).

        This is how a broker *adds* extensions (knativearrivaltime, the dead-letter error
        extensions) or strips its hop counter, without touching anything else.
        """
        attributes = dict(self.attributes)
        for name, value in changes.items():
            if value is None:
                attributes.pop(name, None)
            else:
                attributes[name] = value
        return Event(attributes, self.data)


def attribute_text(value: AttributeValue) -> str:
    """The canonical string form of an attribute value (booleans are `true`/`false`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_json_content_type(content_type: str | None) -> bool:
    """True for `*/json` and `*/*+json` media types, and for an absent content type.

    In the JSON event format an absent `datacontenttype` means `application/json`.
    """
    return content_type is None or bool(_JSON_MEDIA.match(content_type.strip()))


def check_body_size(size: int, limit: int | None) -> None:
    """Raise a 413 `EventError` when a body of `size` bytes is over `limit` (None: no limit).

    Call it with the Content-Length before reading the body, and with the real length after.
    """
    if limit is not None and size > limit:
        raise EventError(413, f"request body is {size} bytes; this broker accepts at most {limit}")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def decode_request(
    headers: Mapping[str, str], body: bytes, *, max_body_bytes: int | None = None
) -> Event:
    """Read one CloudEvent from an HTTP request (binary or structured mode) without changing it.

    Header names are case-insensitive. Raises `EventError` (400 or 413) with a message naming
    what is wrong: the missing or empty attribute, the unknown spec version, the JSON error.
    """
    check_body_size(len(body), max_body_bytes)
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type.startswith("application/cloudevents-batch"):
        raise EventError(
            400,
            f"batched content mode ({content_type!r}) is not accepted: "
            "send one event per request, in binary or structured mode",
        )
    if media_type.startswith("application/cloudevents"):
        if media_type != STRUCTURED_CONTENT_TYPE:
            raise EventError(
                400,
                f"unsupported event format {media_type!r}: structured mode must use "
                f"{STRUCTURED_CONTENT_TYPE}",
            )
        event = _decode_structured(body)
    else:
        event = _decode_binary(lowered, body)
    to_cloudevent(event)  # the SDK's validation of optional attributes and extension names
    return event


def _decode_binary(headers: Mapping[str, str], body: bytes) -> Event:
    if "ce-specversion" not in headers:
        content_type = headers.get("content-type")
        raise EventError(
            400,
            "not a CloudEvent: no ce-specversion header (binary mode) and Content-Type "
            f"{content_type!r} is not {STRUCTURED_CONTENT_TYPE} (structured mode)",
            attribute="specversion",
        )
    attributes: dict[str, AttributeValue] = {}
    for name, value in headers.items():
        # The binding forbids ce-datacontenttype; Content-Type is the only source of truth.
        if name.startswith("ce-") and name != "ce-datacontenttype":
            attributes[name[3:]] = unquote(value)
    if "content-type" in headers:
        attributes["datacontenttype"] = headers["content-type"]
    _check_required(attributes, lambda name: f"header ce-{name}")
    return Event(attributes, body if body else None)


def _decode_structured(body: bytes) -> Event:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EventError(400, f"structured event body is not UTF-8: {err}") from None
    members = _json_members(text)
    attributes: dict[str, AttributeValue] = {}
    for name, (value, _raw) in members.items():
        if name in ("data", "data_base64") or value is None:  # JSON null: attribute absent
            continue
        if isinstance(value, float) or not isinstance(value, (str, int)):
            raise EventError(
                400,
                f"attribute {name!r} must be a string, integer or boolean, got JSON "
                f"{type(value).__name__}",
                attribute=name,
            )
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT32:
            raise EventError(400, f"attribute {name!r} is outside the 32-bit integer range",
                             attribute=name)
        attributes[name] = value
    _check_required(attributes, lambda name: f"JSON member {name!r}")
    data, attributes = _structured_data(members, attributes)
    return Event(attributes, data)


def _structured_data(
    members: dict[str, tuple[Any, str]], attributes: dict[str, AttributeValue]
) -> tuple[bytes | None, dict[str, AttributeValue]]:
    """The data bytes of a structured event: the member's own JSON text when it is JSON."""
    has_data = "data" in members and members["data"][0] is not None
    has_base64 = "data_base64" in members and members["data_base64"][0] is not None
    if has_data and has_base64:
        raise EventError(400, "structured event has both 'data' and 'data_base64'; use one")
    if has_base64:
        return _base64_member(members["data_base64"][0], "data_base64"), attributes
    if not has_data:
        return None, attributes
    value, raw = members["data"]
    if attributes.get("specversion") == "0.3" and attributes.get("datacontentencoding") == "base64":
        # 0.3's way of carrying binary data; the encoding is transport, not part of the event.
        attributes = {k: v for k, v in attributes.items() if k != "datacontentencoding"}
        return _base64_member(value, "data"), attributes
    content_type = attributes.get("datacontenttype")
    if isinstance(value, str) and not is_json_content_type(str(content_type)
                                                          if content_type is not None else None):
        return value.encode("utf-8"), attributes
    return raw.encode("utf-8"), attributes


def _base64_member(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise EventError(400, f"{name!r} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise EventError(400, f"{name!r} is not valid base64: {err}") from None


def _json_members(text: str) -> dict[str, tuple[Any, str]]:
    """Top-level members of a JSON object as name -> (value, exact source text of the value).

    The source text is what lets a JSON `data` member reach the subscriber byte for byte.
    """
    try:
        document = json.loads(text)
    except ValueError as err:
        raise EventError(400, f"malformed JSON in structured event: {err}") from None
    if not isinstance(document, dict):
        raise EventError(
            400, f"a structured event must be a JSON object, got JSON {type(document).__name__}"
        )
    decoder = json.JSONDecoder()
    members: dict[str, tuple[Any, str]] = {}
    index = _skip_space(text, 0) + 1  # past '{'
    index = _skip_space(text, index)
    while text[index] != "}":
        name, index = decoder.raw_decode(text, index)
        index = _skip_space(text, _skip_space(text, index) + 1)  # past ':'
        value, end = decoder.raw_decode(text, index)
        if name in members:
            raise EventError(400, f"structured event has the member {name!r} twice")
        members[name] = (value, text[index:end])
        index = _skip_space(text, end)
        if text[index] == ",":
            index = _skip_space(text, index + 1)
    return members


def _skip_space(text: str, index: int) -> int:
    while text[index] in " \t\r\n":
        index += 1
    return index


def _check_required(attributes: Mapping[str, AttributeValue], where: Any) -> None:
    for name in REQUIRED_ATTRIBUTES:
        if name not in attributes:
            raise EventError(400, f"missing required attribute {name!r} ({where(name)})",
                             attribute=name)
        value = attributes[name]
        if not isinstance(value, str):
            raise EventError(400, f"required attribute {name!r} must be a string ({where(name)})",
                             attribute=name)
        if value == "":
            raise EventError(400, f"required attribute {name!r} is empty ({where(name)})",
                             attribute=name)
    if attributes["specversion"] not in SPEC_VERSIONS:
        raise EventError(
            400,
            f"unknown specversion {attributes['specversion']!r}: this broker accepts "
            + " and ".join(SPEC_VERSIONS),
            attribute="specversion",
        )


# ---------------------------------------------------------------------------------------------
# The SDK's CloudEvent
# ---------------------------------------------------------------------------------------------


def to_cloudevent(event: Event) -> BaseCloudEvent:
    """The SDK's CloudEvent for `event`, validated by the SDK; raises `EventError` (400).

    The SDK 2.2.0 constructor adds `time` = now when absent; that invention is removed again so
    the SDK object says exactly what the producer said.
    """
    _check_required(event.attributes, lambda name: "attribute")
    attributes: dict[str, Any] = dict(event.attributes)
    if "time" in attributes:
        try:
            attributes["time"] = isoparse(attribute_text(attributes["time"]))
        except ValueError as err:
            raise EventError(400, f"attribute 'time' is not an RFC 3339 timestamp: {err}",
                             attribute="time") from None
    event_class = _SDK_EVENT_CLASSES[event.specversion]
    try:
        cloudevent = event_class(attributes, event.data)
    except CloudEventValidationError as err:
        first = next(iter(err.errors), None)
        details = "; ".join(
            f"{name}: {', '.join(str(e) for e in errors)}" for name, errors in err.errors.items()
        )
        raise EventError(400, f"invalid CloudEvent: {details}", attribute=first) from None
    except BaseCloudEventException as err:
        raise EventError(400, f"invalid CloudEvent: {err}") from None
    if "time" not in event.attributes:
        # get_attributes() is the event's own dict in 2.2.0: undo the invented timestamp.
        cloudevent.get_attributes().pop("time", None)
    return cloudevent


def from_cloudevent(cloudevent: BaseCloudEvent) -> Event:
    """An `Event` from an SDK CloudEvent (e.g. one a source built with the SDK's defaults).

    `time` becomes its RFC 3339 text; data that is not bytes is serialised the way the SDK's
    JSON format would put it on the wire.
    """
    attributes: dict[str, AttributeValue] = {}
    for name, value in cloudevent.get_attributes().items():
        if value is None:
            continue
        if isinstance(value, datetime):
            text = value.isoformat()
            attributes[name] = text[:-6] + "Z" if text.endswith("+00:00") else text
        else:
            attributes[name] = value
    data = cloudevent.get_data()
    if data is not None and not isinstance(data, bytes):
        content_type = attributes.get("datacontenttype")
        data = JSONFormat().write_data(data, None if content_type is None else str(content_type))
    return Event(attributes, data)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def encode_binary(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body for binary mode: `ce-*` headers, Content-Type, data bytes as they are.

    The SDK writes the headers (percent-encoding per the HTTP binding); `time` is then put back
    as the producer's text, because the SDK renders it from a datetime and would change e.g.
    `...00.000Z` into `...00Z`.
    """
    cloudevent = to_cloudevent(
        Event({name: attribute_text(v) for name, v in event.attributes.items()}, event.data)
    )
    message = to_binary(cloudevent, JSONFormat())
    headers = dict(message.headers)
    headers.pop("ce-time", None)
    if "time" in event.attributes:
        headers["ce-time"] = quote(attribute_text(event.attributes["time"]), safe=_HEADER_SAFE)
    return headers, message.body


def encode_structured(event: Event) -> tuple[dict[str, str], bytes]:
    """Headers and body for structured mode (`application/cloudevents+json`).

    JSON data is embedded as its own text (not re-serialised), text data as a JSON string,
    anything else as `data_base64` (0.3: `datacontentencoding: base64`). Written here rather
    than by the SDK's JSON format, which base64-encodes all bytes and re-renders `time`.
    """
    to_cloudevent(event)
    attributes = dict(event.attributes)
    data_member: tuple[str, str] | None = None
    if event.data is not None:
        data_member = _data_member(event.data, event.datacontenttype)
        if data_member[0] == "data_base64" and event.specversion == "0.3":
            attributes["datacontentencoding"] = "base64"
            data_member = ("data", data_member[1])
    parts = [f"{json.dumps(name)}:{json.dumps(value)}" for name, value in attributes.items()]
    if data_member is not None:
        parts.append(f"{json.dumps(data_member[0])}:{data_member[1]}")
    body = ("{" + ",".join(parts) + "}").encode("utf-8")
    return {"content-type": STRUCTURED_CONTENT_TYPE}, body


def _data_member(data: bytes, content_type: str | None) -> tuple[str, str]:
    """(member name, member JSON text) carrying `data` without changing a byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        if is_json_content_type(content_type):
            try:
                # A JSON null would read back as "no data": only base64 keeps those bytes.
                if json.loads(text) is not None:
                    return "data", text
            except ValueError:
                pass  # JSON content type but not JSON: only base64 keeps the bytes
        else:
            return "data", json.dumps(text)
    return "data_base64", json.dumps(base64.b64encode(data).decode("ascii"))


def encode(event: Event, mode: str = "binary") -> tuple[dict[str, str], bytes]:
    """Encode for delivery; `mode` is "binary" (Knative's default) or "structured"/"json"."""
    if mode == "binary":
        return encode_binary(event)
    if mode in ("structured", "json"):
        return encode_structured(event)
    raise ValueError(f"unknown content mode {mode!r}: expected 'binary' or 'structured'")
