"""Server-side security policy: PeerAuthentication mode resolution and AuthorizationPolicy
evaluation. Policy only: no certificates, no TLS (the sidecar supplies the peer identity).

Sources: https://istio.io/latest/docs/reference/config/security/peer_authentication/,
https://istio.io/latest/docs/reference/config/security/authorization-policy/,
https://istio.io/latest/docs/concepts/security/#authorization-policies,
https://istio.io/latest/docs/reference/config/security/conditions/.

PeerAuthentication (istio-semantics.md §5):
- Modes STRICT, PERMISSIVE, DISABLE, UNSET (inherit). Nothing configured ⇒ PERMISSIVE.
- Scope: a policy without selector in the root namespace (default `istio-system`) is
  mesh-wide; without selector elsewhere it covers its namespace; with `selector.matchLabels`
  it covers matching workloads of its namespace (a selector policy in the root namespace is
  ignored). Narrowest wins: workload > namespace > mesh. Among several at one level the
  **oldest** wins (creation time, then name).
- `portLevelMtls` (selector policies only) is keyed by the workload's container/target port.

AuthorizationPolicy (istio-semantics.md §6):
- Applies to a workload when in its namespace or in the root namespace, and its selector (if
  any) matches the workload's labels.
- Order: CUSTOM (ask the provider) → DENY (any match denies) → no ALLOW policy ⇒ allow →
  any ALLOW match ⇒ allow → deny. AUDIT never changes the decision.
- `spec: {}` is an ALLOW policy that matches nothing ⇒ denies everything; `rules: [{}]`
  matches everything; DENY without rules does nothing.
- A rule matches when (no `from` or any source matches) and (no `to` or any operation
  matches) and every `when` holds. Inside a source/operation the fields are AND-ed, the values
  of one field OR-ed, and `notX` matches when no value matches.
- Values: exact, prefix `abc*`, suffix `*abc`, and `*` = present and non-empty. Principals
  look like `cluster.local/ns/<ns>/sa/<sa>` (no `spiffe://`); a plaintext request has no
  principal and no source namespace. Paths are normalised and compared without the query;
  methods compare exactly; hosts case-insensitively; ports and `when` keys exactly.
- Denial is 403 `RBAC: access denied` with no response flag (`flags.RBAC_DENIED`); a CUSTOM
  denial carries flag UAEX.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.mesh import flags, spec

__all__ = [
    "DISABLE",
    "PERMISSIVE",
    "ROOT_NAMESPACE",
    "STRICT",
    "UNSET",
    "AuthorizationPolicy",
    "AuthzDecision",
    "AuthzRequest",
    "PeerAuthentication",
    "admits",
    "authorize",
    "effective_mtls_mode",
    "normalize_path",
    "principal_namespace",
]

STRICT, PERMISSIVE, DISABLE, UNSET = "STRICT", "PERMISSIVE", "DISABLE", "UNSET"
_MODES = (STRICT, PERMISSIVE, DISABLE, UNSET)
ROOT_NAMESPACE = "istio-system"


def _selector(value: Any, path: str) -> tuple[tuple[str, str], ...] | None:
    """`selector.matchLabels`; None when absent or empty (istiod treats both as "no selector")."""
    sel = spec.mapping(value, path)
    spec.check_keys(sel, ("matchLabels",), path)
    lpath = spec.join(path, "matchLabels")
    labels = spec.mapping(sel.get("matchLabels"), lpath)
    for k, v in labels.items():
        if not k or "*" in str(k) or "*" in str(v):
            raise spec.SpecError(spec.join(lpath, str(k)), "empty keys and wildcards are not supported in selectors")
    return tuple(sorted((str(k), str(v)) for k, v in labels.items())) or None


def _selects(selector: tuple[tuple[str, str], ...] | None, labels: Mapping[str, str]) -> bool:
    return selector is None or all(labels.get(k) == v for k, v in selector)


# ---------------------------------------------------------------------------------------------
# PeerAuthentication


def _mode(value: Any, path: str) -> str:
    m = spec.mapping(value, path)
    spec.check_keys(m, ("mode",), path)
    mode = spec.string(m.get("mode"), spec.join(path, "mode"), default=UNSET)
    if mode not in _MODES:
        raise spec.SpecError(spec.join(path, "mode"), f"must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class PeerAuthentication:
    """Shape: `{selector: {matchLabels: {...}}, mtls: {mode: STRICT},
    portLevelMtls: {8080: {mode: DISABLE}}}`. `created` orders policies (oldest wins)."""

    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...] | None = None
    mode: str = UNSET
    port_modes: tuple[tuple[int, str], ...] = ()
    created: float = 0.0

    @classmethod
    def from_spec(cls, value: Mapping[str, Any], namespace: str, name: str,
                  created: float = 0.0) -> PeerAuthentication:
        pa = spec.mapping(value, "spec")
        spec.check_keys(pa, ("selector", "mtls", "portLevelMtls", "targetRef", "targetRefs"), "")
        selector = _selector(pa.get("selector"), "selector")
        ports = []
        if pa.get("portLevelMtls") == {}:
            raise spec.SpecError("portLevelMtls", "if set, must have at least one port")
        for key, mode in spec.mapping(pa.get("portLevelMtls"), "portLevelMtls").items():
            where = spec.join("portLevelMtls", str(key))
            port = int(key) if isinstance(key, int) or (isinstance(key, str) and key.isdigit()) else 0
            if not 1 <= port <= 65535:
                raise spec.SpecError(where, f"port must be 1-65535, got {key!r}")
            ports.append((port, _mode(mode, where)))
        if ports and selector is None:
            raise spec.SpecError("portLevelMtls", "requires a workload selector")
        return cls(namespace, name, selector, _mode(pa.get("mtls"), "mtls"), tuple(sorted(ports)), created)


def admits(mode: str, mutual_tls: bool) -> bool:
    """Does a server sidecar in `mode` accept a connection that is (or is not) mutual TLS?

    STRICT refuses plaintext and DISABLE refuses TLS: the connection is reset, there is no
    HTTP status at all (curl reports 000, exit 56). PERMISSIVE accepts both on one port.
    """
    if mode not in (STRICT, PERMISSIVE, DISABLE):
        raise ValueError(f"mode must be STRICT, PERMISSIVE or DISABLE, got {mode!r}")
    return mode == PERMISSIVE or (mode == STRICT) == mutual_tls


def effective_mtls_mode(policies: Iterable[PeerAuthentication], namespace: str,
                        labels: Mapping[str, str], port: int | None = None, *,
                        root_namespace: str = ROOT_NAMESPACE) -> str:
    """The mode the server sidecar of a workload (`namespace`, `labels`) enforces on `port`
    (its container port): STRICT, PERMISSIVE or DISABLE."""
    def oldest(candidates: Iterable[PeerAuthentication]) -> PeerAuthentication | None:
        return min(candidates, key=lambda p: (p.created, p.name), default=None)

    policies = list(policies)
    mesh = oldest(p for p in policies if p.namespace == root_namespace and p.selector is None)
    ns = oldest(p for p in policies if p.namespace == namespace and p.selector is None
                and namespace != root_namespace)
    workload = oldest(p for p in policies if p.namespace == namespace and p.selector is not None
                      and namespace != root_namespace and _selects(p.selector, labels))
    mode = PERMISSIVE
    for policy in (mesh, ns, workload):
        if policy is not None and policy.mode != UNSET:
            mode = policy.mode
    if workload is not None and port is not None:
        port_mode = dict(workload.port_modes).get(port, UNSET)
        if port_mode != UNSET:
            mode = port_mode
    return mode


# ---------------------------------------------------------------------------------------------
# Requests


def principal_namespace(principal: str | None) -> str | None:
    """`cluster.local/ns/foo/sa/bar` -> `foo` (None without a principal)."""
    if not principal:
        return None
    parts = principal.split("/")
    return parts[parts.index("ns") + 1] if "ns" in parts[:-1] else None


_UNRESERVED = {f"%{c:02x}" for c in (0x2D, 0x2E, 0x5F, 0x7E, *range(0x30, 0x3A), *range(0x41, 0x5B),
                                     *range(0x61, 0x7B))}
_PCT = re.compile(r"%[0-9a-fA-F]{2}")


def normalize_path(target: str) -> str | None:
    """The path Istio's sidecar authorises (and forwards): query and fragment removed,
    unreserved %-escapes decoded, `\\` made `/`, `.`/`..` segments resolved. None for a path
    Envoy rejects with 400 (`%00`, or not starting with `/`)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if "%00" in path or not path.startswith(("/", "\\")):
        return None
    path = _PCT.sub(lambda m: chr(int(m.group()[1:], 16)) if m.group().lower() in _UNRESERVED
                    else m.group(), path)
    path = path.replace("\\", "/")
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


@dataclass(frozen=True)
class AuthzRequest:
    """What the server sidecar knows about a request. `principal` comes from the peer
    certificate (mTLS only; `spiffe://` is stripped); `headers` keys are lower-case; `port` is
    the destination (container) port."""

    method: str = "GET"
    path: str = "/"
    host: str = ""
    port: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    principal: str | None = None
    source_ip: str | None = None
    remote_ip: str | None = None
    destination_ip: str | None = None
    sni: str | None = None
    request_principal: str | None = None

    def __post_init__(self) -> None:
        if self.principal and self.principal.startswith("spiffe://"):
            object.__setattr__(self, "principal", self.principal[len("spiffe://"):])

    @property
    def source_namespace(self) -> str | None:
        return principal_namespace(self.principal)

    @property
    def service_account(self) -> str | None:
        """`<ns>/<sa>` from the principal, as `source.serviceAccounts` compares it."""
        if not self.principal:
            return None
        parts = self.principal.split("/")
        if "ns" in parts and "sa" in parts and parts.index("sa") + 1 < len(parts):
            return f"{parts[parts.index('ns') + 1]}/{parts[parts.index('sa') + 1]}"
        return None

    @property
    def trust_domain(self) -> str | None:
        return self.principal.split("/", 1)[0] if self.principal else None


# ---------------------------------------------------------------------------------------------
# Matching


def _match_value(pattern: str, value: str | None) -> bool:
    """Istio's string match: exact, `abc*` prefix, `*abc` suffix, `*` = present and non-empty."""
    if value is None:
        return False
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _match_path(pattern: str, path: str | None) -> bool:
    if path is None:
        return False
    if "{*}" in pattern or "{**}" in pattern:
        regex = "/".join("[^/]+" if seg == "{*}" else ".+" if seg == "{**}" else re.escape(seg)
                         for seg in pattern.split("/"))
        return re.fullmatch(regex, path) is not None
    return _match_value(pattern, path)


def _match_ip(blocks: Sequence[str], ip: str | None) -> bool:
    if ip is None:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(b, strict=False) for b in blocks)


def _cidr_list(value: Any, path: str) -> tuple[str, ...]:
    out = _strings(value, path)
    for i, block in enumerate(out):
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            raise spec.SpecError(spec.join(path, i), f"not an IP address or CIDR block: {block!r}") from None
    return out


def _port_list(value: Any, path: str) -> tuple[str, ...]:
    out = _strings(value, path)
    for i, port in enumerate(out):
        if not (port.isdigit() and 1 <= int(port) <= 65535):
            raise spec.SpecError(spec.join(path, i), f"not a port number: {port!r}")
    return out


def _strings(value: Any, path: str) -> tuple[str, ...]:
    return tuple(spec.string(v, spec.join(path, i), required=True)
                 for i, v in enumerate(spec.sequence(value, path)))


# Source and operation fields: spec key -> (how to read the request, how to compare).
_SOURCE_FIELDS: dict[str, tuple[Callable[[AuthzRequest], str | None], str]] = {
    "principals": (lambda r: r.principal, "str"),
    "requestPrincipals": (lambda r: r.request_principal, "str"),
    "namespaces": (lambda r: r.source_namespace, "str"),
    "serviceAccounts": (lambda r: r.service_account, "exact"),
    "trustDomains": (lambda r: r.trust_domain, "str"),
    "ipBlocks": (lambda r: r.source_ip, "ip"),
    "remoteIpBlocks": (lambda r: r.remote_ip or r.source_ip, "ip"),
}
_OPERATION_FIELDS: dict[str, tuple[Callable[[AuthzRequest], str | None], str]] = {
    "hosts": (lambda r: r.host.lower(), "host"),
    "ports": (lambda r: None if r.port is None else str(r.port), "exact"),
    "methods": (lambda r: r.method, "str"),
    "paths": (lambda r: normalize_path(r.path), "path"),
}


def _compare(kind: str, patterns: Sequence[str], value: str | None) -> bool:
    if kind == "ip":
        return _match_ip(patterns, value)
    if kind == "exact":
        return value is not None and value in patterns
    if kind == "path":
        return any(_match_path(p, value) for p in patterns)
    if kind == "host":
        return any(_match_value(p.lower(), value) for p in patterns)
    return any(_match_value(p, value) for p in patterns)


@dataclass(frozen=True)
class _Clause:
    """A source or an operation: each field is (positive patterns, negative patterns)."""

    fields: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    table: str  # "source" or "operation"

    def matches(self, request: AuthzRequest) -> bool:
        table = _SOURCE_FIELDS if self.table == "source" else _OPERATION_FIELDS
        for name, positive, negative in self.fields:
            read, kind = table[name]
            value = read(request)
            if positive and not _compare(kind, positive, value):
                return False
            if negative and _compare(kind, negative, value):
                return False
        return True


def _clause(value: Any, path: str, table: str) -> _Clause:
    fields_table = _SOURCE_FIELDS if table == "source" else _OPERATION_FIELDS
    known = [*fields_table, *("not" + k[0].upper() + k[1:] for k in fields_table)]
    c = spec.mapping(value, path)
    spec.check_keys(c, known, path)
    fields = []
    for name, (_, kind) in fields_table.items():
        neg_name = "not" + name[0].upper() + name[1:]
        read = _cidr_list if kind == "ip" else _port_list if name == "ports" else _strings
        positive = read(c.get(name), spec.join(path, name))
        negative = read(c.get(neg_name), spec.join(path, neg_name))
        if positive or negative:
            fields.append((name, positive, negative))
    if not fields:
        raise spec.SpecError(path, f"`{table}` must not be empty")
    return _Clause(tuple(fields), table)


_WHEN_KEYS = ("source.ip", "source.namespace", "source.principal", "remote.ip", "destination.ip",
              "destination.port", "connection.sni", "request.auth.principal",
              "request.auth.audiences", "request.auth.presenter")
_HEADER_KEY = re.compile(r"request\.headers\[([^\]]+)\]")


def _when_value(key: str, request: AuthzRequest) -> str | None:
    m = _HEADER_KEY.fullmatch(key)
    if m:
        return request.headers.get(m.group(1).lower())
    return {
        "source.ip": request.source_ip, "remote.ip": request.remote_ip or request.source_ip,
        "source.namespace": request.source_namespace, "source.principal": request.principal,
        "destination.ip": request.destination_ip,
        "destination.port": None if request.port is None else str(request.port),
        "connection.sni": request.sni, "request.auth.principal": request.request_principal,
    }.get(key)  # request.auth.* beyond the principal need JWT, which labkit does not verify


@dataclass(frozen=True)
class _Condition:
    key: str
    values: tuple[str, ...]
    not_values: tuple[str, ...]

    def matches(self, request: AuthzRequest) -> bool:
        value = _when_value(self.key, request)
        kind = "ip" if self.key in ("source.ip", "remote.ip", "destination.ip") else (
            "exact" if self.key == "destination.port" else "str")
        if self.values and not _compare(kind, self.values, value):
            return False
        return not (self.not_values and _compare(kind, self.not_values, value))


def _condition(value: Any, path: str) -> _Condition:
    c = spec.mapping(value, path)
    spec.check_keys(c, ("key", "values", "notValues"), path)
    key = spec.string(c.get("key"), spec.join(path, "key"), required=True)
    if not (key in _WHEN_KEYS or _HEADER_KEY.fullmatch(key) or key.startswith("request.auth.claims[")):
        raise spec.SpecError(spec.join(path, "key"), f"unknown condition key {key!r}")
    read = (_cidr_list if key in ("source.ip", "remote.ip", "destination.ip")
            else _port_list if key == "destination.port" else _strings)
    values = read(c.get("values"), spec.join(path, "values"))
    not_values = read(c.get("notValues"), spec.join(path, "notValues"))
    if not values and not not_values:
        raise spec.SpecError(path, f"condition {key!r} needs values or notValues")
    return _Condition(key, values, not_values)


@dataclass(frozen=True)
class _Rule:
    sources: tuple[_Clause, ...]
    operations: tuple[_Clause, ...]
    conditions: tuple[_Condition, ...]

    def matches(self, request: AuthzRequest) -> bool:
        return ((not self.sources or any(s.matches(request) for s in self.sources))
                and (not self.operations or any(o.matches(request) for o in self.operations))
                and all(c.matches(request) for c in self.conditions))


def _rule(value: Any, path: str) -> _Rule:
    r = spec.mapping(value, path)
    spec.check_keys(r, ("from", "to", "when"), path)
    sources, operations = [], []
    for key in ("from", "to"):
        if r.get(key) == []:
            raise spec.SpecError(spec.join(path, key), f"`{key}` must not be empty; omit it to match any")
    for i, item in enumerate(spec.sequence(r.get("from"), spec.join(path, "from"))):
        ipath = spec.join(spec.join(path, "from"), i)
        f = spec.mapping(item, ipath)
        spec.check_keys(f, ("source",), ipath)
        sources.append(_clause(f.get("source"), spec.join(ipath, "source"), "source"))
    for i, item in enumerate(spec.sequence(r.get("to"), spec.join(path, "to"))):
        ipath = spec.join(spec.join(path, "to"), i)
        t = spec.mapping(item, ipath)
        spec.check_keys(t, ("operation",), ipath)
        operations.append(_clause(t.get("operation"), spec.join(ipath, "operation"), "operation"))
    conditions = tuple(_condition(c, spec.join(spec.join(path, "when"), i))
                       for i, c in enumerate(spec.sequence(r.get("when"), spec.join(path, "when"))))
    return _Rule(tuple(sources), tuple(operations), conditions)


_ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
_CUSTOM_UNSUPPORTED = frozenset({"principals", "requestPrincipals", "namespaces"})


def _check_custom(rules: Sequence[_Rule]) -> None:
    """istiod refuses identity-based matching in CUSTOM policies (the check happens before
    authentication results are known)."""
    for i, rule in enumerate(rules):
        for source in rule.sources:
            for name, _, _ in source.fields:
                if name in _CUSTOM_UNSUPPORTED:
                    raise spec.SpecError(spec.join("rules", i), f"from.source.{name} (or its not- form) "
                                                                "is not supported with CUSTOM action")
        for condition in rule.conditions:
            if condition.key in ("source.namespace", "source.principal") or condition.key.startswith("request.auth."):
                raise spec.SpecError(spec.join("rules", i), f"when key {condition.key!r} is not supported with "
                                                            "CUSTOM action")


@dataclass(frozen=True)
class AuthorizationPolicy:
    """Shape: `{selector: {matchLabels}, action: ALLOW|DENY|AUDIT|CUSTOM, provider: {name},
    rules: [{from: [{source: {principals, notPrincipals, namespaces, notNamespaces, ipBlocks,
    ...}}], to: [{operation: {hosts, ports, methods, paths, notPaths, ...}}], when: [{key,
    values, notValues}]}]}`. `dry_run` mirrors the `istio.io/dry-run` annotation: the policy
    is parsed but not enforced."""

    namespace: str
    name: str
    action: str = "ALLOW"
    selector: tuple[tuple[str, str], ...] | None = None
    rules: tuple[_Rule, ...] = ()
    provider: str | None = None
    dry_run: bool = False

    @classmethod
    def from_spec(cls, value: Mapping[str, Any] | None, namespace: str, name: str, *,
                  dry_run: bool = False) -> AuthorizationPolicy:
        ap = spec.mapping(value, "spec")
        spec.check_keys(ap, ("selector", "targetRef", "targetRefs", "action", "provider", "rules"), "")
        action = spec.string(ap.get("action"), "action", default="ALLOW")
        if action not in _ACTIONS:
            raise spec.SpecError("action", f"must be one of {', '.join(_ACTIONS)}, got {action!r}")
        provider = None
        if ap.get("provider") is not None:
            prov = spec.mapping(ap["provider"], "provider")
            spec.check_keys(prov, ("name",), "provider")
            provider = spec.string(prov.get("name"), "provider.name", required=True)
        if action == "CUSTOM" and provider is None:
            raise spec.SpecError("provider", "a CUSTOM policy needs provider.name")
        if action != "CUSTOM" and provider is not None:
            raise spec.SpecError("provider", f"only CUSTOM policies take a provider, not {action}")
        rules = tuple(_rule(r, spec.join("rules", i))
                      for i, r in enumerate(spec.sequence(ap.get("rules"), "rules")))
        if action in ("DENY", "CUSTOM") and not rules:
            # istiod rejects these: they would never trigger.
            raise spec.SpecError("rules", f"a {action} policy without rules never triggers; add an empty "
                                          "rule `{}` to apply it to every request")
        if dry_run and action not in ("ALLOW", "DENY"):
            raise spec.SpecError("", f"the istio.io/dry-run annotation only supports ALLOW and DENY, not {action}")
        if action == "CUSTOM":
            _check_custom(rules)
        return cls(namespace, name, action, _selector(ap.get("selector"), "selector"), rules,
                   provider, dry_run)

    def applies_to(self, namespace: str, labels: Mapping[str, str], *,
                   root_namespace: str = ROOT_NAMESPACE) -> bool:
        return self.namespace in (namespace, root_namespace) and _selects(self.selector, labels)

    def matching_rule(self, request: AuthzRequest) -> int | None:
        """Index of the first rule that matches (a policy without rules matches nothing)."""
        for i, rule in enumerate(self.rules):
            if rule.matches(request):
                return i
        return None

    def rule_id(self, index: int) -> str:
        """Envoy's RBAC policy name, as in `rbac_access_denied_matched_policy[...]`."""
        return f"ns[{self.namespace}]-policy[{self.name}]-rule[{index}]"


@dataclass(frozen=True)
class AuthzDecision:
    """`reply` is None when allowed, else the 403 to send. `details` is Envoy's
    %RESPONSE_CODE_DETAILS% for a denial; `audited` is True when an AUDIT policy matched."""

    allowed: bool
    reply: flags.LocalReply | None = None
    details: str = ""
    audited: bool = False


def authorize(policies: Iterable[AuthorizationPolicy], namespace: str, labels: Mapping[str, str],
              request: AuthzRequest, *, root_namespace: str = ROOT_NAMESPACE,
              ext_authz: Callable[[str, AuthzRequest], bool] | None = None) -> AuthzDecision:
    """Decide one request at the server sidecar of a workload (`namespace`, `labels`).

    `ext_authz(provider, request) -> allowed` answers CUSTOM policies; without it a matching
    CUSTOM policy denies (Envoy's ext_authz fails closed by default).
    """
    active = [p for p in policies
              if not p.dry_run and p.applies_to(namespace, labels, root_namespace=root_namespace)]
    by_action: dict[str, list[AuthorizationPolicy]] = {a: [] for a in _ACTIONS}
    for p in active:
        by_action[p.action].append(p)
    audited = any(p.matching_rule(request) is not None for p in by_action["AUDIT"])
    for p in by_action["CUSTOM"]:
        if p.matching_rule(request) is not None and not (ext_authz and ext_authz(p.provider or "", request)):
            return AuthzDecision(False, flags.LocalReply(403, "", (flags.UNAUTHORIZED_EXTERNAL_SERVICE,)),
                                 "ext_authz_denied", audited)
    for p in by_action["DENY"]:
        i = p.matching_rule(request)
        if i is not None:
            return AuthzDecision(False, flags.RBAC_DENIED,
                                 f"rbac_access_denied_matched_policy[{p.rule_id(i)}]", audited)
    if not by_action["ALLOW"]:
        return AuthzDecision(True, audited=audited)
    if any(p.matching_rule(request) is not None for p in by_action["ALLOW"]):
        return AuthzDecision(True, audited=audited)
    return AuthzDecision(False, flags.RBAC_DENIED, "rbac_access_denied_matched_policy[none]", audited)
