"""Building blocks of the lab sources in tools/lab_sources/: markdown, code and check cells.

Conventions (shared with labkit.grading): an exercise's solution sits in its own code cell
between `### BEGIN SOLUTION` / `### END SOLUTION`; the next code cell calls a `check_...()`
and carries the tags `check` and `points-N`. Cells whose output depends on timing, ports or
pids, and cells that drive widgets, carry `nbval-ignore-output`; the cell after them asserts
a robust property. Every cell has a stable id (graders and `labkit release` key on them).
"""

from __future__ import annotations

import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

IGNORE = "nbval-ignore-output"


def md(cell_id: str, text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip("\n"), id=cell_id)


def code(cell_id: str, text: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(textwrap.dedent(text).strip("\n"), id=cell_id)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def check(cell_id: str, text: str, points: int) -> nbformat.NotebookNode:
    return code(cell_id, text, "check", f"points-{points}")


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    ids = [c.id for c in cells]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate cell ids: {duplicates}")
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb
