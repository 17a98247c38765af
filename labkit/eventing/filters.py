"""Trigger filters: which events a Trigger passes on to its subscriber. Pure, no I/O.

Two generations of filters exist in Knative and both are here with Knative's semantics:

* `spec.filter.attributes` (legacy): a map attribute -> value, all entries must hold (AND);
  matching is exact and case-sensitive; the value "" means "present with a non-empty value";
  an extension the event does not carry fails the entry.
* `spec.filters` (CloudEvents Subscriptions API dialects): a list (an implicit `all`) of
  elements, each with exactly one of `exact`, `prefix`, `suffix` (one attribute each, as
  Knative's webhook requires), `all`, `any`, `not`. `cesql` is recognised and rejected as not
  supported yet, so a Trigger that relies on it fails loudly instead of matching everything.

Precedence (Knative's broker filter): a non-empty `filters` list wins and `filter` is ignored;
otherwise `filter.attributes` applies; otherwise everything passes. `filters: []` does not
override `filter.attributes`.

Attribute lookup (shared by both): the spec attributes always "exist" and read as "" when unset;
any other name is an extension, and a missing extension makes the comparison fail. Values are
compared as their canonical strings (`true`, `42`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from labkit.eventing import SpecError
from labkit.eventing.events import Event, attribute_text
from labkit.suggest import did_you_mean

__all__ = [
    "DIALECTS",
    "AllOf",
    "AnyOf",
    "AttributesFilter",
    "Exact",
    "Filter",
    "MatchAll",
    "Not",
    "Prefix",
    "Suffix",
    "lookup",
    "parse_attributes_filter",
    "parse_filters",
    "parse_trigger_filter",
]

# Attributes defined by the spec: present on every event, "" when an optional one is unset.
# `schemaurl` is the 0.3 name of `dataschema`; `datacontentencoding` is 0.3 only.
_SPEC_ATTRIBUTES = {
    "specversion": ("specversion",),
    "type": ("type",),
    "source": ("source",),
    "subject": ("subject",),
    "id": ("id",),
    "time": ("time",),
    "dataschema": ("dataschema", "schemaurl"),
    "schemaurl": ("schemaurl", "dataschema"),
    "datacontenttype": ("datacontenttype",),
    "datacontentencoding": ("datacontentencoding",),
}
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not", "cesql")


def lookup(event: Event, name: str) -> str | None:
    """The attribute's canonical string; "" for an unset spec attribute; None for a missing
    extension (which fails every comparison).

    Like Knative, `datamediatype` reads the media type of `datacontenttype` without parameters.
    """
    if name == "datamediatype":
        return (event.datacontenttype or "").split(";", 1)[0].strip()
    for candidate in _SPEC_ATTRIBUTES.get(name, ()):
        if candidate in event.attributes:
            return attribute_text(event.attributes[candidate])
    if name in _SPEC_ATTRIBUTES:
        return ""
    value = event.attributes.get(name)
    return None if value is None else attribute_text(value)


class Filter(Protocol):
    """Anything that decides whether an event passes."""

    def matches(self, event: Event) -> bool: ...


@dataclass(frozen=True)
class MatchAll:
    """No filter at all: every event passes (a Trigger without `filter` / `filters`)."""

    def matches(self, event: Event) -> bool:
        return True


@dataclass(frozen=True)
class AttributesFilter:
    """Legacy `filter.attributes`: ANDed exact matches; "" means present and non-empty."""

    attributes: tuple[tuple[str, str], ...]

    def matches(self, event: Event) -> bool:
        for name, wanted in self.attributes:
            actual = lookup(event, name)
            if actual is None:
                return False
            if wanted == "" and actual == "":
                return False
            if wanted != "" and actual != wanted:
                return False
        return True


@dataclass(frozen=True)
class Exact:
    attribute: str
    value: str

    def matches(self, event: Event) -> bool:
        return lookup(event, self.attribute) == self.value


@dataclass(frozen=True)
class Prefix:
    attribute: str
    value: str

    def matches(self, event: Event) -> bool:
        actual = lookup(event, self.attribute)
        return actual is not None and actual.startswith(self.value)


@dataclass(frozen=True)
class Suffix:
    attribute: str
    value: str

    def matches(self, event: Event) -> bool:
        actual = lookup(event, self.attribute)
        return actual is not None and actual.endswith(self.value)


@dataclass(frozen=True)
class AllOf:
    filters: tuple[Filter, ...]

    def matches(self, event: Event) -> bool:
        return all(f.matches(event) for f in self.filters)


@dataclass(frozen=True)
class AnyOf:
    filters: tuple[Filter, ...]

    def matches(self, event: Event) -> bool:
        return any(f.matches(event) for f in self.filters)


@dataclass(frozen=True)
class Not:
    filter: Filter

    def matches(self, event: Event) -> bool:
        return not self.filter.matches(event)


_ATTRIBUTE_DIALECTS: dict[str, type[Exact | Prefix | Suffix]] = {
    "exact": Exact, "prefix": Prefix, "suffix": Suffix,
}

# ---------------------------------------------------------------------------------------------
# Parsing, with Knative's validation rules and field paths
# ---------------------------------------------------------------------------------------------


def parse_trigger_filter(spec: Mapping[str, Any], path: str = "spec") -> Filter:
    """The filter a Trigger spec (the dict under `spec:`) applies, with Knative's precedence.

    Both `filter` and `filters` are validated even when one of them is ignored, as Knative's
    webhook does. Raises `SpecError` naming the field path.
    """
    legacy = spec.get("filter")
    legacy_filter: Filter = MatchAll()
    if legacy is not None:
        if not isinstance(legacy, Mapping):
            raise SpecError(f"{path}.filter", "must be a map (with `attributes`)")
        unknown = sorted(set(legacy) - {"attributes"})
        if unknown:
            raise SpecError(f"{path}.filter.{unknown[0]}", "unknown field; expected `attributes`")
        if legacy.get("attributes") is not None:
            legacy_filter = parse_attributes_filter(
                legacy["attributes"], f"{path}.filter.attributes"
            )
    new = spec.get("filters")
    if new is None:
        return legacy_filter
    new_filter = parse_filters(new, f"{path}.filters")
    return new_filter if new else legacy_filter


def parse_attributes_filter(
    attributes: Any, path: str = "spec.filter.attributes"
) -> AttributesFilter:
    """Legacy `filter.attributes`: a map of attribute name to string ("" allowed)."""
    return AttributesFilter(tuple(_string_map(attributes, path, allow_empty_values=True).items()))


def parse_filters(filters: Any, path: str = "spec.filters") -> AllOf:
    """The `filters` list (an implicit `all`)."""
    return AllOf(_filter_list(filters, path))


def _filter_list(items: Any, path: str) -> tuple[Filter, ...]:
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise SpecError(path, "must be a list of filters")
    return tuple(_filter(item, f"{path}[{i}]") for i, item in enumerate(items))


def _filter(element: Any, path: str) -> Filter:
    if not isinstance(element, Mapping):
        raise SpecError(path, "must be a map with exactly one of " + ", ".join(DIALECTS))
    unknown = sorted(set(element) - set(DIALECTS))
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}",
                        "unknown filter dialect; "
                        + (did_you_mean(unknown[0], DIALECTS) or "expected one of " + ", ".join(DIALECTS)))
    present = [name for name in DIALECTS if name in element]
    if not present:
        raise SpecError(path, "exactly one of " + ", ".join(DIALECTS) + " must be set")
    if len(present) > 1:
        raise SpecError(path, "multiple dialects found (" + ", ".join(present)
                        + "); a filter can have only one dialect set")
    dialect = present[0]
    value = element[dialect]
    where = f"{path}.{dialect}"
    if dialect in ("exact", "prefix", "suffix"):
        pairs = _string_map(value, where, allow_empty_values=False)
        if len(pairs) != 1:
            raise SpecError(where, f"must hold exactly one attribute: value pair, got {len(pairs)}")
        ((name, text),) = pairs.items()
        return _ATTRIBUTE_DIALECTS[dialect](name, text)
    if dialect == "all":
        return AllOf(_filter_list(value, where))
    if dialect == "any":
        nested = _filter_list(value, where)
        if not nested:
            # Knative silently skips an empty `any`; a student more likely forgot the list items.
            raise SpecError(where, "must hold at least one filter")
        return AnyOf(nested)
    if dialect == "not":
        return Not(_filter(value, where))
    raise SpecError(where, "CloudEvents SQL filters are not supported yet by labkit; "
                           "express the condition with exact/prefix/suffix/all/any/not")


def _string_map(value: Any, path: str, *, allow_empty_values: bool) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be a map of attribute to string")
    result: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.match(name):
            raise SpecError(f"{path}.{name}", "invalid attribute name: it must start with a "
                            "lowercase letter and contain only lowercase letters and digits")
        if not isinstance(text, str):
            raise SpecError(f"{path}.{name}", f"must be a string, got {type(text).__name__} "
                            "(quote numbers and booleans in YAML)")
        if text == "" and not allow_empty_values:
            raise SpecError(f"{path}.{name}", "must not be empty")
        result[name] = text
    return result
