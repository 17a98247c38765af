"""Reading Istio spec dicts: typed getters that fail with the field path.

The mesh policy modules take plain dicts shaped like Istio's YAML `spec` (camelCase keys, as
`yaml.safe_load` returns them), so a thin adapter from any model layer is `model_dump()`.
Every problem raises `SpecError` (a `ValueError`) whose message starts with the field path,
e.g. ``http[0].route[1].weight: must be >= 0, got -5``.

Durations follow Istio's YAML form, which is Go's `time.ParseDuration` syntax as accepted by
the Istio CRDs (https://istio.io/latest/docs/reference/config/networking/virtual-service/ uses
`2s`, `0.5s`; DestinationRule examples use `3m`, `30s`): one or more `<number><unit>` with
unit in h, m, s, ms, us/µs, ns. A bare number such as ``10`` is rejected, as Istio rejects it.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, overload

from labkit.suggest import did_you_mean

__all__ = [
    "UNLIMITED",
    "SpecError",
    "boolean",
    "check_keys",
    "duration",
    "integer",
    "is_dns_label",
    "join",
    "mapping",
    "number",
    "percentage",
    "sample",
    "sequence",
    "string",
]

UNLIMITED = 2**32 - 1
"""Istio's "not set" for connection-pool limits (it overrides Envoy's small defaults)."""


class SpecError(ValueError):
    """A spec dict that Istio would reject; the message starts with the field path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


def join(path: str, key: str | int) -> str:
    """Extend a field path: join("http[0]", "route") -> "http[0].route"; ints index lists."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def mapping(value: Any, path: str, *, default: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A dict (YAML mapping); None gives `default` (an empty dict unless told)."""
    if value is None:
        return {} if default is None else default
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be a mapping, got {_kind(value)} {value!r}")
    return value


def sequence(value: Any, path: str) -> Sequence[Any]:
    """A list (YAML sequence); None gives an empty list."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SpecError(path, f"must be a list, got {_kind(value)} {value!r}")
    return value


def check_keys(spec: Mapping[str, Any], known: Iterable[str], path: str) -> None:
    """Reject keys Istio's schema does not have: a misspelt field must not be silently ignored."""
    allowed = set(known)
    for key in spec:
        if key not in allowed:
            hint = did_you_mean(key, allowed) or "known fields: " + ", ".join(sorted(allowed))
            raise SpecError(join(path, str(key)), f"unknown field {str(key)!r}; {hint}")


@overload
def string(value: Any, path: str, *, default: str, required: bool = ...) -> str: ...
@overload
def string(value: Any, path: str, *, default: None = ..., required: Literal[True]) -> str: ...
@overload
def string(value: Any, path: str, *, default: None = ..., required: bool = ...) -> str | None: ...
def string(value: Any, path: str, *, default: str | None = None, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return default
    if not isinstance(value, str):
        raise SpecError(path, f"must be a string, got {_kind(value)} {value!r}")
    if required and not value:
        raise SpecError(path, "must not be empty")
    return value


@overload
def integer(value: Any, path: str, *, default: int, minimum: int | None = ...,
            maximum: int | None = ...) -> int: ...
@overload
def integer(value: Any, path: str, *, default: None = ..., minimum: int | None = ...,
            maximum: int | None = ...) -> int | None: ...
def integer(value: Any, path: str, *, default: int | None = None, minimum: int | None = None,
            maximum: int | None = None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"must be an integer, got {_kind(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(path, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(path, f"must be <= {maximum}, got {value}")
    return value


@overload
def number(value: Any, path: str, *, default: float, minimum: float | None = ...,
           maximum: float | None = ...) -> float: ...
@overload
def number(value: Any, path: str, *, default: None = ..., minimum: float | None = ...,
           maximum: float | None = ...) -> float | None: ...
def number(value: Any, path: str, *, default: float | None = None, minimum: float | None = None,
           maximum: float | None = None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SpecError(path, f"must be a number, got {_kind(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(path, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(path, f"must be <= {maximum}, got {value}")
    return float(value)


@overload
def boolean(value: Any, path: str, *, default: bool) -> bool: ...
@overload
def boolean(value: Any, path: str, *, default: None = ...) -> bool | None: ...
def boolean(value: Any, path: str, *, default: bool | None = None) -> bool | None:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(path, f"must be true or false, got {_kind(value)} {value!r}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@overload
def duration(value: Any, path: str, *, default: float, minimum: float | None = ...) -> float: ...
@overload
def duration(value: Any, path: str, *, default: None = ..., minimum: float | None = ...) -> float | None: ...
def duration(value: Any, path: str, *, default: float | None = None,
             minimum: float | None = None) -> float | None:
    """A duration string ("1.5s", "100ms", "1m30s") in seconds; bare numbers are an error."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise SpecError(
            path, f"must be a duration string with a unit such as '10s' or '250ms', "
                  f"got {_kind(value)} {value!r}")
    text = value.strip()
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise SpecError(
            path, f"invalid duration {value!r}: use a number with a unit, e.g. '10s', '250ms', '1m'")
    if minimum is not None and total < minimum:
        raise SpecError(path, f"must be at least {minimum * 1000:g}ms, got {value!r}")
    return total


def percentage(value: Any, path: str, *, default: float) -> float:
    """Istio's `Percent` message `{value: 0..100}` as a fraction 0..1; absent gives `default`."""
    if value is None:
        return default
    spec = mapping(value, path)
    check_keys(spec, ("value",), path)
    pct = number(spec.get("value"), join(path, "value"), default=0.0, minimum=0.0, maximum=100.0)
    return pct / 100.0


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def is_dns_label(text: str) -> bool:
    """RFC 1123 label, as Kubernetes and istiod check names: lower-case, digits, inner '-'."""
    return _DNS_LABEL.fullmatch(text) is not None


_PER_MILLION = 1_000_000


def sample(rng: random.Random, fraction: float) -> bool:
    """True with probability `fraction`, drawn as Envoy draws runtime fractions: in parts per
    million (so 0.1 % works, and 0 % never fires)."""
    threshold = round(fraction * _PER_MILLION)
    return threshold > 0 and rng.randrange(_PER_MILLION) < threshold
