"""labkit's import graph, read from the source with `ast` (nothing is imported or run).

Shared by the architecture rules (tests/test_architecture.py), the dependency check
(tests/test_dependencies.py) and the marker hook (tests/markers.py). A module's imports are every
`import` and `from ... import` in its file, including those inside functions: a deferred import
is still a dependency, it only runs later.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "labkit"

# Network, processes, threads: what a live component is made of.
LIVE_MACHINERY = ("socket", "ssl", "selectors", "asyncio", "uvloop", "subprocess", "multiprocessing",
                  "threading", "concurrent", "signal", "psutil", "sqlite3", "http.server",
                  "http.client", "urllib.request", "httptools", "httpx")
CONTROLLER_MODULES = ("labkit.cluster", "labkit.core.controller")
# The seam both sides share by design: WallClock wraps the running asyncio loop, SimClock a simpy
# Environment; importing it starts nothing. Policy modules do not import it (they take `now`).
SHARED = {"labkit.clock"}


@dataclass(frozen=True)
class Import:
    name: str  # dotted, absolute: "labkit.mesh.spec", "urllib.request", "numpy"
    line: int


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """labkit/mesh/spec.py -> labkit.mesh.spec; labkit/mesh/__init__.py -> labkit.mesh."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Absolute names a module's source imports. For `from X import a` both X and X.a are listed,
    since `a` may be a submodule (`from labkit.mesh import spec`) or a name in X."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base and base != "__future__":
                found.append(Import(base, node.lineno))
                found += [Import(f"{base}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def read_package(root: Path = PACKAGE) -> dict[str, list[Import]]:
    """Every module under `root` (a package folder) -> its imports."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        graph[name] = imports_of(path.read_text(), name, path.name == "__init__.py")
    return graph


def internal_edges(graph: Mapping[str, list[Import]]) -> dict[str, dict[str, int]]:
    """module -> {imported module of the same graph: first line}. `from labkit.mesh import spec`
    counts as importing labkit.mesh.spec (and labkit.mesh); names that are not modules drop out."""
    edges: dict[str, dict[str, int]] = {}
    for module, imports in graph.items():
        targets: dict[str, int] = {}
        for imp in imports:
            if imp.name in graph and imp.name != module:
                targets.setdefault(imp.name, imp.line)
        edges[module] = targets
    return edges


def closure(edges: Mapping[str, Mapping[str, int]], start: str) -> dict[str, list[str]]:
    """Every module `start` reaches -> one import chain from start to it (breadth first, so the
    chain is a shortest one)."""
    chains = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(edges.get(module, {})):
                if target not in chains:
                    chains[target] = chains[module] + [target]
                    following.append(target)
        frontier = following
    return chains


def external(graph: Mapping[str, list[Import]], module: str, names: Iterable[str]) -> list[Import]:
    """The imports of `module` that are one of `names` or inside one: "asyncio" matches
    `asyncio.streams`; "http.server" does not match `from http import HTTPStatus`."""
    wanted = tuple(names)
    return [imp for imp in graph[module] if any(imp.name == w or imp.name.startswith(w + ".") for w in wanted)]


def live_modules(graph: Mapping[str, list[Import]], edges: Mapping[str, Mapping[str, int]]) -> set[str]:
    """Live components: modules that import network, process or thread machinery themselves, or
    the controller registry (a controller makes objects real), except the SHARED clock."""
    return {m for m in graph if m not in SHARED and (external(graph, m, LIVE_MACHINERY)
                                                     or any(c in edges[m] for c in CONTROLLER_MODULES))}
