"""labkit release: student copies of master notebooks."""
from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import nbformat
import pytest
from grading_fixtures.notebooks import code, master
from nbformat.v4 import new_markdown_cell

from labkit.grading.gradebook import run_nbval
from labkit.grading.release import (
    ReleaseError,
    add_release_arguments,
    assigned_names,
    release,
    release_notebook,
    run_release,
)


def sources(nb) -> dict[str, str]:
    return {cell.id: cell.source for cell in nb.cells}


def test_solutions_become_stubs_at_the_marker_indentation():
    released = sources(release_notebook(master()))
    assert released["solution-mean"] == (
        "def mean(xs):\n"
        '    """Arithmetic mean of a non-empty list."""\n'
        "    # YOUR CODE HERE\n"
        "    raise NotImplementedError('complete the body of mean(); see the exercise text above')"
    )
    assert released["solution-double"] == (
        "# YOUR CODE HERE\n"
        "raise NotImplementedError('write the code that sets double; see the exercise text above')\n"
        "print(double(1))"
    )


def exercise_notebook() -> nbformat.NotebookNode:
    """An exercise as the labs write it: a heading, a solution with a helper, an answer() check."""
    solution = (
        "rate = 2.0\n"
        "### BEGIN SOLUTION\n"
        "def helper(x):\n    return 3 * x\n"
        "tripled, _scratch = helper(rate), None\n"
        "### END SOLUTION"
    )
    check = (
        "from labkit.grading.checks import answer, check_close\n"
        "check_close('tripled', answer('tripled'), 6.0, hint='three times the rate')"
    )
    nb = master()
    nb.cells = [
        new_markdown_cell("### Exercise 3 — triple it (2 points)\n\nSet `tripled`.", id="exercise-3"),
        code("solution-triple", solution),
        code("check-triple", check, tags=["check", "points-2"]),
    ]
    return nb


def test_a_stub_names_the_exercise_and_what_its_check_reads():
    released = sources(release_notebook(exercise_notebook()))
    assert released["solution-triple"].split("\n")[1:] == [
        "# YOUR CODE HERE",
        "raise NotImplementedError('Exercise 3 — triple it: write the code that sets tripled; "
        "see the exercise text above')",
    ]


def test_assigned_names_of_a_block():
    assert assigned_names("a = 1\nb, (c, d) = f()\nx += 1\ny: int = 2\ndef g(): pass\nclass K: pass\n_p = 0") == [
        "a", "b", "c", "d", "x", "y", "g", "K"]
    assert assigned_names("for i in range(3):\n    if i:\n        best = d = i\n    else:\n        d = 0") == ["best", "d"]
    assert assigned_names("def f():\n    inner = 1\nwith open(p) as h:\n    text = h.read()") == ["f", "text"]
    assert assigned_names("return sum(xs)") == []
    assert assigned_names("this is not python") == []


def test_hidden_tests_are_removed_and_visible_checks_kept():
    released = sources(release_notebook(master()))
    assert released["check-mean"] == "assert mean([1, 2, 3]) == 2, 'the mean of 1, 2, 3 is 2'"
    assert released["check-double"] == master().cells[6].source


def test_outputs_and_execution_counts_are_cleared():
    released = release_notebook(master())
    code_cells = [cell for cell in released.cells if cell.cell_type == "code"]
    assert code_cells and all(c.outputs == [] and c.execution_count is None for c in code_cells)


def test_everything_else_is_kept():
    original = master()
    released = release_notebook(original)
    nbformat.validate(released)
    assert released.metadata == original.metadata
    assert (released.nbformat, released.nbformat_minor) == (original.nbformat, original.nbformat_minor)
    assert [(c.id, c.cell_type, c.metadata) for c in released.cells] == [
        (c.id, c.cell_type, c.metadata) for c in original.cells
    ]
    untouched = {"intro", "setup", "text-double", "check-double"}
    assert {k: v for k, v in sources(released).items() if k in untouched} == {
        k: v for k, v in sources(original).items() if k in untouched
    }
    assert released.cells[1].metadata["tags"] == ["nbval-ignore-output"]
    text = nbformat.writes(released)
    assert "BEGIN" not in text and "sum(xs)" not in text and "mean([5])" not in text


def test_the_jupytext_pairing_stays_with_the_master():
    """A student hands in the notebook alone; a paired .py beside it would shadow its cells."""
    original = master()
    original.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    released = release_notebook(original)
    assert "jupytext" not in released.metadata
    assert released.metadata.kernelspec == original.metadata.kernelspec
    assert original.metadata.jupytext == {"formats": "ipynb,py:percent"}


def test_the_master_is_not_modified():
    original = master()
    before = nbformat.writes(original)
    release_notebook(original)
    assert nbformat.writes(original) == before


@pytest.mark.parametrize(
    "source, line, says",
    [
        ("x = 1\n### BEGIN SOLUTION\nx = 2", 2, "never closed by '### END SOLUTION'"),
        ("x = 1\n### END SOLUTION", 2, "without a '### BEGIN SOLUTION' before it"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", 2, "before the '### BEGIN SOLUTION' of line 1"),
        ("### BEGIN SOLUTION\nx = 1\n### END HIDDEN TESTS", 3, "expected '### END SOLUTION'"),
        ("### BEGIN HIDDEN TESTS\nassert 1", 1, "never closed by '### END HIDDEN TESTS'"),
        ("### BEGIN SOLUTION  # start\nx = 1\n### END SOLUTION", 1, "looks like a marker but is not one"),
        ("## begin solution\nx = 1", 1, "looks like a marker but is not one"),
    ],
)
def test_unbalanced_markers_name_file_cell_and_line(source, line, says):
    nb = master()
    nb.cells[2] = code("broken-cell", source)
    with pytest.raises(ReleaseError) as error:
        release_notebook(nb, "labs/99_means.ipynb")
    message = str(error.value)
    assert message.startswith(f"labs/99_means.ipynb: cells[2] (id broken-cell): line {line}: ")
    assert says in message


@pytest.mark.parametrize(
    "cell, says",
    [
        (new_markdown_cell("### BEGIN SOLUTION\nanswer\n### END SOLUTION", id="md"), "only allowed in code cells"),
        (code("md", "### BEGIN SOLUTION\nx = 1\n### END SOLUTION", tags=["check"]), "must not hold a solution"),
        (
            code("md", "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS"),
            "hidden tests belong in a check cell",
        ),
    ],
)
def test_markers_where_they_would_leak_or_be_lost_are_errors(cell, says):
    nb = master()
    nb.cells.append(cell)
    with pytest.raises(ReleaseError, match=r"lab\.ipynb: cells\[7\] \(id md\): .*" + says):
        release_notebook(nb, "lab.ipynb")


def write(path: Path, nb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_release_a_folder_writes_every_notebook(tmp_path):
    write(tmp_path / "masters" / "01_a.ipynb", master())
    write(tmp_path / "masters" / "02_b.ipynb", master())
    written = release(tmp_path / "masters", tmp_path / "labs")
    assert written == [tmp_path / "labs" / "01_a.ipynb", tmp_path / "labs" / "02_b.ipynb"]
    for path in written:
        assert sources(nbformat.read(path, as_version=4)) == sources(release_notebook(master()))


def test_release_one_notebook_to_a_file_or_a_folder(tmp_path):
    src = write(tmp_path / "m" / "lab.ipynb", master())
    assert release(src, tmp_path / "student.ipynb") == [tmp_path / "student.ipynb"]
    assert release(src, tmp_path / "out") == [tmp_path / "out" / "lab.ipynb"]
    assert (tmp_path / "out" / "lab.ipynb").read_text() == (tmp_path / "student.ipynb").read_text()


def test_release_never_overwrites_its_source(tmp_path):
    src = write(tmp_path / "m" / "lab.ipynb", master())
    before = src.read_bytes()
    with pytest.raises(ReleaseError, match="the destination is the source"):
        release(tmp_path / "m", tmp_path / "m")
    with pytest.raises(ReleaseError, match="would overwrite its own source"):
        release(src, tmp_path / "m")
    with pytest.raises(ReleaseError, match="the destination is the source"):
        release(src, src)
    assert src.read_bytes() == before


def test_one_bad_notebook_means_nothing_is_written(tmp_path):
    write(tmp_path / "m" / "01_good.ipynb", master())
    bad = master()
    bad.cells[2].source = "### BEGIN SOLUTION\nx = 1"
    write(tmp_path / "m" / "02_bad.ipynb", bad)
    with pytest.raises(ReleaseError, match=r"02_bad\.ipynb: cells\[2\] \(id solution-mean\): line 1"):
        release(tmp_path / "m", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_functions_report_errors_and_written_files(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_release_arguments(parser)
    write(tmp_path / "m" / "lab.ipynb", master())
    assert run_release(parser.parse_args([str(tmp_path / "m"), str(tmp_path / "out")])) == 0
    assert f"released {tmp_path / 'out' / 'lab.ipynb'}" in capsys.readouterr().out
    assert run_release(parser.parse_args([str(tmp_path / "missing"), str(tmp_path / "out")])) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_released_copy_runs_under_nbval_and_fails_only_on_the_stubs(tmp_path):
    """The student copy is runnable as is: stored outputs are gone, so nbval compares
    nothing, and the only failures are the unanswered exercises and their checks."""
    written = release(write(tmp_path / "m" / "lab.ipynb", master()), tmp_path / "student")
    report = run_nbval(tmp_path, written, cell_timeout=30)
    failures = {
        case.attrib["name"]: " ".join(child.get("message", "") + (child.text or "") for child in case)
        for case in ElementTree.parse(report).getroot().iter("testcase")
        if any(child.tag in ("failure", "error", "skipped") for child in case)
    }
    # Code cells: 0 setup, 1 defines mean (the stub raises only when called), 2 checks
    # mean, 3 is the double stub (raises at once), 4 checks double (never defined).
    assert sorted(failures) == ["Cell 2", "Cell 3", "Cell 4"]
    assert "NotImplementedError" in failures["Cell 2"] and "NotImplementedError" in failures["Cell 3"]
    assert "NameError" in failures["Cell 4"]


def test_a_released_exercise_guides_under_run_all(tmp_path):
    """Run All on a student copy: the stub says what to write, and the check run without the
    exercise answers with a hint, not a NameError."""
    written = release(write(tmp_path / "m" / "lab.ipynb", exercise_notebook()), tmp_path / "student")
    report = run_nbval(tmp_path, written, cell_timeout=30)
    colour = re.compile(r"(#x1B|\x1b)\[[0-9;]*m")  # JUnit XML keeps the traceback's ANSI colours as text
    failures = {
        case.attrib["name"]: colour.sub("", " ".join(child.get("message", "") + (child.text or "") for child in case))
        for case in ElementTree.parse(report).getroot().iter("testcase")
        if any(child.tag in ("failure", "error") for child in case)
    }
    assert sorted(failures) == ["Cell 0", "Cell 1"]
    assert "NotImplementedError: Exercise 3 — triple it: write the code that sets tripled" in failures["Cell 0"]
    assert "NotAnsweredError: tripled: not defined yet." in failures["Cell 1"]
    assert "HINT: run the exercise cell above first" in failures["Cell 1"]
    assert "NameError" not in failures["Cell 1"]
