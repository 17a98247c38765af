"""A tiny master notebook in the lab authors' conventions, and ways to make submissions of it."""
from __future__ import annotations

import copy

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

MEAN_SOLUTION = (
    "def mean(xs):\n"
    '    """Arithmetic mean of a non-empty list."""\n'
    "    ### BEGIN SOLUTION\n"
    "    return sum(xs) / len(xs)\n"
    "    ### END SOLUTION"
)
MEAN_CHECK = (
    "assert mean([1, 2, 3]) == 2, 'the mean of 1, 2, 3 is 2'\n"
    "### BEGIN HIDDEN TESTS\n"
    "assert mean([5]) == 5\n"
    "### END HIDDEN TESTS"
)
DOUBLE_SOLUTION = "### BEGIN SOLUTION\ndef double(x):\n    return 2 * x\n### END SOLUTION\nprint(double(1))"
DOUBLE_CHECK = "assert double(21) == 42"


def code(cell_id: str, source: str, tags: list[str] | None = None, ran: bool = True) -> NotebookNode:
    """A code cell; ``ran`` gives it an execution count and an output, as in a committed master."""
    cell = new_code_cell(source, id=cell_id)
    if tags:
        cell.metadata["tags"] = tags
    if ran:
        cell.execution_count = 1
        cell.outputs = [new_output("stream", name="stdout", text="stored output\n")]
    return cell


def master() -> NotebookNode:
    """Two exercises worth 2 and 3 points; the first check has hidden tests."""
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Lab 99\nImplement `mean` and `double`.", id="intro"),
            code("setup", "import math\nprint('ready')", tags=["nbval-ignore-output"]),
            code("solution-mean", MEAN_SOLUTION),
            code("check-mean", MEAN_CHECK, tags=["check", "points-2", "id-mean"]),
            new_markdown_cell("Now `double`.", id="text-double"),
            code("solution-double", DOUBLE_SOLUTION),
            code("check-double", DOUBLE_CHECK, tags=["check", "points-3"]),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nbformat.validate(nb)
    return nb


def edited(nb: NotebookNode, sources: dict[str, str]) -> NotebookNode:
    """A copy of ``nb`` with the cells of the given ids given new sources (a student's edits)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.id in sources:
            cell.source = sources[cell.id]
    return nb


def without_ids(nb: NotebookNode) -> NotebookNode:
    """``nb`` as saved by a tool that writes nbformat 4.4 (no cell ids)."""
    nb = copy.deepcopy(nb)
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    return nb
