"""Lab 10 checks: right answers pass with one line, wrong ones fail with a HINT."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from labkit.grading.checks import NotAnsweredError
from labkit.grading.lab10 import check_ab_decisions, check_gates, check_sample_size

GOOD_GATES = {"min_accuracy": 87.5, "min_samples": 250, "threshold": 6, "step_weight": 10}


def test_gates_that_separate_the_models_pass(capsys: pytest.CaptureFixture[str]) -> None:
    check_gates(GOOD_GATES)
    assert capsys.readouterr().out.startswith("✓ gates:")


@pytest.mark.parametrize("change, fragment", [
    ({"min_accuracy": 80.0}, "rolled back in only 0%"),       # below both models: nothing is caught
    ({"min_samples": 2000}, "equally good model was rolled back"),  # labels never suffice in time
])
def test_gates_that_miss_or_punish_fail_with_a_hint(change: dict[str, float], fragment: str) -> None:
    with pytest.raises(AssertionError, match=fragment) as info:
        check_gates({**GOOD_GATES, **change})
    assert "HINT:" in str(info.value)


@pytest.mark.parametrize("gates, fragment", [
    ({"min_accuracy": 87.5}, "exactly the keys"),
    ({**GOOD_GATES, "threshold": 2.5}, r"gates\['threshold'\] = 2.5 must be a whole number"),
    ({**GOOD_GATES, "min_accuracy": "88"}, r"must be a number within 50..100"),
])
def test_malformed_gates_are_named(gates: object, fragment: str) -> None:
    with pytest.raises(AssertionError, match=fragment):
        check_gates(gates)


def test_placeholders_are_not_answers() -> None:
    for check in (check_gates, check_sample_size, check_ab_decisions):
        with pytest.raises(NotAnsweredError):
            check(None)


def needed(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    mean = (p_a + p_b) / 2
    spread = (norm.isf(alpha / 2) * math.sqrt(2 * mean * (1 - mean))
              + norm.isf(1 - power) * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b)))
    return math.ceil(spread ** 2 / (p_a - p_b) ** 2)


def test_sample_size_check(capsys: pytest.CaptureFixture[str]) -> None:
    check_sample_size(needed)
    assert capsys.readouterr().out.startswith("✓")

    def one_sided(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
        return needed(p_a, p_b, 2 * alpha, power)

    with pytest.raises(AssertionError, match="is too low"):
        check_sample_size(one_sided)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        check_sample_size(lambda *args: 1 / 0)
    with pytest.raises(AssertionError, match="should be a function"):
        check_sample_size(388)


def test_ab_decisions_check(capsys: pytest.CaptureFixture[str]) -> None:
    right = {"shop": "ship B", "news": "keep testing", "bank": "keep A"}
    check_ab_decisions(right)
    assert capsys.readouterr().out.startswith("✓")
    with pytest.raises(AssertionError, match="look again at 'news'"):
        check_ab_decisions({**right, "news": "ship B"})
