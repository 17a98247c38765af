"""Delivery policy: spec parsing, precedence, backoff numbers, retry classes, Retry-After, DLS."""

from __future__ import annotations

import base64
from email.utils import formatdate

import pytest

from labkit.eventing import SpecError
from labkit.eventing.delivery import (
    BROKER_DEFAULT_DELIVERY,
    DOCUMENTED_SCHEDULE,
    DeadLetter,
    Delivered,
    DeliveryPolicy,
    DeliverySpec,
    Drop,
    Outcome,
    RetryAt,
    backoff_delay,
    dead_letter_extensions,
    effective_delivery,
    is_retryable,
    parse_delivery,
    parse_duration,
    parse_retry_after,
)

SUBSCRIBER = "http://127.0.0.1:9999/fn"
DLS = {"uri": "http://127.0.0.1:9998/dls"}


@pytest.mark.parametrize(
    "text, seconds",
    [("PT0.2S", 0.2), ("PT1S", 1.0), ("PT2.5S", 2.5), ("PT1M", 60.0), ("PT1M30S", 90.0),
     ("PT1H", 3600.0), ("P1D", 86400.0), ("P1W", 604800.0), ("P1DT1S", 86401.0),
     ("PT0S", 0.0), ("PT0,5S", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, message",
    [("1s", "did you mean 'PT1S'"), ("200ms", "did you mean 'PT0.2S'"), ("P", "invalid"),
     ("PT", "invalid"), ("P1DT", "invalid"), ("PT1X", "invalid"), ("-PT1S", "invalid"),
     ("P1M", "years or months"), ("P1Y", "years or months"), (5, "must be an ISO-8601")],
)
def test_bad_durations_are_named(text: object, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_duration(text, "spec.delivery.backoffDelay")
    assert info.value.path == "spec.delivery.backoffDelay"


def test_parse_delivery_full_spec() -> None:
    spec = parse_delivery({"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.5S",
                           "timeout": "PT2S", "retryAfterMax": "PT10S", "deadLetterSink": DLS,
                           "format": "json"})
    assert spec == DeliverySpec(3, "linear", 0.5, 2.0, 10.0, DLS, "json")


@pytest.mark.parametrize(
    "delivery, path, message",
    [
        ({"retry": -1}, "spec.delivery.retry", "must be >= 0"),
        ({"retry": "3"}, "spec.delivery.retry", "must be an integer"),
        ({"retry": True}, "spec.delivery.retry", "must be an integer"),
        ({"backoffPolicy": "Linear"}, "spec.delivery.backoffPolicy", "unknown backoff policy"),
        ({"backoffDelay": "2s"}, "spec.delivery.backoffDelay", "did you mean 'PT2S'"),
        ({"timeout": "PT0S"}, "spec.delivery.timeout", "greater than zero"),
        ({"retryAfterMax": "soon"}, "spec.delivery.retryAfterMax", "invalid ISO-8601"),
        ({"deadLetterSink": {}}, "spec.delivery.deadLetterSink", "`uri` and/or `ref`"),
        ({"deadLetterSink": {"ref": {"kind": "Service"}}}, "spec.delivery.deadLetterSink.ref.name",
         "missing"),
        ({"format": "xml"}, "spec.delivery.format", "unknown format"),
        ({"retries": 3}, "spec.delivery.retries", "did you mean 'retry'"),
        # labkit.suggest: a field in the wrong case is named (difflib alone finds nothing)
        ({"TIMEOUT": "PT1S"}, "spec.delivery.TIMEOUT", "did you mean 'timeout'"),
        (["retry"], "spec.delivery", "must be a map"),
    ],
)
def test_invalid_delivery_specs(delivery: object, path: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_delivery(delivery)
    assert info.value.path == path


def test_empty_delivery_is_absent() -> None:
    assert parse_delivery(None) is None
    assert parse_delivery({}) is None


def test_trigger_delivery_replaces_broker_delivery_wholesale() -> None:
    broker = DeliverySpec(retry=3, dead_letter_sink=DLS)
    trigger = DeliverySpec(retry=1)
    chosen = effective_delivery(trigger, broker)
    assert chosen == trigger and chosen.dead_letter_sink is None  # the broker DLS is lost
    assert effective_delivery(None, broker) == broker
    assert effective_delivery(None, None) == BROKER_DEFAULT_DELIVERY
    assert effective_delivery(None, None, parent_default=None) == DeliverySpec()  # channels


def schedule(spec: DeliverySpec, **kwargs: str) -> list[float]:
    return [backoff_delay(spec, k, **kwargs) for k in range(1, spec.retry + 1)]


def test_backoff_sequences_runtime_and_documented() -> None:
    linear = DeliverySpec(retry=4, backoff_policy="linear", backoff_delay=1.0)
    exponential = DeliverySpec(retry=4, backoff_policy="exponential", backoff_delay=1.0)
    assert schedule(linear) == [0.0, 1.0, 2.0, 3.0]  # Knative's Go sender (0-based index)
    assert schedule(exponential) == [1.0, 2.0, 4.0, 8.0]
    assert schedule(linear, schedule=DOCUMENTED_SCHEDULE) == [1.0, 2.0, 3.0, 4.0]
    assert schedule(exponential, schedule=DOCUMENTED_SCHEDULE) == [2.0, 4.0, 8.0, 16.0]
    default = schedule(BROKER_DEFAULT_DELIVERY)
    assert default[:3] == pytest.approx([0.2, 0.4, 0.8]) and default[-1] == pytest.approx(102.4)


def test_no_policy_or_no_delay_retries_immediately() -> None:
    assert schedule(DeliverySpec(retry=3, backoff_delay=1.0)) == [0.0, 0.0, 0.0]
    assert schedule(DeliverySpec(retry=3, backoff_policy="exponential")) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "status, retryable",
    [(None, True), (404, True), (408, True), (409, True), (429, True), (500, True),
     (501, True), (502, True), (503, True), (504, True), (599, True),
     (400, False), (401, False), (403, False), (405, False), (410, False), (413, False),
     (422, False), (301, False), (302, False), (304, False), (100, False)],
)
def test_retry_classification(status: int | None, retryable: bool) -> None:
    assert is_retryable(Outcome(status)) is retryable


def run(policy: DeliveryPolicy, outcomes: list[Outcome], start: float = 100.0) -> list:
    """Feed outcomes attempt by attempt, advancing a fake clock to each retry time."""
    decisions, now = [], start
    for attempt, outcome in enumerate(outcomes, start=1):
        decision = policy.decide(attempt, outcome, now, SUBSCRIBER)
        decisions.append(decision)
        if not isinstance(decision, RetryAt):
            break
        assert decision.attempt == attempt + 1
        now = decision.at
    return decisions


def test_retries_then_dead_letter_with_exact_times() -> None:
    spec = DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay=0.5,
                        dead_letter_sink=DLS)
    decisions = run(DeliveryPolicy(spec), [Outcome(503, b"busy")] * 10)
    assert [d.at for d in decisions[:3]] == [100.5, 101.5, 103.5]
    assert len(decisions) == 4  # 1 + retry attempts
    final = decisions[-1]
    assert isinstance(final, DeadLetter)
    assert final.extensions == {"knativeerrordest": SUBSCRIBER, "knativeerrorcode": 503,
                                "knativeerrordata": base64.b64encode(b"busy").decode()}


def test_success_mid_way_stops() -> None:
    policy = DeliveryPolicy(DeliverySpec(retry=5))
    decisions = run(policy, [Outcome(None, error="refused"), Outcome(500), Outcome(202)])
    assert decisions == [RetryAt(100.0, 0.0, 2), RetryAt(100.0, 0.0, 3), Delivered()]


def test_non_retryable_goes_straight_to_dead_letter() -> None:
    policy = DeliveryPolicy(DeliverySpec(retry=5, dead_letter_sink=DLS))
    decision = policy.decide(1, Outcome(422, b'{"message":"bad"}'), 0.0, SUBSCRIBER)
    assert isinstance(decision, DeadLetter)
    assert decision.extensions["knativeerrorcode"] == 422


def test_without_dead_letter_sink_the_event_is_dropped() -> None:
    policy = DeliveryPolicy(DeliverySpec(retry=1))
    assert isinstance(policy.decide(1, Outcome(400), 0.0, SUBSCRIBER), Drop)
    decision = policy.decide(2, Outcome(500), 0.0, SUBSCRIBER)
    assert isinstance(decision, Drop) and "retries exhausted" in decision.reason
    assert isinstance(DeliveryPolicy(DeliverySpec()).decide(1, Outcome(500), 0, SUBSCRIBER), Drop)


def test_dead_letter_sink_failure_is_a_drop() -> None:
    policy = DeliveryPolicy(DeliverySpec(retry=1, dead_letter_sink=DLS))
    assert isinstance(policy.decide(1, Outcome(500), 0.0, DLS["uri"], to_dead_letter_sink=True),
                      RetryAt)
    decision = policy.decide(2, Outcome(500), 0.0, DLS["uri"], to_dead_letter_sink=True)
    assert isinstance(decision, Drop) and "dead-letter sink failed" in decision.reason


@pytest.mark.parametrize(
    "retry_after_max, status, retry_after, expected_wait",
    [
        (None, 429, 30.0, 1.0),  # feature off: Retry-After ignored
        (0.0, 429, 30.0, 1.0),  # PT0S: ignored
        (10.0, 429, 30.0, 10.0),  # capped by retryAfterMax
        (60.0, 503, 30.0, 30.0),  # honoured
        (60.0, 429, 0.5, 1.0),  # never shorter than the backoff
        (60.0, 500, 30.0, 1.0),  # only 429 and 503
        (60.0, 429, None, 1.0),  # no header
    ],
)
def test_retry_after(retry_after_max: float | None, status: int, retry_after: float | None,
                     expected_wait: float) -> None:
    spec = DeliverySpec(retry=2, backoff_policy="exponential", backoff_delay=1.0,
                        retry_after_max=retry_after_max)
    decision = DeliveryPolicy(spec).decide(1, Outcome(status, retry_after=retry_after), 50.0,
                                           SUBSCRIBER)
    assert decision == RetryAt(50.0 + expected_wait, expected_wait, 2)


def test_parse_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None and parse_retry_after("", now) is None


def test_dead_letter_data_is_base64_truncated_at_1024_chars() -> None:
    data = dead_letter_extensions(SUBSCRIBER, Outcome(500, b"x" * 5000))["knativeerrordata"]
    assert isinstance(data, str) and len(data) == 1024
    assert base64.b64encode(b"x" * 5000).decode().startswith(data)
    assert dead_letter_extensions(SUBSCRIBER, Outcome(500, b""))["knativeerrordata"] == ""
    network = dead_letter_extensions(SUBSCRIBER, Outcome(None, error="connection refused"))
    assert network["knativeerrorcode"] == 500
    assert isinstance(network["knativeerrordata"], str)
    assert base64.b64decode(network["knativeerrordata"]) == b"dispatch error: connection refused"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown backoff schedule"):
        DeliveryPolicy(DeliverySpec(), schedule="fast")
    with pytest.raises(ValueError, match="counts from 1"):
        DeliveryPolicy(DeliverySpec()).decide(0, Outcome(500), 0.0, SUBSCRIBER)
    assert DeliveryPolicy(DeliverySpec(retry=2, timeout=1.5)).attempt_timeout == 1.5
    assert DeliveryPolicy(DeliverySpec(retry=2)).max_attempts == 3
