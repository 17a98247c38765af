"""PeerAuthentication modes and AuthorizationPolicy decisions (labkit.mesh.authz)."""

from __future__ import annotations

from typing import Any

import pytest

from labkit.mesh import flags
from labkit.mesh.authz import (
    AuthorizationPolicy,
    AuthzRequest,
    PeerAuthentication,
    admits,
    authorize,
    effective_mtls_mode,
    normalize_path,
    principal_namespace,
)
from labkit.mesh.spec import SpecError

HTTPBIN = {"app": "httpbin", "version": "v1"}
CURL = "cluster.local/ns/foo/sa/curl"


# --- PeerAuthentication ------------------------------------------------------------------------

def pa(namespace, name, spec, created=0.0):
    return PeerAuthentication.from_spec(spec, namespace, name, created)


def mode(policies, namespace="foo", labels=HTTPBIN, port=None):
    return effective_mtls_mode(policies, namespace, labels, port)


def test_default_is_permissive():
    assert mode([]) == "PERMISSIVE"


@pytest.mark.parametrize("policies, expected", [
    ([pa("istio-system", "mesh", {"mtls": {"mode": "STRICT"}})], "STRICT"),
    ([pa("istio-system", "mesh", {"mtls": {"mode": "STRICT"}}),
      pa("foo", "ns", {"mtls": {"mode": "PERMISSIVE"}})], "PERMISSIVE"),           # namespace beats mesh
    ([pa("foo", "ns", {"mtls": {"mode": "STRICT"}}),
      pa("foo", "wl", {"selector": {"matchLabels": {"app": "httpbin"}}, "mtls": {"mode": "DISABLE"}})],
     "DISABLE"),                                                                    # workload beats namespace
    ([pa("foo", "ns", {"mtls": {"mode": "STRICT"}}),
      pa("foo", "wl", {"selector": {"matchLabels": {"app": "other"}}, "mtls": {"mode": "DISABLE"}})],
     "STRICT"),                                                                     # selector does not match
    ([pa("bar", "ns", {"mtls": {"mode": "STRICT"}})], "PERMISSIVE"),               # other namespace
    ([pa("istio-system", "mesh", {"mtls": {"mode": "STRICT"}}),
      pa("foo", "ns", {"mtls": {"mode": "UNSET"}})], "STRICT"),                     # UNSET inherits
    ([pa("istio-system", "mesh", {"mtls": {"mode": "STRICT"}}), pa("foo", "ns", {})], "STRICT"),
    ([pa("istio-system", "sel", {"selector": {"matchLabels": {"app": "httpbin"}}, "mtls": {"mode": "STRICT"}})],
     "PERMISSIVE"),                                                                 # root-ns selector ignored
    ([pa("foo", "new", {"mtls": {"mode": "STRICT"}}, created=2.0),
      pa("foo", "old", {"mtls": {"mode": "DISABLE"}}, created=1.0)], "DISABLE"),    # oldest wins
    ([pa("foo", "b", {"mtls": {"mode": "STRICT"}}, created=1.0),
      pa("foo", "a", {"mtls": {"mode": "DISABLE"}}, created=1.0)], "DISABLE"),      # tie: by name
])
def test_precedence(policies, expected):
    assert mode(policies) == expected


def test_port_level_mtls_uses_container_port():
    policies = [pa("foo", "ns", {"mtls": {"mode": "STRICT"}}),
                pa("foo", "wl", {"selector": {"matchLabels": {"app": "httpbin"}},
                                 "mtls": {"mode": "UNSET"}, "portLevelMtls": {8080: {"mode": "DISABLE"}}})]
    assert mode(policies, port=8080) == "DISABLE"
    assert mode(policies, port=9090) == "STRICT"        # other ports inherit
    assert mode(policies) == "STRICT"


@pytest.mark.parametrize("mode, mutual_tls, accepted", [
    ("STRICT", True, True), ("STRICT", False, False),        # plaintext to STRICT: reset, no status
    ("PERMISSIVE", True, True), ("PERMISSIVE", False, True),
    ("DISABLE", False, True), ("DISABLE", True, False),
])
def test_admits(mode, mutual_tls, accepted):
    assert admits(mode, mutual_tls) is accepted


def test_admits_needs_a_resolved_mode():
    with pytest.raises(ValueError, match="UNSET"):
        admits("UNSET", True)


def test_root_namespace_is_configurable():
    policies = [pa("mesh-root", "m", {"mtls": {"mode": "STRICT"}})]
    assert effective_mtls_mode(policies, "foo", {}, root_namespace="mesh-root") == "STRICT"
    assert effective_mtls_mode(policies, "foo", {}) == "PERMISSIVE"


@pytest.mark.parametrize("spec, message", [
    ({"mtls": {"mode": "MUTUAL"}}, r"^mtls\.mode: must be one of STRICT, PERMISSIVE, DISABLE, UNSET"),
    ({"portLevelMtls": {8080: {"mode": "STRICT"}}}, r"^portLevelMtls: requires a workload selector"),
    ({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"http": {"mode": "STRICT"}}},
     r"^portLevelMtls\.http: port must be 1-65535"),
    ({"mtls": "STRICT"}, r"^mtls: must be a mapping"),
    ({"mTLS": {"mode": "STRICT"}}, r"^mTLS: unknown field"),
    ({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {}}, r"^portLevelMtls: if set, must have at least one"),
    ({"portLevelMtls": {8080: {"mode": "STRICT"}}, "selector": {"matchLabels": {}}}, r"^portLevelMtls: requires a workload selector"),
])
def test_bad_peer_authentication(spec, message):
    with pytest.raises(SpecError, match=message):
        PeerAuthentication.from_spec(spec, "foo", "x")


# --- AuthorizationPolicy: evaluation order ---------------------------------------------------------

def ap(spec, namespace="foo", name="p", **kw):
    return AuthorizationPolicy.from_spec(spec, namespace, name, **kw)


def decide(policies, request=None, namespace="foo", labels=HTTPBIN, **kw):
    return authorize(policies, namespace, labels, request or AuthzRequest(principal=CURL), **kw)


def test_no_policy_allows():
    assert decide([]).allowed


def test_allow_nothing_denies_everything():
    d = decide([ap({})])
    assert not d.allowed
    assert d.reply == flags.RBAC_DENIED and d.reply.body == "RBAC: access denied" and d.reply.flags == ()
    assert d.details == "rbac_access_denied_matched_policy[none]"


def test_allow_all_with_empty_rule():
    assert decide([ap({"rules": [{}]})]).allowed


def test_deny_all_overrides_allow():
    d = decide([ap({"rules": [{}]}, name="allow-all"), ap({"action": "DENY", "rules": [{}]}, name="deny-all")])
    assert not d.allowed and d.details == "rbac_access_denied_matched_policy[ns[foo]-policy[deny-all]-rule[0]]"


@pytest.mark.parametrize("action", ["DENY", "CUSTOM"])
def test_deny_or_custom_without_rules_is_rejected_as_istiod_does(action):
    extra = {"provider": {"name": "ext"}} if action == "CUSTOM" else {}
    rules: dict[str, list[Any]]
    for rules in ({}, {"rules": []}):
        with pytest.raises(SpecError, match=r"^rules: a .* policy without rules never triggers"):
            ap({"action": action, **rules, **extra})


def test_empty_match_labels_means_no_selector():
    assert ap({"selector": {"matchLabels": {}}}).selector is None
    assert not decide([ap({"selector": {}})], labels={"app": "anything"}).allowed
    assert PeerAuthentication.from_spec({"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}, "foo", "x"
                                        ).selector is None


def test_allow_policy_present_but_not_matching_denies():
    policy = ap({"rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]})
    assert decide([policy], AuthzRequest(method="POST")).allowed
    assert not decide([policy], AuthzRequest(method="GET")).allowed


def test_audit_never_changes_the_decision():
    audit = ap({"action": "AUDIT", "rules": [{}]}, name="audit")
    d = decide([audit])
    assert d.allowed and d.audited
    d = decide([audit, ap({})])
    assert not d.allowed and d.audited


def test_deny_match_beats_allow_match():
    # Istio's authz-deny task: GET /ip with x-token: guest is denied although /ip is allowed.
    allow = ap({"rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]}, name="allow-ip")
    deny = ap({"action": "DENY", "rules": [{"when": [{"key": "request.headers[x-token]", "values": ["guest"]}]}]},
              name="deny-guest")
    assert not decide([allow, deny], AuthzRequest(path="/ip", headers={"x-token": "guest"})).allowed
    assert decide([allow, deny], AuthzRequest(path="/ip", headers={"x-token": "admin"})).allowed


def test_custom_policy_asks_the_provider_first():
    custom = ap({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]})
    allow_all = ap({"rules": [{}]}, name="allow")
    calls = []

    def ext_authz(provider, request):
        calls.append((provider, request.path))
        return request.headers.get("x-ok") == "1"

    d = decide([custom, allow_all], AuthzRequest(path="/admin/x"), ext_authz=ext_authz)
    assert not d.allowed and d.reply.flags == ("UAEX",) and calls == [("ext", "/admin/x")]
    assert decide([custom, allow_all], AuthzRequest(path="/admin/x", headers={"x-ok": "1"}), ext_authz=ext_authz).allowed
    assert decide([custom], AuthzRequest(path="/public"), ext_authz=ext_authz).allowed
    assert not decide([custom], AuthzRequest(path="/admin")).allowed      # no provider wired: fail closed


def test_dry_run_policies_are_not_enforced():
    assert decide([ap({}, dry_run=True)]).allowed
    with pytest.raises(SpecError, match="dry-run annotation only supports ALLOW and DENY"):
        ap({"action": "AUDIT", "rules": [{}]}, dry_run=True)


@pytest.mark.parametrize("policy_ns, selector, workload_ns, labels, applies", [
    ("foo", None, "foo", HTTPBIN, True),
    ("foo", {"app": "httpbin"}, "foo", HTTPBIN, True),
    ("foo", {"app": "other"}, "foo", HTTPBIN, False),
    ("bar", None, "foo", HTTPBIN, False),
    ("istio-system", None, "foo", HTTPBIN, True),                  # root namespace: mesh-wide
    ("istio-system", {"app": "httpbin"}, "anywhere", HTTPBIN, True),
    ("istio-system", {"app": "httpbin"}, "anywhere", {"app": "x"}, False),
])
def test_policy_scope(policy_ns, selector, workload_ns, labels, applies):
    spec = {} if selector is None else {"selector": {"matchLabels": selector}}
    policy = ap(spec, namespace=policy_ns)
    assert decide([policy], namespace=workload_ns, labels=labels).allowed is (not applies)


# --- AuthorizationPolicy: matching ------------------------------------------------------------------

def allowed_by(rule, request) -> bool:
    return decide([ap({"rules": [rule]})], request).allowed


def src(**fields):
    return {"from": [{"source": fields}]}


def op(**fields):
    return {"to": [{"operation": fields}]}


@pytest.mark.parametrize("rule, request_kw, allowed", [
    (src(principals=[CURL]), {"principal": "spiffe://" + CURL}, True),      # spiffe:// stripped
    (src(principals=[CURL]), {"principal": "cluster.local/ns/foo/sa/other"}, False),
    (src(principals=["cluster.local/ns/foo/*"]), {"principal": CURL}, True),   # prefix
    (src(principals=["*/sa/curl"]), {"principal": CURL}, True),                # suffix
    (src(principals=["*"]), {"principal": CURL}, True),                        # any authenticated
    (src(principals=["*"]), {}, False),                                        # plaintext: no principal
    (src(notPrincipals=["*"]), {}, True),                                      # "not authenticated"
    (src(notPrincipals=[CURL]), {"principal": CURL}, False),
    (src(namespaces=["foo"]), {"principal": CURL}, True),
    (src(namespaces=["foo"]), {}, False),
    (src(notNamespaces=["foo"]), {"principal": CURL}, False),
    (src(namespaces=["f*"]), {"principal": CURL}, True),
    (src(serviceAccounts=["foo/curl"]), {"principal": CURL}, True),
    (src(ipBlocks=["10.0.0.0/8"]), {"source_ip": "10.1.2.3"}, True),
    (src(ipBlocks=["10.0.0.0/8"]), {"source_ip": "192.168.0.1"}, False),
    (src(notIpBlocks=["10.0.0.1"]), {"source_ip": "10.0.0.1"}, False),
    (src(principals=[CURL], namespaces=["bar"]), {"principal": CURL}, False),  # fields AND-ed
    ({"from": [{"source": {"namespaces": ["bar"]}}, {"source": {"namespaces": ["foo"]}}]},
     {"principal": CURL}, True),                                               # sources OR-ed
    (op(methods=["GET"]), {"method": "GET"}, True),
    (op(methods=["GET"]), {"method": "get"}, False),                           # methods exact
    (op(methods=["GET", "HEAD"]), {"method": "HEAD"}, True),
    (op(notMethods=["DELETE"]), {"method": "DELETE"}, False),
    (op(paths=["/headers"]), {"path": "/headers?x=1"}, True),                  # query ignored
    (op(paths=["/headers"]), {"path": "/headers/"}, False),
    (op(paths=["/api/*"]), {"path": "/api/v1"}, True),
    (op(paths=["/api/*"]), {"path": "/apiv1"}, False),
    (op(paths=["*.html"]), {"path": "/index.html"}, True),
    (op(paths=["*"]), {"path": "/"}, True),
    (op(paths=["/admin"]), {"path": "/public/../admin"}, True),                # normalised
    (op(paths=["/admin"]), {"path": "/%61dmin"}, True),
    (op(notPaths=["/admin*"]), {"path": "/x/../admin/users"}, False),
    (op(paths=["/store/{*}/items"]), {"path": "/store/42/items"}, True),
    (op(paths=["/store/{*}/items"]), {"path": "/store/4/2/items"}, False),
    (op(paths=["/store/{**}"]), {"path": "/store/4/2/items"}, True),
    (op(hosts=["HTTPBIN.foo*"]), {"host": "httpbin.foo.svc.cluster.local"}, True),  # case-insensitive
    (op(ports=["8080"]), {"port": 8080}, True),
    (op(ports=["8080"]), {"port": 9090}, False),
    (op(methods=["GET"], paths=["/ip"]), {"method": "GET", "path": "/headers"}, False),
    ({**src(namespaces=["foo"]), **op(methods=["GET"])}, {"principal": CURL, "method": "GET"}, True),
    ({**src(namespaces=["foo"]), **op(methods=["GET"])}, {"principal": CURL, "method": "POST"}, False),
])
def test_rule_matching(rule, request_kw, allowed):
    assert allowed_by(rule, AuthzRequest(**request_kw)) is allowed


@pytest.mark.parametrize("condition, request_kw, allowed", [
    ({"key": "request.headers[version]", "values": ["v1", "v2"]}, {"headers": {"version": "v2"}}, True),
    ({"key": "request.headers[Version]", "values": ["v1"]}, {"headers": {"version": "v1"}}, True),
    ({"key": "request.headers[version]", "values": ["v1"]}, {}, False),
    ({"key": "request.headers[version]", "notValues": ["v1"]}, {}, True),     # missing != value
    ({"key": "request.headers[version]", "notValues": ["v1"]}, {"headers": {"version": "v1"}}, False),
    ({"key": "request.headers[x-token]", "values": ["*"]}, {"headers": {"x-token": ""}}, False),
    ({"key": "source.namespace", "values": ["foo"]}, {"principal": CURL}, True),
    ({"key": "source.principal", "values": [CURL]}, {"principal": CURL}, True),
    ({"key": "source.ip", "values": ["10.0.0.0/24"]}, {"source_ip": "10.0.0.9"}, True),
    ({"key": "destination.port", "values": ["8000"]}, {"port": 8000}, True),
    ({"key": "request.auth.claims[groups]", "values": ["admin"]}, {}, False),  # no JWT in labkit
])
def test_when_conditions(condition, request_kw, allowed):
    assert allowed_by({"when": [condition]}, AuthzRequest(**request_kw)) is allowed


def test_all_when_conditions_must_hold():
    rule = {"when": [{"key": "request.headers[a]", "values": ["1"]}, {"key": "request.headers[b]", "values": ["2"]}]}
    assert allowed_by(rule, AuthzRequest(headers={"a": "1", "b": "2"}))
    assert not allowed_by(rule, AuthzRequest(headers={"a": "1"}))


@pytest.mark.parametrize("spec, message", [
    ({"action": "REJECT"}, r"^action: must be one of ALLOW, DENY, AUDIT, CUSTOM"),
    ({"action": "CUSTOM", "rules": [{}]}, r"^provider: a CUSTOM policy needs provider\.name"),
    ({"action": "DENY", "provider": {"name": "x"}}, r"^provider: only CUSTOM policies take a provider"),
    ({"rules": [{"from": [{"source": {}}]}]}, r"^rules\[0\]\.from\[0\]\.source: `source` must not be empty"),
    ({"rules": [{"to": [{}]}]}, r"^rules\[0\]\.to\[0\]\.operation: `operation` must not be empty"),
    ({"rules": [{"to": [{"operation": {"method": ["GET"]}}]}]}, r"^rules\[0\]\.to\[0\]\.operation\.method: unknown field"),
    ({"rules": [{"when": [{"key": "request.header[x]", "values": ["1"]}]}]},
     r"^rules\[0\]\.when\[0\]\.key: unknown condition key 'request\.header\[x\]'"),
    ({"rules": [{"when": [{"key": "source.ip"}]}]}, r"^rules\[0\]\.when\[0\]: condition 'source\.ip' needs values"),
    ({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]},
     r"^rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: not an IP address or CIDR block"),
    ({"rules": [{"from": [{"source": {"principals": "x"}}]}]}, r"^rules\[0\]\.from\[0\]\.source\.principals: must be a list"),
    ({"rules": {}}, r"^rules: must be a list"),
    ({"rules": [{"from": []}]}, r"^rules\[0\]\.from: `from` must not be empty"),
    ({"rules": [{"to": []}]}, r"^rules\[0\]\.to: `to` must not be empty"),
    ({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}, r"^rules\[0\]\.to\[0\]\.operation\.ports\[0\]: not a port number"),
    ({"rules": [{"to": [{"operation": {"paths": [""]}}]}]}, r"^rules\[0\]\.to\[0\]\.operation\.paths\[0\]: must not be empty"),
    ({"rules": [{"when": [{"key": "source.ip", "values": ["somewhere"]}]}]},
     r"^rules\[0\]\.when\[0\]\.values\[0\]: not an IP address or CIDR block"),
    ({"rules": [{"when": [{"key": "destination.port", "notValues": ["99999"]}]}]},
     r"^rules\[0\]\.when\[0\]\.notValues\[0\]: not a port number"),
    ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]},
     r"^rules\[0\]: from\.source\.namespaces .* not supported with CUSTOM"),
    ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{"when": [{"key": "source.principal", "values": ["x"]}]}]},
     r"^rules\[0\]: when key 'source\.principal' is not supported with CUSTOM"),
    ({"selector": {"matchLabels": {"app": "http*"}}}, r"^selector\.matchLabels\.app: empty keys and wildcards"),
])
def test_bad_authorization_policies(spec, message):
    with pytest.raises(SpecError, match=message):
        ap(spec)


@pytest.mark.parametrize("target, expected", [
    ("/a/b?x=1", "/a/b"),
    ("/a/./b", "/a/b"),
    ("/a/../b", "/b"),
    ("/../b", "/b"),
    ("/a/b/..", "/a/"),
    ("\\a\\b", "/a/b"),
    ("/%41%2e%7e", "/A.~"),
    ("/a%2Fb", "/a%2Fb"),      # %2F is not decoded by default
    ("/a%00", None),            # rejected with 400
    ("relative", None),
])
def test_normalize_path(target, expected):
    assert normalize_path(target) == expected


def test_principal_namespace():
    assert principal_namespace(CURL) == "foo"
    assert principal_namespace(None) is None
    assert AuthzRequest(principal=CURL).service_account == "foo/curl"
    assert AuthzRequest(principal=CURL).trust_domain == "cluster.local"
