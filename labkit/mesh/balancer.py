"""Load balancers (DestinationRule `trafficPolicy.loadBalancer`), with injectable randomness.

Sources: https://istio.io/latest/docs/reference/config/networking/destination-rule/#LoadBalancerSettings,
https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers.

- Nothing set (or `UNSPECIFIED`) ⇒ LEAST_REQUEST (Istio >= 1.14; before it was ROUND_ROBIN).
- LEAST_REQUEST with equal weights is Envoy's power of two choices: draw two hosts at random
  (with replacement) and take the one with fewer active requests; a tie keeps the first draw.
- ROUND_ROBIN cycles through the hosts from a random starting offset (Envoy randomises the
  start so that many proxies do not hit the same host first).
- RANDOM picks uniformly.
- consistentHash hashes a request key (header, cookie, source IP or query parameter) onto a
  ring of `minimumRingSize` points (default 1024) spread over the hosts; the same key reaches
  the same host while the host set is unchanged. labkit uses a ring for `maglev` too (same
  affinity property; Maglev's exact table differs, `tableSize` only validated). Hashes are BLAKE2b,
  stable across processes (Python's `hash()` is salted). A request without the key gets a random host, as in Envoy.
- Callers pass only the hosts that may be used (outlier detection already applied), so ejected
  hosts are skipped by construction. `avoid` implements the retry "previous hosts" predicate:
  selection is re-run up to `attempts` times (istiod sets 5) while it lands on an avoided host.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from labkit.mesh import spec

__all__ = [
    "Balancer",
    "ConsistentHash",
    "HashKey",
    "LeastRequest",
    "RandomBalancer",
    "RoundRobin",
    "balancer_from_spec",
]


class Balancer:
    """Picks a host; also counts active requests per host (LEAST_REQUEST reads them)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.active: dict[str, int] = {}

    def started(self, host: str) -> None:
        self.active[host] = self.active.get(host, 0) + 1

    def finished(self, host: str) -> None:
        left = self.active.get(host, 0) - 1
        if left < 0:
            raise ValueError(f"finished({host!r}) without a matching started()")
        self.active[host] = left

    def choose(self, hosts: Sequence[str], *, avoid: frozenset[str] = frozenset(),
               key: str | None = None, attempts: int = 5) -> str | None:
        """A host from `hosts` (None when empty: no healthy upstream), preferring ones not in
        `avoid`; `key` is the consistent-hash key of the request, if any."""
        if not hosts:
            return None
        host = self._pick(hosts, key)
        for _ in range(attempts - 1):
            if host not in avoid:
                break
            host = self._pick(hosts, key)
        return host

    def _pick(self, hosts: Sequence[str], key: str | None) -> str:
        raise NotImplementedError


class RoundRobin(Balancer):
    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self._next: int | None = None

    def _pick(self, hosts: Sequence[str], key: str | None) -> str:
        if self._next is None:
            self._next = self.rng.randrange(len(hosts))
        host = hosts[self._next % len(hosts)]
        self._next += 1
        return host


class LeastRequest(Balancer):
    choice_count = 2

    def _pick(self, hosts: Sequence[str], key: str | None) -> str:
        best = hosts[self.rng.randrange(len(hosts))]
        for _ in range(self.choice_count - 1):
            candidate = hosts[self.rng.randrange(len(hosts))]
            if self.active.get(candidate, 0) < self.active.get(best, 0):
                best = candidate
        return best


class RandomBalancer(Balancer):
    def _pick(self, hosts: Sequence[str], key: str | None) -> str:
        return hosts[self.rng.randrange(len(hosts))]


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@lru_cache(maxsize=64)
def _ring(hosts: tuple[str, ...], size: int) -> tuple[list[int], list[str]]:
    per_host = -(-size // len(hosts))
    points = sorted((_hash64(f"{h}_{i}"), h) for h in hosts for i in range(per_host))
    return [p for p, _ in points], [h for _, h in points]


@dataclass(frozen=True)
class HashKey:
    """Where a consistent-hash key comes from: exactly one of the fields is set."""

    header: str | None = None
    cookie: str | None = None
    source_ip: bool = False
    query_parameter: str | None = None

    def of(self, headers: Mapping[str, str], query: Mapping[str, str], source_ip: str | None) -> str | None:
        """The request's key, or None when it lacks one. `headers` keys are lower-case."""
        if self.header is not None:
            return headers.get(self.header)
        if self.query_parameter is not None:
            return query.get(self.query_parameter)
        if self.source_ip:
            return source_ip
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie:
                return value
        return None


class ConsistentHash(Balancer):
    def __init__(self, rng: random.Random, key: HashKey, ring_size: int = 1024) -> None:
        super().__init__(rng)
        self.key = key
        self.ring_size = ring_size

    def _pick(self, hosts: Sequence[str], key: str | None) -> str:
        if key is None:
            return hosts[self.rng.randrange(len(hosts))]
        points, owners = _ring(tuple(sorted(hosts)), self.ring_size)
        i = bisect.bisect_left(points, _hash64(key))
        return owners[i % len(owners)]


_SIMPLE = {"LEAST_REQUEST": LeastRequest, "LEAST_CONN": LeastRequest, "UNSPECIFIED": LeastRequest,
           "ROUND_ROBIN": RoundRobin, "RANDOM": RandomBalancer}


def balancer_from_spec(value: Mapping[str, Any] | None, rng: random.Random,
                       path: str = "loadBalancer") -> Balancer:
    """Build from `{simple: ROUND_ROBIN}` or `{consistentHash: {httpHeaderName: x-user |
    httpCookie: {name, path, ttl} | useSourceIp: true | httpQueryParameterName: q,
    ringHash: {minimumRingSize: 1024} | maglev: {tableSize: 65537}}}`; None ⇒ LEAST_REQUEST."""
    lb = spec.mapping(value, path)
    spec.check_keys(lb, ("simple", "consistentHash", "localityLbSetting", "warmupDurationSecs",
                         "warmup"), path)
    if lb.get("simple") is not None and lb.get("consistentHash") is not None:
        raise spec.SpecError(path, "set either simple or consistentHash, not both")
    if lb.get("consistentHash") is None:
        simple = spec.string(lb.get("simple"), spec.join(path, "simple"), default="UNSPECIFIED")
        if simple == "PASSTHROUGH":
            raise spec.SpecError(spec.join(path, "simple"),
                                 "PASSTHROUGH (send to the original destination IP) is not supported by labkit")
        if simple not in _SIMPLE:
            raise spec.SpecError(spec.join(path, "simple"),
                                 f"unknown load balancer {simple!r}; one of {', '.join(sorted(_SIMPLE))}")
        return _SIMPLE[simple](rng)
    cpath = spec.join(path, "consistentHash")
    ch = spec.mapping(lb["consistentHash"], cpath)
    spec.check_keys(ch, ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName",
                         "ringHash", "maglev", "minimumRingSize"), cpath)
    sources = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
               if ch.get(k) not in (None, False)]
    if len(sources) != 1:
        raise spec.SpecError(cpath, "set exactly one of httpHeaderName, httpCookie, useSourceIp, "
                                    f"httpQueryParameterName (got {sources or 'none'})")
    source = sources[0]
    where = spec.join(cpath, source)
    if source == "httpHeaderName":
        key = HashKey(header=spec.string(ch[source], where, required=True).lower())
    elif source == "httpQueryParameterName":
        key = HashKey(query_parameter=spec.string(ch[source], where, required=True))
    elif source == "useSourceIp":
        key = HashKey(source_ip=spec.boolean(ch[source], where, default=False))
    else:
        cookie = spec.mapping(ch[source], where)
        spec.check_keys(cookie, ("name", "path", "ttl", "attributes"), where)
        key = HashKey(cookie=spec.string(cookie.get("name"), spec.join(where, "name"), required=True))
    size = spec.integer(ch.get("minimumRingSize"), spec.join(cpath, "minimumRingSize"), default=1024,
                        minimum=1)
    if ch.get("ringHash") is not None:
        rpath = spec.join(cpath, "ringHash")
        ring = spec.mapping(ch["ringHash"], rpath)
        spec.check_keys(ring, ("minimumRingSize",), rpath)
        size = spec.integer(ring.get("minimumRingSize"), spec.join(rpath, "minimumRingSize"),
                            default=1024, minimum=1)
    elif ch.get("maglev") is not None:
        mpath = spec.join(cpath, "maglev")
        maglev = spec.mapping(ch["maglev"], mpath)
        spec.check_keys(maglev, ("tableSize",), mpath)
        # Validated, but the ring keeps its default size: a 65537-point ring would cost a
        # noticeable rebuild on every ejection for no difference in affinity.
        spec.integer(maglev.get("tableSize"), spec.join(mpath, "tableSize"), minimum=1)
    return ConsistentHash(rng, key, size)
