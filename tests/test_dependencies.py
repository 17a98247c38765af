"""Declared dependencies match imports (the job deptry does, on labkit's own import graph).

- every third-party package labkit/ imports is provided by a distribution in
  [project.dependencies] (a package that only arrives through another dependency is not enough:
  it leaves when that dependency does);
- every declared dependency is imported somewhere, or is in NOT_IMPORTED with its reason;
- tests/ and tools/ may also use the `test` extra.
Import names map to distributions through the installed metadata (`packages_distributions`).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from import_graph import REPO, Import, imports_of, read_package

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

# Declared but not imported by labkit/, and why.
NOT_IMPORTED = {
    "jupyterlab": "`labkit lab` runs `python -m jupyter lab`",
    "ipykernel": "the kernel the lab notebooks run in",
    "jupytext": "JupyterLab saves each lab's .ipynb and its paired labs/NN_name.py (tools/sync_labs.py imports it)",
    "fastapi": "kept for the planned issue on students' own code (see the pyproject comment)",
    "uvicorn": "kept for the planned issue on students' own code (see the pyproject comment)",
}

Where = list[tuple[str, int]]


def normalise(name: str) -> str:
    """PEP 503: `Pillow`, `pydantic_core`, `PyYAML` -> `pillow`, `pydantic-core`, `pyyaml`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: Iterable[str]) -> set[str]:
    """Distribution names of PEP 508 requirements (`uvicorn[standard]>=0.54` -> `uvicorn`)."""
    names = set()
    for text in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
        assert match is not None, f"not a PEP 508 requirement: {text!r}"
        names.add(normalise(match.group(1)))
    return names


def third_party(imports: Mapping[str, Iterable[tuple[str, int]]], local: set[str]) -> dict[str, Where]:
    """Top-level import name -> where it is imported, leaving out the standard library and `local`."""
    found: dict[str, Where] = {}
    for name, places in imports.items():
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in local and top != "__future__":
            found.setdefault(top, []).extend(places)
    return found


def undeclared(used: Mapping[str, Where], allowed: set[str],
               distributions: Mapping[str, list[str]]) -> list[str]:
    problems = []
    for top, places in sorted(used.items()):
        file, line = min(places)
        provided_by = [normalise(d) for d in distributions.get(top, [])]
        if not provided_by:
            problems.append(f"{file}:{line}: imports {top}, which no installed distribution provides")
        elif not allowed & set(provided_by):
            problems.append(f"{file}:{line}: imports {top} (distribution {provided_by[0]}), "
                            "not declared in pyproject.toml")
    return problems


def unimported(requirements: set[str], used: Iterable[str], distributions: Mapping[str, list[str]],
               exceptions: Mapping[str, str]) -> list[str]:
    imported = {normalise(d) for top in used for d in distributions.get(top, [])}
    return [f"pyproject.toml: {name} is declared but labkit/ never imports it "
            "(remove it, or add it to NOT_IMPORTED with the reason)"
            for name in sorted(requirements - imported - set(exceptions))]


def _imports_by_name(graph: Mapping[str, list[Import]], root: Path) -> dict[str, Where]:
    found: dict[str, Where] = {}
    for module, imports in graph.items():
        file = module.replace(".", "/") + ".py"
        if not (root / file).exists():
            file = module.replace(".", "/") + "/__init__.py"
        for imp in imports:
            found.setdefault(imp.name, []).append((file, imp.line))
    return found


def _scripts(*folders: str) -> tuple[dict[str, Where], set[str]]:
    """Imports of every .py under `folders`, and the names of those folders' own modules."""
    found: dict[str, Where] = {}
    local: set[str] = set(folders)
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            local.update([path.stem, *path.relative_to(REPO / folder).parts[:-1]])
            for imp in imports_of(path.read_text(), path.stem):
                found.setdefault(imp.name, []).append((str(path.relative_to(REPO)), imp.line))
    return found, local


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DISTRIBUTIONS = importlib.metadata.packages_distributions()
LIBRARY = third_party(_imports_by_name(read_package(), REPO), {"labkit"})


def test_library_imports_are_declared() -> None:
    assert undeclared(LIBRARY, declared(PROJECT["dependencies"]), DISTRIBUTIONS) == []


def test_declared_dependencies_are_imported() -> None:
    assert unimported(declared(PROJECT["dependencies"]), LIBRARY, DISTRIBUTIONS, NOT_IMPORTED) == []


def test_tests_and_tools_imports_are_declared() -> None:
    imports, local = _scripts("tests", "tools")
    allowed = declared(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"])
    assert undeclared(third_party(imports, local | {"labkit"}), allowed, DISTRIBUTIONS) == []


def test_checks_fail_on_a_synthetic_mismatch() -> None:
    used = third_party({"yaml": [("labkit/a.py", 3)], "PIL.Image": [("labkit/b.py", 9)],
                        "json": [("labkit/a.py", 1)], "nowhere": [("labkit/c.py", 2)]}, {"labkit"})
    dists = {"yaml": ["PyYAML"], "PIL": ["pillow"]}
    assert undeclared(used, declared(["pyyaml>=6"]), dists) == [
        "labkit/b.py:9: imports PIL (distribution pillow), not declared in pyproject.toml",
        "labkit/c.py:2: imports nowhere, which no installed distribution provides"]
    assert undeclared(used, declared(["PyYAML", "Pillow", "nowhere"]), {**dists, "nowhere": ["nowhere"]}) == []
    requirements = declared(["pyyaml", "fastapi[all]>=1; python_version>'3'", "jupyterlab"])
    assert unimported(requirements, used, dists, {"jupyterlab": "why"}) == [
        "pyproject.toml: fastapi is declared but labkit/ never imports it "
        "(remove it, or add it to NOT_IMPORTED with the reason)"]
