"""The import rules of docs/ARCHITECTURE.md, checked on the import graph read from the source.

- policy modules reach no network, process, thread or simpy code (not even through another
  module) and read no clock: they take data and `now` and return decisions;
- `sim/` reaches no live component (a module that serves, connects, spawns or runs a
  controller), and neither does `grading/` outside its own instructor tools;
- nothing outside `widgets/` imports `widgets/` (notebooks do);
- `cluster` and `manifests` import no component (components register themselves).

A live component is found, not listed (import_graph.live_modules): a module that imports
network, process or thread machinery itself, or the cluster's controller registry. Every rule
is also run on a synthetic graph and on the real graph with a bad import added, so a rule that can no
longer fail is noticed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from import_graph import (
    LIVE_MACHINERY,
    PACKAGE,
    Import,
    closure,
    external,
    imports_of,
    internal_edges,
    live_modules,
    read_package,
)

GRAPH = read_package()
EDGES = internal_edges(GRAPH)

# Policy may not even reach these; `time` only in the policy module itself (no clock reads).
POLICY_FORBIDDEN = LIVE_MACHINERY + ("simpy",)

# Pure decision modules (ARCHITECTURE.md, "Policy"): data, `now` and a seeded Random in,
# decisions out. Keep this list in step with that section.
POLICY = [f"labkit.mesh.{m}" for m in ("router", "routing", "retries", "pool", "outlier", "balancer",
                                        "destination", "faults", "hosts", "authz", "spec", "flags",
                                        "analysis")] + \
         [f"labkit.serving.{m}" for m in ("kpa", "kpa_scaler", "reconcile", "pod_pick", "metrics_window",
                                           "autoscaler_config", "hpa", "hpa_sync", "constants",
                                           "timeouts", "progress_deadline", "rollout_duration",
                                           "gc")] + \
         [f"labkit.eventing.{m}" for m in ("filters", "delivery", "cron")] + \
         ["labkit.core.probes", "labkit.flagger.analysis", "labkit.inference.rollout"] + \
         [f"labkit.quality.{m}" for m in ("gate", "ledger", "payloads", "abtest")]

# Known breaks, each with its reason and the issue that removes it. test_known_violations_remain
# fails (strict xfail) once one is gone, so the entry is deleted with the fix.
KNOWN: dict[tuple[str, str], str] = {}


def _without(edges: Mapping[str, Mapping[str, int]], known: Mapping[tuple[str, str], str]) -> dict[str, dict[str, int]]:
    return {m: {t: line for t, line in targets.items() if (m, t) not in known} for m, targets in edges.items()}


def _chain(chain: list[str], edges: Mapping[str, Mapping[str, int]]) -> str:
    """labkit.a -> labkit.b (a.py line 12) -> ..., so the message says where to look."""
    steps = [chain[0]]
    for before, after in itertools.pairwise(chain):
        steps.append(f"{after} (line {edges[before][after]} of {before})")
    return " -> ".join(steps)


def policy_problems(graph: Mapping[str, list[Import]], edges: Mapping[str, Mapping[str, int]],
                    policy: list[str]) -> list[str]:
    problems = []
    for module in policy:
        if module not in graph:
            problems.append(f"{module}: listed as policy but no such module (renamed? update POLICY)")
            continue
        for imp in external(graph, module, ("time",)):
            problems.append(f"{module}:{imp.line}: imports {imp.name} (policy takes `now`, never reads a clock)")
        for reached, chain in sorted(closure(edges, module).items()):
            for imp in external(graph, reached, POLICY_FORBIDDEN):
                problems.append(f"{_chain(chain, edges)}:{imp.line}: imports {imp.name} (policy reaches no "
                                "network, process, thread or simpy code)")
    return problems


def reach_problems(graph: Mapping[str, list[Import]], edges: Mapping[str, Mapping[str, int]],
                   package: str, own_tools: bool = False) -> list[str]:
    """Modules of `package` that reach a live component. With own_tools, the package's own
    modules may be live (grading's gradebook runs pytest), but what they import from elsewhere not."""
    live = live_modules(graph, edges)
    problems = []
    for module in sorted(m for m in graph if m == package or m.startswith(package + ".")):
        for reached, chain in sorted(closure(edges, module).items()):
            inside = reached == package or reached.startswith(package + ".")
            if reached not in live or (own_tools and inside):
                continue
            if reached == module:
                problems.append(f"{module} is a live component itself ({package} holds none)")
            else:
                problems.append(f"{_chain(chain, edges)} is a live component ({package} reaches none)")
    return problems


def widget_problems(edges: Mapping[str, Mapping[str, int]]) -> list[str]:
    return [f"{module}:{line}: imports {target} (only notebooks import widgets)"
            for module, targets in sorted(edges.items()) if not module.startswith("labkit.widgets")
            for target, line in sorted(targets.items()) if target.startswith("labkit.widgets")]


COMPONENT_PACKAGES = tuple(f"labkit.{p}" for p in ("apps", "mesh", "serving", "eventing", "inference", "flagger",
                                                    "quality", "sim", "widgets", "grading"))


def registry_problems(edges: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The cluster and the manifest loader know no component: components register themselves."""
    return [f"{module}:{line}: imports {target} (components register themselves; import it in labkit/components.py)"
            for module in ("labkit.cluster", "labkit.manifests")
            for target, line in sorted(edges.get(module, {}).items())
            if any(target == p or target.startswith(p + ".") for p in COMPONENT_PACKAGES)]


def test_cluster_and_manifests_know_no_component() -> None:
    assert registry_problems(EDGES) == []


def test_policy_is_pure() -> None:
    assert policy_problems(GRAPH, _without(EDGES, KNOWN), POLICY) == []


def test_simulators_reach_no_live_component() -> None:
    assert reach_problems(GRAPH, _without(EDGES, KNOWN), "labkit.sim") == []


def test_grading_reaches_no_live_component() -> None:
    assert reach_problems(GRAPH, _without(EDGES, KNOWN), "labkit.grading", own_tools=True) == []


def test_nothing_imports_widgets() -> None:
    assert widget_problems(EDGES) == []


def test_known_violations_are_still_there() -> None:
    fixed = [pair for pair in KNOWN if pair[1] not in EDGES.get(pair[0], {})]
    assert fixed == [], f"fixed: delete these from KNOWN: {fixed}"


@pytest.mark.xfail(bool(KNOWN), strict=True, reason="; ".join(KNOWN.values()))
def test_rules_hold_without_known_violations() -> None:
    assert reach_problems(GRAPH, EDGES, "labkit.grading", own_tools=True) == []
    assert policy_problems(GRAPH, EDGES, POLICY) + reach_problems(GRAPH, EDGES, "labkit.sim") == []


# --- The rules fail when broken: a synthetic package ----------------------------------------------

def _synthetic(sources: Mapping[str, str]) -> tuple[dict[str, list[Import]], dict[str, dict[str, int]]]:
    graph = {name: imports_of(text, name) for name, text in sources.items()}
    return graph, internal_edges(graph)


def test_rules_catch_a_synthetic_break() -> None:
    graph, edges = _synthetic({
        "labkit.mesh.retries": "from labkit.mesh import helper\n",
        "labkit.mesh.helper": "import random\n\ndef f():\n    import asyncio\n",  # deferred: still counts
        "labkit.serving.kpa": "import time\n",
        "labkit.sim.mesh": "from labkit.mesh.proxy import Sidecar\n",
        "labkit.mesh.proxy": "from http import HTTPStatus\nimport httptools\n",
        "labkit.grading.lab04": "from labkit.sim.mesh import simulate\n",
        "labkit.grading.gradebook": "import subprocess\n",  # grading's own tool: allowed
        "labkit.cluster": "from labkit.widgets.mesh import dash\n",
        "labkit.manifests": "import labkit.serving.kinds\n",
        "labkit.serving.kinds": "",
        "labkit.widgets.mesh": "from labkit.sim.mesh import simulate\n",
    })
    policy = policy_problems(graph, edges, ["labkit.mesh.retries", "labkit.serving.kpa", "labkit.gone"])
    assert any("labkit.mesh.helper (line 1 of labkit.mesh.retries):4: imports asyncio" in p for p in policy), policy
    assert any(p.startswith("labkit.serving.kpa:1: imports time") for p in policy), policy
    assert any("labkit.gone: listed as policy but no such module" in p for p in policy), policy
    assert reach_problems(graph, edges, "labkit.sim") == [
        "labkit.sim.mesh -> labkit.mesh.proxy (line 1 of labkit.sim.mesh) is a live component "
        "(labkit.sim reaches none)"]
    grading = reach_problems(graph, edges, "labkit.grading", own_tools=True)
    assert grading == ["labkit.grading.lab04 -> labkit.sim.mesh (line 1 of labkit.grading.lab04) -> labkit.mesh.proxy "
                       "(line 1 of labkit.sim.mesh) is a live component (labkit.grading reaches none)"]
    assert widget_problems(edges) == ["labkit.cluster:1: imports labkit.widgets.mesh (only notebooks import widgets)"]
    assert registry_problems(edges) == [
        "labkit.cluster:1: imports labkit.widgets.mesh (components register themselves; import it in labkit/components.py)",
        "labkit.manifests:1: imports labkit.serving.kinds (components register themselves; import it in labkit/components.py)"]


def test_clean_synthetic_graph_passes() -> None:
    graph, edges = _synthetic({
        "labkit.mesh.retries": "import random\nfrom labkit.mesh import spec\n",
        "labkit.mesh.spec": "import re\nfrom http import HTTPStatus\n",
        "labkit.sim.mesh": "import simpy\nfrom labkit.clock import SimClock\nfrom labkit.mesh.retries import R\n",
        "labkit.clock": "import asyncio\n",
        "labkit.widgets.mesh": "from labkit.sim.mesh import simulate\n",
    })
    assert policy_problems(graph, edges, ["labkit.mesh.retries"]) == []
    assert reach_problems(graph, edges, "labkit.sim") == []
    assert widget_problems(edges) == []
    assert registry_problems(edges) == []


def test_rules_catch_a_break_in_the_real_tree() -> None:
    """The same checks over labkit's own graph with one bad import added to each rule's subject."""
    graph = dict(GRAPH)
    for module, line in [("labkit.mesh.retries", "import socket"), ("labkit.sim.mesh", "from labkit.mesh import proxy"),
                         ("labkit.grading.lab04", "from labkit.serving import revision"),
                         ("labkit.cluster", "from labkit.widgets import common")]:
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        graph[module] = imports_of(path.read_text() + f"\n{line}\n", module)
    edges = _without(internal_edges(graph), KNOWN)
    assert any("labkit.mesh.retries" in p and "imports socket" in p for p in policy_problems(graph, edges, POLICY))
    assert any(p.startswith("labkit.sim.mesh -> labkit.mesh.proxy") for p in reach_problems(graph, edges, "labkit.sim"))
    assert any(p.startswith("labkit.grading.lab04 -> labkit.serving.revision")
               for p in reach_problems(graph, edges, "labkit.grading", own_tools=True))
    assert any(p.startswith("labkit.cluster:") and "labkit.widgets.common" in p for p in widget_problems(edges))
