"""Lab sources: each labs/NN_name.py (jupytext percent) and its paired .ipynb agree, and
tools/sync_labs.py builds the one from the other with cell ids taken from `id-NAME` tags."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import jupytext
import nbformat
import pytest

from labkit.grading.cell_names import tag_names
from labkit.net import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
LABS = REPO / "labs"
NOTEBOOKS = sorted(LABS.glob("[0-9][0-9]_*.ipynb"))


def load_sync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_labs", REPO / "tools" / "sync_labs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_labs = load_sync()


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, str, list[str]]]:
    return [(c.get("id"), c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_every_lab_has_its_source_and_its_notebook():
    assert NOTEBOOKS, "no lab notebooks found"
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in sorted(LABS.glob("[0-9][0-9]_*.py"))]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_paired_files_agree(notebook: Path):
    """Someone edited one of the pair and not the other unless the .py builds the .ipynb's cells."""
    committed = nbformat.read(notebook, as_version=4)
    source = notebook.with_suffix(".py")
    assert committed.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent", "pair the notebook"
    text = jupytext.read(source)
    assert text.metadata["kernelspec"] == committed.metadata["kernelspec"]
    # Read on its own (no outputs to combine with), the .py must give the same cells: sources,
    # types, tags and order; and with ids from the tags, the same ids.
    sync_labs.set_ids_from_tags(text, source)
    fix = f"edit {source.name}, then `make notebook LAB={notebook.name[:2]}`"
    for index, (want, got) in enumerate(zip(cells(committed), cells(text))):
        if not tag_names(text.cells[index]):  # no name: jupytext gives it a fresh id
            got = (want[0], *got[1:])
        assert got == want, f"{source.name} and {notebook.name} differ at cell {index}; {fix}"
    assert len(text.cells) == len(committed.cells), f"{source.name} and {notebook.name} differ in length; {fix}"


@pytest.fixture
def lab00(tmp_path: Path) -> Path:
    """A copy of lab 00's pair (the executed notebook and its source) to edit."""
    for suffix in (".py", ".ipynb"):
        shutil.copy(LABS / f"00_welcome{suffix}", tmp_path / f"00_welcome{suffix}")
    return tmp_path / "00_welcome.py"


def test_sync_takes_edits_from_the_source_and_keeps_outputs(lab00: Path, capsys):
    before = nbformat.read(lab00.with_suffix(".ipynb"), as_version=4)
    text = lab00.read_text()
    edited_cell = 'print("✓ Python >= 3.10, and every package labkit needs is installed and new enough")'
    assert text.count(edited_cell) == 1
    text = text.replace(edited_cell, 'print("edited")')
    text = text.replace('# %% [markdown] tags=["id-idea"]',
                        '# %% [markdown] tags=["id-added"]\n# A new cell.\n\n# %% [markdown] tags=["id-idea"]')
    lab00.write_text(text)

    assert sync_labs.main([str(lab00)]) == 0
    assert capsys.readouterr().out == f"wrote {lab00.with_suffix('.ipynb')}\n"
    after = nbformat.read(lab00.with_suffix(".ipynb"), as_version=4)
    assert [c.id for c in after.cells] == [*[c.id for c in before.cells[:1]], "added", *[c.id for c in before.cells[1:]]]
    old, new = {c.id: c for c in before.cells}, {c.id: c for c in after.cells}
    assert new["added"].source == "A new cell." and new["added"].metadata.tags == ["id-added"]
    # jupytext pairs an edited cell with its old self by position: it keeps its stale output
    # until executed (make notebook executes; nbval would notice otherwise).
    assert new["env-check"].source.endswith('print("edited")')
    kept = [i for i in old if old[i].cell_type == "code"]
    assert all(new[i].outputs == old[i].outputs for i in kept) and sum(bool(new[i].outputs) for i in kept) > 5
    assert after.metadata.jupytext == {"formats": "ipynb,py:percent"}
    assert after.metadata.kernelspec == before.metadata.kernelspec
    assert after.metadata.widgets == before.metadata.widgets  # the .py does not hold it; the .ipynb keeps it


def test_sync_without_a_notebook_builds_one_with_the_labs_kernel(tmp_path: Path):
    source = tmp_path / "99_new.py"
    source.write_text('# %% [markdown] tags=["id-title"]\n# # Lab 99\n\n# %% tags=["id-hello"]\nprint("hi")\n')
    assert sync_labs.main([str(source)]) == 0
    nb = nbformat.read(tmp_path / "99_new.ipynb", as_version=4)
    assert cells(nb) == [("title", "markdown", "# Lab 99", ["id-title"]), ("hello", "code", 'print("hi")', ["id-hello"])]
    assert nb.metadata.kernelspec.name == "python3" and nb.metadata.jupytext.formats == "ipynb,py:percent"


@pytest.mark.parametrize("body, says", [
    ('# %% tags=["id-a"]\nx = 1\n\n# %% tags=["id-a"]\ny = 2\n',
     r"99_bad\.py:4: tag id-a is already on the cell at .*99_bad\.py:1; cell names must be unique"),
    ('# %% tags=["id-a", "id-b"]\nx = 1\n', r"99_bad\.py:1: one id-NAME tag per cell, got \['a', 'b'\]"),
    ('# %% tags=["id-a"]\nx = 1\n\n# %% tags=["check", "points-1"]\ncheck(x)\n',
     r"99_bad\.py:4: a check or solution cell needs an id-NAME tag"),
    ('# %%\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n',
     r"99_bad\.py:1: a check or solution cell needs an id-NAME tag"),
    ('# %% tags=["id-a"]\n### BEGIN SOLUTION\nx = 1\n', r"99_bad\.py:1: line 1: '### BEGIN SOLUTION' is never closed"),
    ('# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n# ---\n\n# %% tags=["id-a"]\nx = 1\n',
     r"99_bad\.py: not a valid notebook: 'name' is a required property"),
    ('# %% tags=["id-a.b"]\nx = 1\n', r"99_bad\.py: not a valid notebook: 'a\.b' does not match"),
])
def test_sync_refuses_bad_names_with_file_and_line_and_writes_nothing(tmp_path: Path, capsys, body: str, says: str):
    good = tmp_path / "98_good.py"
    good.write_text('# %% tags=["id-a"]\nx = 1\n')
    bad = tmp_path / "99_bad.py"
    bad.write_text(body)
    with pytest.raises(sync_labs.SourceError, match=says):
        sync_labs.build(bad)
    assert sync_labs.main([str(good), str(bad)]) == 2
    assert "sync_labs.py: " in capsys.readouterr().err
    assert not list(tmp_path.glob("*.ipynb"))  # not even the good one


def test_sync_refuses_an_untagged_cell_whose_kept_id_is_another_cells_name(tmp_path: Path):
    source = tmp_path / "99_moved.py"
    source.write_text('# %% tags=["id-b"]\nx = 1\n\n# %% tags=["id-a"]\ny = 2\n')
    assert sync_labs.main([str(source)]) == 0
    # The name moves to the first cell and the second loses its tag, keeping its stored id "a".
    source.write_text('# %% tags=["id-a"]\nx = 1\n\n# %%\ny = 2\n')
    with pytest.raises(sync_labs.SourceError, match=r"99_moved\.py:4: this untagged cell's id 'a' is another cell's"):
        sync_labs.build(source)


@pytest.fixture
def jupyter_contents(lab00: Path, tmp_path: Path) -> Iterator[str]:
    """The contents API of a Jupyter server on lab 00's pair, with nothing but the venv's own
    configuration (which enables jupytext's server extension once jupytext is installed)."""
    token, port = "labkit-test", free_port()
    env = dict(os.environ, **{name: str(tmp_path / name) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")})
    command = [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={lab00.parent}"]
    if os.geteuid() == 0:
        command.append("--allow-root")  # else the server refuses to start as root
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/api/status?token={token}", 60, process=server)
            yield f"http://127.0.0.1:{port}/api/contents/{{}}?token={token}"
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_jupyter_saves_and_reads_the_pair(lab00: Path, jupyter_contents: str):
    """What an instructor does in JupyterLab: the notebook's cells come from the .py, and a save
    writes both files (jupytext's contents manager; no jupytext.toml or Jupyter config needed)."""
    def call(method: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(jupyter_contents.format(lab00.with_suffix(".ipynb").name), method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    lab00.write_text(lab00.read_text().replace("# ## How a lab works", "# ## How a lab works, edited as text"))
    nb = call("GET")["content"]
    assert nb["cells"][1]["id"] == "idea" and nb["cells"][1]["source"].startswith("## How a lab works, edited as text")
    nb["cells"][1]["source"] = "## Edited in JupyterLab"
    call("PUT", {"type": "notebook", "format": "json", "content": nb})
    assert "# %% [markdown] tags=[\"id-idea\"]\n# ## Edited in JupyterLab\n" in lab00.read_text()
    saved = nbformat.read(lab00.with_suffix(".ipynb"), as_version=4)
    assert (saved.cells[1].id, saved.cells[1].source) == ("idea", "## Edited in JupyterLab")
    assert sync_labs.build(lab00).cells[1].source == "## Edited in JupyterLab"
