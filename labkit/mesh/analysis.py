"""What `istioctl analyze` says about mesh configuration that Istio accepts but that cannot work.

Istio does not refuse a VirtualService whose route names a subset no DestinationRule defines,
nor a DestinationRule subset that selects no pod: both are valid config, and requests routed
there fail with 503 (NR or UH). Its analyzers report them instead, and labkit does the same:
the messages appear in the object's status (`validationMessages`, as istiod writes them when
analysis is enabled) and as a `ConfigWarning` when `LocalCluster.apply` applied the object.

- IST0101 ReferencedResourceNotFound: `Referenced host+subset in destinationrule not found:
  "reviews+v4"` (https://istio.io/latest/docs/reference/config/analysis/ist0101/; istio/istio
  pkg/config/analysis/analyzers/virtualservice/destinationrules.go).
- IST0173 DestinationRuleSubsetNotSelectPods: `The Subset v4 defined in the DestinationRule does
  not select any pods. Which may lead to 503 UH (NoHealthyUpstream).`
  (https://istio.io/latest/docs/reference/config/analysis/ist0173/).

Pure: objects, services and pod labels in, messages out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AnalysisMessage", "analyze", "fqdn"]

CLUSTER_DOMAIN = "svc.cluster.local"
DOCS = "https://istio.io/latest/docs/reference/config/analysis/{code}/"


@dataclass(frozen=True)
class AnalysisMessage:
    code: str
    level: str
    kind: str
    namespace: str
    name: str
    text: str

    def __str__(self) -> str:
        return f"{self.level.capitalize()} [{self.code}] ({self.kind} {self.namespace}/{self.name}) {self.text}"

    def status_entry(self) -> dict[str, Any]:
        """As istiod writes it into the object's `status.validationMessages`."""
        return {"documentationUrl": DOCS.format(code=self.code.lower()), "level": self.level,
                "type": {"code": self.code}, "message": self.text}


def fqdn(host: str, namespace: str) -> str:
    """A short host is read in the namespace of the rule that names it, as Istio does:
    "reviews" in "default" -> "reviews.default.svc.cluster.local"."""
    if host.endswith("." + CLUSTER_DOMAIN) or "*" in host:
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    if len(parts) == 2:
        return f"{host}.{CLUSTER_DOMAIN}"
    return host


def _destinations(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for protocol in ("http", "tcp", "tls"):
        for route in spec.get(protocol) or ():
            for target in route.get("route") or ():
                if target.get("destination"):
                    yield target["destination"]
            if route.get("mirror"):
                yield route["mirror"]
            for mirror in route.get("mirrors") or ():
                if mirror.get("destination"):
                    yield mirror["destination"]


def analyze(
    virtual_services: Iterable[Any],
    destination_rules: Iterable[Any],
    services: Mapping[tuple[str, str], Mapping[str, str]],
    pod_labels: Mapping[str, Iterable[Mapping[str, str]]],
) -> list[AnalysisMessage]:
    """IST0101 and IST0173 for the given objects (labkit's VirtualService/DestinationRule models).

    `services` maps (namespace, name) to the Service's selector; `pod_labels` maps a namespace to
    the labels of its pods (running or about to run), which a subset must select."""
    rules = list(destination_rules)
    defined: dict[str, set[str]] = {}
    for rule in rules:
        host = fqdn(str(rule.spec.get("host", "")), rule.metadata.namespace)
        defined.setdefault(host, set()).update(s.get("name") for s in rule.spec.get("subsets") or ())
    messages = []
    for vs in virtual_services:
        namespace = vs.metadata.namespace
        for destination in _destinations(vs.spec):
            subset = destination.get("subset")
            host = str(destination.get("host", ""))
            if subset and subset not in defined.get(fqdn(host, namespace), set()):
                messages.append(AnalysisMessage(
                    "IST0101", "ERROR", "VirtualService", namespace, vs.metadata.name,
                    f'Referenced host+subset in destinationrule not found: "{host}+{subset}"'))
    for rule in rules:
        host = fqdn(str(rule.spec.get("host", "")), rule.metadata.namespace)
        name, _, rest = host.partition(".")
        service_namespace = rest.split(".")[0]
        selector = services.get((service_namespace, name))
        if not selector:
            continue  # no such Service: another analyzer's business (IST0174)
        labels = list(pod_labels.get(service_namespace, ()))
        for subset in rule.spec.get("subsets") or ():
            wanted = {**selector, **(subset.get("labels") or {})}
            if not any(all(pod.get(k) == v for k, v in wanted.items()) for pod in labels):
                messages.append(AnalysisMessage(
                    "IST0173", "ERROR", "DestinationRule", rule.metadata.namespace, rule.metadata.name,
                    f"The Subset {subset.get('name')} defined in the DestinationRule does not select any "
                    "pods. Which may lead to 503 UH (NoHealthyUpstream)."))
    return messages
