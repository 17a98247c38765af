"""One way to check a numeric argument: `check_range`, and `check_seed` on top of it.

Modelled on scikit-learn's parameter validation (sklearn/utils/_param_validation.py:
`Interval(type, left, right, closed=...)` and `InvalidParameterError`): the error names the
parameter, the value it got and the allowed interval in interval notation, so
``check_range("failure_rate", 1.5, 0, 1)`` raises
``failure_rate must be a number in the range [0, 1], got 1.5``. An infinite bound inside the
interval (``closed="both"`` with ``high=math.inf``) lets infinity through; an open one does not,
so ``(0, inf)`` reads "a finite number above 0".

Pure: no I/O, importable from policy, simulator and live code alike.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Literal, overload

__all__ = ["ParameterError", "check_range", "check_seed"]

Closed = Literal["both", "left", "right", "neither"]


class ParameterError(ValueError, TypeError):
    """A bad argument. Both a ValueError and a TypeError, as scikit-learn's
    `InvalidParameterError`, so code catching either (a wrong type, a value out of range) sees it."""


def _interval(low: float, high: float, closed: Closed, integer: bool) -> str:
    left = "[" if closed in ("both", "left") and not (integer and math.isinf(low)) else "("
    right = "]" if closed in ("both", "right") and not (integer and math.isinf(high)) else ")"
    return f"{left}{low:g}, {high:g}{right}"


@overload
def check_range(name: str, value: object, low: float = ..., high: float = ..., *,
                integer: Literal[True], closed: Closed = ...) -> int: ...
@overload
def check_range(name: str, value: object, low: float = ..., high: float = ..., *,
                integer: Literal[False] = ..., closed: Closed = ...) -> float: ...
def check_range(name: str, value: object, low: float = -math.inf, high: float = math.inf, *,
                integer: bool = False, closed: Closed = "both") -> int | float:
    """`value` as an int (``integer=True``) or a float, if it lies in the interval from `low`
    to `high` (`closed`: which ends belong to it); otherwise `ParameterError` naming `name`.

    Booleans are refused (``True`` is an int to Python, never a count or a rate to a student);
    numpy scalars are accepted; NaN is in no interval.
    """
    kind = "an integer" if integer else "a number"
    problem = f"{name} must be {kind} in the range {_interval(low, high, closed, integer)}"
    number: int | float
    if isinstance(value, bool):
        raise ParameterError(f"{problem}, got {value!r}")
    if isinstance(value, Integral):
        number = int(value)
    elif isinstance(value, Real) and not integer:
        number = float(value)
    else:
        raise ParameterError(f"{problem}, got {value!r}")
    above = number >= low if closed in ("both", "left") else number > low
    below = number <= high if closed in ("both", "right") else number < high
    if not (above and below):  # NaN fails both comparisons
        raise ParameterError(f"{problem}, got {value!r}")
    return number if integer else float(number)


def check_seed(seed: object) -> int:
    """A simulator's `seed`: an integer >= 0 (every simulator defaults to 1)."""
    return check_range("seed", seed, 0, integer=True)
