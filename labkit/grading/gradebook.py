"""Grade a folder of submitted notebooks with nbval and write a per-student gradebook (CSV).

Submissions are never run as they come back: a student can edit or delete a check cell
(replacing it with ``pass`` would "pass"). Each submission is rebuilt from the master,
keeping only the student's solution cells; checks, hidden tests and text come from the
master, and every output is cleared so nbval only checks that cells run. All rebuilt
notebooks then run in one pytest process (one kernel each), and a check cell earns its
points iff its nbval test case passed.

Student ids: a submission named like the master (``alice/lab01.ipynb`` for master
``lab01.ipynb``) belongs to the folder it sits in (``alice``); any other name is its own
id (``alice.ipynb`` -> ``alice``). Two submissions with the same id are an error.

Student code runs with the grader's rights, in the same kernel as the checks: grade a
copy of the submissions, in a throwaway account or container.
"""
from __future__ import annotations

import argparse
import copy
import csv
import glob
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from labkit.grading.cell_names import cell_name, tag_names
from labkit.grading.release import (
    CHECK_TAG,
    ReleaseError,
    cell_location,
    is_solution_cell,
    read_notebook,
    release_notebook,
)

POINTS_PREFIX = "points-"
# Any of these on a check cell would let it score without checking (nbval skips it or
# accepts an exception), so a master carrying one is refused.
_UNCHECKING_TAGS = {"nbval-skip", "raises-exception", "nbval-raises-exception"}
_UNCHECKING_COMMENTS = {"NBVAL_SKIP", "NBVAL_RAISES_EXCEPTION"}
_RESERVED_COLUMNS = {"student", "score", "max_score"}


class GradingError(Exception):
    """Grading could not run: bad master, bad submission list, or pytest itself failed."""


@dataclass(frozen=True)
class Check:
    """A check cell of the master: its CSV column name, where it is, what it is worth."""

    name: str
    cell_index: int
    code_index: int  # nbval's "Cell n": n counts code cells only
    points: int


@dataclass
class StudentGrade:
    """One student's points per check name, and anything the grader should look at by hand."""

    student: str
    submission: Path
    points: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(self.points.values())


@dataclass
class Gradebook:
    """What ``grade`` found: the master's checks and every student's points, in CSV order."""

    checks: list[Check]
    students: list[StudentGrade]

    @property
    def max_score(self) -> int:
        return sum(check.points for check in self.checks)


def read_checks(master: NotebookNode, path: str) -> list[Check]:
    """The master's check cells (tag ``check``), with points from a ``points-N`` tag (default 1).

    The column name is the first ``id-NAME`` tag's NAME, else the cell id.
    """
    checks: list[Check] = []
    code_index = -1
    for index, cell in enumerate(master.cells):
        if cell.cell_type != "code":
            continue
        code_index += 1
        tags = cell.metadata.get("tags", [])
        if CHECK_TAG not in tags:
            continue
        where = cell_location(path, index, cell)
        points_tags = [tag[len(POINTS_PREFIX) :] for tag in tags if tag.startswith(POINTS_PREFIX)]
        if len(points_tags) > 1 or not all(re.fullmatch("[0-9]+", p) for p in points_tags):
            raise GradingError(f"{where}: expected one tag points-N with N a whole number, got {points_tags}")
        name = cell_name(cell)
        if not name:
            raise GradingError(f"{where}: a check cell needs a cell id or an id-NAME tag to name its column")
        comments = {line.strip().lstrip("#").strip() for line in cell.source.splitlines()}
        unchecking = _UNCHECKING_TAGS.intersection(tags) | _UNCHECKING_COMMENTS.intersection(comments)
        if unchecking:
            raise GradingError(f"{where}: a check cell must not be skipped or allowed to raise ({sorted(unchecking)})")
        checks.append(Check(name, index, code_index, int(points_tags[0]) if points_tags else 1))
    if not checks:
        raise GradingError(f"{path}: no cell is tagged '{CHECK_TAG}', so there is nothing to grade")
    names = [check.name for check in checks]
    clashes = {n for n in names if names.count(n) > 1} | _RESERVED_COLUMNS.intersection(names)
    if clashes:
        raise GradingError(f"{path}: check names must be unique and not {sorted(_RESERVED_COLUMNS)}: {sorted(clashes)}")
    return checks


def student_id(submission: Path, master: Path) -> str:
    """The folder name for ``<student>/<master name>.ipynb``, else the file's stem."""
    if submission.name == master.name:
        return submission.resolve().parent.name
    return submission.stem


def expand_submissions(submissions: Sequence[Path | str] | str) -> list[Path]:
    """Paths from a glob pattern, or from a list of paths and patterns (a pattern that matches nothing is an error)."""
    patterns = [submissions] if isinstance(submissions, str) else list(submissions)
    paths: list[Path] = []
    for pattern in patterns:
        if Path(pattern).exists():
            paths.append(Path(pattern))
            continue
        matches = sorted(glob.glob(str(pattern)))
        if not matches:
            raise GradingError(f"{pattern}: no such submission (and no file matches it as a pattern)")
        paths.extend(Path(match) for match in matches)
    if not paths:
        raise GradingError("no submissions given")
    for path in paths:
        if path.is_dir():
            raise GradingError(f"{path}: a folder, not a notebook (a pattern such as '{path}/*.ipynb' may be meant)")
    return paths


def _solution_sources(
    master: NotebookNode, released: NotebookNode, solutions: list[int], submission: NotebookNode
) -> tuple[list[str] | None, list[str]]:
    """The student's source for each master solution cell, and warnings about the matching.

    Cells are matched by id, else by their ``id-NAME`` tag when exactly one submitted cell
    carries it (JupyterLab gives a cut-and-pasted cell a new id but keeps its tags). A
    submission saved without ids (nbformat < 4.5) and without those tags is matched by order
    instead: its solution cells are the code cells that are neither tagged ``check`` nor
    copies of one of the master's other cells. None means no match could be made.
    """
    by_id = {cell.get("id"): cell for cell in submission.cells if cell.get("id")}
    by_name: dict[str, list[NotebookNode]] = {}
    for cell in submission.cells:
        for name in tag_names(cell):
            by_name.setdefault(name, []).append(cell)

    def find(wanted: NotebookNode) -> NotebookNode | None:
        if wanted.get("id") in by_id:
            return by_id[wanted.get("id")]
        names = tag_names(wanted)
        same = by_name.get(names[0], []) if names else []
        return same[0] if len(same) == 1 else None

    found = [find(master.cells[i]) for i in solutions]
    if all(cell is not None for cell in found):
        return [cell.source for cell in found if cell is not None], []
    given = {
        cell.source
        for nb in (master, released)
        for index, cell in enumerate(nb.cells)
        if index not in solutions
    }
    candidates = [
        cell.source
        for cell in submission.cells
        if cell.cell_type == "code"
        and CHECK_TAG not in cell.metadata.get("tags", [])
        and cell.source not in given
    ]
    if len(candidates) == len(solutions):
        return candidates, ["solution cells matched by order, not by cell id (ids missing); check by hand"]
    return None, [
        f"solution cells not found by cell id, and {len(candidates)} candidate cells for "
        f"{len(solutions)} solutions; graded as unanswered, check by hand"
    ]


def rebuild(
    master: NotebookNode, released: NotebookNode, solutions: list[int], submission: NotebookNode
) -> tuple[NotebookNode, list[str]]:
    """The master with the student's solution cells put in and every output cleared."""
    sources, warnings = _solution_sources(master, released, solutions, submission)
    nb = copy.deepcopy(master)
    for index, source in zip(solutions, sources or [released.cells[i].source for i in solutions]):
        nb.cells[index].source = source
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb, warnings


def run_nbval(workdir: Path, notebooks: list[Path], cell_timeout: int) -> Path:
    """Run nbval over the notebooks in one pytest process; return the JUnit XML report.

    The notebooks are passed one by one, so pytest's norecursedirs patterns cannot hide a
    student whose id looks like ``build`` or ``.x``; an empty ini file in ``workdir``
    keeps the caller's project configuration and conftest files out of the run.
    """
    workdir = Path(workdir).resolve()
    report = workdir / "report.xml"
    (workdir / "pytest.ini").write_text("[pytest]\n")
    command = [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
        f"--nbval-cell-timeout={cell_timeout}", "-p", "no:cacheprovider", "-q",
        f"--junitxml={report}", "-o", "junit_family=xunit1", "-c", "pytest.ini",
        "--rootdir", ".", *(str(Path(nb).resolve()) for nb in notebooks),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    # Exit 1 means some cell failed, which is what grading measures; anything else
    # (interrupted, internal error, usage error, nothing collected) means no grades.
    if result.returncode not in (0, 1) or not report.exists():
        output = (result.stdout + result.stderr).strip().splitlines()
        raise GradingError(
            f"pytest exited with code {result.returncode} while grading in {workdir}:\n"
            + "\n".join(output[-40:])
        )
    return report


def passed_cells(report: Path, workdir: Path) -> dict[Path, set[int]]:
    """For each notebook in the JUnit report, the nbval cells (``Cell n``) that passed.

    A cell passes when none of its test case entries has a failure, error or skip (a cell
    after a timeout is an expected failure, reported as skipped).
    """
    outcomes: dict[tuple[Path, int], bool] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        match = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
        file = case.get("file")
        if not match or not file:
            continue
        key = ((workdir / file).resolve(), int(match.group(1)))
        ok = not any(child.tag in ("failure", "error", "skipped") for child in case)
        outcomes[key] = outcomes.get(key, True) and ok
    passed: dict[Path, set[int]] = {}
    for (notebook, cell), ok in outcomes.items():
        cells = passed.setdefault(notebook, set())
        if ok:
            cells.add(cell)
    return passed


def write_csv(gradebook: Gradebook, out_csv: Path) -> None:
    """One row per student: student, one column per check, score, max_score."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", *(c.name for c in gradebook.checks), "score", "max_score"])
        for student in gradebook.students:
            row = [student.points[c.name] for c in gradebook.checks]
            writer.writerow([student.student, *row, student.score, gradebook.max_score])


def grade(
    master: Path,
    submissions: Sequence[Path | str] | str,
    out_csv: Path,
    *,
    cell_timeout: int = 60,
    workdir: Path | None = None,
) -> Gradebook:
    """Grade every submission against the master, write ``out_csv`` and return the gradebook.

    ``workdir`` (created if missing, must be empty) keeps the rebuilt notebooks and
    pytest's ``report.xml`` for inspection; by default a temporary folder is used and removed.
    """
    master = Path(master)
    try:
        master_nb = read_notebook(master)
        released = release_notebook(master_nb, str(master))
        solutions = [
            i for i, c in enumerate(master_nb.cells) if is_solution_cell(c, cell_location(str(master), i, c))
        ]
    except ReleaseError as error:
        raise GradingError(str(error)) from None
    checks = read_checks(master_nb, str(master))
    paths = expand_submissions(submissions)
    students: dict[str, Path] = {}
    for path in paths:
        if path.resolve() == master.resolve():
            raise GradingError(f"{path}: the master notebook is among the submissions")
        other = students.setdefault(student_id(path, master), path)
        if other != path:
            raise GradingError(f"{other} and {path} both belong to student '{student_id(path, master)}'")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="labkit-grade-") as tmp:
            return _grade_in(Path(tmp), master, master_nb, released, solutions, checks, students, out_csv, cell_timeout)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise GradingError(f"{workdir}: the work folder must be empty (it receives the rebuilt notebooks)")
    return _grade_in(workdir, master, master_nb, released, solutions, checks, students, out_csv, cell_timeout)


def _grade_in(
    workdir: Path,
    master: Path,
    master_nb: NotebookNode,
    released: NotebookNode,
    solutions: list[int],
    checks: list[Check],
    students: dict[str, Path],
    out_csv: Path,
    cell_timeout: int,
) -> Gradebook:
    """Rebuild, run and score in ``workdir`` (see ``grade``)."""
    workdir = workdir.resolve()
    rebuilt: dict[str, Path] = {}
    warnings: dict[str, list[str]] = {}
    for number, (student, path) in enumerate(sorted(students.items()), start=1):
        try:
            submission, warnings[student] = read_notebook(path), []
        except ReleaseError as error:
            submission, warnings[student] = released, [f"{error}; graded as unanswered"]
        nb, found = rebuild(master_nb, released, solutions, submission)
        warnings[student] += found
        # A numbered folder keeps odd ids (".x", "a b", "build") out of pytest's way.
        target = workdir / "notebooks" / f"{number:04d}-{student}" / master.name
        target.parent.mkdir(parents=True)
        nbformat.write(nb, target)
        rebuilt[student] = target.resolve()
    passed = passed_cells(run_nbval(workdir, list(rebuilt.values()), cell_timeout), workdir)
    grades = []
    for student, target in rebuilt.items():
        if target not in passed:
            warnings[student].append("nbval reported no result for this notebook")
        ok = passed.get(target, set())
        points = {c.name: c.points if c.code_index in ok else 0 for c in checks}
        grades.append(StudentGrade(student, students[student], points, warnings[student]))
    gradebook = Gradebook(checks, grades)
    write_csv(gradebook, Path(out_csv))
    return gradebook


def add_grade_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labkit grade``."""
    parser.add_argument("master", type=Path, help="the master notebook (with solutions and hidden tests)")
    parser.add_argument("submissions", nargs="+", help="submitted notebooks, or quoted glob patterns")
    parser.add_argument("-o", "--out", type=Path, default=Path("grades.csv"),
                        help="gradebook CSV (default: grades.csv)")
    parser.add_argument("--cell-timeout", type=int, default=60, help="seconds a cell may run (default: 60)")
    parser.add_argument("--workdir", type=Path, help="empty folder to keep the rebuilt notebooks and report.xml")


def run_grade(args: argparse.Namespace) -> int:
    """``labkit grade``: write the CSV, print one line per student and any warnings."""
    try:
        gradebook = grade(
            args.master, args.submissions, args.out, cell_timeout=args.cell_timeout, workdir=args.workdir
        )
    except GradingError as error:
        print(f"labkit grade: {error}", file=sys.stderr)
        return 2
    for student in gradebook.students:
        print(f"{student.student}: {student.score}/{gradebook.max_score}")
        for warning in student.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0
