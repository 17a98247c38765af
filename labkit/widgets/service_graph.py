"""A service graph from the sidecars' metrics, drawn the way Kiali draws one.

Kiali builds its graph from nothing but Prometheus: the `istio_requests_total` samples every
sidecar exports. This module does the same from the Prometheus text of each sidecar's
metrics endpoint (fetch it over HTTP, as Prometheus scrapes it):

- a node per workload and version (`source_workload`/`source_version`,
  `destination_workload`/`destination_version`); a caller without a sidecar shows as
  `unknown`, a request that reached no workload (404 NR, 503 UH) as the service's name;
- an edge per caller -> callee, with the request rate and the error rate (5xx and 4xx) as
  the **caller** saw them (`reporter="source"`: one sample per request, retries included in
  it, locally generated failures such as fault aborts and circuit-breaker 503s counted too),
  falling back to the callee's view for callers without a sidecar;
- "mTLS" on the edge when the callee's sidecar reports the connection as `mutual_tls`
  (`connection_security_policy`, known only on `reporter="destination"` samples).

Rates are differences of two scrapes divided by the seconds between them (Prometheus'
`rate()`), so take a `snapshot` before and after the traffic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.patches import FancyBboxPatch
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Edge", "ServiceGraph", "draw_service_graph", "parse_requests_total", "service_graph", "snapshot"]

Key = tuple[tuple[str, str], ...]


def parse_requests_total(text: str) -> dict[Key, float]:
    r"""`istio_requests_total` samples of one Prometheus text page: sorted label pairs -> value.

    Read with prometheus_client's own parser, which undoes the text format's escapes in label
    values (`\\` for a backslash, `\"` for a double quote, `\n` for a newline)."""
    out: dict[Key, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "istio_requests_total":
                out[tuple(sorted(sample.labels.items()))] += sample.value
    return dict(out)


def snapshot(pages: Iterable[str]) -> dict[Key, float]:
    """All sidecars' samples at one moment (pages: each sidecar's metrics text)."""
    total: dict[Key, float] = defaultdict(float)
    for page in pages:
        for key, value in parse_requests_total(page).items():
            total[key] += value
    return dict(total)


@dataclass(frozen=True)
class Edge:
    source: str
    destination: str
    rate: float            # requests per second
    error_rate: float      # share of responses >= 400 (or with no response)
    codes: Mapping[str, float]
    mtls: bool


@dataclass(frozen=True)
class ServiceGraph:
    nodes: tuple[str, ...]
    edges: tuple[Edge, ...]

    def edge(self, source: str, destination: str) -> Edge:
        for e in self.edges:
            if e.source == source and e.destination == destination:
                return e
        have = ", ".join(f"{e.source}->{e.destination}" for e in self.edges) or "none"
        raise KeyError(f"no edge {source}->{destination} (edges: {have})")

    def table(self) -> str:
        rows = [f"{'from':<18} {'to':<18} {'req/s':>7} {'errors':>7}  mTLS  codes"]
        for e in self.edges:
            codes = ", ".join(f"{c}: {n:g}" for c, n in sorted(e.codes.items()))
            rows.append(f"{e.source:<18} {e.destination:<18} {e.rate:>7.1f} {e.error_rate:>7.1%}  "
                        f"{'yes' if e.mtls else 'no ':<4}  {codes}")
        return "\n".join(rows)


def _versions(samples: Iterable[Key]) -> dict[str, str]:
    """workload -> version, from whichever samples know it (a server sidecar learns only the
    caller's workload name from the connection, not its version)."""
    found: dict[str, str] = {}
    for key in samples:
        labels = dict(key)
        for side in ("source", "destination"):
            version = labels.get(f"{side}_version", "unknown")
            if version not in ("unknown", ""):
                found[labels.get(f"{side}_workload", "unknown")] = version
    return found


def _node(labels: Mapping[str, str], side: str, versions: Mapping[str, str]) -> str:
    workload = labels.get(f"{side}_workload", "unknown")
    if workload == "unknown" and side == "destination":
        name = labels.get("destination_service_name", "unknown")
        return name if name != "unknown" else labels.get("destination_service", "unknown")
    version = versions.get(workload)
    return f"{workload} ({version})" if version else workload


def service_graph(before: Mapping[Key, float], after: Mapping[Key, float], seconds: float) -> ServiceGraph:
    """The graph of the traffic between two snapshots taken `seconds` apart."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    source_view: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    dest_view: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    mtls: dict[tuple[str, str], bool] = {}
    versions = _versions(after)
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta <= 0:
            continue
        labels = dict(key)
        pair = (_node(labels, "source", versions), _node(labels, "destination", versions))
        if labels.get("reporter") == "source":
            source_view[pair][labels.get("response_code", "0")] += delta
        else:
            dest_view[pair][labels.get("response_code", "0")] += delta
            secure = labels.get("connection_security_policy") == "mutual_tls"
            mtls[pair] = mtls.get(pair, True) and secure
    edges = []
    for pair in sorted(set(source_view) | set(dest_view)):
        codes = source_view.get(pair) or dest_view[pair]
        total = sum(codes.values())
        errors = sum(n for c, n in codes.items() if not c.isdigit() or int(c) >= 400 or int(c) == 0)
        edges.append(Edge(pair[0], pair[1], total / seconds, errors / total if total else 0.0,
                          dict(codes), mtls.get(pair, False)))
    nodes = sorted({e.source for e in edges} | {e.destination for e in edges})
    return ServiceGraph(tuple(nodes), tuple(edges))


def _layers(graph: ServiceGraph) -> dict[str, int]:
    """Left to right: callers nobody calls first, then by longest call path."""
    depth = dict.fromkeys(graph.nodes, 0)
    for _ in graph.nodes:  # longest path by relaxation; cycles stop after len(nodes) rounds
        for e in graph.edges:
            if e.source != e.destination:
                depth[e.destination] = max(depth[e.destination], depth[e.source] + 1)
    return depth


def draw_service_graph(graph: ServiceGraph, ax: Axes, *, title: str = "service graph") -> Axes:
    """Boxes per workload/version, arrows labelled `rate req/s, errors %`, "mTLS" on mutual-TLS edges;
    green = no errors, orange = some, red = 20 % or more (Kiali's failure threshold)."""
    layers = _layers(graph)
    columns: dict[int, list[str]] = defaultdict(list)
    for node in graph.nodes:
        columns[layers[node]].append(node)
    pos = {}
    for x, names in columns.items():
        for i, name in enumerate(sorted(names)):
            pos[name] = (x * 3.0, -(i - (len(names) - 1) / 2) * 1.6)
    for e in graph.edges:
        (x0, y0), (x1, y1) = pos[e.source], pos[e.destination]
        color = "tab:green" if e.error_rate == 0 else ("tab:red" if e.error_rate >= 0.2 else "tab:orange")
        ax.annotate("", xy=(x1 - 0.75, y1), xytext=(x0 + 0.75, y0),
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.5 + min(e.rate / 50, 3)})
        label = f"{e.rate:.1f} req/s\n{e.error_rate:.0%} err" + ("\nmTLS" if e.mtls else "")
        # Fanning-out edges: put each label on the outer side of its arrow so they do not collide.
        above = y1 >= y0
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.15 if above else -0.15), label, ha="center",
                va="bottom" if above else "top", fontsize=8, color=color)
    for name, (box_x, box_y) in pos.items():
        ax.add_patch(FancyBboxPatch((box_x - 0.75, box_y - 0.3), 1.5, 0.6, boxstyle="round,pad=0.05",
                                    facecolor="#e8f0fe", edgecolor="#3c6fd1"))
        ax.text(box_x, box_y, name, ha="center", va="center", fontsize=9)
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.2)
    ax.set_title(title)
    ax.axis("off")
    return ax
