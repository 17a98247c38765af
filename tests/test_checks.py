"""The check contract: right answers print one stable line, wrong ones raise with a hint."""

from __future__ import annotations

import ast
import builtins
import itertools
import math
import re
from pathlib import Path

import nbformat
import pytest

from labkit.grading import checks, lab00


def test_close_answer_passes_and_prints_one_line(capsys):
    checks.check_close("rate", 2.004, 2.0, hint="h")
    assert capsys.readouterr().out == "✓ rate is right\n"


@pytest.mark.parametrize("answer, words", [(120.0, "too high (off by a factor of about 60)"),
                                           (2.2, "too high (close, but outside the tolerance)"),
                                           (0.5, "too low (off by a factor of about 4)")])
def test_wrong_answer_says_direction_and_hint_but_not_the_value(answer, words):
    with pytest.raises(AssertionError) as info:
        checks.check_close("rate", answer, 2.0, hint="per second, not per minute")
    message = str(info.value)
    assert words in message
    assert message.endswith("HINT: per second, not per minute")
    assert "2.0" not in message.replace(f"{answer:g}", "")


@pytest.mark.parametrize("placeholder", [None, ..., NotImplemented])
def test_placeholder_is_reported_as_not_answered(placeholder):
    with pytest.raises(checks.NotAnsweredError, match="no answer yet"):
        checks.check_close("rate", placeholder, 1.0, hint="h")


@pytest.mark.parametrize("bad, words", [("2", "expected a number, got str"), (True, "got bool"),
                                        (float("nan"), "finite")])
def test_non_numbers_are_named(bad, words):
    with pytest.raises(AssertionError, match=words):
        checks.require_number("rate", bad)


def test_at_most():
    checks.check_at_most("p", 0.05, 0.05, hint="h")
    with pytest.raises(AssertionError, match="0.06 is above the target 0.05"):
        checks.check_at_most("p", 0.06, 0.05, hint="h")


def test_choices_name_wrong_cases_only(capsys):
    expected = {"a": "serverless", "b": "always-on"}
    checks.check_choices("fit", {"a": "serverless", "b": "always-on"}, expected, hint="h")
    assert capsys.readouterr().out == "✓ fit: all 2 right\n"
    with pytest.raises(AssertionError, match=r"look again at 'b'") as info:
        checks.check_choices("fit", {"a": "serverless", "b": "serverless"}, expected, hint="h")
    assert "'a'" not in str(info.value)
    with pytest.raises(AssertionError, match=r"missing \['b'\]"):
        checks.check_choices("fit", {"a": "serverless"}, expected, hint="h")
    with pytest.raises(AssertionError, match="must each be one of"):
        checks.check_choices("fit", {"a": "lambda", "b": "always-on"}, expected, hint="h")


def test_lab00_little_law(capsys):
    lab00.check_busy_instances(1.0, arrival_rate=5.0, service_time=0.2)
    assert capsys.readouterr().out == "✓ busy instances is right\n"
    with pytest.raises(AssertionError, match="(?s)too high.*factor of about 1,000.*HINT"):
        lab00.check_busy_instances(1000.0, arrival_rate=5.0, service_time=0.2)


def test_lab01_break_even_rate_with_the_free_tier(capsys):
    from labkit.grading import lab01
    from labkit.sim import SECONDS_PER_MONTH, Prices, always_on_monthly_cost, break_even_rate

    task, p = lab01.BREAK_EVEN_TASK, Prices()
    # The algebra a student would write: past both free allowances the bill is linear.
    per_request = task.mean_duration * task.memory_mb / 1024 * p.gb_second + p.per_million_requests / 1e6
    free = task.free_gb_seconds * p.gb_second + task.free_requests * p.per_million_requests / 1e6
    by_hand = (always_on_monthly_cost(1) + free) / per_request / SECONDS_PER_MONTH
    assert by_hand * SECONDS_PER_MONTH > task.free_requests  # both allowances are used up there
    assert by_hand * SECONDS_PER_MONTH * task.mean_duration * task.memory_mb / 1024 > task.free_gb_seconds
    lab01.check_break_even_rate(by_hand)
    assert capsys.readouterr().out == "✓ break-even rate is right\n"
    with pytest.raises(AssertionError, match="too high.*factor of about 3,600"):
        lab01.check_break_even_rate(by_hand * 3600)  # per hour instead of per second
    # The dodge the exercise text forbids: the library's answer ignores the free tier, and is named.
    with pytest.raises(AssertionError, match="WITHOUT the free tier"):
        lab01.check_break_even_rate(break_even_rate(task.mean_duration, task.memory_mb))


def test_answer_reads_the_callers_variable_or_says_it_is_missing():
    namespace = {"answer": checks.answer, "ready": 1.5}
    # eval runs the call as a notebook cell does: in a namespace of its own, not this frame's.
    assert eval("answer('ready')", namespace) == 1.5  # noqa: S307 - a fixed call, evaluated as a notebook cell is
    with pytest.raises(checks.NotAnsweredError) as info:
        eval("answer('break_even_answer')", namespace)  # noqa: S307 - a fixed call, evaluated as a notebook cell is
    assert str(info.value) == ("break_even_answer: not defined yet.\n"
                               "HINT: run the exercise cell above first; it must set `break_even_answer`.")


def test_lab01_keep_alive_accepts_the_shortest_that_works_only(capsys):
    from labkit.grading import lab01

    task = lab01.KEEP_ALIVE_TASK
    first_guess = -math.log(task.target) / task.arrival_rate  # P(cold) ~ exp(-rate * T)
    lab01.check_keep_alive(first_guess)
    assert capsys.readouterr().out == "✓ keep-alive meets the target and is not wastefully long\n"
    with pytest.raises(AssertionError, match="above the target"):
        lab01.check_keep_alive(first_guess / 2)
    with pytest.raises(AssertionError, match="30% shorter"):
        lab01.check_keep_alive(first_guess * 3)
    with pytest.raises(AssertionError, match="negative"):
        lab01.check_keep_alive(-1)


def test_lab01_fit_mixes_cost_and_latency_reasons():
    from labkit.grading import lab01
    from labkit.sim import always_on_monthly_cost

    expected = {name: lab01.best_fit(s) for name, s in lab01.SCENARIOS.items()}
    # The exercise is only worth doing if both answers occur, and for both reasons.
    assert sorted(set(expected.values())) == [lab01.ALWAYS_ON, lab01.SERVERLESS]
    api, fraud = lab01.SCENARIOS["checkout-api"].simulate(), lab01.SCENARIOS["fraud-score"].simulate()
    assert api.monthly_cost > always_on_monthly_cost(3) and api.response_time_p99 < 0.5
    assert fraud.monthly_cost < always_on_monthly_cost(1) and fraud.response_time_p99 > 0.3
    lab01.check_serverless_fit(expected)
    flipped = dict(expected, **{"fraud-score": lab01.SERVERLESS})
    with pytest.raises(AssertionError, match="look again at 'fraud-score'"):
        lab01.check_serverless_fit(flipped)
    assert "fraud-score" in lab01.scenario_table()


LAB_NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "labs").glob("[0-9][0-9]_*.ipynb"))


SELF_SUFFICIENT_CHECKS = {"00", "01", "04", "05", "06"}
"""Labs whose check cells follow the answer('name') convention (the others' owners adopt it in turn)."""


def loaded_names(source: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def bound_names(source: str) -> set[str]:
    bound = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
    return bound


@pytest.mark.parametrize("path", LAB_NOTEBOOKS, ids=lambda p: p.name[:2])
def test_lab_notebooks_follow_the_exercise_convention(path):
    # Its source labs/NN_name.py builds it (tests/test_lab_sources.py); committed executed.
    nb = nbformat.read(path, as_version=4)
    key = path.name[:2]
    assert nb.metadata.kernelspec.name == "python3"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells), "commit the notebook executed"
    checks_seen = 0
    for before, cell in itertools.pairwise(code_cells):
        tags = cell.metadata.get("tags", [])
        is_solution = "### BEGIN SOLUTION" in before.source
        if "check" in tags:
            checks_seen += 1
            points = [t for t in tags if t.startswith("points-")]
            assert len(points) == 1 and re.fullmatch(r"points-[1-9]\d*", points[0]), (cell.id, tags)
            assert is_solution, f"{cell.id}: the cell before a check must hold the solution"
            assert before.source.index("### BEGIN SOLUTION") < before.source.index("### END SOLUTION")
            assert re.search(r"\bcheck_\w+\(", cell.source), cell.id
            if key in SELF_SUFFICIENT_CHECKS:
                unbound = loaded_names(cell.source) - bound_names(cell.source) - set(dir(builtins))
                assert not unbound, (
                    f"{cell.id}: a check cell must import what it calls and read the exercise's variables "
                    f"with answer('name'), so that run first it gives a hint, not a NameError: {sorted(unbound)}")
        else:
            assert not is_solution, f"{before.id}: a solution cell must be followed by a check cell"
    assert checks_seen >= 1
