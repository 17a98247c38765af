"""labkit release and grade on the real lab notebooks (labs/NN_name.ipynb, paired with their
jupytext sources): check columns and solution matches come from the cells' `id-NAME` tags."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import nbformat
import pytest

from labkit.grading.cell_names import tag_names
from labkit.grading.gradebook import grade, read_checks, rebuild
from labkit.grading.release import (
    BEGIN_SOLUTION,
    add_release_arguments,
    is_solution_cell,
    release_notebook,
    run_release,
)

LABS = Path(__file__).resolve().parents[1] / "labs"
NOTEBOOKS = sorted(LABS.glob("[0-9][0-9]_*.ipynb"))


def solutions(nb: nbformat.NotebookNode, path: Path) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if is_solution_cell(cell, f"{path}: cells[{i}]")]


def answered_and_pasted(master: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """The student copy with the master's solutions put back, every cell given a new id as a
    cut and paste in JupyterLab does (tags go along)."""
    submission = release_notebook(master, str(path))
    for index in solutions(master, path):
        submission.cells[index].source = master.cells[index].source
    for cell in submission.cells:
        cell.id = f"pasted-{cell.id}"
    return submission


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_release_and_rebuild_a_lab(path: Path):
    master = nbformat.read(path, as_version=4)
    checks = read_checks(master, str(path))
    assert [c.name for c in checks] == [master.cells[c.cell_index].id for c in checks]
    assert all(tag_names(master.cells[c.cell_index]) == [c.name] for c in checks)

    released = release_notebook(master, str(path))
    assert "jupytext" not in released.metadata and released.metadata.kernelspec == master.metadata.kernelspec
    assert [(c.id, c.metadata.get("tags")) for c in released.cells] == [
        (c.id, c.metadata.get("tags")) for c in master.cells]
    assert not any(BEGIN_SOLUTION in cell.source for cell in released.cells)

    wanted = solutions(master, path)
    assert wanted, "every lab has an exercise"
    nb, warnings = rebuild(master, released, wanted, answered_and_pasted(master, path))
    assert warnings == []
    assert [nb.cells[i].source for i in wanted] == [master.cells[i].source for i in wanted]


def test_release_the_labs_folder_writes_notebooks_only(tmp_path: Path, capsys):
    parser = argparse.ArgumentParser()
    add_release_arguments(parser)
    assert run_release(parser.parse_args([str(LABS), str(tmp_path)])) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in NOTEBOOKS]
    assert len(capsys.readouterr().out.splitlines()) == len(NOTEBOOKS)


def test_grade_lab00_end_to_end(tmp_path: Path):
    """One real grading run (lab 00 is the shortest lab): the answered, pasted copy earns every point."""
    path = LABS / "00_welcome.ipynb"
    master = nbformat.read(path, as_version=4)
    submission = tmp_path / "submitted" / "alice" / path.name
    submission.parent.mkdir(parents=True)
    nbformat.write(answered_and_pasted(master, path), submission)
    book = grade(path, [submission], tmp_path / "grades.csv", cell_timeout=300)
    assert [(s.student, s.score, s.warnings) for s in book.students] == [("alice", book.max_score, [])]
    assert book.max_score > 0
    with open(tmp_path / "grades.csv", newline="") as handle:
        header, row = list(csv.reader(handle))
    assert header == ["student", *(c.name for c in book.checks), "score", "max_score"]
    assert row[0] == "alice" and row[-2:] == [str(book.max_score)] * 2
