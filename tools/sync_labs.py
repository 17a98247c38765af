"""Sync lab notebooks from their sources: labs/NN_name.py (jupytext percent) -> labs/NN_name.ipynb.

    .venv/bin/python tools/sync_labs.py labs/05_knative_autoscaling.py [...]

`make notebook LAB=05` runs this, then executes the notebook in place (committed executed, as
nbval needs). Each .ipynb is paired with its .py (notebook metadata jupytext.formats), so with
jupytext installed JupyterLab saves both; this script is for edits made to the .py elsewhere.

What it does beyond `jupytext --to ipynb --update`: every cell's `id-NAME` tag becomes its
nbformat cell id (the .py cannot hold cell ids; labkit.grading keys on them), and a tag
name used twice, or a check or solution cell without one, is refused with its file and line.
Cells keep their stored outputs, paired by jupytext's own combine step (an edited cell keeps
its old output until the notebook is executed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs

from labkit.grading.cell_names import NAME_PREFIX, tag_names
from labkit.grading.release import CHECK_TAG, ReleaseError, is_solution_cell

FORMAT = "py:percent"
PAIRING = "ipynb,py:percent"
# The kernel every lab runs in (as the notebooks have always declared it); a new source without
# a jupytext header gets it.
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


class SourceError(ValueError):
    """A lab source that cannot become a notebook: the message names its file and line."""


def _marker_lines(path: Path, cells: int) -> list[int]:
    """1-based line of each cell's `# %%` marker (empty if the cells cannot be told apart)."""
    lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("# %%")]
    return lines if len(lines) == cells else []


def set_ids_from_tags(nb: nbformat.NotebookNode, path: Path) -> None:
    """Give each cell with an `id-NAME` tag the id NAME; refuse duplicate or missing names."""
    lines = _marker_lines(path, len(nb.cells))

    def where(index: int) -> str:
        return f"{path}:{lines[index]}" if lines else f"{path}: cell {index + 1}"

    first: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        names = tag_names(cell)
        try:
            graded = CHECK_TAG in cell.metadata.get("tags", []) or is_solution_cell(cell, where(index))
        except ReleaseError as error:  # a misspelt or unbalanced solution marker
            raise SourceError(str(error)) from None
        if len(names) > 1:
            raise SourceError(f"{where(index)}: one {NAME_PREFIX}NAME tag per cell, got {names}")
        if not names:
            if graded:
                raise SourceError(f"{where(index)}: a check or solution cell needs an {NAME_PREFIX}NAME tag "
                                  "(its grade column and its match in submissions)")
            continue
        name = names[0]
        if name in first:
            raise SourceError(f"{where(index)}: tag {NAME_PREFIX}{name} is already on the cell at "
                              f"{where(first[name])}; cell names must be unique")
        first[name] = index
        cell.id = name
    clashes = [i for i, cell in enumerate(nb.cells) if not tag_names(cell) and cell.get("id") in first]
    if clashes:
        raise SourceError(f"{where(clashes[0])}: this untagged cell's id {nb.cells[clashes[0]].id!r} is "
                          "another cell's tag name; give it an id-NAME tag of its own")


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook of `source`, with the outputs its .ipynb holds (as jupytext pairs the cells)."""
    if source.suffix != ".py" or not source.is_file():
        raise SourceError(f"{source}: not a lab source (labs/NN_name.py)")
    target = source.with_suffix(".ipynb")
    try:
        nb = jupytext.read(source, fmt=FORMAT)  # validates the header's notebook metadata
        if target.exists():
            nb = combine_inputs_with_outputs(nb, nbformat.read(target, as_version=4), fmt=FORMAT)
        nb.metadata.setdefault("jupytext", {})["formats"] = PAIRING
        nb.metadata.setdefault("kernelspec", dict(KERNELSPEC))
        set_ids_from_tags(nb, source)
        nbformat.validate(nb)  # cell ids from tags: nbformat allows letters, digits, - and _ only
    except nbformat.ValidationError as error:
        raise SourceError(f"{source}: not a valid notebook: {error.message}") from None
    return nb


def main(argv: list[str]) -> int:
    """Build every named source first, then write them all (a bad one writes nothing)."""
    if not argv:
        print("usage: python tools/sync_labs.py labs/NN_name.py [...]", file=sys.stderr)
        return 2
    try:
        built = [(Path(arg).with_suffix(".ipynb"), build(Path(arg))) for arg in argv]
    except SourceError as error:
        print(f"sync_labs.py: {error}", file=sys.stderr)
        return 2
    for target, nb in built:
        jupytext.write(nb, target, fmt="ipynb")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
