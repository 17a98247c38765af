"""MetricTemplates: render Flagger's query variables, and the seam to a real Prometheus.

Flagger renders a template's query with its MetricTemplateModel (fluxcd/flagger
pkg/apis/flagger/v1beta1/metric.go, pkg/metrics/observers/render.go): {{ name }},
{{ namespace }}, {{ target }}, {{ service }}, {{ ingress }}, {{ interval }} and
{{ variables.KEY }} from the Canary metric's templateVariables; the provider evaluates it.
labkit never evaluates PromQL: `prometheus_query` asks a Prometheus server over its HTTP API,
and `CanaryController.query` is the seam a test or a lab replaces.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from labkit.flagger.models import Canary, CanaryMetric, MetricTemplate

__all__ = ["PrometheusQuery", "prometheus_query", "query_value", "render_query"]

PrometheusQuery = Callable[[str, str], "float | None"]
"""(Prometheus address, rendered PromQL query) -> the query's value (see `query_value`), None
when the result is empty. The seam for MetricTemplates: Prometheus evaluates the query, never
labkit."""


def prometheus_query(address: str, query: str) -> float | None:
    """Ask a real Prometheus server (HTTP API /api/v1/query) for an instant vector or scalar."""
    url = f"{address.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return query_value(json.load(response))


def query_value(body: dict[str, Any]) -> float | None:
    """The value of a /api/v1/query answer: a scalar's, or the *last* series' of a vector, as
    Flagger's provider overwrites its value with each series in turn (fluxcd/flagger
    pkg/metrics/providers/prometheus.go, `RunQuery`), so a query that forgot its `sum()` is
    judged on the last series, not the first. None for an empty vector (Flagger's "no values
    found"). (Flagger fails to decode a scalar answer; labkit returns its value.)"""
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus: {body.get('error', body)}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    result = data["result"]
    return float(result[-1]["value"][1]) if result else None


_VARIABLE = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*}}")


def render_query(template: MetricTemplate, canary: Canary, metric: CanaryMetric) -> str:
    """The template's query with the Canary's values in place; ValueError for an unknown one."""
    target = canary.spec.target_ref.name
    values = {"name": canary.metadata.name, "namespace": canary.metadata.namespace,
              "target": target, "service": canary.spec.service.name or target, "ingress": target,
              "interval": metric.interval or "1m"}
    values.update({f"variables.{k}": v for k, v in metric.template_variables.items()})

    def replace(match: re.Match[str]) -> str:
        key = match.group(1).lstrip(".")
        if key not in values:
            raise ValueError(f"query render error: unknown variable {{{{ {key} }}}}")
        return values[key]

    return _VARIABLE.sub(replace, template.spec.query)
