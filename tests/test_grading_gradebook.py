"""labkit grade: rebuild submissions from the master, run them with nbval, score the checks."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import nbformat
import pytest
from grading_fixtures.notebooks import edited, master, without_ids

from labkit.grading.gradebook import (
    GradingError,
    add_grade_arguments,
    grade,
    read_checks,
    rebuild,
    run_grade,
    run_nbval,
    student_id,
)
from labkit.grading.release import release_notebook

MEAN = "def mean(xs):\n    return sum(xs) / len(xs)"
DOUBLE = "def double(x):\n    return x + x"


def write(path: Path, nb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def student_copy():
    return release_notebook(master())


def solution_sources(nb) -> list[str]:
    return [nb.cells[2].source, nb.cells[5].source]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run over seven students, shared by the tests below (one pytest process)."""
    root = tmp_path_factory.mktemp("course")
    master_path = write(root / "source" / "lab99.ipynb", master())
    subs = root / "submitted"
    alice = edited(student_copy(), {"solution-mean": MEAN, "solution-double": DOUBLE})
    for cell in alice.cells:  # she ran her notebook: stale outputs must not matter
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="whatever\n")]
    write(subs / "alice" / "lab99.ipynb", alice)
    # bob passes the visible check of mean but not its hidden test
    bob = edited(student_copy(), {"solution-mean": "def mean(xs):\n    return 2", "solution-double": DOUBLE})
    write(subs / "bob" / "lab99.ipynb", bob)
    # carol leaves mean unanswered and replaces its check with `pass`
    write(subs / "carol" / "lab99.ipynb", edited(student_copy(), {"check-mean": "pass", "solution-double": DOUBLE}))
    # dave's mean loops forever: the cell timeout stops its check, and the later
    # exercise still counts (nbval interrupts the kernel; it does not kill it)
    dave_mean = "def mean(xs):\n    while True:\n        pass"
    dave = edited(student_copy(), {"solution-mean": dave_mean, "solution-double": DOUBLE})
    write(subs / "dave" / "lab99.ipynb", dave)
    # erin hands the student copy back untouched, named after herself
    erin = write(root / "late" / "erin.ipynb", student_copy())
    # frank's editor saved nbformat 4.4, without cell ids
    frank = edited(student_copy(), {"solution-mean": MEAN, "solution-double": DOUBLE})
    write(subs / "frank" / "lab99.ipynb", without_ids(frank))
    # gina's file is not a notebook at all
    (subs / "gina").mkdir()
    (subs / "gina" / "lab99.ipynb").write_text("{ not json")
    out_csv = root / "grades.csv"
    book = grade(master_path, [str(subs / "*" / "lab99.ipynb"), erin], out_csv, cell_timeout=5, workdir=root / "work")
    return book, out_csv, root / "work"


def test_gradebook_csv(graded):
    _, out_csv, _ = graded
    with open(out_csv, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["student", "mean", "check-double", "score", "max_score"],
        ["alice", "2", "3", "5", "5"],
        ["bob", "0", "3", "3", "5"],
        ["carol", "0", "3", "3", "5"],
        ["dave", "0", "3", "3", "5"],
        ["erin", "0", "0", "0", "5"],
        ["frank", "2", "3", "5", "5"],
        ["gina", "0", "0", "0", "5"],
    ]


def test_gradebook_data_and_warnings(graded):
    book, _, _ = graded
    assert [(c.name, c.points, c.code_index) for c in book.checks] == [("mean", 2, 2), ("check-double", 3, 4)]
    assert book.max_score == 5
    scores = {s.student: s.score for s in book.students}
    assert scores == {"alice": 5, "bob": 3, "carol": 3, "dave": 3, "erin": 0, "frank": 5, "gina": 0}
    warned = {s.student: s.warnings for s in book.students if s.warnings}
    assert list(warned) == ["frank", "gina"]
    assert len(warned["frank"]) == 1 and "matched by order" in warned["frank"][0]
    assert len(warned["gina"]) == 1 and "not a readable notebook" in warned["gina"][0]


def test_rebuilt_notebooks_take_checks_from_the_master(graded):
    _, _, work = graded
    carol = nbformat.read(next(work.glob("notebooks/*-carol/lab99.ipynb")), as_version=4)
    assert carol.cells[3].source == master().cells[3].source  # her `pass` is gone, hidden tests are back
    assert all(c.outputs == [] and c.execution_count is None for c in carol.cells if c.cell_type == "code")
    report = (work / "report.xml").read_text()
    assert "Timeout of 5 seconds exceeded" in report  # dave's loop was stopped, not waited out


def test_rebuild_keeps_only_the_students_solution_cells():
    m = master()
    sub = edited(student_copy(), {"solution-mean": MEAN, "check-mean": "pass", "intro": "# my notes"})
    sub.cells.append(nbformat.v4.new_code_cell("scratch = 1", id="scratch"))
    nb, warnings = rebuild(m, student_copy(), [2, 5], sub)
    assert warnings == []
    expected = edited(m, {"solution-mean": MEAN, "solution-double": student_copy().cells[5].source})
    assert [c.source for c in nb.cells] == [c.source for c in expected.cells]
    assert [c.id for c in nb.cells] == [c.id for c in m.cells]


def test_rebuild_without_ids_and_extra_cells_grades_as_unanswered_with_a_warning():
    sub = without_ids(edited(student_copy(), {"solution-mean": MEAN}))
    sub.cells.append(nbformat.v4.new_code_cell("scratch = 1"))
    nb, warnings = rebuild(master(), student_copy(), [2, 5], sub)
    assert solution_sources(nb) == solution_sources(student_copy())
    assert len(warnings) == 1 and "2 solutions; graded as unanswered" in warnings[0]


def named_master():
    """The master with its solution cells named by id-NAME tags, as the labs name every cell."""
    m = master()
    for index in (2, 5):
        m.cells[index].metadata["tags"] = [f"id-{m.cells[index].id}"]
    return m


def test_rebuild_matches_a_pasted_solution_cell_by_its_name_tag():
    m = named_master()
    sub = edited(release_notebook(m), {"solution-mean": MEAN, "solution-double": DOUBLE})
    for cell in sub.cells:  # JupyterLab gives a cut-and-pasted cell a new id; tags go along
        cell.id = f"pasted-{cell.id}"
    nb, warnings = rebuild(m, release_notebook(m), [2, 5], sub)
    assert warnings == []
    assert solution_sources(nb) == [MEAN, DOUBLE]


def test_a_name_tag_on_two_submitted_cells_matches_neither():
    m = named_master()
    sub = edited(release_notebook(m), {"solution-mean": MEAN, "solution-double": DOUBLE})
    for cell in sub.cells:
        cell.id = f"pasted-{cell.id}"
    copy_of_mean = nbformat.v4.new_code_cell("def mean(xs):\n    return 0", id="copy")
    copy_of_mean.metadata["tags"] = ["id-solution-mean"]
    sub.cells.insert(3, copy_of_mean)
    nb, warnings = rebuild(m, release_notebook(m), [2, 5], sub)
    assert solution_sources(nb) == solution_sources(release_notebook(m))
    assert len(warnings) == 1 and "graded as unanswered" in warnings[0]


def test_student_ids():
    assert student_id(Path("submitted/alice/lab99.ipynb"), Path("source/lab99.ipynb")) == "alice"
    assert student_id(Path("late/erin.ipynb"), Path("source/lab99.ipynb")) == "erin"


@pytest.mark.parametrize(
    "tags, says",
    [
        (["check", "points-two"], "one tag points-N"),
        (["check", "points-1", "points-2"], "one tag points-N"),
        (["check", "id-mean"], "must be unique"),
        (["check", "id-score"], "must be unique"),
        (["check", "raises-exception"], "must not be skipped or allowed to raise"),
        (["check", "nbval-skip"], "must not be skipped or allowed to raise"),
    ],
)
def test_bad_check_cells_are_refused(tags, says):
    nb = master()
    nb.cells[6].metadata["tags"] = tags
    with pytest.raises(GradingError, match=r"m\.ipynb: .*" + says):
        read_checks(nb, "m.ipynb")


def test_a_skip_comment_in_a_check_cell_is_refused():
    nb = edited(master(), {"check-double": "# NBVAL_SKIP\nassert double(21) == 42"})
    with pytest.raises(GradingError, match=r"m\.ipynb: cells\[6\] \(id check-double\): .*NBVAL_SKIP"):
        read_checks(nb, "m.ipynb")


def test_a_master_without_checks_is_refused():
    nb = master()
    for cell in nb.cells:
        cell.metadata.pop("tags", None)
    with pytest.raises(GradingError, match="no cell is tagged 'check'"):
        read_checks(nb, "m.ipynb")


def test_submission_errors_stop_before_running_anything(tmp_path):
    master_path = write(tmp_path / "lab99.ipynb", master())
    a = write(tmp_path / "x" / "alice" / "lab99.ipynb", student_copy())
    b = write(tmp_path / "y" / "alice" / "lab99.ipynb", student_copy())
    with pytest.raises(GradingError, match="both belong to student 'alice'"):
        grade(master_path, [a, b], tmp_path / "g.csv")
    with pytest.raises(GradingError, match="the master notebook is among the submissions"):
        grade(master_path, str(tmp_path / "*.ipynb"), tmp_path / "g.csv")
    with pytest.raises(GradingError, match="nope/\\*.ipynb: no such submission"):
        grade(master_path, str(tmp_path / "nope" / "*.ipynb"), tmp_path / "g.csv")
    with pytest.raises(GradingError, match="x: a folder, not a notebook"):
        grade(master_path, str(tmp_path / "?"), tmp_path / "g.csv")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "old.txt").write_text("keep me")
    with pytest.raises(GradingError, match="must be empty"):
        grade(master_path, [a], tmp_path / "g.csv", workdir=tmp_path / "busy")
    assert not (tmp_path / "g.csv").exists()


def test_cli_functions_report_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_grade_arguments(parser)
    master_path = write(tmp_path / "lab99.ipynb", master())
    args = parser.parse_args([str(master_path), str(tmp_path / "none" / "*.ipynb"), "-o", str(tmp_path / "g.csv")])
    assert (args.cell_timeout, args.workdir) == (60, None)
    assert run_grade(args) == 2
    assert "labkit grade: " in capsys.readouterr().err


def test_a_pytest_usage_error_is_a_grading_error_with_pytest_output(tmp_path):
    with pytest.raises(GradingError, match=r"(?s)pytest exited with code 4 .*not found"):
        run_nbval(tmp_path, [tmp_path / "gone.ipynb"], cell_timeout=5)


def test_cli_functions_grade_and_print_scores(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_grade_arguments(parser)
    master_path = write(tmp_path / "lab99.ipynb", master())
    sub = write(tmp_path / "subs" / "alice.ipynb", edited(student_copy(), {"solution-mean": MEAN}))
    args = parser.parse_args([str(master_path), str(sub), "-o", str(tmp_path / "g.csv"), "--cell-timeout", "20"])
    assert run_grade(args) == 0
    assert capsys.readouterr().out.splitlines() == ["alice: 2/5", f"wrote {tmp_path / 'g.csv'}"]
    assert (tmp_path / "g.csv").read_text().splitlines()[1] == "alice,2,0,2,5"
