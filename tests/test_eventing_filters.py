"""Trigger filters: legacy attributes, the new dialects, precedence and validation."""

from __future__ import annotations

import pytest

from labkit.eventing import SpecError
from labkit.eventing.events import Event
from labkit.eventing.filters import lookup, parse_trigger_filter

UPLOAD = Event({
    "specversion": "1.0", "id": "1", "source": "/lab/uploads", "type": "dev.lab.file.uploaded",
    "subject": "cat.jpg", "myext": "blue", "count": 42, "urgent": True, "emptyext": "",
})
NO_SUBJECT = Event({"specversion": "1.0", "id": "2", "source": "/lab/ping",
                    "type": "dev.knative.sources.ping"})


def matches(spec: dict, event: Event) -> bool:
    return parse_trigger_filter(spec).matches(event)


def test_lookup_reads_spec_attributes_as_empty_and_missing_extensions_as_none() -> None:
    assert lookup(NO_SUBJECT, "subject") == ""
    assert lookup(NO_SUBJECT, "dataschema") == ""
    assert lookup(NO_SUBJECT, "myext") is None
    assert lookup(UPLOAD, "urgent") == "true" and lookup(UPLOAD, "count") == "42"
    typed = Event({**NO_SUBJECT.attributes, "datacontenttype": "application/json; charset=utf-8"})
    assert lookup(typed, "datamediatype") == "application/json"
    assert lookup(NO_SUBJECT, "datamediatype") == ""


@pytest.mark.parametrize(
    "attributes, upload, no_subject",
    [
        ({}, True, True),
        ({"type": "dev.lab.file.uploaded"}, True, False),
        ({"type": "dev.lab.file.uploaded", "source": "/lab/uploads"}, True, False),
        ({"type": "dev.lab.file.uploaded", "source": "/other"}, False, False),  # AND
        ({"type": "DEV.LAB.FILE.UPLOADED"}, False, False),  # case-sensitive
        ({"type": "dev.lab"}, False, False),  # exact, not prefix
        ({"myext": "blue"}, True, False),  # extension attribute
        ({"myext": ""}, True, False),  # "" = present and non-empty; missing extension fails
        ({"subject": ""}, True, False),  # unset optional attribute is not present
        ({"emptyext": ""}, False, False),  # present but empty value
        ({"count": "42", "urgent": "true"}, True, False),  # canonical string forms
        ({"id": ""}, True, True),
    ],
)
def test_legacy_attributes_filter(attributes: dict, upload: bool, no_subject: bool) -> None:
    spec = {"filter": {"attributes": attributes}}
    assert matches(spec, UPLOAD) is upload
    assert matches(spec, NO_SUBJECT) is no_subject


@pytest.mark.parametrize(
    "filters, upload, no_subject",
    [
        ([{"exact": {"type": "dev.lab.file.uploaded"}}], True, False),
        ([{"exact": {"myext": "blue"}}], True, False),
        ([{"prefix": {"type": "dev.knative."}}], False, True),
        ([{"prefix": {"myext": "bl"}}], True, False),  # missing extension fails
        ([{"suffix": {"subject": ".jpg"}}], True, False),
        ([{"suffix": {"subject": ".JPG"}}], False, False),
        ([{"prefix": {"source": "/lab/"}}, {"suffix": {"subject": ".png"}}], False, False),
        ([{"all": [{"prefix": {"source": "/lab/"}}, {"exact": {"urgent": "true"}}]}], True, False),
        ([{"all": []}], True, True),
        ([{"any": [{"suffix": {"subject": ".png"}}, {"exact": {"count": "42"}}]}], True, False),
        ([{"any": [{"exact": {"type": "x"}}, {"prefix": {"source": "/lab/p"}}]}], False, True),
        ([{"not": {"exact": {"subject": "x"}}}], True, True),  # unset subject reads as ""
        ([{"not": {"prefix": {"myext": "b"}}}], False, True),
        ([{"not": {"any": [{"suffix": {"subject": ".jpg"}},
                           {"exact": {"type": "dev.knative.sources.ping"}}]}}], False, False),
        ([{"all": [{"any": [{"not": {"exact": {"myext": "red"}}}]},
                   {"prefix": {"type": "dev."}}]}], True, True),
    ],
)
def test_new_filters_dialects(filters: list, upload: bool, no_subject: bool) -> None:
    spec = {"filters": filters}
    assert matches(spec, UPLOAD) is upload
    assert matches(spec, NO_SUBJECT) is no_subject


@pytest.mark.parametrize(
    "spec, upload, no_subject",
    [
        ({}, True, True),  # no filter: everything
        ({"filter": {}}, True, True),  # Knative's defaulted empty filter
        # non-empty filters win; filter is ignored entirely
        ({"filter": {"attributes": {"type": "dev.lab.file.uploaded"}},
          "filters": [{"prefix": {"type": "dev.knative."}}]}, False, True),
        # filters: [] does not override filter.attributes
        ({"filter": {"attributes": {"type": "dev.lab.file.uploaded"}}, "filters": []},
         True, False),
        ({"filters": []}, True, True),
    ],
)
def test_precedence(spec: dict, upload: bool, no_subject: bool) -> None:
    assert matches(spec, UPLOAD) is upload
    assert matches(spec, NO_SUBJECT) is no_subject


@pytest.mark.parametrize(
    "spec, path, message",
    [
        ({"filters": [{"exact": {"type": "a"}}, {"prefix": ["type"]}]},
         "spec.filters[1].prefix", "must be a map of attribute to string"),
        ({"filters": [{"exact": {"type": "a"}, "suffix": {"type": "b"}}]},
         "spec.filters[0]", "multiple dialects found"),
        ({"filters": [{}]}, "spec.filters[0]", "exactly one of"),
        ({"filters": [{"exakt": {"type": "a"}}]}, "spec.filters[0].exakt",
         "unknown filter dialect"),
        ({"filters": [{"exact": {"type": "a", "source": "b"}}]},
         "spec.filters[0].exact", "exactly one attribute"),
        ({"filters": [{"exact": {}}]}, "spec.filters[0].exact", "exactly one attribute"),
        ({"filters": [{"suffix": {"subject": ""}}]}, "spec.filters[0].suffix.subject",
         "must not be empty"),
        ({"filters": [{"prefix": {"Type": "a"}}]}, "spec.filters[0].prefix.Type",
         "invalid attribute name"),
        ({"filters": [{"exact": {"count": 42}}]}, "spec.filters[0].exact.count",
         "must be a string"),
        ({"filters": [{"all": [{"not": {"prefix": {"0bad": "x"}}}]}]},
         "spec.filters[0].all[0].not.prefix.0bad", "invalid attribute name"),
        ({"filters": [{"any": []}]}, "spec.filters[0].any", "at least one filter"),
        ({"filters": [{"all": {"exact": {"type": "a"}}}]}, "spec.filters[0].all",
         "must be a list"),
        ({"filters": [{"cesql": "type = 'a'"}]}, "spec.filters[0].cesql", "not supported yet"),
        ({"filters": {"exact": {"type": "a"}}}, "spec.filters", "must be a list"),
        ({"filter": {"attributes": {"my-ext": "a"}}}, "spec.filter.attributes.my-ext",
         "invalid attribute name"),
        ({"filter": {"attributes": {"type": None}}}, "spec.filter.attributes.type",
         "must be a string"),
        ({"filter": {"atributes": {"type": "a"}}}, "spec.filter.atributes", "unknown field"),
        # the ignored `filter` is still validated, as Knative's webhook does
        ({"filter": {"attributes": {"BAD": "a"}}, "filters": [{"exact": {"type": "a"}}]},
         "spec.filter.attributes.BAD", "invalid attribute name"),
    ],
)
def test_validation_errors_name_the_field(spec: dict, path: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_trigger_filter(spec)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
