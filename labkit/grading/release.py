"""Student copies of lab notebooks: solutions stubbed, hidden tests removed, outputs cleared.

A master notebook holds each exercise's solution between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines of a code cell, and may hold extra tests between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` in its check cells (the
convention nbgrader uses, so masters stay usable with nbgrader too). The student copy
replaces each solution region with a stub at the marker's indentation that says what to
write (the exercise's heading and the names the solution sets), drops hidden tests, and clears
every output and execution count: nbval then only checks that cells run, since an unrun cell
that still has outputs fails nbval even under ``--nbval-lax``.
Cell ids, tags and metadata are kept so that ``labkit grade`` can match a submission's
cells back to the master. The master's jupytext pairing (``labs/NN_name.py`` beside the
``.ipynb``) is dropped: a student works on and hands in the notebook alone, and a paired
script left beside it would make JupyterLab read the cells from that script, or refuse to
open a newer copy of the notebook that no longer matches it.
"""
from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
STUB_COMMENT = "# YOUR CODE HERE"
CHECK_TAG = "check"

_END_OF = {BEGIN_SOLUTION: END_SOLUTION, BEGIN_HIDDEN: END_HIDDEN}
_MARKERS = {BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN}
_NEAR_MARKER = re.compile(r"#\s*(BEGIN|END)\s+(SOLUTION|HIDDEN\s+TESTS)", re.IGNORECASE)
_EXERCISE_HEADING = re.compile(r"^#+\s*(Exercise\b.*?)\s*(\(\d+ points?\))?\s*$", re.MULTILINE)
_ANSWER_CALL = re.compile(r"\banswer\(\s*[\"'](\w+)[\"']")
_ENCLOSING_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")


class ReleaseError(ValueError):
    """A notebook that cannot be released (or graded): bad markers, bad path."""


@dataclass(frozen=True)
class Region:
    """Lines ``begin``..``end`` (0-based, markers included) of one marked region."""

    begin_marker: str
    begin: int
    end: int
    indent: str


def cell_location(path: str, index: int, cell: NotebookNode) -> str:
    """How errors name a cell: the file, its position in ``cells`` and its id."""
    return f"{path}: cells[{index}] (id {cell.get('id', 'missing')})"


def find_regions(source: str, where: str) -> list[Region]:
    """The marked regions of a cell's source; unbalanced or nested markers are errors.

    A marker is a line holding only the marker (indentation allowed), as in nbgrader.
    """
    regions: list[Region] = []
    opened: tuple[str, int, str] | None = None
    for number, line in enumerate(source.split("\n")):
        marker = line.strip()
        if marker not in _MARKERS:
            if _NEAR_MARKER.search(line):
                # A misspelt marker would leak the solution into the student copy.
                raise ReleaseError(f"{where}: line {number + 1}: '{marker}' looks like a marker but is not one")
            continue
        if marker in _END_OF:
            if opened is not None:
                raise ReleaseError(
                    f"{where}: line {number + 1}: '{marker}' before the '{opened[0]}' "
                    f"of line {opened[1] + 1} is closed by '{_END_OF[opened[0]]}'"
                )
            opened = (marker, number, line[: len(line) - len(line.lstrip())])
        elif opened is None:
            begin = next(b for b, e in _END_OF.items() if e == marker)
            raise ReleaseError(f"{where}: line {number + 1}: '{marker}' without a '{begin}' before it")
        elif _END_OF[opened[0]] != marker:
            raise ReleaseError(
                f"{where}: line {number + 1}: '{marker}' cannot close the '{opened[0]}' "
                f"of line {opened[1] + 1}; expected '{_END_OF[opened[0]]}'"
            )
        else:
            regions.append(Region(opened[0], opened[1], number, opened[2]))
            opened = None
    if opened is not None:
        raise ReleaseError(
            f"{where}: line {opened[1] + 1}: '{opened[0]}' is never closed by '{_END_OF[opened[0]]}'"
        )
    return regions


def cell_regions(cell: NotebookNode, where: str) -> list[Region]:
    """The regions of one cell, checked against the conventions shared with lab authors.

    Markers outside code cells would leak into the student copy, a solution inside a
    check cell would be graded from the master, and hidden tests inside a solution cell
    would be lost when grading takes that cell from the student: all three are errors.
    """
    regions = find_regions(cell.source, where)
    if not regions:
        return regions
    if cell.cell_type != "code":
        raise ReleaseError(f"{where}: markers are only allowed in code cells, not {cell.cell_type} cells")
    kinds = {region.begin_marker for region in regions}
    if BEGIN_SOLUTION in kinds and CHECK_TAG in cell.metadata.get("tags", []):
        raise ReleaseError(f"{where}: a cell tagged '{CHECK_TAG}' must not hold a solution region")
    if kinds == {BEGIN_SOLUTION, BEGIN_HIDDEN}:
        raise ReleaseError(f"{where}: hidden tests belong in a check cell, not in a solution cell")
    return regions


def is_solution_cell(cell: NotebookNode, where: str) -> bool:
    """True for a cell the student completes (it holds a solution region)."""
    return any(r.begin_marker == BEGIN_SOLUTION for r in cell_regions(cell, where))


def assigned_names(code: str) -> list[str]:
    """Public names a block of code binds, in order: assignments (also inside loops and
    branches) and the functions and classes it defines, but nothing inside those.

    The block may be a function body (with ``return``), so it is parsed inside a function.
    """
    body = "def _block():\n" + "\n".join("    " + line for line in code.split("\n")) + "\n    pass"
    try:
        function = ast.parse(body).body[0]
    except SyntaxError:
        return []
    assert isinstance(function, ast.FunctionDef)
    statements = function.body
    names: list[str] = []

    def bind(name: str) -> None:
        if not name.startswith("_") and name not in names:
            names.append(name)

    def visit(statement: ast.stmt) -> None:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(statement.name)
            return
        if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for node in (n for t in targets for n in ast.walk(t)):
                if isinstance(node, ast.Name):
                    bind(node.id)
        for child in ast.iter_child_nodes(statement):  # the bodies of loops, branches, with, try
            if isinstance(child, ast.stmt):
                visit(child)
            elif isinstance(child, ast.ExceptHandler):
                for inner in child.body:
                    visit(inner)

    for statement in statements:
        visit(statement)
    return names


def stub_message(heading: str | None, region_code: str, enclosing_def: str | None, checked: list[str]) -> str:
    """What the stub of one solution region tells the student to write.

    ``checked`` are the names the next check cell reads with ``answer("...")``: of the names
    the solution sets, those are the ones that must exist; the others are the solution's
    own helpers and are named only when the check names none.
    """
    where = f"{heading}: " if heading else ""
    if enclosing_def:
        return f"{where}complete the body of {enclosing_def}(); see the exercise text above"
    names = assigned_names(region_code)
    wanted = [n for n in names if n in checked] or names
    if not wanted:
        return f"{where}write your code here; see the exercise text above"
    return f"{where}write the code that sets {', '.join(wanted)}; see the exercise text above"


def _exercise_heading(cells: list[NotebookNode], index: int) -> str | None:
    """The nearest "Exercise ..." heading in a markdown cell before cell ``index``."""
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown":
            headings = _EXERCISE_HEADING.findall(cell.source)
            if headings:
                return headings[-1][0]
    return None


def _checked_names(cells: list[NotebookNode], index: int) -> list[str]:
    """Names the next check cell after cell ``index`` reads with ``answer("...")``."""
    for cell in cells[index + 1 :]:
        if cell.cell_type == "code" and CHECK_TAG in cell.metadata.get("tags", []):
            return _ANSWER_CALL.findall(cell.source)
    return []


def _enclosing_def(lines: list[str], region: Region) -> str | None:
    """The function a region sits in (a ``def`` above it, indented less), if any."""
    for line in reversed(lines[: region.begin]):
        found = _ENCLOSING_DEF.match(line)
        if found and len(found.group(1)) < len(region.indent):
            return found.group(2)
    return None


def release_source(source: str, regions: list[Region], messages: list[str]) -> str:
    """The source with solution regions stubbed and hidden-test regions removed.

    ``messages`` holds each region's stub message, in order (hidden-test regions ignore theirs).
    """
    lines = source.split("\n")
    for number, region in reversed(list(enumerate(regions))):
        if region.begin_marker == BEGIN_SOLUTION:
            stub = [region.indent + STUB_COMMENT, f"{region.indent}raise NotImplementedError({messages[number]!r})"]
        else:
            stub = []
        lines[region.begin : region.end + 1] = stub
    return "\n".join(lines)


def release_notebook(nb: NotebookNode, source: str = "<notebook>") -> NotebookNode:
    """The student copy of a master notebook (a new object; ``nb`` is left untouched).

    ``source`` names the notebook in error messages.
    """
    student = copy.deepcopy(nb)
    student.metadata.pop("jupytext", None)
    for index, cell in enumerate(student.cells):
        regions = cell_regions(cell, cell_location(source, index, cell))
        if regions:
            lines = cell.source.split("\n")
            heading, checked = _exercise_heading(student.cells, index), _checked_names(student.cells, index)
            messages = [
                stub_message(heading, "\n".join(line[len(r.indent):] for line in lines[r.begin + 1 : r.end]),
                             _enclosing_def(lines, r), checked)
                for r in regions
            ]
            cell.source = release_source(cell.source, regions, messages)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return student


def read_notebook(path: Path) -> NotebookNode:
    """Read a notebook as nbformat 4, turning any parse failure into a ReleaseError."""
    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise ReleaseError(f"{path}: no such notebook") from None
    except Exception as error:  # noqa: BLE001 - nbformat raises several unrelated types for bad input
        raise ReleaseError(f"{path}: not a readable notebook: {error}") from None


def release(src: Path, dst: Path) -> list[Path]:
    """Write the student copies of ``src`` into ``dst`` and return the written paths.

    ``src`` is a notebook or a folder whose ``*.ipynb`` (not recursive) are released.
    ``dst`` is a folder, or a ``.ipynb`` path when ``src`` is a single notebook. Every
    notebook is checked before any file is written, and no source is ever overwritten.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ReleaseError(f"{src}: no such file or folder")
    if dst.resolve() == src.resolve():
        raise ReleaseError(f"{dst}: the destination is the source; student copies go elsewhere")
    if src.is_dir():
        sources = sorted(src.glob("*.ipynb"))
        if not sources:
            raise ReleaseError(f"{src}: no *.ipynb notebooks in this folder")
        targets = [dst / path.name for path in sources]
    else:
        if src.suffix != ".ipynb":
            raise ReleaseError(f"{src}: not a .ipynb notebook")
        sources = [src]
        targets = [dst if dst.suffix == ".ipynb" else dst / src.name]
    for path, target in zip(sources, targets):
        if target.resolve() == path.resolve():
            raise ReleaseError(f"{target}: would overwrite its own source; choose another destination")
    released = [release_notebook(read_notebook(path), str(path)) for path in sources]
    for nb, target in zip(released, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    return targets


def add_release_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``labkit release``."""
    parser.add_argument("source", type=Path, help="master notebook, or a folder of them")
    parser.add_argument("dest", type=Path, help="folder (or .ipynb path) for the student copies")


def run_release(args: argparse.Namespace) -> int:
    """``labkit release SOURCE DEST``: print each written copy; exit 2 with the reason on bad input."""
    try:
        written = release(args.source, args.dest)
    except ReleaseError as error:
        print(f"labkit release: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"released {path}")
    return 0
