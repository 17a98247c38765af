"""VirtualService routing decisions (labkit.mesh.routing) against Istio's documented behaviour."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter

import pytest

from labkit.mesh import flags
from labkit.mesh.hosts import (
    qualify_host,
    resolve_authority,
    shadow_authority,
    split_host_port,
)
from labkit.mesh.routing import (
    Decision,
    DirectResponse,
    Forward,
    HeaderOps,
    NoRoute,
    Redirect,
    Request,
    StringMatch,
    VirtualService,
)
from labkit.mesh.spec import SpecError


def vs(*routes, hosts=("httpbin",), namespace="default", **kw) -> VirtualService:
    return VirtualService.from_spec({"hosts": list(hosts), "http": list(routes)}, namespace, **kw)


def to(host="httpbin", subset=None, weight=None, **extra):
    dest = {"host": host}
    if subset:
        dest["subset"] = subset
    out = {"destination": dest, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def req(path="/", method="GET", headers=None, authority="httpbin:8000", **kw) -> Request:
    return Request(method, path, authority, headers or {}, **kw)


def routed_subset(service: VirtualService, request: Request, seed=0):
    decision = service.decide(request, random.Random(seed))
    return decision.destination.subset if isinstance(decision, Forward) else decision



def forward(decision: Decision) -> Forward:
    """The decision a test expects to forward the request (anything else fails it)."""
    assert isinstance(decision, Forward), decision
    return decision

# --- StringMatch ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec, value, expected", [
    ({"exact": "/foo"}, "/foo", True),
    ({"exact": "/foo"}, "/foo/", False),
    ({"exact": "/foo"}, "/FOO", False),
    ({"prefix": "/foo"}, "/foobar", True),       # plain string prefix, not segment-aware
    ({"prefix": "/foo"}, "/fo", False),
    ({"regex": "/fo+"}, "/fooo", True),
    ({"regex": "/fo+"}, "/fooo/bar", False),      # RE2 full match, not search
    ({"regex": r"\d+$"}, "123", True),
    ({"regex": r"\d+$"}, "a123", False),          # the proto's own example
    ({"regex": "(?i)/FOO"}, "/foo", True),
    ({}, "", True),                                # presence
    ({"regex": "*"}, "anything", True),            # presence form
    ({"exact": "x"}, None, False),
    ({}, None, False),
])
def test_string_match(spec, value, expected):
    assert StringMatch.from_spec(spec, "m").matches(value) is expected


@pytest.mark.parametrize("spec, message", [
    ({"exact": "a", "prefix": "b"}, "m: set exactly one of exact, prefix, regex"),
    ({"regex": "(?=a)b"}, "m.regex: regex '(?=a)b' uses look-around"),
    ({"regex": r"(a)\1"}, "m.regex: regex '(a)\\\\1' uses look-around or a backreference"),
    ({"regex": "(unclosed"}, "m.regex: invalid regex"),
    ({"exakt": "a"}, "m.exakt: unknown field"),
    ({"exact": 5}, "m.exact: must be a string"),
])
def test_string_match_errors(spec, message):
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        StringMatch.from_spec(spec, "m")


# --- URI matching and route order ------------------------------------------------------------

@pytest.mark.parametrize("uri, path, matched", [
    ({"exact": "/foo"}, "/foo?key=value", True),     # exact ignores the query string
    ({"exact": "/foo"}, "/foo/bar", False),
    ({"prefix": "/foo"}, "/foobar?x=1", True),
    ({"prefix": "/foo/"}, "/foo", False),
    ({"regex": "/v[0-9]+/.*"}, "/v12/items?x", True),
    ({"regex": "/v[0-9]+"}, "/v12/items", False),
])
def test_uri_match(uri, path, matched):
    service = vs({"match": [{"uri": uri}], "route": [to(subset="a")]})
    result = routed_subset(service, req(path))
    assert (result == "a") is matched
    if not matched:
        assert isinstance(result, NoRoute)


@pytest.mark.parametrize("path, expected", [("/FOO/x", "a"), ("/Foo", "a"), ("/bar", None)])
def test_ignore_uri_case_applies_to_prefix(path, expected):
    service = vs({"match": [{"uri": {"prefix": "/foo"}, "ignoreUriCase": True}], "route": [to(subset="a")]})
    result = routed_subset(service, req(path))
    assert result == expected if expected else isinstance(result, NoRoute)


def test_ignore_uri_case_does_not_apply_to_regex():
    service = vs({"match": [{"uri": {"regex": "/foo"}, "ignoreUriCase": True}], "route": [to(subset="a")]})
    assert isinstance(service.decide(req("/FOO"), random.Random(0)), NoRoute)


def test_first_matching_route_wins_even_if_a_later_one_is_more_specific():
    service = vs(
        {"match": [{"uri": {"prefix": "/"}}], "route": [to(subset="catch-all")]},
        {"match": [{"uri": {"exact": "/specific"}}], "route": [to(subset="specific")]},
    )
    assert routed_subset(service, req("/specific")) == "catch-all"


def test_route_without_match_matches_everything():
    service = vs({"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to(subset="v2")]},
                 {"route": [to(subset="v1")]})
    assert routed_subset(service, req("/anything", headers={"end-user": "jason"})) == "v2"
    assert routed_subset(service, req("/anything", headers={"end-user": "Jason"})) == "v1"


def test_no_match_is_404_with_flag_nr_and_empty_body():
    service = vs({"match": [{"uri": {"exact": "/only"}}], "route": [to()]})
    decision = service.decide(req("/other"), random.Random(0))
    assert isinstance(decision, NoRoute)
    assert (decision.reply.status, decision.reply.body, decision.reply.response_flags) == (404, "", "NR")


def test_match_blocks_are_ored_and_conditions_anded():
    service = vs({"match": [
        {"uri": {"prefix": "/a"}, "method": {"exact": "POST"}},
        {"headers": {"x-test": {"exact": "1"}}},
    ], "route": [to(subset="hit")]})
    cases = [
        (req("/a", "POST"), True),
        (req("/a", "GET"), False),                      # AND inside the first block
        (req("/b", "GET", {"x-test": "1"}), True),     # OR across blocks
        (req("/b", "GET", {"x-test": "2"}), False),
    ]
    for request, hit in cases:
        assert (routed_subset(service, request) == "hit") is hit, request


# --- headers, withoutHeaders, query params, other attributes ---------------------------------

@pytest.mark.parametrize("match, headers, hit", [
    ({"end-user": {"exact": "jason"}}, {"end-user": "jason"}, True),
    ({"end-user": {"exact": "jason"}}, {"end-user": "JASON"}, False),   # values case-sensitive
    ({"End-User": {"exact": "jason"}}, {"end-user": "jason"}, True),     # names are lower-cased
    ({"end-user": {"prefix": "ja"}}, {"end-user": "jason"}, True),
    ({"end-user": {"regex": "j.*n"}}, {"end-user": "jason"}, True),
    ({"end-user": {"regex": "j.*"}}, {"end-user": "xjason"}, False),
    ({"end-user": {}}, {"end-user": ""}, True),                          # presence, empty value
    ({"end-user": {}}, {}, False),
    ({"end-user": {"regex": "*"}}, {"end-user": "x"}, True),
    ({"end-user": {"exact": ""}}, {}, False),
    ({"uri": {"exact": "/nope"}}, {}, True),                            # ignored key
    ({":method": {"exact": "GET"}}, {}, True),                         # pseudo-header
    ({":authority": {"prefix": "httpbin"}}, {}, True),
])
def test_header_match(match, headers, hit):
    service = vs({"match": [{"headers": match}], "route": [to(subset="hit")]})
    assert (routed_subset(service, req("/", headers=headers)) == "hit") is hit


@pytest.mark.parametrize("without, headers, hit", [
    ({"end-user": {"exact": "jason"}}, {}, True),                # missing header = empty value
    ({"end-user": {"exact": "jason"}}, {"end-user": "jason"}, False),
    ({"end-user": {"exact": "jason"}}, {"end-user": "mary"}, True),
    ({"end-user": {"exact": ""}}, {}, False),                    # missing counts as "" here
    ({"end-user": {}}, {}, True),                                # presence form: missing matches
    ({"end-user": {}}, {"end-user": ""}, False),                 # ...an empty header does not
    ({"end-user": {"prefix": "ja"}}, {"end-user": "jack"}, False),
])
def test_without_headers(without, headers, hit):
    service = vs({"match": [{"withoutHeaders": without}], "route": [to(subset="hit")]})
    assert (routed_subset(service, req("/", headers=headers)) == "hit") is hit


@pytest.mark.parametrize("query, path, hit", [
    ({"key": {"exact": "true"}}, "/?key=true", True),
    ({"key": {"exact": "true"}}, "/?key=True", False),
    ({"key": {"exact": ""}}, "/?key", True),
    ({"key": {"exact": ""}}, "/", False),
    ({"key": {"regex": r"\d+$"}}, "/?key=123", True),
    ({"key": {"regex": r"\d+$"}}, "/?key=a123", False),
    ({"key": {}}, "/?key=anything", True),
    ({"key": {}}, "/?other=1", False),
    ({"a": {"exact": "1"}, "b": {"exact": "2"}}, "/?b=2&a=1", True),
    ({"a": {"exact": "1"}, "b": {"exact": "2"}}, "/?a=1", False),
])
def test_query_params(query, path, hit):
    service = vs({"match": [{"queryParams": query}], "route": [to(subset="hit")]})
    assert (routed_subset(service, req(path)) == "hit") is hit


def test_query_param_prefix_is_rejected():
    with pytest.raises(SpecError, match=r"^http\[0\]\.match\[0\]\.queryParams\.key\.prefix: "):
        vs({"match": [{"queryParams": {"key": {"prefix": "a"}}}], "route": [to()]})


@pytest.mark.parametrize("match, request_kw, hit", [
    ({"method": {"exact": "POST"}}, {"method": "POST"}, True),
    ({"method": {"exact": "POST"}}, {"method": "post"}, False),
    ({"authority": {"exact": "httpbin:8000"}}, {}, True),
    ({"authority": {"prefix": "other"}}, {}, False),
    ({"scheme": {"exact": "https"}}, {"scheme": "https"}, True),
    ({"scheme": {"exact": "https"}}, {}, False),
    ({"port": 8000}, {"port": 8000}, True),
    ({"port": 8000}, {"port": 9000}, False),
])
def test_other_attributes(match, request_kw, hit):
    service = vs({"match": [match], "route": [to(subset="hit")]})
    kw = {"method": "GET", **request_kw}
    request = req("/", kw.pop("method"), **kw)
    assert (routed_subset(service, request) == "hit") is hit


def test_source_labels_and_namespace_select_sidecars_not_requests():
    service = vs({"match": [{"sourceLabels": {"app": "reviews"}, "sourceNamespace": "default"}],
                  "route": [to(subset="special")]},
                 {"route": [to(subset="normal")]})
    rng = random.Random(0)
    assert forward(service.decide(req(), rng, labels={"app": "reviews", "v": "1"}, namespace="default"
                          )).destination.subset == "special"
    assert forward(service.decide(req(), rng, labels={"app": "productpage"}, namespace="default"
                          )).destination.subset == "normal"
    assert forward(service.decide(req(), rng, labels={"app": "reviews"}, namespace="other"
                          )).destination.subset == "normal"


# --- weights ---------------------------------------------------------------------------------

def pick_counts(service: VirtualService, n: int, seed: int = 7) -> Counter:
    rng = random.Random(seed)
    return Counter(forward(service.decide(req(), rng)).destination.subset for _ in range(n))


@pytest.mark.parametrize("weights, expected", [
    ((90, 10), (0.9, 0.1)),
    ((50, 50), (0.5, 0.5)),
    ((1, 3), (0.25, 0.75)),         # relative: need not sum to 100
    ((3, 0, 1), (0.75, 0.0, 0.25)),  # zero weight gets nothing
    ((200, 100, 100), (0.5, 0.25, 0.25)),
])
def test_weights_are_relative_and_random(weights, expected):
    names = [f"v{i}" for i in range(len(weights))]
    service = vs({"route": [to(subset=n, weight=w) for n, w in zip(names, weights)]})
    n = 4000
    counts = pick_counts(service, n)
    for name, share in zip(names, expected):
        assert abs(counts[name] / n - share) < 0.04, (name, counts)
    if 0 in weights:
        assert counts[names[weights.index(0)]] == 0


def test_weighted_pick_is_not_round_robin():
    service = vs({"route": [to(subset="a", weight=50), to(subset="b", weight=50)]})
    rng = random.Random(3)
    seq = [forward(service.decide(req(), rng)).destination.subset for _ in range(200)]
    longest_run = max(len(list(run)) for _, run in itertools.groupby(seq))
    assert longest_run >= 3  # round robin would alternate a, b, a, b


@pytest.mark.parametrize("weight", [None, 0, 7, 100])
def test_single_destination_gets_everything_whatever_its_weight(weight):
    service = vs({"route": [to(subset="only", weight=weight)]})
    assert pick_counts(service, 50) == Counter({"only": 50})


def test_same_seed_same_sequence():
    service = vs({"route": [to(subset="a", weight=1), to(subset="b", weight=1)]})
    assert pick_counts(service, 100, seed=5) == pick_counts(service, 100, seed=5)
    rng1, rng2 = random.Random(11), random.Random(11)
    assert [forward(service.decide(req(), rng1)).destination.subset for _ in range(30)] == \
           [forward(service.decide(req(), rng2)).destination.subset for _ in range(30)]


@pytest.mark.parametrize("route, message", [
    ([to(subset="a", weight=10), to(subset="b", weight=-5)], r"^http\[0\]\.route\[1\]\.weight: must be >= 0, got -5$"),
    ([to(subset="a", weight=0), to(subset="b", weight=0)], r"^http\[0\]\.route: total weight"),
    ([to(subset="a"), to(subset="b")], r"^http\[0\]\.route: total weight"),
    ([{"weight": 10}], r"^http\[0\]\.route\[0\]\.destination: is required"),
    ([{"destination": {"host": ""}}], r"^http\[0\]\.route\[0\]\.destination\.host: must not be empty"),
    ([{"destination": {"host": "a", "port": {"number": 70000}}}],
     r"^http\[0\]\.route\[0\]\.destination\.port\.number: must be <= 65535"),
    ([{"destination": {"host": "a"}, "weigth": 1}], r"^http\[0\]\.route\[0\]\.weigth: unknown field"),
])
def test_bad_destinations(route, message):
    with pytest.raises(SpecError, match=message):
        vs({"route": route})


def test_weights_summing_to_other_than_100_are_accepted():
    service = vs({"route": [to(subset="a", weight=30), to(subset="b", weight=30)]})
    assert set(pick_counts(service, 100)) == {"a", "b"}


# --- destination, host names ------------------------------------------------------------------

def test_destination_short_name_resolves_in_the_virtualservice_namespace():
    service = vs({"route": [{"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}}]},
                 namespace="bookinfo")
    d = forward(service.decide(req(), random.Random(0))).destination
    assert (d.host, d.subset, d.port) == ("reviews.bookinfo.svc.cluster.local", "v2", 9080)
    assert d.cluster_name() == "outbound|9080|v2|reviews.bookinfo.svc.cluster.local"


@pytest.mark.parametrize("authority, ns, expected", [
    ("httpbin", "default", ("httpbin.default.svc.cluster.local", None)),
    ("httpbin:8000", "default", ("httpbin.default.svc.cluster.local", 8000)),
    ("HTTPBIN:8000", "foo", ("httpbin.foo.svc.cluster.local", 8000)),
    ("httpbin.bar", "foo", ("httpbin.bar.svc.cluster.local", None)),
    ("httpbin.bar.svc:80", "foo", ("httpbin.bar.svc.cluster.local", 80)),
    ("httpbin.bar.svc.cluster.local:8000", "foo", ("httpbin.bar.svc.cluster.local", 8000)),
    ("www.example.com", "foo", ("www.example.com", None)),
])
def test_resolve_authority(authority, ns, expected):
    assert resolve_authority(authority, ns) == expected


@pytest.mark.parametrize("authority, expected", [
    ("example.com", ("example.com", None)),                           # not a service: as written
    ("httpbin.bar:8000", ("httpbin.bar.svc.cluster.local", 8000)),
    ("httpbin", ("httpbin.foo.svc.cluster.local", None)),
    ("unknown", ("unknown", None)),
])
def test_resolve_authority_against_known_services(authority, expected):
    services = {"httpbin.bar.svc.cluster.local", "httpbin.foo.svc.cluster.local"}
    assert resolve_authority(authority, "foo", services) == expected


@pytest.mark.parametrize("authority, expected", [
    ("a:80", ("a", 80)), ("a", ("a", None)), ("[::1]:8080", ("::1", 8080)), ("[::1]", ("::1", None)),
])
def test_split_host_port(authority, expected):
    assert split_host_port(authority) == expected


@pytest.mark.parametrize("hosts, vs_ns, authority, client_ns, applies", [
    (["httpbin"], "default", "httpbin:8000", "default", True),
    (["httpbin"], "default", "httpbin.default.svc.cluster.local:8000", "other", True),
    (["httpbin"], "default", "httpbin", "other", False),   # short name from another namespace
    (["httpbin"], "foo", "httpbin", "default", False),     # VS short name resolves in VS namespace
    (["httpbin.default.svc.cluster.local"], "foo", "httpbin", "default", True),
    (["httpbin"], "default", "httpbin.default", "x", True),
    (["*.example.com"], "default", "api.example.com:443", "x", True),
    (["*.example.com"], "default", "example.com", "x", False),
])
def test_virtualservice_host_matching(hosts, vs_ns, authority, client_ns, applies):
    service = vs({"route": [to()]}, hosts=hosts, namespace=vs_ns)
    assert service.applies_to(authority, client_ns) is applies


def test_catch_all_host_is_for_gateways_only():
    gateway_vs = VirtualService.from_spec({"hosts": ["*"], "gateways": ["ingress"], "http": [{"route": [to()]}]})
    assert gateway_vs.applies_to("anything:80", "x")
    with pytest.raises(SpecError, match=r"^hosts\[0\]: wildcard host \* is not allowed"):
        vs({"route": [to()]}, hosts=["*"])


@pytest.mark.parametrize("hosts, message", [
    (["Reviews"], r"^hosts\[0\]: 'Reviews' is not a valid host name"),
    (["a_b.example.com"], r"^hosts\[0\]: 'a_b.example.com' is not a valid host name"),
    (["ok", "bad..name"], r"^hosts\[1\]: 'bad..name' is not a valid"),
    (["reviews", "reviews"], r"^hosts: duplicate hosts: reviews.default.svc.cluster.local|^hosts: duplicate hosts: reviews"),
    (["*.example.com", "api.example.com"], r"^hosts: duplicate hosts: \*\.example\.com and api\.example\.com"),
])
def test_bad_virtualservice_hosts(hosts, message):
    with pytest.raises(SpecError, match=message):
        vs({"route": [to()]}, hosts=hosts)


def test_ip_hosts_are_valid_and_routes_are_required():
    assert vs({"route": [to()]}, hosts=["10.0.0.1"]).hosts == ("10.0.0.1",)
    with pytest.raises(SpecError, match=r"^http: http, tcp or tls routes must be provided"):
        VirtualService.from_spec({"hosts": ["a"]})


def test_qualify_host():
    assert qualify_host("reviews", "prod") == "reviews.prod.svc.cluster.local"
    assert qualify_host("reviews.prod.svc.cluster.local", "x") == "reviews.prod.svc.cluster.local"
    assert qualify_host("*.example.com", "x") == "*.example.com"


def test_gateways_without_mesh_are_not_for_sidecars():
    assert vs({"route": [to()]}).for_sidecars
    service = VirtualService.from_spec({"hosts": ["a"], "gateways": ["my-gw"], "http": [{"route": [to()]}]})
    assert not service.for_sidecars


# --- rewrite, redirect, direct response -------------------------------------------------------

@pytest.mark.parametrize("match, rewrite, path, expected_path", [
    ([{"uri": {"prefix": "/ratings"}}], "/v1/bookRatings", "/ratings/2?x=1", "/v1/bookRatings/2?x=1"),
    ([{"uri": {"exact": "/foo"}}], "/new/path", "/foo?key=value", "/new/path?key=value"),
    (None, "/v1", "/foo", "/v1foo"),     # no uri match: the matched prefix is "/"
    ([{"uri": {"regex": "/a.*"}}], "/b", "/abc", "/b"),
])
def test_rewrite_uri_replaces_the_matched_prefix(match, rewrite, path, expected_path):
    route = {"rewrite": {"uri": rewrite}, "route": [to()]}
    if match:
        route["match"] = match
    decision = forward(vs(route).decide(req(path), random.Random(0)))
    assert decision.path == expected_path
    assert decision.original_path == path
    assert decision.request_headers({})["x-envoy-original-path"] == path


def test_regex_rewrite_and_authority_rewrite():
    decision = forward(vs({"rewrite": {"uriRegexRewrite": {"match": "^/service/([^/]+)(/.*)$", "rewrite": r"\2/instance/\1"},
                               "authority": "newhost:9000"},
                   "route": [to()]}).decide(req("/service/foo/v1/api?q=1"), random.Random(0)))
    assert decision.path == "/v1/api/instance/foo?q=1"
    assert decision.authority == "newhost:9000"


def test_no_rewrite_keeps_path_and_authority():
    decision = forward(vs({"route": [to()]}).decide(req("/x?y=1"), random.Random(0)))
    assert (decision.path, decision.authority, decision.original_path) == ("/x?y=1", "httpbin:8000", None)
    assert "x-envoy-original-path" not in decision.request_headers({})


@pytest.mark.parametrize("redirect, path, status, location", [
    ({"uri": "/new/path"}, "/foo?key=value", 301, "http://httpbin:8000/new/path?key=value"),
    ({"uri": "/v1/bookRatings", "authority": "newratings.default.svc.cluster.local"}, "/x", 301,
     "http://newratings.default.svc.cluster.local/v1/bookRatings"),
    ({"authority": "other", "redirectCode": 308}, "/keep?q", 308, "http://other/keep?q"),
    ({"scheme": "https", "port": 8443}, "/p", 301, "https://httpbin:8443/p"),
    ({"scheme": "https", "derivePort": "FROM_PROTOCOL_DEFAULT"}, "/p", 301, "https://httpbin/p"),
    ({"authority": "x", "derivePort": "FROM_REQUEST_PORT"}, "/p", 301, "http://x:8000/p"),
])
def test_redirect(redirect, path, status, location):
    decision = vs({"match": [{"uri": {"prefix": "/"}}], "redirect": redirect}).decide(req(path), random.Random(0))
    assert isinstance(decision, Redirect)
    assert (decision.status, decision.location) == (status, location)


def test_direct_response():
    direct = vs({"directResponse": {"status": 418, "body": {"string": "teapot"}}})
    decision = direct.decide(req(), random.Random(0))
    assert isinstance(decision, DirectResponse) and (decision.status, decision.body) == (418, b"teapot")
    encoded = vs({"directResponse": {"status": 200, "body": {"bytes": "aGk="}}}).decide(req(), random.Random(0))
    assert isinstance(encoded, DirectResponse) and encoded.body == b"hi"


@pytest.mark.parametrize("route, message", [
    ({"match": [{"uri": {"prefix": "/"}}]}, r"^http\[0\]: needs one of route, redirect, directResponse"),
    ({"redirect": {"uri": "/x"}, "route": [to()]}, r"^http\[0\]: redirect and route cannot be set together"),
    ({"redirect": {"uri": "/r"}, "directResponse": {"status": 503}}, r"^http\[0\]: directResponse can only be used"),
    ({"route": [to()], "directResponse": {"status": 503}}, r"^http\[0\]: directResponse can only be used"),
    ({"redirect": {"uri": "/x", "redirectCode": 200}}, r"^http\[0\]\.redirect\.redirectCode: must be >= 300"),
    ({"redirect": {"derivePort": "SOMETIMES"}}, r"^http\[0\]\.redirect\.derivePort: must be"),
    ({"directResponse": {"body": {"string": "x"}}}, r"^http\[0\]\.directResponse\.status: is required"),
    ({"directResponse": {"status": 200, "body": {"bytes": "***"}}}, r"^http\[0\]\.directResponse\.body\.bytes: must be base64"),
    ({"route": [to()], "timeout": "10"}, r"^http\[0\]\.timeout: invalid duration '10'"),
    ({"route": [to()], "timeout": 10}, r"^http\[0\]\.timeout: must be a duration string"),
    ({"route": [to()], "delegate": {"name": "x"}}, r"^http\[0\]\.delegate: delegate is not supported"),
    ({"route": [to()], "rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}},
     r"^http\[0\]\.rewrite: set uri or uriRegexRewrite"),
    ({"route": [to()], "match": [{"uri": {"exact": "/a"}, "headers": {"x": {"regex": "(?!a)"}}}]},
     r"^http\[0\]\.match\[0\]\.headers\.x\.regex: regex"),
    ({"route": [to()], "mirrorPercentage": {"value": 150}, "mirror": {"host": "m"}},
     r"^http\[0\]\.mirrorPercentage\.value: must be <= 100"),
    ({"route": [to()], "matches": []}, r"^http\[0\]\.matches: unknown field"),
    ({"route": [to()], "rewrite": {}}, r"^http\[0\]\.rewrite: rewrite must set uri, authority or uriRegexRewrite"),
    ({"route": [{"destination": {"host": "*"}}]}, r"^http\[0\]\.route\[0\]\.destination\.host: a destination host cannot be"),
    ({"route": [{"destination": {"host": "a", "subset": "V_1"}}]}, r"^http\[0\]\.route\[0\]\.destination\.subset: invalid subset name"),
    ({"redirect": {"uri": "/x"}, "fault": {"abort": {"httpStatus": 500}}}, r"^http\[0\]\.fault: fault cannot be combined"),
    ({"route": [to()], "rewrite": {"authority": "a"}, "headers": {"request": {"set": {"host": "b"}}}},
     r"^http\[0\]\.headers\.request\.set: the authority is already rewritten"),
])
def test_bad_routes(route, message):
    with pytest.raises(SpecError, match=message):
        vs(route)


def test_virtualservice_needs_hosts():
    with pytest.raises(SpecError, match="^hosts: at least one host"):
        VirtualService.from_spec({"http": [{"route": [to()]}]})


# --- header manipulation ------------------------------------------------------------------------

def test_header_ops_remove_set_add():
    ops = HeaderOps.from_spec({"set": {"X-A": "1"}, "add": {"x-b": "2", "x-c": "3"}, "remove": ["x-gone"]}, "h",
                              request=True)
    headers = {"x-a": "0", "x-b": "1", "x-gone": "bye"}
    ops.apply(headers)
    assert headers == {"x-a": "1", "x-b": "1,2", "x-c": "3"}


@pytest.mark.parametrize("ops, request_side, message", [
    ({"set": {":path": "/x"}}, True, r"^h\.set\.:path: header ':path' cannot be changed here"),
    ({"set": {"host": "x"}}, False, r"^h\.set\.host: header 'host' cannot be changed here"),
    ({"remove": ["host"]}, True, r"^h\.remove\[0\]: header 'host' cannot be changed here"),
    ({"add": {"x-a": "100%"}}, True, r"^h\.add\.x-a: single % not allowed"),
    ({"set": {"": "x"}}, True, r"^h\.set\.: header name cannot be empty"),
])
def test_bad_header_ops(ops, request_side, message):
    with pytest.raises(SpecError, match=message):
        HeaderOps.from_spec(ops, "h", request=request_side)


def test_route_then_destination_header_ops():
    service = vs({
        "headers": {"request": {"set": {"x-level": "route"}, "add": {"x-trail": "route"}},
                    "response": {"remove": ["server"], "set": {"x-resp": "route"}}},
        "route": [to(subset="v1", weight=1, headers={"request": {"set": {"x-level": "dest"}, "add": {"x-trail": "dest"}},
                                                     "response": {"add": {"x-resp": "dest"}}})],
    })
    decision = forward(service.decide(req(), random.Random(0)))
    assert decision.request_headers({"x-trail": "app"}) == {"x-level": "dest", "x-trail": "app,route,dest"}
    assert decision.response_headers({"server": "x", "x-resp": "app"}) == {"x-resp": "route,dest"}


def test_with_several_destinations_route_header_ops_come_last():
    # Envoy applies weighted-cluster headers first, then the route's: here a route `set` wins.
    service = vs({
        "headers": {"request": {"set": {"x-level": "route"}}},
        "route": [to(subset="a", weight=1, headers={"request": {"set": {"x-level": "dest"}, "add": {"x-trail": "dest"}}}),
                  to(subset="b", weight=1, headers={"request": {"set": {"x-level": "dest"}}})],
    })
    decision = forward(service.decide(req(), random.Random(0)))
    assert decision.request_headers({})["x-level"] == "route"


def test_route_authority_rewrite_beats_destination_authority():
    one = vs({"rewrite": {"authority": "route-host"},
              "route": [to(weight=1, headers={"request": {"set": {"host": "dest-host"}}})]})
    assert forward(one.decide(req(), random.Random(0))).authority == "route-host"
    dest_only = vs({"route": [to(weight=1, headers={"request": {"set": {":authority": "dest-host"}}})]})
    assert forward(dest_only.decide(req(), random.Random(0))).authority == "dest-host"


def test_destination_headers_apply_only_to_the_picked_destination():
    service = vs({"route": [to(subset="a", weight=1, headers={"request": {"set": {"x-dest": "a"}}}),
                            to(subset="b", weight=1, headers={"request": {"set": {"x-dest": "b"}}})]})
    rng = random.Random(1)
    for _ in range(20):
        decision = forward(service.decide(req(), rng))
        assert decision.request_headers({})["x-dest"] == decision.destination.subset


def test_setting_host_header_rewrites_authority():
    decision = forward(vs({"headers": {"request": {"set": {"host": "other.example"}}}, "route": [to()]}).decide(
        req(), random.Random(0)))
    assert decision.authority == "other.example"


# --- mirroring --------------------------------------------------------------------------------

def mirrored_share(route_extra: dict, n=2000, seed=4) -> float:
    service = vs({"route": [to()], **route_extra})
    rng = random.Random(seed)
    return sum(bool(forward(service.decide(req(), rng)).mirrors) for _ in range(n)) / n


def test_mirror_defaults_to_100_percent():
    assert mirrored_share({"mirror": {"host": "httpbin", "subset": "v2"}}) == 1.0
    decision = forward(vs({"route": [to()], "mirror": {"host": "httpbin", "subset": "v2"}}).decide(req(), random.Random(0)))
    assert [(m.host, m.subset) for m in decision.mirrors] == [("httpbin.default.svc.cluster.local", "v2")]


def test_mirror_percentage_zero_means_no_mirroring():
    assert mirrored_share({"mirror": {"host": "m"}, "mirrorPercentage": {"value": 0}}) == 0.0


def test_mirror_percentage_is_sampled():
    share = mirrored_share({"mirror": {"host": "m"}, "mirrorPercentage": {"value": 25}})
    assert 0.2 < share < 0.3
    share = mirrored_share({"mirrors": [{"destination": {"host": "m"}, "percentage": {"value": 50}}]})
    assert 0.45 < share < 0.55


def test_shadow_authority_inserts_suffix_before_port():
    assert shadow_authority("httpbin:8000") == "httpbin-shadow:8000"
    assert shadow_authority("httpbin") == "httpbin-shadow"


# --- route policies carried on the route --------------------------------------------------------

def test_route_carries_timeout_retries_and_fault():
    route = vs({"route": [to()], "timeout": "0.5s", "retries": {"attempts": 3, "retryOn": "5xx"},
                "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 10}}}}).routes[0]
    assert route.timeout == 0.5
    assert route.retries.attempts == 3 and route.retries.retry_on == {"5xx"}
    assert route.fault is not None and route.fault.abort is not None and route.fault.abort.status == 500


def test_route_defaults_no_timeout_and_istio_default_retries():
    route = vs({"route": [to()]}).routes[0]
    assert route.timeout is None
    assert route.retries.attempts == 2
    assert route.retries.retry_on == {"connect-failure", "refused-stream", "unavailable", "cancelled",
                                      "retriable-status-codes"}
    assert route.retries.retriable_status_codes == frozenset()
    assert route.retries.previous_hosts
    assert route.fault is None


def test_consistent_hash_destination_drops_previous_hosts_predicate():
    route = vs({"route": [to()]}, consistent_hash_hosts=frozenset({"httpbin.default.svc.cluster.local"})).routes[0]
    assert not route.retries.previous_hosts


def test_local_reply_constants_are_exact():
    assert flags.NO_ROUTE.status == 404 and flags.NO_ROUTE.body == ""
