"""Generic answer checks for lab exercises.

Every lab's ``check_...()`` function recomputes the expected value with labkit's own pure
functions and then calls these helpers. They share one contract, which ``labkit grade``
relies on (a wrong answer must make the notebook cell fail under nbval):

- a wrong answer raises ``AssertionError`` whose message says what is wrong and ends with
  a ``HINT:`` line that points at the method, never at the expected value;
- a right answer prints one deterministic ``✓ ...`` line (no timings, no floats that vary),
  so the cell's stored output is stable;
- a check cell reads the exercise's variables with ``answer("name")``, so a check run before
  its exercise (or in a student copy) says so with a hint instead of a bare ``NameError``.

This module imports no live component and no simulator.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from numbers import Real
from typing import NoReturn


class NotAnsweredError(AssertionError):
    """The exercise still holds its placeholder (``None``, ``...`` or ``NotImplemented``)."""


def answer(name: str) -> object:
    """The value of the notebook variable ``name``, as the check cell calling this sees it.

    A check cell that named the variable directly would stop with a bare ``NameError`` when
    run before its exercise; looked up here, a missing name gets the same kind of message as
    a wrong value: what is wrong, then a HINT. The lookup reads the caller's globals, which
    in a notebook are the kernel's namespace (the cell's own variables).
    """
    namespace = sys._getframe(1).f_globals
    if name not in namespace:
        raise NotAnsweredError(
            f"{name}: not defined yet.\nHINT: run the exercise cell above first; it must set `{name}`."
        )
    return namespace[name]


def passed(message: str) -> None:
    """Report success with one stable line."""
    print(f"✓ {message}")


def fail(problem: str, hint: str) -> NoReturn:
    """Fail a check: say what is wrong, then how to think about it."""
    raise AssertionError(f"{problem}\nHINT: {hint}")


def require_number(name: str, value: object) -> float:
    """Return ``value`` as a finite float, or fail saying what the student gave instead."""
    if value is None or value is Ellipsis or value is NotImplemented:
        raise NotAnsweredError(f"{name}: no answer yet.\nHINT: replace the placeholder with your computation.")
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(f"{name}: expected a number, got {type(value).__name__} {value!r}.",
             "return a plain number (int or float), not a string, list or result object.")
    number = float(value)
    if not math.isfinite(number):
        fail(f"{name}: expected a finite number, got {number}.", "check for a division by zero.")
    return number


def check_close(name: str, value: object, expected: float, *, hint: str,
                rel_tol: float = 0.01, abs_tol: float = 0.0, unit: str = "") -> float:
    """Check a numeric answer against a recomputed value, within a tolerance.

    The failure message says whether the answer is too high or too low and by roughly how
    many times, which helps find a wrong unit (60x, 3600x, 1024x) without giving the value.
    """
    number = require_number(name, value)
    if math.isclose(number, expected, rel_tol=rel_tol, abs_tol=abs_tol):
        passed(f"{name} is right")
        return number
    direction = "too high" if number > expected else "too low"
    ratio = ""
    if number != 0 and expected != 0 and (number > 0) == (expected > 0):
        times = max(number / expected, expected / number)
        about = f"{times:,.0f}" if times >= 10 else f"{times:.2g}"
        ratio = f" (off by a factor of about {about})" if times >= 1.5 else " (close, but outside the tolerance)"
    fail(f"{name}: {number:g}{unit} is {direction}{ratio}.", hint)


def check_at_most(name: str, value: float, limit: float, *, hint: str) -> None:
    """Fail unless ``value <= limit``; used for targets such as a cold-start probability."""
    if not value <= limit:
        fail(f"{name}: {value:.4g} is above the target {limit:.4g}.", hint)


def check_choices(name: str, answer: object, expected: Mapping[str, str], *, hint: str) -> None:
    """Check a mapping of case -> choice (e.g. workload -> "serverless").

    A wrong answer names which cases are wrong (not what they should be), so the student
    knows where to look again.
    """
    if answer is None or answer is Ellipsis or answer is NotImplemented:
        raise NotAnsweredError(f"{name}: no answer yet.\nHINT: fill in the dictionary.")
    if not isinstance(answer, Mapping):
        fail(f"{name}: expected a dict, got {type(answer).__name__}.", hint)
    missing = sorted(set(expected) - set(answer))
    extra = sorted(set(answer) - set(expected))
    if missing or extra:
        fail(f"{name}: keys must be exactly {sorted(expected)}; missing {missing}, unexpected {extra}.", hint)
    allowed = sorted(set(expected.values()))
    invalid = sorted(k for k, v in answer.items() if v not in allowed)
    if invalid:
        fail(f"{name}: {invalid} must each be one of {allowed}.", hint)
    wrong = sorted(k for k in expected if answer[k] != expected[k])
    if wrong:
        fail(f"{name}: look again at {', '.join(map(repr, wrong))}.", hint)
    passed(f"{name}: all {len(expected)} right")

