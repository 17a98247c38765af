"""Outlier detection (DestinationRule `trafficPolicy.outlierDetection`): passive health checks
that eject failing hosts of one cluster, in one client sidecar.

Sources: https://istio.io/latest/docs/reference/config/networking/destination-rule/#OutlierDetection,
https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier,
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/outlier_detection.proto.

- Consecutive errors eject **inline**, at the N-th error in a row from one host
  (`consecutive5xxErrors`, default 5 when the block exists, 0 disables;
  `consecutiveGatewayErrors` counts 502/503/504 and is off unless > 0). Local-origin failures
  (connect failure, reset, timeout) count as 5xx and as gateway errors. Any other response
  resets the run. The deprecated `consecutiveErrors` is ignored (Istio >= 1.7).
- Ejection lasts `baseEjectionTime` × times ejected, capped at max(300 s, base) (Envoy's
  `max_ejection_time`), and ends on the first `interval` sweep after that; each sweep a healthy
  host's ejection multiplier decays by one.
- Ejection is refused once the share of hosts already ejected reaches `maxEjectionPercent`
  (default 10; 0 also means 10, istiod only passes values > 0). Comparing the share *before*
  ejecting is why one host can always be ejected, and why the limit can be overshot by one
  (3 hosts at 50 %: two can go).
- Istio sets the panic threshold from `minHealthPercent` (default 0 = no panic), so with every
  host ejected the cluster has no healthy host: 503 `no healthy upstream` (UH).
- Fault aborts and circuit-breaker overflows never reach a host and must not be recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labkit.mesh import spec

__all__ = ["OutlierDetector", "OutlierPolicy"]

_MAX_EJECTION_TIME = 300.0


@dataclass(frozen=True)
class OutlierPolicy:
    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: float = 10.0
    min_health_percent: float = 0.0

    @classmethod
    def from_spec(cls, value: Mapping[str, Any], path: str = "outlierDetection") -> OutlierPolicy:
        """Build from `{consecutive5xxErrors, consecutiveGatewayErrors, interval, baseEjectionTime,
        maxEjectionPercent, minHealthPercent, ...}` (durations as strings, e.g. "30s")."""
        od = spec.mapping(value, path)
        spec.check_keys(od, ("consecutive5xxErrors", "consecutiveGatewayErrors", "consecutiveErrors",
                             "interval", "baseEjectionTime", "maxEjectionPercent", "minHealthPercent",
                             "splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"), path)
        spec.integer(od.get("consecutiveErrors"), spec.join(path, "consecutiveErrors"), minimum=0)

        def count(key: str, default: int) -> int:
            return spec.integer(od.get(key), spec.join(path, key), default=default, minimum=0)

        return cls(
            consecutive_5xx=count("consecutive5xxErrors", 5),
            consecutive_gateway=count("consecutiveGatewayErrors", 0),
            interval=spec.duration(od.get("interval"), spec.join(path, "interval"), default=10.0,
                                   minimum=0.001),
            base_ejection_time=spec.duration(od.get("baseEjectionTime"),
                                             spec.join(path, "baseEjectionTime"), default=30.0,
                                             minimum=0.001),
            # istiod passes maxEjectionPercent only when > 0, so 0 means Envoy's default 10.
            max_ejection_percent=spec.integer(od.get("maxEjectionPercent"),
                                              spec.join(path, "maxEjectionPercent"), default=0,
                                              minimum=0, maximum=100) or 10,
            min_health_percent=spec.integer(od.get("minHealthPercent"),
                                            spec.join(path, "minHealthPercent"), default=0,
                                            minimum=0, maximum=100),
        )

    @property
    def max_ejection_time(self) -> float:
        return max(_MAX_EJECTION_TIME, self.base_ejection_time)


@dataclass
class _Host:
    errors_5xx: int = 0
    errors_gateway: int = 0
    ejections: int = 0
    ejected_at: float | None = None


class OutlierDetector:
    """Ejection state of one cluster's hosts. Call `advance(now)` before reading health so the
    interval sweeps up to `now` have run; `record` after each try that reached a host."""

    def __init__(self, policy: OutlierPolicy, hosts: Iterable[str], *, start: float = 0.0) -> None:
        self.policy = policy
        self._hosts: dict[str, _Host] = {h: _Host() for h in hosts}
        self._next_sweep = start + policy.interval
        self.ejections_total = 0

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """Endpoints changed: keep state of hosts that stay, forget removed ones."""
        self._hosts = {h: self._hosts.get(h, _Host()) for h in hosts}

    def record(self, host: str, status: int | None, now: float) -> bool:
        """A try to `host` ended with `status` (None: local-origin failure such as a connect
        failure, reset or timeout). Returns True when this ejected the host."""
        self.advance(now)
        state = self._hosts.get(host)
        if state is None:
            return False
        # Envoy maps local-origin failures to 503 when they are not split out.
        code = 503 if status is None else status
        p = self.policy
        if code < 500:
            state.errors_5xx = state.errors_gateway = 0
            return False
        state.errors_gateway = state.errors_gateway + 1 if code in (502, 503, 504) else 0
        state.errors_5xx += 1
        # Envoy fires when a run *reaches* the threshold (==), then resets that run, whether or
        # not the ejection was allowed; a host already ejected keeps counting.
        fired = False
        for kind, threshold in (("errors_gateway", p.consecutive_gateway), ("errors_5xx", p.consecutive_5xx)):
            if threshold > 0 and getattr(state, kind) == threshold and state.ejected_at is None:
                setattr(state, kind, 0)
                fired = fired or self._eject(state, now)
        return fired

    def _eject(self, state: _Host, now: float) -> bool:
        """Eject unless the cluster is at its limit. Envoy compares the share already ejected
        (before this one) with maxEjectionPercent, so one host can always go, and one more
        than the percentage allows may go."""
        ejected = sum(1 for s in self._hosts.values() if s.ejected_at is not None)
        if 100.0 * ejected / len(self._hosts) >= self.policy.max_ejection_percent:
            return False
        state.ejections += 1
        state.ejected_at = now
        self.ejections_total += 1
        return True

    def advance(self, now: float) -> None:
        """Run every `interval` sweep due by `now`: un-eject expired hosts, decay multipliers."""
        p = self.policy
        while self._next_sweep <= now:
            sweep = self._next_sweep
            for state in self._hosts.values():
                if state.ejected_at is not None:
                    served = sweep - state.ejected_at
                    if served >= min(p.base_ejection_time * state.ejections, p.max_ejection_time):
                        state.ejected_at = None
                elif state.ejections > 0:
                    state.ejections -= 1
            self._next_sweep = sweep + p.interval

    def is_ejected(self, host: str, now: float) -> bool:
        self.advance(now)
        state = self._hosts.get(host)
        return state is not None and state.ejected_at is not None

    def healthy(self, hosts: Sequence[str], now: float) -> list[str]:
        """The hosts the load balancer may use now. Empty ⇒ answer 503 UH.

        Below `minHealthPercent` healthy hosts Envoy panics and balances over all hosts.
        """
        self.advance(now)
        ok = [h for h in hosts if not self.is_ejected(h, now)]
        if hosts and 100.0 * len(ok) / len(hosts) < self.policy.min_health_percent:
            return list(hosts)
        return ok

    def ejection_count(self, host: str) -> int:
        """How many times `host` has been ejected, after decay (drives the ejection length)."""
        state = self._hosts.get(host)
        return 0 if state is None else state.ejections
