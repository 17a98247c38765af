"""DestinationRule: subsets and the traffic policy that applies to one destination cluster.

Sources: https://istio.io/latest/docs/reference/config/networking/destination-rule/ and istiod's
`MergeTrafficPolicy` (istio/istio `pilot/pkg/networking/core/cluster_traffic_policy.go`).

- A subset is the service's endpoints whose labels contain **all** the subset's labels; each
  subset is its own Envoy cluster (own pool counters, own outlier state). Routing to a subset
  no DestinationRule defines answers 503 with flag NC (`flags.NO_CLUSTER`); a defined subset
  with no endpoints answers 503 `no healthy upstream` (UH).
- A subset's `trafficPolicy` replaces the DestinationRule-level policy **per top-level block**
  (`loadBalancer`, `connectionPool`, `outlierDetection`, `tls`): a subset `connectionPool`
  replaces the whole DR-level one, no deep merge; blocks the subset leaves out are inherited.
- `portLevelSettings` for the addressed port replace those four blocks too, and a block a
  port-level entry omits falls back to the **default**, not to the DR-level value.
- No `outlierDetection` block ⇒ no ejection at all; no `loadBalancer` ⇒ LEAST_REQUEST;
  no `connectionPool` ⇒ unlimited.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labkit.mesh import spec
from labkit.mesh.balancer import Balancer, balancer_from_spec
from labkit.mesh.hosts import qualify_host
from labkit.mesh.outlier import OutlierPolicy
from labkit.mesh.pool import PoolLimits

__all__ = ["DestinationRule", "TrafficPolicy", "subset_hosts"]

_BLOCKS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")


@dataclass(frozen=True)
class TrafficPolicy:
    """The effective policy of one cluster. `load_balancer` is the raw (validated) spec dict;
    `outlier` None means no outlier detection; `tls_mode` None means auto-mTLS."""

    load_balancer: Mapping[str, Any] | None = None
    connection_pool: PoolLimits = field(default_factory=PoolLimits)
    outlier: OutlierPolicy | None = None
    tls_mode: str | None = None

    def balancer(self, rng: random.Random) -> Balancer:
        return balancer_from_spec(self.load_balancer, rng)

    @property
    def consistent_hash(self) -> bool:
        """consistentHash LB: istiod then drops the retry previous-hosts predicate."""
        return bool(self.load_balancer and self.load_balancer.get("consistentHash") is not None)


def _blocks(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Parse the four replaceable blocks present in `value` (absent ones are left out)."""
    out: dict[str, Any] = {}
    if value.get("loadBalancer") is not None:
        lpath = spec.join(path, "loadBalancer")
        balancer_from_spec(value["loadBalancer"], random.Random(0), lpath)  # validates
        out["loadBalancer"] = dict(spec.mapping(value["loadBalancer"], lpath))
    if value.get("connectionPool") is not None:
        out["connectionPool"] = PoolLimits.from_spec(value["connectionPool"], spec.join(path, "connectionPool"))
    if value.get("outlierDetection") is not None:
        out["outlierDetection"] = OutlierPolicy.from_spec(value["outlierDetection"],
                                                          spec.join(path, "outlierDetection"))
    if value.get("tls") is not None:
        tpath = spec.join(path, "tls")
        tls = spec.mapping(value["tls"], tpath)
        tls_mode = spec.string(tls.get("mode"), spec.join(tpath, "mode"), default="DISABLE")
        if tls_mode not in _TLS_MODES:
            raise spec.SpecError(spec.join(tpath, "mode"), f"must be one of {', '.join(_TLS_MODES)}, got {tls_mode!r}")
        out["tls"] = tls_mode
    return out


@dataclass(frozen=True)
class _PolicySpec:
    blocks: Mapping[str, Any] = field(default_factory=dict)
    ports: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, value: Any, path: str) -> _PolicySpec:
        tp = spec.mapping(value, path)
        spec.check_keys(tp, (*_BLOCKS, "portLevelSettings", "tunnel", "proxyProtocol", "retryBudget"), path)
        if tp.get("retryBudget") is not None:
            raise spec.SpecError(spec.join(path, "retryBudget"),
                                 "retryBudget is not supported by labkit; use connectionPool.http.maxRetries")
        ports: dict[int, Mapping[str, Any]] = {}
        ppath = spec.join(path, "portLevelSettings")
        for i, item in enumerate(spec.sequence(tp.get("portLevelSettings"), ppath)):
            ipath = spec.join(ppath, i)
            setting = spec.mapping(item, ipath)
            spec.check_keys(setting, ("port", *_BLOCKS), ipath)
            port_spec = spec.mapping(setting.get("port"), spec.join(ipath, "port"))
            number = spec.integer(port_spec.get("number"), spec.join(ipath, "port.number"), minimum=1, maximum=65535)
            if number is None:
                raise spec.SpecError(spec.join(ipath, "port.number"), "is required")
            if number in ports:
                raise spec.SpecError(spec.join(ipath, "port.number"), f"port {number} is set twice")
            if not any(setting.get(name) is not None for name in _BLOCKS):
                raise spec.SpecError(ipath, f"a port-level setting needs at least one of {', '.join(_BLOCKS)}")
            ports[number] = _blocks(setting, ipath)
        return cls(_blocks(tp, path), ports)

    def over(self, base: dict[str, Any], port: int | None) -> dict[str, Any]:
        """Apply this level on top of `base`: present blocks replace, then the port's entry
        replaces all four blocks (absent ones back to default)."""
        merged = {**base, **self.blocks}
        if port is not None and port in self.ports:
            merged = {name: self.ports[port][name] for name in _BLOCKS if name in self.ports[port]}
        return merged


def subset_hosts(endpoints: Iterable[tuple[str, Mapping[str, str]]], labels: Mapping[str, str]) -> list[str]:
    """Endpoints (host, pod labels) whose labels contain all of `labels`."""
    return [host for host, pod in endpoints if all(pod.get(k) == v for k, v in labels.items())]


@dataclass(frozen=True)
class DestinationRule:
    """Shape: `{host, trafficPolicy: {loadBalancer, connectionPool, outlierDetection, tls,
    portLevelSettings: [{port: {number}, ...}]}, subsets: [{name, labels, trafficPolicy}],
    exportTo, workloadSelector}`."""

    host: str
    namespace: str
    policy_spec: _PolicySpec
    subsets: Mapping[str, tuple[Mapping[str, str], _PolicySpec]]

    @classmethod
    def from_spec(cls, value: Mapping[str, Any], namespace: str = "default") -> DestinationRule:
        dr = spec.mapping(value, "spec")
        spec.check_keys(dr, ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"), "")
        host = spec.string(dr.get("host"), "host", required=True)
        subsets: dict[str, tuple[Mapping[str, str], _PolicySpec]] = {}
        for i, item in enumerate(spec.sequence(dr.get("subsets"), "subsets")):
            path = spec.join("subsets", i)
            sub = spec.mapping(item, path)
            spec.check_keys(sub, ("name", "labels", "trafficPolicy"), path)
            name = spec.string(sub.get("name"), spec.join(path, "name"), required=True)
            if not spec.is_dns_label(name):
                raise spec.SpecError(spec.join(path, "name"), f"invalid subset name {name!r} (a DNS label)")
            if name in subsets:
                raise spec.SpecError(spec.join(path, "name"), f"subset {name!r} is defined twice")
            labels = {str(k): str(v) for k, v in spec.mapping(sub.get("labels"), spec.join(path, "labels")).items()}
            subsets[name] = (labels, _PolicySpec.from_spec(sub.get("trafficPolicy"), spec.join(path, "trafficPolicy")))
        return cls(qualify_host(host, namespace), namespace,
                   _PolicySpec.from_spec(dr.get("trafficPolicy"), "trafficPolicy"), subsets)

    def has_subset(self, name: str | None) -> bool:
        """False ⇒ the route's cluster does not exist: answer `flags.NO_CLUSTER` (503 NC)."""
        return name is None or name in self.subsets

    def hosts(self, subset: str | None, endpoints: Iterable[tuple[str, Mapping[str, str]]]) -> list[str]:
        """The cluster's endpoints: all of them, or those carrying the subset's labels."""
        if subset is None:
            return [host for host, _ in endpoints]
        return subset_hosts(endpoints, self.subsets[subset][0])

    def policy(self, subset: str | None = None, port: int | None = None) -> TrafficPolicy:
        """The effective traffic policy of the cluster for `subset` and service `port`."""
        blocks = self.policy_spec.over({}, port)
        if subset is not None:
            blocks = self.subsets[subset][1].over(blocks, port)
        return TrafficPolicy(
            load_balancer=blocks.get("loadBalancer"),
            connection_pool=blocks.get("connectionPool") or PoolLimits(),
            outlier=blocks.get("outlierDetection"),
            tls_mode=blocks.get("tls"),
        )
