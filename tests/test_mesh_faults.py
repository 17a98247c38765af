"""Fault injection decisions (labkit.mesh.faults) and response-flag formatting (labkit.mesh.flags)."""

from __future__ import annotations

import random

import pytest

from labkit.mesh import flags
from labkit.mesh.faults import FaultDecision, FaultPolicy
from labkit.mesh.retries import Finish, Outcome, RetryState
from labkit.mesh.routing import Forward, Request, VirtualService
from labkit.mesh.spec import SpecError, duration


def share(policy: FaultPolicy, n: int = 4000, seed: int = 1) -> tuple[float, float]:
    rng = random.Random(seed)
    decisions = [policy.decide(rng) for _ in range(n)]
    return (sum(d.delay > 0 for d in decisions) / n, sum(d.abort is not None for d in decisions) / n)


def test_missing_percentage_means_no_fault():
    # Istio's API since Nov 2022: percentage omitted = 0 %, not "all requests".
    policy = FaultPolicy.from_spec({"delay": {"fixedDelay": "5s"}, "abort": {"httpStatus": 500}})
    assert share(policy) == (0.0, 0.0)


@pytest.mark.parametrize("pct", [100, 50, 10])
def test_percentages_are_sampled(pct):
    policy = FaultPolicy.from_spec({"delay": {"fixedDelay": "7s", "percentage": {"value": pct}},
                                    "abort": {"httpStatus": 503, "percentage": {"value": pct}}})
    delayed, aborted = share(policy)
    assert abs(delayed - pct / 100) < 0.03 and abs(aborted - pct / 100) < 0.03


def test_fractional_percentages_work_in_parts_per_million():
    policy = FaultPolicy.from_spec({"abort": {"httpStatus": 500, "percentage": {"value": 0.1}}})
    _, aborted = share(policy, n=100_000)
    assert 0.0006 < aborted < 0.0014


def test_delay_and_abort_are_independent():
    policy = FaultPolicy.from_spec({"delay": {"fixedDelay": "1s", "percentage": {"value": 50}},
                                    "abort": {"httpStatus": 500, "percentage": {"value": 50}}})
    rng = random.Random(3)
    decisions = [policy.decide(rng) for _ in range(4000)]
    both = sum(d.delay > 0 and d.abort is not None for d in decisions) / 4000
    assert abs(both - 0.25) < 0.03


def test_deprecated_integer_delay_percent_is_honoured_without_percentage():
    policy = FaultPolicy.from_spec({"delay": {"fixedDelay": "1s", "percent": 100}})
    assert share(policy, n=100) == (1.0, 0.0)
    both = FaultPolicy.from_spec({"delay": {"fixedDelay": "1s", "percent": 100, "percentage": {"value": 0}}})
    assert share(both, n=100) == (0.0, 0.0)


def test_abort_reply_is_exact():
    policy = FaultPolicy.from_spec({"abort": {"httpStatus": 418, "percentage": {"value": 100}}})
    decision = policy.decide(random.Random(0))
    assert decision.abort == flags.LocalReply(418, "fault filter abort", ("FI",))
    assert decision.flags == ("FI",) and decision.delay == 0


def test_grpc_abort_is_http_200_with_grpc_status():
    policy = FaultPolicy.from_spec({"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}})
    reply = policy.decide(random.Random(0)).abort
    assert reply is not None
    assert reply.status == 200 and ("grpc-status", "14") in reply.headers
    assert ("grpc-message", "fault filter abort") in reply.headers and reply.flags == ("FI",)


def test_delay_decision_and_combined_flags():
    policy = FaultPolicy.from_spec({"delay": {"fixedDelay": "1.5s", "percentage": {"value": 100}},
                                    "abort": {"httpStatus": 503, "percentage": {"value": 100}}})
    decision = policy.decide(random.Random(0))
    assert decision.delay == 1.5
    assert flags.format_flags(decision.flags) == "DI,FI"
    assert FaultDecision().flags == ()


def test_exponential_delay_is_accepted_but_ignored():
    policy = FaultPolicy.from_spec({"delay": {"exponentialDelay": "1s", "percentage": {"value": 100}}})
    assert share(policy, n=100) == (0.0, 0.0)


@pytest.mark.parametrize("spec, message", [
    ({"delay": {"percentage": {"value": 10}}}, r"^fault\.delay\.fixedDelay: is required$"),
    ({"delay": {"fixedDelay": "5"}}, r"^fault\.delay\.fixedDelay: invalid duration '5'"),
    ({"delay": {"fixedDelay": "0.5ms"}}, r"^fault\.delay\.fixedDelay: must be at least 1ms"),
    ({"delay": {"fixedDelay": "1s", "percentage": {"value": 101}}}, r"^fault\.delay\.percentage\.value: must be <= 100"),
    ({"delay": {"fixedDelay": "1s", "percentage": 50}}, r"^fault\.delay\.percentage: must be a mapping"),
    ({"abort": {"percentage": {"value": 10}}}, r"^fault\.abort: set exactly one of httpStatus, grpcStatus"),
    ({"abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE"}}, r"^fault\.abort: set exactly one"),
    ({"abort": {"httpStatus": 99}}, r"^fault\.abort\.httpStatus: must be >= 200"),
    ({"abort": {"httpStatus": 700}}, r"^fault\.abort\.httpStatus: must be <= 599"),
    ({"abort": {"grpcStatus": "BROKEN"}}, r"^fault\.abort\.grpcStatus: unknown gRPC status 'BROKEN'"),
    ({"abort": {"httpStatus": 500, "percent": 10}}, r"^fault\.abort\.percent: unknown field"),
    ({"dely": {}}, r"^fault\.dely: unknown field"),
])
def test_bad_fault_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        FaultPolicy.from_spec(spec)


def test_seeded_decisions_are_reproducible():
    policy = FaultPolicy.from_spec({"abort": {"httpStatus": 500, "percentage": {"value": 30}}})

    def aborted(seed):
        rng = random.Random(seed)
        return [policy.decide(rng).abort is not None for _ in range(50)]

    assert aborted(8) == aborted(8) and aborted(8) != aborted(9)


def test_injected_aborts_are_not_retried():
    # Istio's ops example: abort 50 % plus retries {attempts: 5, retryOn: 5xx} still fails ~50 %,
    # because the fault filter answers before the router (and its retries) ever runs.
    service = VirtualService.from_spec({"hosts": ["httpbin"], "http": [{
        "route": [{"destination": {"host": "httpbin"}}],
        "retries": {"attempts": 5, "retryOn": "5xx"},
        "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}},
    }]})
    rng = random.Random(5)
    failures = 0
    for _ in range(2000):
        decision = service.decide(Request("GET", "/"), rng)
        assert isinstance(decision, Forward) and decision.route.fault is not None
        fault = decision.route.fault.decide(rng)
        if fault.abort is not None:
            failures += 1
            continue
        state = RetryState(decision.route.retries, start=0.0, timeout=None, rng=rng)
        state.begin("h", 0.0)
        answer = state.on_outcome(Outcome.response(200), 0.01)
        assert isinstance(answer, Finish) and answer.status == 200
    assert abs(failures / 2000 - 0.5) < 0.04


@pytest.mark.parametrize("given, expected", [
    ([], "-"), (["UF", "URX"], "UF,URX"), (["URX", "UF"], "UF,URX"), (["FI", "DI"], "DI,FI"),
    (["UO"], "UO"), (["UT", "URX", "UT"], "UT,URX"),
])
def test_format_flags_uses_envoy_order(given, expected):
    assert flags.format_flags(given) == expected


def test_format_flags_rejects_unknown_letters():
    with pytest.raises(ValueError, match="unknown Envoy response flag"):
        flags.format_flags(["XX"])


def test_local_reply_strings_are_exact():
    assert flags.OVERFLOW.body == "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    assert len(flags.OVERFLOW.body) == 81 and flags.OVERFLOW.status == 503
    assert flags.OVERFLOW.headers == (("x-envoy-overloaded", "true"),) and flags.OVERFLOW.response_flags == "UO"
    assert (flags.UPSTREAM_TIMEOUT.status, flags.UPSTREAM_TIMEOUT.body) == (504, "upstream request timeout")
    assert (flags.RBAC_DENIED.status, flags.RBAC_DENIED.body, flags.RBAC_DENIED.response_flags) == \
        (403, "RBAC: access denied", "-")
    assert len(flags.RBAC_DENIED.body) == 19
    assert flags.fault_abort(500).body == "fault filter abort"
    assert flags.reset_body("connection failure").endswith("reset reason: connection failure")
    assert flags.UPSTREAM_TIMEOUT.with_flags("URX").response_flags == "UT,URX"


@pytest.mark.parametrize("text, seconds", [
    ("10s", 10.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5h", 5400.0), ("100us", 1e-4), ("0s", 0.0),
    ("3m", 180.0), (".5s", 0.5),
])
def test_durations(text, seconds):
    assert duration(text, "d") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["10", "", "s", "10 s", "-1s", "1d", "1s2"])
def test_bad_durations(value):
    with pytest.raises(SpecError, match=r"^d: invalid duration"):
        duration(value, "d")
