"""The committed labs carry no error: no error output, and no traceback logged on stderr.

A traceback printed by a background thread (lab 00 once committed asyncio's "Exception in
callback ... CancelledError" from the Service balancer's shutdown) does not fail the cell, so
nbval passes it; a student still reads it as something broken.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

LABS = Path(__file__).resolve().parents[1] / "labs"
NOTEBOOKS = sorted(LABS.glob("*.ipynb"))
SIGNS = ("Traceback (most recent call last)", "Exception in callback", "Task exception was never retrieved")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_error_or_traceback_in_committed_outputs(path):
    problems = []
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                problems.append(f"cell {cell.id}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and any(sign in output.text for sign in SIGNS):
                problems.append(f"cell {cell.id}: {output.name}: {output.text.strip().splitlines()[0]}")
    assert not problems, "\n".join(problems)
