"""A container's ``resources`` as far as labkit uses them: ``requests.cpu``, for the HPA.

Kubernetes' HPA measures CPU *utilisation*: the CPU a pod uses over the CPU its containers
request, so a revision of Knative's HPA class needs ``resources.requests.cpu``; without it
the HPA reports ``FailedGetResourceMetric: missing request for cpu`` and never scales.
labkit reserves and limits nothing (it runs processes, not containers), so ``limits`` and
``claims`` are accepted and ignored with a warning; ``requests`` are validated as Kubernetes
quantities and kept.

Followed: Kubernetes ``ResourceRequirements``
(https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#resources)
and the quantity format of ``k8s.io/apimachinery/pkg/api/resource`` (``Quantity``:
a decimal number with an SI (m, k, M, G, T, P, E), binary (Ki, Mi, ...) or exponent suffix;
``MilliValue`` rounds up). Own code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

from labkit.manifests import KubeModel

__all__ = ["Quantity", "ResourceRequirements", "cpu_millis", "parse_quantity"]

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
_SUFFIX = {"": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
           "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
           "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
           "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}


_PATTERN_MESSAGE = ("quantities must match the regular expression "
                    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


def _parse(value: object) -> Decimal | str:
    """The quantity, or why `value` is not one (Kubernetes' words)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return _PATTERN_MESSAGE
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return _PATTERN_MESSAGE
    number, suffix = match.group(1), match.group(2) or ""
    scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIX[suffix]
    quantity = Decimal(number) * scale
    return quantity if quantity >= 0 else "must be greater than or equal to 0"


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("500m", "1", 0.5, "128Mi") as a number; ValueError if it is not one."""
    parsed = _parse(value)
    if isinstance(parsed, str):
        raise ValueError(f"{parsed}, got {value!r}")
    return parsed


def _quantity(value: Any) -> str | int | float:
    parsed = _parse(value)
    if isinstance(parsed, str):
        raise PydanticCustomError("quantity", parsed)  # the manifest error adds the value
    return value


Quantity = Annotated[str | int | float, PlainValidator(_quantity)]
"""A Kubernetes quantity as written in the manifest (kept as written, for export)."""


def cpu_millis(value: object) -> int:
    """A CPU quantity in millicores, rounded up (``Quantity.MilliValue``): "250m" -> 250, 0.5 -> 500."""
    return math.ceil(parse_quantity(value) * 1000)


class ResourceRequirements(KubeModel):
    """``resources``: the requests are kept (the HPA class divides CPU use by ``requests.cpu``)."""

    ignored_fields: ClassVar[Mapping[str, str]] = {
        "limits": "labkit does not limit CPU and memory",
        "claims": "labkit allocates no dynamic resources",
    }

    requests: dict[str, Quantity] | None = None

    def cpu_request_millis(self) -> int | None:
        """``requests.cpu`` in millicores, or None when not set."""
        if not self.requests or "cpu" not in self.requests:
            return None
        return cpu_millis(self.requests["cpu"])
