"""What every simulator returns: a result whose `summary()` is a flat dict of scalars.

Each simulator's result (a frozen dataclass holding its arrays and counts) subclasses
`SimResult` and says which scalars matter in `summary()`; the rest comes from here, the same
everywhere: ``str(result)`` is the summary as aligned ``name  value`` lines (what ``print``
shows), ``_repr_html_`` the same as a table (what a notebook shows for a cell ending in a
result), and ``summary()`` itself feeds tables, JSON and ``pandas.DataFrame([r.summary() ...])``.
Results with a story to tell (the mesh's response flags, a canary's outcome) override
``__str__`` with prose and keep the dict for machines.

Conventions every summary follows: percentiles are ``<what>_p<q>`` computed with
`labkit.stats.percentile` (linear interpolation, numpy's default); NaN where there is nothing
to measure; a unit in the key when it is not seconds (``p99_ms``).
"""

from __future__ import annotations

import html
import math
from abc import ABC, abstractmethod

__all__ = ["Scalar", "SimResult", "format_scalar"]

Scalar = float | int | str | None
"""What a summary holds (bool is an int)."""


def format_scalar(value: Scalar) -> str:
    """A summary value as a person reads it: 4 significant digits, thousands separated."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"


class SimResult(ABC):
    """The interface every simulator's result shares."""

    @abstractmethod
    def summary(self) -> dict[str, Scalar]:
        """The scalar results, flat (no nested containers): name -> number, text or None."""

    def __str__(self) -> str:
        rows = self.summary()
        width = max((len(name) for name in rows), default=0)
        return "\n".join(f"{name:<{width}}  {format_scalar(value)}" for name, value in rows.items())

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
                        f"<td style='text-align:right'>{html.escape(format_scalar(value))}</td></tr>"
                        for name, value in self.summary().items())
        return f"<table><caption>{html.escape(type(self).__name__)}</caption>{cells}</table>"
