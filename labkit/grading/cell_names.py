"""A lab cell's stable name: its ``id-NAME`` tag, else its cell id.

Lab sources are jupytext percent files (``labs/NN_name.py``), which keep a cell's tags in its
``# %%`` line but not its nbformat cell id; so every cell carries its name as an ``id-NAME`` tag,
the notebook build (``tools/sync_labs.py``) sets the cell id from it, and grading reads the tag
first. A grade column, and the match of a student's solution cell to the master's, then survive
an edit in any editor that keeps tags (JupyterLab, jupytext, a text editor).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME_PREFIX = "id-"


def tag_names(cell: Mapping[str, Any]) -> list[str]:
    """The NAMEs of a cell's ``id-NAME`` tags, in tag order."""
    tags = cell.get("metadata", {}).get("tags", [])
    return [tag[len(NAME_PREFIX) :] for tag in tags if tag.startswith(NAME_PREFIX) and len(tag) > len(NAME_PREFIX)]


def cell_name(cell: Mapping[str, Any]) -> str | None:
    """The first ``id-NAME`` tag's NAME, else the cell id (None when it has neither)."""
    names = tag_names(cell)
    return names[0] if names else cell.get("id")
