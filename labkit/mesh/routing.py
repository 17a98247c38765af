"""VirtualService HTTP routing: which route a request takes and what the sidecar does with it.

Pure decisions for the caller's (client) sidecar, as Envoy's router applies the route table
istiod builds. Sources: https://istio.io/latest/docs/reference/config/networking/virtual-service/
and https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto.

Rules encoded here (istio-semantics.md §3):
- `http` routes are tried in order; the **first** route with a matching block wins. A route
  without `match` matches everything. Nothing matches ⇒ 404 with flag NR (no implicit
  catch-all).
- `match` blocks are OR-ed; the conditions inside one block are AND-ed.
- `uri` is compared with the path **without** the query string. `prefix` is a plain string
  prefix (`/foo` matches `/foobar`). `ignoreUriCase` applies to exact/prefix only.
- `regex` is RE2 and must match the **whole** value. labkit runs it with Python's
  `re.fullmatch`; RE2 has no backreferences or look-around, so those are rejected here as
  istiod would reject them, and Python-only syntax (e.g. possessive quantifiers) is not
  guaranteed to be refused. RE2's `\\C`, `\\pN` classes are not available in Python.
- `headers` keys are lower-case header names (pseudo-headers `:method`, `:authority`,
  `:path`, `:scheme` allowed); values are case-sensitive. `{}` or `regex: "*"` means "present,
  any value". Keys `uri`, `scheme`, `method`, `authority` are ignored.
- `withoutHeaders` inverts a header match; a missing header is matched as an empty value,
  except for the presence form, where a missing header matches and an empty one does not.
- `queryParams`: exact/regex (full match) on the first value; `{}` = present; `exact: ""`
  matches `?key`. Prefix is not supported by Istio.
- Weights are relative (`weight / sum`), any value >= 0; with several destinations the total
  must be > 0 and zero-weight ones get nothing; a single destination gets everything.
  The pick is random per request (Envoy's weighted clusters), never round-robin.
- A route does exactly one of: redirect, directResponse, forward to `route` (Istio rejects
  combinations; directResponse needs `route` and `redirect` empty).
- `rewrite.uri` replaces the matched prefix (the whole path for exact/regex matches; `/` when
  the route has no uri match, so `/foo` with `rewrite.uri: /v1` becomes `/v1foo`); the query
  string is kept; `x-envoy-original-path` carries the old path.
- `redirect`: status 301 unless `redirectCode`; `uri` replaces the whole path, query kept.
- Header operations: remove, then set (overwrite), then add (append, comma-joined). With one
  destination istiod appends its ops after the route's (a destination `set` wins); with several
  they live on Envoy's weighted cluster, applied *before* the route's (a route `set` wins).
  An authority rewrite at route level (`rewrite.authority` or setting `host`) beats one at
  destination level.
- `mirror`/`mirrors`: `mirrorPercentage` absent ⇒ 100 %; the copy is fire-and-forget.

Which VirtualService applies to an outbound request is `VirtualService.applies_to`, built on
the host-name rules of `labkit.mesh.hosts`.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from labkit.mesh import flags, spec
from labkit.mesh.faults import FaultPolicy
from labkit.mesh.hosts import (
    check_hosts,
    host_covers,
    qualify_host,
    resolve_authority,
    split_host_port,
)
from labkit.mesh.retries import DEFAULT_RETRIES, RetryPolicy

__all__ = [
    "Decision",
    "Destination",
    "DirectResponse",
    "Forward",
    "HeaderOps",
    "HttpRoute",
    "MatchBlock",
    "Mirror",
    "NoRoute",
    "Redirect",
    "Request",
    "RouteDestination",
    "StringMatch",
    "VirtualService",
    "pick_destination",
]

# ---------------------------------------------------------------------------------------------
# Requests and host names


@dataclass(frozen=True)
class Request:
    """What routing looks at. `path` is the request target (path and query); `headers` keys
    must be lower-case; `port` is the service port addressed (for `match.port`)."""

    method: str
    path: str
    authority: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"
    port: int | None = None

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query_string(self) -> str:
        parts = self.path.split("?", 1)
        return parts[1] if len(parts) == 2 else ""

    @property
    def query(self) -> dict[str, str]:
        """First value of each query parameter (`?key` gives "")."""
        out: dict[str, str] = {}
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            out.setdefault(key, value)
        return out

    def header(self, name: str) -> str | None:
        """A header value, with HTTP/2 pseudo-headers answered from the request line."""
        if name.startswith(":"):
            return {":method": self.method, ":path": self.path, ":authority": self.authority,
                    ":scheme": self.scheme}.get(name)
        return self.headers.get(name)


# ---------------------------------------------------------------------------------------------
# Matching

_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")


def _compile_re2(pattern: str, path: str) -> re.Pattern[str]:
    if _NOT_RE2.search(pattern):
        raise spec.SpecError(path, f"regex {pattern!r} uses look-around or a backreference, "
                                   "which RE2 (Envoy's regex engine) does not support")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise spec.SpecError(path, f"invalid regex {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class StringMatch:
    """Istio `StringMatch`: kind is "exact", "prefix", "regex" or "present"."""

    kind: str
    value: str = ""
    ignore_case: bool = False
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_spec(cls, value: Any, path: str, *, presence: bool = True, allow_prefix: bool = True,
                  ignore_case: bool = False) -> StringMatch:
        m = spec.mapping(value, path)
        spec.check_keys(m, ("exact", "prefix", "regex"), path)
        kinds = [k for k in ("exact", "prefix", "regex") if m.get(k) is not None]
        if not kinds and presence:
            return cls("present")
        if len(kinds) != 1:
            raise spec.SpecError(path, f"set exactly one of exact, prefix, regex (got {kinds or 'none'})")
        kind = kinds[0]
        text = spec.string(m[kind], spec.join(path, kind), default="")
        if kind == "prefix" and not allow_prefix:
            raise spec.SpecError(spec.join(path, kind), "prefix matching is not supported here by Istio")
        if kind == "regex":
            if text == "*" and presence:
                return cls("present")
            return cls(kind, text, regex=_compile_re2(text, spec.join(path, kind)))
        return cls(kind, text.lower() if ignore_case else text, ignore_case)

    def matches(self, value: str | None) -> bool:
        """False for a missing value (None), whatever the kind."""
        if value is None:
            return False
        if self.kind == "present":
            return True
        if self.kind == "regex":
            return self.regex.fullmatch(value) is not None  # type: ignore[union-attr]  # compiled for kind regex
        if self.ignore_case:
            value = value.lower()
        if self.kind == "exact":
            return value == self.value
        return value.startswith(self.value)


_IGNORED_HEADER_KEYS = frozenset({"uri", "scheme", "method", "authority"})


def _header_matches(spec_value: Any, path: str) -> tuple[tuple[str, StringMatch], ...]:
    out = []
    for name, sm in spec.mapping(spec_value, path).items():
        if not isinstance(name, str) or not name:
            raise spec.SpecError(path, f"header name must be a non-empty string, got {name!r}")
        if name in _IGNORED_HEADER_KEYS:
            continue
        out.append((name.lower(), StringMatch.from_spec(sm, spec.join(path, name))))
    return tuple(out)


@dataclass(frozen=True)
class MatchBlock:
    """One `HTTPMatchRequest`: every condition set here must hold."""

    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch], ...] = ()
    without_headers: tuple[tuple[str, StringMatch], ...] = ()
    query_params: tuple[tuple[str, StringMatch], ...] = ()
    port: int | None = None
    source_labels: tuple[tuple[str, str], ...] = ()
    source_namespace: str | None = None
    name: str = ""

    @classmethod
    def from_spec(cls, value: Any, path: str) -> MatchBlock:
        m = spec.mapping(value, path)
        spec.check_keys(m, ("name", "uri", "scheme", "method", "authority", "headers", "port",
                            "sourceLabels", "gateways", "queryParams", "ignoreUriCase",
                            "withoutHeaders", "sourceNamespace", "statPrefix"), path)
        ignore_case = spec.boolean(m.get("ignoreUriCase"), spec.join(path, "ignoreUriCase"), default=False)

        def sm(key: str, **kw: Any) -> StringMatch | None:
            if m.get(key) is None:
                return None
            return StringMatch.from_spec(m[key], spec.join(path, key), presence=False, **kw)

        queries = []
        for name, qm in spec.mapping(m.get("queryParams"), spec.join(path, "queryParams")).items():
            queries.append((str(name), StringMatch.from_spec(
                qm, spec.join(spec.join(path, "queryParams"), str(name)), allow_prefix=False)))
        labels = spec.mapping(m.get("sourceLabels"), spec.join(path, "sourceLabels"))
        return cls(
            uri=sm("uri", ignore_case=ignore_case),
            scheme=sm("scheme"), method=sm("method"), authority=sm("authority"),
            headers=_header_matches(m.get("headers"), spec.join(path, "headers")),
            without_headers=_header_matches(m.get("withoutHeaders"), spec.join(path, "withoutHeaders")),
            query_params=tuple(queries),
            port=spec.integer(m.get("port"), spec.join(path, "port"), minimum=1, maximum=65535),
            source_labels=tuple((str(k), str(v)) for k, v in labels.items()),
            source_namespace=spec.string(m.get("sourceNamespace"), spec.join(path, "sourceNamespace")),
            name=spec.string(m.get("name"), spec.join(path, "name"), default="") or "",
        )

    def applies_to(self, labels: Mapping[str, str], namespace: str) -> bool:
        """Config-time filter: `sourceLabels`/`sourceNamespace` select which sidecars get this
        block at all (they are not request attributes)."""
        if any(labels.get(k) != v for k, v in self.source_labels):
            return False
        return self.source_namespace is None or self.source_namespace == namespace

    def matches(self, request: Request) -> bool:
        if self.uri is not None and not self.uri.matches(request.path_only):
            return False
        for cond, value in ((self.scheme, request.scheme), (self.method, request.method),
                            (self.authority, request.authority)):
            if cond is not None and not cond.matches(value):
                return False
        if self.port is not None and request.port != self.port:
            return False
        for name, cond in self.headers:
            if not cond.matches(request.header(name)):
                return False
        for name, cond in self.without_headers:
            header = request.header(name)
            hit = header is not None if cond.kind == "present" else cond.matches(header or "")
            if hit:
                return False
        if self.query_params:
            query = request.query
            if not all(cond.matches(query.get(name)) for name, cond in self.query_params):
                return False
        return True


# ---------------------------------------------------------------------------------------------
# Route building blocks


@dataclass(frozen=True)
class HeaderOps:
    """One `Headers.HeaderOperations` block (request or response side)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, value: Any, path: str, *, request: bool) -> HeaderOps:
        """Validated as istiod does: only request `set`/`add` may name the authority (`host`,
        `:authority`); other pseudo-headers never; a lone `%` in a value is an error (Envoy
        reads `%VAR%` as a variable, `%%` as a literal %)."""
        ops = spec.mapping(value, path)
        spec.check_keys(ops, ("set", "add", "remove"), path)

        def checked(name: str, where: str, may_set_authority: bool) -> str:
            lowered = name.lower()
            if not lowered:
                raise spec.SpecError(where, "header name cannot be empty")
            if lowered in ("host", ":authority") and may_set_authority:
                return lowered
            if lowered == "host" or lowered.startswith(":"):
                raise spec.SpecError(where, f"header {name!r} cannot be changed here")
            return lowered

        def pairs(key: str) -> tuple[tuple[str, str], ...]:
            kpath = spec.join(path, key)
            out = []
            for k, v in spec.mapping(ops.get(key), kpath).items():
                where = spec.join(kpath, str(k))
                text = spec.string(v, where, default="")
                if text.count("%") % 2:
                    raise spec.SpecError(where, "single % not allowed: write %% for a literal %")
                out.append((checked(str(k), where, request), text))
            return tuple(out)

        rpath = spec.join(path, "remove")
        removes = tuple(checked(spec.string(v, spec.join(rpath, i), required=True), spec.join(rpath, i), False)
                        for i, v in enumerate(spec.sequence(ops.get("remove"), rpath)))
        return cls(pairs("set"), pairs("add"), removes)

    def apply(self, headers: dict[str, str]) -> None:
        """Apply in place (keys lower-case): remove, then set, then add (comma-joined)."""
        for name in self.remove:
            headers.pop(name, None)
        for name, value in self.set:
            headers[name] = value
        for name, value in self.add:
            headers[name] = f"{headers[name]},{value}" if name in headers else value

    def authority(self) -> str | None:
        """The authority this block sets via `host` / `:authority`, if any."""
        for name, value in self.set:
            if name in ("host", ":authority"):
                return value
        return None


def _headers_pair(value: Any, path: str) -> tuple[HeaderOps, HeaderOps]:
    h = spec.mapping(value, path)
    spec.check_keys(h, ("request", "response"), path)
    return (HeaderOps.from_spec(h.get("request"), spec.join(path, "request"), request=True),
            HeaderOps.from_spec(h.get("response"), spec.join(path, "response"), request=False))


@dataclass(frozen=True)
class Destination:
    """`Destination`: a registry host (qualified to an FQDN), optional subset and port."""

    host: str
    subset: str | None = None
    port: int | None = None

    @classmethod
    def from_spec(cls, value: Any, path: str, namespace: str) -> Destination:
        d = spec.mapping(value, path)
        spec.check_keys(d, ("host", "subset", "port"), path)
        host = spec.string(d.get("host"), spec.join(path, "host"), required=True)
        if host == "*":
            raise spec.SpecError(spec.join(path, "host"), "a destination host cannot be '*'")
        subset = spec.string(d.get("subset"), spec.join(path, "subset"))
        if subset and not spec.is_dns_label(subset):
            raise spec.SpecError(spec.join(path, "subset"), f"invalid subset name {subset!r} (a DNS label)")
        port_spec = spec.mapping(d.get("port"), spec.join(path, "port"))
        spec.check_keys(port_spec, ("number",), spec.join(path, "port"))
        return cls(
            qualify_host(host, namespace),
            subset or None,
            spec.integer(port_spec.get("number"), spec.join(path, "port.number"), minimum=1,
                         maximum=65535),
        )

    def cluster_name(self, default_port: int | None = None) -> str:
        """Envoy's cluster name: `outbound|<port>|<subset>|<fqdn>`."""
        port = self.port if self.port is not None else default_port
        return f"outbound|{port or ''}|{self.subset or ''}|{self.host}"


@dataclass(frozen=True)
class RouteDestination:
    destination: Destination
    weight: int
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()


@dataclass(frozen=True)
class Mirror:
    destination: Destination
    fraction: float = 1.0


@dataclass(frozen=True)
class HttpRoute:
    """One entry of `http`, parsed. `retries` is the effective policy (Istio's default when the
    route has no `retries` block); `timeout` None means no timeout."""

    name: str = ""
    matches: tuple[MatchBlock, ...] = ()
    destinations: tuple[RouteDestination, ...] = ()
    redirect: Mapping[str, Any] | None = None
    direct_response: tuple[int, bytes] | None = None
    rewrite_uri: str | None = None
    rewrite_regex: tuple[re.Pattern[str], str] | None = None
    rewrite_authority: str | None = None
    timeout: float | None = None
    retries: RetryPolicy = DEFAULT_RETRIES
    fault: FaultPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()

    @classmethod
    def from_spec(cls, value: Any, path: str, namespace: str, *,
                  consistent_hash_hosts: frozenset[str] = frozenset()) -> HttpRoute:
        """`consistent_hash_hosts`: destination FQDNs whose DestinationRule uses consistentHash
        LB (istiod then drops the previous-hosts retry predicate)."""
        r = spec.mapping(value, path)
        spec.check_keys(r, ("name", "match", "route", "redirect", "directResponse", "delegate",
                            "rewrite", "timeout", "retries", "fault", "mirror", "mirrors",
                            "mirrorPercentage", "mirrorPercent", "corsPolicy", "headers"), path)
        if r.get("delegate") is not None:
            raise spec.SpecError(spec.join(path, "delegate"), "delegate is not supported by labkit")
        matches = tuple(MatchBlock.from_spec(m, spec.join(spec.join(path, "match"), i))
                        for i, m in enumerate(spec.sequence(r.get("match"), spec.join(path, "match"))))
        destinations = _destinations(r.get("route"), spec.join(path, "route"), namespace)
        redirect = _redirect(r.get("redirect"), spec.join(path, "redirect"))
        direct = _direct_response(r.get("directResponse"), spec.join(path, "directResponse"))
        if not destinations and redirect is None and direct is None:
            raise spec.SpecError(path, "needs one of route, redirect, directResponse")
        if redirect is not None and destinations:
            raise spec.SpecError(path, "redirect and route cannot be set together")
        if direct is not None and (destinations or redirect is not None):
            raise spec.SpecError(path, "directResponse can only be used when route and redirect are empty")
        rw = spec.mapping(r.get("rewrite"), spec.join(path, "rewrite"))
        rwpath = spec.join(path, "rewrite")
        spec.check_keys(rw, ("uri", "authority", "uriRegexRewrite"), rwpath)
        if r.get("rewrite") is not None and not any(rw.get(k) for k in ("uri", "authority", "uriRegexRewrite")):
            raise spec.SpecError(rwpath, "rewrite must set uri, authority or uriRegexRewrite")
        if rw and redirect is not None:
            raise spec.SpecError(rwpath, "rewrite cannot be combined with redirect")
        if r.get("fault") is not None and redirect is not None:
            raise spec.SpecError(spec.join(path, "fault"), "fault cannot be combined with redirect")
        rewrite_regex = None
        if rw.get("uriRegexRewrite") is not None:
            rxpath = spec.join(rwpath, "uriRegexRewrite")
            rx = spec.mapping(rw["uriRegexRewrite"], rxpath)
            spec.check_keys(rx, ("match", "rewrite"), rxpath)
            if rw.get("uri") is not None:
                raise spec.SpecError(rwpath, "set uri or uriRegexRewrite, not both")
            pattern = spec.string(rx.get("match"), spec.join(rxpath, "match"), required=True)
            rewrite_regex = (_compile_re2(pattern, spec.join(rxpath, "match")),
                             spec.string(rx.get("rewrite"), spec.join(rxpath, "rewrite"), default=""))
        hosts = {d.destination.host for d in destinations}
        request_ops, response_ops = _headers_pair(r.get("headers"), spec.join(path, "headers"))
        if rw.get("authority") is not None and request_ops.authority() is not None:
            raise spec.SpecError(spec.join(path, "headers.request.set"),
                                 "the authority is already rewritten by rewrite.authority; set it once")
        return cls(
            name=spec.string(r.get("name"), spec.join(path, "name"), default="") or "",
            matches=matches,
            destinations=destinations,
            redirect=redirect,
            direct_response=direct,
            rewrite_uri=spec.string(rw.get("uri"), spec.join(rwpath, "uri")),
            rewrite_regex=rewrite_regex,
            rewrite_authority=spec.string(rw.get("authority"), spec.join(rwpath, "authority")),
            timeout=spec.duration(r.get("timeout"), spec.join(path, "timeout"), minimum=0.0) or None,
            retries=RetryPolicy.from_spec(r.get("retries"), spec.join(path, "retries"),
                                          consistent_hash=bool(hosts & consistent_hash_hosts)),
            fault=None if r.get("fault") is None else FaultPolicy.from_spec(r["fault"], spec.join(path, "fault")),
            mirrors=_mirrors(r, path, namespace),
            request_headers=request_ops,
            response_headers=response_ops,
        )

    def matching_block(self, request: Request, labels: Mapping[str, str] | None = None,
                       namespace: str | None = None) -> MatchBlock | bool:
        """The first block that matches; True for a route without `match`; False for none.
        `labels`/`namespace` describe the sidecar, for `sourceLabels`/`sourceNamespace`."""
        if not self.matches:
            return True
        for block in self.matches:
            if labels is not None and not block.applies_to(labels, namespace or ""):
                continue
            if block.matches(request):
                return block
        return False


def _destinations(value: Any, path: str, namespace: str) -> tuple[RouteDestination, ...]:
    items = spec.sequence(value, path)
    out = []
    for i, item in enumerate(items):
        ipath = spec.join(path, i)
        d = spec.mapping(item, ipath)
        spec.check_keys(d, ("destination", "weight", "headers"), ipath)
        if d.get("destination") is None:
            raise spec.SpecError(spec.join(ipath, "destination"), "is required")
        weight = spec.integer(d.get("weight"), spec.join(ipath, "weight"), default=0, minimum=0)
        request_ops, response_ops = _headers_pair(d.get("headers"), spec.join(ipath, "headers"))
        out.append(RouteDestination(Destination.from_spec(d["destination"], spec.join(ipath, "destination"),
                                                          namespace), weight, request_ops, response_ops))
    if len(out) > 1 and sum(d.weight for d in out) == 0:
        raise spec.SpecError(path, "total weight of several destinations must be > 0 "
                                   "(weights are relative; they need not sum to 100)")
    return tuple(out)


def _redirect(value: Any, path: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    rd = spec.mapping(value, path)
    spec.check_keys(rd, ("uri", "authority", "port", "derivePort", "scheme", "redirectCode"), path)
    for key in ("uri", "authority", "scheme"):
        spec.string(rd.get(key), spec.join(path, key))
    spec.integer(rd.get("redirectCode"), spec.join(path, "redirectCode"), minimum=300, maximum=399)
    spec.integer(rd.get("port"), spec.join(path, "port"), minimum=1, maximum=65535)
    derive = spec.string(rd.get("derivePort"), spec.join(path, "derivePort"))
    if derive not in (None, "FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"):
        raise spec.SpecError(spec.join(path, "derivePort"),
                             f"must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT, got {derive!r}")
    if rd.get("port") is not None and derive is not None:
        raise spec.SpecError(path, "set port or derivePort, not both")
    return dict(rd)


def _direct_response(value: Any, path: str) -> tuple[int, bytes] | None:
    if value is None:
        return None
    dr = spec.mapping(value, path)
    spec.check_keys(dr, ("status", "body"), path)
    status = spec.integer(dr.get("status"), spec.join(path, "status"), minimum=200, maximum=599)
    if status is None:
        raise spec.SpecError(spec.join(path, "status"), "is required")
    bpath = spec.join(path, "body")
    body = spec.mapping(dr.get("body"), bpath)
    spec.check_keys(body, ("string", "bytes"), bpath)
    if body.get("string") is not None and body.get("bytes") is not None:
        raise spec.SpecError(bpath, "set string or bytes, not both")
    if body.get("bytes") is not None:
        try:
            data = base64.b64decode(spec.string(body["bytes"], spec.join(bpath, "bytes"), default=""), validate=True)
        except ValueError:
            raise spec.SpecError(spec.join(bpath, "bytes"), "must be base64") from None
    else:
        data = (spec.string(body.get("string"), spec.join(bpath, "string"), default="") or "").encode()
    return status, data


def _mirrors(r: Mapping[str, Any], path: str, namespace: str) -> tuple[Mirror, ...]:
    out = []
    if r.get("mirror") is not None:
        if r.get("mirrorPercentage") is not None:
            fraction = spec.percentage(r["mirrorPercentage"], spec.join(path, "mirrorPercentage"), default=1.0)
        elif r.get("mirrorPercent") is not None:
            fraction = spec.integer(r["mirrorPercent"], spec.join(path, "mirrorPercent"), default=0,
                                    minimum=0, maximum=100) / 100.0
        else:
            fraction = 1.0
        out.append(Mirror(Destination.from_spec(r["mirror"], spec.join(path, "mirror"), namespace), fraction))
    mpath = spec.join(path, "mirrors")
    for i, item in enumerate(spec.sequence(r.get("mirrors"), mpath)):
        ipath = spec.join(mpath, i)
        m = spec.mapping(item, ipath)
        spec.check_keys(m, ("destination", "percentage"), ipath)
        if m.get("destination") is None:
            raise spec.SpecError(spec.join(ipath, "destination"), "is required")
        out.append(Mirror(Destination.from_spec(m["destination"], spec.join(ipath, "destination"), namespace),
                          spec.percentage(m.get("percentage"), spec.join(ipath, "percentage"), default=1.0)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True)
class Forward:
    """Send the request upstream to `destination`.

    `path` and `authority` are what to send (after rewrite); `original_path` is set when the
    path changed (send it as `x-envoy-original-path`). Apply `request_ops` in order to the
    request headers and `response_ops` to the response; `mirrors` are the copies to send
    for this request (already sampled).
    """

    route: HttpRoute
    destination: Destination
    path: str
    authority: str
    original_path: str | None
    request_ops: tuple[HeaderOps, ...]
    response_ops: tuple[HeaderOps, ...]
    mirrors: tuple[Destination, ...]

    def request_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = dict(headers)
        for ops in self.request_ops:
            ops.apply(out)
        if self.original_path is not None:
            out["x-envoy-original-path"] = self.original_path
        return out

    def response_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = dict(headers)
        for ops in self.response_ops:
            ops.apply(out)
        return out


@dataclass(frozen=True)
class Redirect:
    route: HttpRoute
    status: int
    location: str


@dataclass(frozen=True)
class DirectResponse:
    route: HttpRoute
    status: int
    body: bytes


@dataclass(frozen=True)
class NoRoute:
    """No route matched: 404 with flag NR (`flags.NO_ROUTE`)."""

    reply: flags.LocalReply = flags.NO_ROUTE


Decision = Forward | Redirect | DirectResponse | NoRoute


def pick_destination(destinations: Sequence[RouteDestination], rng: random.Random) -> RouteDestination:
    """Weighted random pick; weights are relative, a single destination always wins."""
    if len(destinations) == 1:
        return destinations[0]
    total = sum(d.weight for d in destinations)
    point = rng.randrange(total)
    for d in destinations:
        if point < d.weight:
            return d
        point -= d.weight
    raise AssertionError("unreachable: point < total")


def _matched_prefix(block: MatchBlock | bool, path: str) -> str:
    """The part of `path` that `rewrite.uri` replaces."""
    uri = block.uri if isinstance(block, MatchBlock) else None
    if uri is None:
        return "/"
    if uri.kind == "prefix":
        return path[: len(uri.value)]
    return path  # exact and regex matches replace the whole path


def _with_query(path: str, query: str) -> str:
    if not query:
        return path
    return f"{path}&{query}" if "?" in path else f"{path}?{query}"


def _redirect_location(rd: Mapping[str, Any], request: Request) -> str:
    host, port = split_host_port(request.authority)
    authority = rd.get("authority") or host
    a_host, a_port = split_host_port(authority)
    scheme = rd.get("scheme") or request.scheme
    if rd.get("port") is not None:
        a_port = rd["port"]
    elif rd.get("derivePort") == "FROM_REQUEST_PORT":
        a_port = port
    elif rd.get("derivePort") == "FROM_PROTOCOL_DEFAULT":
        a_port = None
    elif rd.get("authority") is None:
        a_port = port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = a_host if a_port in (None, default) else f"{a_host}:{a_port}"
    path = _with_query(rd["uri"], request.query_string) if rd.get("uri") else request.path
    return f"{scheme}://{netloc}{path}"


@dataclass(frozen=True)
class VirtualService:
    """A parsed VirtualService `spec` (HTTP part) in `namespace`.

    Shape: `{hosts: [..], gateways: [..], exportTo: [..], http: [HTTPRoute...], tcp, tls}`;
    `tcp`/`tls` are accepted and ignored (labkit's mesh is HTTP).
    """

    hosts: tuple[str, ...]
    namespace: str
    routes: tuple[HttpRoute, ...]
    gateways: tuple[str, ...] = ("mesh",)
    name: str = ""

    @classmethod
    def from_spec(cls, value: Mapping[str, Any], namespace: str = "default", name: str = "", *,
                  consistent_hash_hosts: frozenset[str] = frozenset()) -> VirtualService:
        vs = spec.mapping(value, "spec")
        spec.check_keys(vs, ("hosts", "gateways", "http", "tls", "tcp", "exportTo"), "")
        hosts = tuple(spec.string(h, spec.join("hosts", i), required=True)
                      for i, h in enumerate(spec.sequence(vs.get("hosts"), "hosts")))
        if not hosts:
            raise spec.SpecError("hosts", "at least one host is required")
        gateways = tuple(spec.string(g, spec.join("gateways", i), required=True)
                         for i, g in enumerate(spec.sequence(vs.get("gateways"), "gateways"))) or ("mesh",)
        check_hosts(hosts, for_mesh="mesh" in gateways)
        if not any(vs.get(k) for k in ("http", "tcp", "tls")):
            raise spec.SpecError("http", "http, tcp or tls routes must be provided")
        routes = tuple(HttpRoute.from_spec(r, spec.join("http", i), namespace,
                                           consistent_hash_hosts=consistent_hash_hosts)
                       for i, r in enumerate(spec.sequence(vs.get("http"), "http")))
        return cls(tuple(qualify_host(h, namespace) for h in hosts), namespace, routes, gateways, name)

    @property
    def for_sidecars(self) -> bool:
        """Sidecars only use a VirtualService bound to the reserved gateway `mesh`."""
        return "mesh" in self.gateways

    def applies_to(self, authority: str, client_namespace: str) -> bool:
        """Does a request with this Host/authority, from a sidecar in `client_namespace`, use
        this VirtualService? Hosts are compared without port, case-insensitively; `*` and
        `*.suffix` wildcards match the written host."""
        raw, _ = split_host_port(authority.strip().lower())
        fqdn, _ = resolve_authority(authority, client_namespace)
        return any(host_covers(host, name) for host in self.hosts for name in (fqdn, raw))

    def decide(self, request: Request, rng: random.Random, *,
               labels: Mapping[str, str] | None = None, namespace: str | None = None) -> Decision:
        """Route one request. `rng` draws the weighted pick and mirror sampling; `labels` and
        `namespace` are the sidecar's (for `sourceLabels`/`sourceNamespace`)."""
        for route in self.routes:
            block = route.matching_block(request, labels, namespace)
            if block is False:
                continue
            return _act(route, block, request, rng)
        return NoRoute()




def _act(route: HttpRoute, block: MatchBlock | bool, request: Request, rng: random.Random) -> Decision:
    if route.redirect is not None:
        return Redirect(route, int(route.redirect.get("redirectCode") or 301),
                        _redirect_location(route.redirect, request))
    if route.direct_response is not None:
        status, body = route.direct_response
        return DirectResponse(route, status, body)
    chosen = pick_destination(route.destinations, rng)
    old_path, query = request.path_only, request.query_string
    new_path = old_path
    if route.rewrite_uri is not None:
        prefix = _matched_prefix(block, old_path)
        new_path = route.rewrite_uri + old_path[len(prefix):]
    elif route.rewrite_regex is not None:
        pattern, replacement = route.rewrite_regex
        new_path = pattern.sub(replacement, old_path)
    route_authority = route.rewrite_authority or route.request_headers.authority()
    authority = route_authority or chosen.request_headers.authority() or request.authority
    # istiod folds a lone destination's header ops into the route, after the route's own; with
    # several, they stay on Envoy's weighted cluster, which Envoy applies before the route's.
    if sum(1 for d in route.destinations if d.weight > 0) <= 1:
        request_ops = (route.request_headers, chosen.request_headers)
        response_ops = (route.response_headers, chosen.response_headers)
    else:
        request_ops = (chosen.request_headers, route.request_headers)
        response_ops = (chosen.response_headers, route.response_headers)
    mirrors = tuple(m.destination for m in route.mirrors if spec.sample(rng, m.fraction))
    return Forward(
        route=route,
        destination=chosen.destination,
        path=_with_query(new_path, query),
        authority=authority,
        original_path=request.path if new_path != old_path else None,
        request_ops=request_ops,
        response_ops=response_ops,
        mirrors=mirrors,
    )
