"""Build the notebooks in labs/ from their cell sources in tools/lab_sources/labNN.py.

Why a builder: notebook JSON is hard to review and to edit by hand, while the sources read as
plain text and keep stable cell ids. The output has no outputs; execute it afterwards so it is
committed executed, as nbval needs:

    .venv/bin/python tools/build_labs.py [00 01 ...]
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.timeout=120 labs/NN_name.ipynb

Each source module defines FILENAME (the notebook's name in labs/) and CELLS (built with the
helpers in tools/cells.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat

TOOLS = Path(__file__).resolve().parent
LABS = TOOLS.parent / "labs"
sys.path.insert(0, str(TOOLS))  # lab sources import `cells` as a top-level module

from cells import notebook  # noqa: E402 - importable only after the sys.path line above


def _load(path: Path) -> tuple[str, list[nbformat.NotebookNode]]:
    spec = importlib.util.spec_from_file_location(f"lab_sources.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FILENAME, module.CELLS


NOTEBOOKS = {path.stem.removeprefix("lab"): _load(path) for path in sorted((TOOLS / "lab_sources").glob("lab*.py"))}
"""Lab number ("00", "01", ...) -> (notebook file name, cells)."""


def main(argv: list[str]) -> None:
    for key in argv or sorted(NOTEBOOKS):
        if key not in NOTEBOOKS:
            sys.exit(f"build_labs.py: unknown lab {key!r}; choose from {sorted(NOTEBOOKS)}")
        name, cells = NOTEBOOKS[key]
        nb = notebook(cells)
        nbformat.validate(nb)
        nbformat.write(nb, LABS / name)
        print(f"wrote labs/{name} ({len(cells)} cells)")


if __name__ == "__main__":
    main(sys.argv[1:])
