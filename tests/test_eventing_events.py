"""CloudEvents codec: what a Knative broker accepts, rejects, and passes through untouched."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.eventing.events import (
    Event,
    EventError,
    check_body_size,
    decode_request,
    encode,
    encode_binary,
    encode_structured,
    from_cloudevent,
    to_cloudevent,
)

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "abc-1",
    "ce-source": "/lab/uploads",
    "ce-type": "dev.knative.lab.file.uploaded",
}
STRUCTURED = {"content-type": "application/cloudevents+json"}


def structured(members: dict) -> bytes:
    return json.dumps(members).encode()


def required_members() -> dict:
    return {"specversion": "1.0", "id": "abc-1", "source": "/lab/uploads",
            "type": "dev.knative.lab.file.uploaded"}


# -- binary mode ---------------------------------------------------------------------------


def test_binary_decode_keeps_attributes_extensions_and_bytes() -> None:
    body = b'{"a":1,  "b":[1,2]}'  # odd whitespace must survive
    headers = {**BINARY, "Content-Type": "application/json", "CE-MyExt": "v1",
               "ce-subject": "a.txt", "ce-time": "2026-01-02T03:04:05.000Z"}
    event = decode_request(headers, body)
    assert event.attributes == {
        "specversion": "1.0", "id": "abc-1", "source": "/lab/uploads",
        "type": "dev.knative.lab.file.uploaded", "myext": "v1", "subject": "a.txt",
        "time": "2026-01-02T03:04:05.000Z", "datacontenttype": "application/json",
    }
    assert event.data == body
    out_headers, out_body = encode_binary(event)
    assert out_body == body
    assert out_headers["ce-time"] == "2026-01-02T03:04:05.000Z"  # not re-rendered by the SDK
    assert out_headers["ce-myext"] == "v1"
    assert out_headers["content-type"] == "application/json"
    assert decode_request(out_headers, out_body) == event


def test_no_time_is_invented_on_the_way_through() -> None:
    event = decode_request(BINARY, b"")
    headers, body = encode_binary(event)
    assert "ce-time" not in headers
    assert "time" not in to_cloudevent(event).get_attributes()
    assert body == b"" and event.data is None
    assert b'"time"' not in encode_structured(event)[1]


def test_percent_encoded_header_values_round_trip() -> None:
    event = Event({**required_members(), "subject": 'Euro € "q" 50%'}, None)
    headers, _ = encode_binary(event)
    assert headers["ce-subject"] == "Euro%20%E2%82%AC%20%22q%22%2050%25"
    assert headers["ce-subject"].isascii()
    assert decode_request(headers, b"").attributes["subject"] == 'Euro € "q" 50%'


def test_spec_version_03_is_not_upgraded() -> None:
    event = decode_request({**BINARY, "ce-specversion": "0.3"}, b"x")
    assert encode_binary(event)[0]["ce-specversion"] == "0.3"


# -- structured mode -----------------------------------------------------------------------


def test_structured_json_data_keeps_its_own_text() -> None:
    raw_data = '{ "size" : 3,"name":"a.txt" }'
    body = ('{"specversion":"1.0","id":"x","source":"/s","type":"t","num":42,"flag":true,'
            '"datacontenttype":"application/json","data":' + raw_data + "}").encode()
    event = decode_request(STRUCTURED, body)
    assert event.data == raw_data.encode()
    assert event.attributes["num"] == 42 and event.attributes["flag"] is True
    headers, binary_body = encode_binary(event)
    assert binary_body == raw_data.encode()
    assert headers["ce-num"] == "42" and headers["ce-flag"] == "true"
    assert decode_request(*encode_structured(event)) == event


@pytest.mark.parametrize(
    "content_type, data",
    [
        ("text/plain", b"hello"),            # text -> JSON string, not quoted on the wire
        ("application/octet-stream", bytes(range(256))),  # not UTF-8 -> data_base64
        ("application/json", b"not json"),  # JSON type but not JSON -> data_base64
        (None, b'[1, 2, 3]'),                # absent type means JSON
    ],
)
def test_structured_round_trip_keeps_data_bytes(content_type: str | None, data: bytes) -> None:
    attributes = required_members()
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    event = Event(attributes, data)
    headers, body = encode_structured(event)
    assert headers == {"content-type": "application/cloudevents+json"}
    assert decode_request(headers, body) == event
    assert decode_request(*encode(event, "binary")) == event


def test_structured_text_data_is_emitted_as_string_and_binary_as_base64() -> None:
    text = json.loads(encode_structured(Event({**required_members(),
                                               "datacontenttype": "text/plain"}, b"hi"))[1])
    assert text["data"] == "hi" and "data_base64" not in text
    raw = json.loads(encode_structured(Event({**required_members(),
                                              "datacontenttype": "image/png"}, b"\xff\x00"))[1])
    assert base64.b64decode(raw["data_base64"]) == b"\xff\x00" and "data" not in raw


def test_structured_data_base64_is_decoded() -> None:
    body = structured({**required_members(), "data_base64": base64.b64encode(b"\x00\x01").decode()})
    assert decode_request(STRUCTURED, body).data == b"\x00\x01"


def test_structured_03_base64_encoding_is_decoded() -> None:
    body = structured({**required_members(), "specversion": "0.3",
                       "datacontentencoding": "base64", "data": base64.b64encode(b"\xff").decode()})
    event = decode_request(STRUCTURED, body)
    assert event.data == b"\xff" and "datacontentencoding" not in event.attributes
    assert decode_request(*encode_structured(event)) == event


def test_sdk_conversion_round_trip() -> None:
    from cloudevents.core.v1.event import CloudEvent

    sdk_event = CloudEvent({"type": "t", "source": "/s", "myext": "v"}, {"k": 1})
    event = from_cloudevent(sdk_event)
    assert event.attributes["myext"] == "v" and event.id == sdk_event.get_id()
    assert event.data == b'{"k": 1}'
    stamped = event.attributes["time"]
    assert isinstance(stamped, str) and stamped.endswith("Z")  # the SDK stamps time; it is kept
    back = to_cloudevent(event)
    assert back.get_extension("myext") == "v" and back.get_data() == b'{"k": 1}'


# -- rejections ----------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["id", "source", "specversion", "type"])
def test_binary_missing_required_attribute_is_400_naming_it(attribute: str) -> None:
    headers = {k: v for k, v in BINARY.items() if k != f"ce-{attribute}"}
    with pytest.raises(EventError) as info:
        decode_request(headers, b"")
    assert info.value.status == 400
    assert info.value.attribute == attribute
    assert attribute in str(info.value)


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_binary_empty_required_attribute_is_400(attribute: str) -> None:
    with pytest.raises(EventError, match=f"'{attribute}' is empty") as info:
        decode_request({**BINARY, f"ce-{attribute}": ""}, b"")
    assert info.value.status == 400


@pytest.mark.parametrize("attribute", ["id", "source", "specversion", "type"])
def test_structured_empty_required_attribute_is_400(attribute: str) -> None:
    with pytest.raises(EventError, match=f"'{attribute}' is empty") as info:
        decode_request(STRUCTURED, structured({**required_members(), attribute: ""}))
    assert info.value.status == 400 and info.value.attribute == attribute


def test_header_names_are_case_insensitive_and_content_type_wins() -> None:
    headers = {"Ce-Specversion": "1.0", "CE-ID": "x", "ce-Source": "/s", "cE-tYPE": "t",
               "Content-Type": "text/plain", "ce-datacontenttype": "image/png"}
    event = decode_request(headers, b"hi")
    assert event.id == "x" and event.datacontenttype == "text/plain"


@pytest.mark.parametrize("attribute", ["id", "source", "specversion", "type"])
def test_structured_missing_required_attribute_is_400(attribute: str) -> None:
    members = required_members()
    del members[attribute]
    with pytest.raises(EventError, match=f"missing required attribute '{attribute}'") as info:
        decode_request(STRUCTURED, structured(members))
    assert info.value.status == 400 and info.value.attribute == attribute


@pytest.mark.parametrize(
    "headers, body, message",
    [
        ({"content-type": "application/cloudevents-batch+json"},
         json.dumps([required_members()]).encode(), "batched content mode"),
        ({"content-type": "application/json"}, b'{"hello": 1}', "not a CloudEvent"),
        ({}, b"", "not a CloudEvent"),
        ({**BINARY, "ce-specversion": "19.0"}, b"", "unknown specversion '19.0'"),
        (STRUCTURED, b'{"specversion": "1.0", "id": ', "malformed JSON"),
        (STRUCTURED, b"[1]", "must be a JSON object"),
        (STRUCTURED, structured({**required_members(), "data": 1, "data_base64": "AA=="}),
         "both 'data' and 'data_base64'"),
        (STRUCTURED, structured({**required_members(), "data_base64": "%%%"}), "not valid base64"),
        (STRUCTURED, structured({**required_members(), "id": 7}), "'id' must be a string"),
        (STRUCTURED, structured({**required_members(), "ratio": 0.5}), "'ratio' must be"),
        ({"content-type": "application/cloudevents+xml"}, b"<e/>", "unsupported event format"),
        ({**BINARY, "ce-subject": ""}, b"", "subject"),
        ({**BINARY, "ce-bad_name": "x"}, b"", "bad_name"),
        ({**BINARY, "ce-time": "yesterday"}, b"", "RFC 3339"),
        (STRUCTURED, b'{"specversion":"1.0","id":"a","id":"b","source":"/s","type":"t"}',
         "member 'id' twice"),
    ],
)
def test_not_exactly_one_valid_event_is_400(headers: dict, body: bytes, message: str) -> None:
    with pytest.raises(EventError, match=message) as info:
        decode_request(headers, body)
    assert info.value.status == 400


def test_oversized_body_is_413() -> None:
    decode_request(BINARY, b"x" * 10, max_body_bytes=10)
    with pytest.raises(EventError, match="11 bytes") as info:
        decode_request(BINARY, b"x" * 11, max_body_bytes=10)
    assert info.value.status == 413
    with pytest.raises(EventError):
        check_body_size(1_000_001, 1_000_000)


def test_event_is_immutable_and_with_attributes_copies() -> None:
    event = Event(required_members(), b"d")
    with pytest.raises(TypeError):
        event.attributes["id"] = "other"  # type: ignore[index]  # read-only: the TypeError is the test
    changed = event.with_attributes(knativearrivaltime="2026-01-01T00:00:00Z", id=None)
    assert "id" in event.attributes and "id" not in changed.attributes
    assert changed.data == b"d"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown content mode"):
        encode(Event(required_members()), "batch")


# -- property: whatever goes in comes out, in both modes -----------------------------------

_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                              blacklist_categories=("Cs", "Cc")), max_size=30)
_extensions = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True).filter(
        lambda n: n not in {"specversion", "id", "source", "type", "subject", "time",
                            "dataschema", "datacontenttype", "data"}),
    _text, max_size=4)
_content_types = st.sampled_from([None, "application/json", "text/plain; charset=utf-8",
                                  "application/octet-stream", "application/vnd.x+json"])
_times = st.sampled_from([None, "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.120+02:00",
                          "1985-04-12T23:20:50.52Z"])


@settings(derandomize=True, max_examples=150, deadline=None)
@given(extensions=_extensions, subject=_text.filter(bool), content_type=_content_types,
       time=_times, data=st.one_of(st.none(), st.binary(max_size=40),
                                   st.text(max_size=20).map(str.encode)))
def test_round_trip_in_both_modes_changes_nothing(extensions: dict, subject: str,
                                                  content_type: str | None, time: str | None,
                                                  data: bytes | None) -> None:
    attributes = {**required_members(), "subject": subject, **extensions}
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    if time is not None:
        attributes["time"] = time
    event = Event(attributes, data or None)
    assert decode_request(*encode_binary(event)) == event
    assert decode_request(*encode_structured(event)) == event
