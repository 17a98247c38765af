"""Student copies of lab notebooks: solutions stubbed, hidden tests removed, outputs cleared.

A master notebook holds each exercise's solution between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` lines of a code cell, and may hold extra tests between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` in its check cells (the
convention nbgrader uses, so masters stay usable with nbgrader too). The student copy
replaces each solution region with a stub at the marker's indentation, drops hidden
tests, and clears every output and execution count: nbval then only checks that cells
run, since an unrun cell that still has outputs fails nbval even under ``--nbval-lax``.
Cell ids, tags and metadata are kept so that ``labkit grade`` can match a submission's
cells back to the master.
"""
from __future__ import annotations

import argparse
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
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
CHECK_TAG = "check"

_END_OF = {BEGIN_SOLUTION: END_SOLUTION, BEGIN_HIDDEN: END_HIDDEN}
_MARKERS = {BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN}
_NEAR_MARKER = re.compile(r"#\s*(BEGIN|END)\s+(SOLUTION|HIDDEN\s+TESTS)", re.IGNORECASE)


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


def release_source(source: str, regions: list[Region]) -> str:
    """The source with solution regions stubbed and hidden-test regions removed."""
    lines = source.split("\n")
    for region in reversed(regions):
        stub = [region.indent + line for line in STUB] if region.begin_marker == BEGIN_SOLUTION else []
        lines[region.begin : region.end + 1] = stub
    return "\n".join(lines)


def release_notebook(nb: NotebookNode, source: str = "<notebook>") -> NotebookNode:
    """The student copy of a master notebook (a new object; ``nb`` is left untouched).

    ``source`` names the notebook in error messages.
    """
    student = copy.deepcopy(nb)
    for index, cell in enumerate(student.cells):
        regions = cell_regions(cell, cell_location(source, index, cell))
        if regions:
            cell.source = release_source(cell.source, regions)
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
    except Exception as error:  # nbformat raises several unrelated types for bad input
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
