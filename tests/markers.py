"""Test markers by what a test needs: `unit`, `live`, `browser`, `peer` (registered in pyproject).

- `browser`: under tests/browser (JupyterLab in headless Chromium);
- `peer`: marked by hand on the test itself (it needs the kserve peer venv that `make test`
  builds; without it the test skips and says so); it is `live` as well;
- `live`: its file imports a live component or network/process machinery (import_graph's rule,
  also through the test helper modules it imports), or the test takes a fixture that starts
  processes (LIVE_FIXTURES);
- `unit`: everything else. `pytest -m unit` is the fast part a contributor runs while working.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import pytest
from import_graph import LIVE_MACHINERY, imports_of, internal_edges, live_modules, read_package

TESTS = Path(__file__).resolve().parent
# Fixtures that start processes: a cluster, and the CRD validator run as a subprocess.
LIVE_FIXTURES = {"cluster", "crd_validate"}


@lru_cache(maxsize=1)
def _live_labkit() -> tuple[str, ...]:
    graph = read_package()
    return tuple(sorted(live_modules(graph, internal_edges(graph))))


@cache
def file_is_live(path: Path) -> bool:
    """Whether a test file (or a helper it imports from tests/) imports live code."""
    seen: set[Path] = set()
    pending = [path]
    live = _live_labkit()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for imp in imports_of(current.read_text(), current.stem):
            if any(imp.name == w or imp.name.startswith(w + ".") for w in LIVE_MACHINERY + live):
                return True
            helper = current.parent / f"{imp.name.split('.')[0]}.py"
            if helper.exists() and helper.parent == TESTS:
                pending.append(helper)
    return False


def marker_of(item: pytest.Item) -> str:
    path = Path(str(item.path))
    if TESTS / "browser" in path.parents:
        return "browser"
    if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) or (path.suffix == ".py" and file_is_live(path)):
        return "live"
    return "unit"


def mark(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, marker_of(item)))
