"""Checks for labs/06_knative_eventing.ipynb.

The givens of each task live here next to its check, so the notebook shows the same events and
failure pattern the check recomputes from. Expected answers come from labkit's own filter and
delivery-policy code and the delivery simulator (no live components).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labkit.eventing import SpecError
from labkit.eventing.delivery import parse_delivery
from labkit.eventing.events import Event
from labkit.eventing.filters import parse_filters
from labkit.grading.checks import NotAnsweredError, fail, passed
from labkit.sim import DeliverySimResult, simulate_delivery

__all__ = [
    "FILTER_EVENTS",
    "FILTER_TASK",
    "RETRY_TASK",
    "RetryTask",
    "check_filter",
    "check_retry_policy",
    "simulate_retry_answer",
]


def _event(event_id: str, type_: str, source: str, **extensions: str) -> Event:
    return Event({"specversion": "1.0", "id": event_id, "type": type_, "source": source,
                  **extensions})


FILTER_EVENTS = (
    _event("e1", "com.shop.order.created", "/shop/eu", region="eu"),
    _event("e2", "com.shop.order.created", "/shop/us", region="us"),
    _event("e3", "com.shop.order.paid", "/shop/eu", region="eu"),
    _event("e4", "com.shop.user.created", "/shop/eu", region="eu"),
    _event("e5", "com.shop.order.created", "/shop/eu/test", region="eu"),
    _event("e6", "com.shop.order.cancelled", "/shop/eu"),
    _event("e7", "com.shop.order.refunded", "/shop/eu", region="eu"),
)
FILTER_TASK = ("every order event (type starting with 'com.shop.order.') from the EU "
               "(extension region = eu), except events from test sources (source ending "
               "with '/test')")
_FILTER_EXPECTED = frozenset({"e1", "e3", "e7"})


def _answered(name: str, value: object) -> None:
    if value is None or value is Ellipsis or value is NotImplemented:
        raise NotAnsweredError(f"{name}: no answer yet.\nHINT: replace the placeholder.")


def check_filter(filters: Any) -> None:
    """`filters` is a Trigger's `spec.filters` list (Python lists and dicts, as in YAML)."""
    _answered("filters", filters)
    try:
        compiled = parse_filters(filters, "filters")
    except SpecError as err:
        fail(f"Knative would refuse this Trigger: {err}",
             "each list element has exactly one dialect (exact, prefix, suffix, all, any, not); "
             "exact/prefix/suffix take one attribute: value pair.")
    matched = {e.id for e in FILTER_EVENTS if compiled.matches(e)}
    extra, missing = sorted(matched - _FILTER_EXPECTED), sorted(_FILTER_EXPECTED - matched)
    if extra or missing:
        problems = []
        if extra:
            problems.append(f"it also lets through {', '.join(extra)}")
        if missing:
            problems.append(f"it misses {', '.join(missing)}")
        fail(f"the filter is not right: {'; '.join(problems)}.",
             "the list is an AND of its elements. Check each event against each element "
             "by hand: a missing extension fails `exact`, and `not` inverts one element.")
    passed(f"the filter matches exactly {', '.join(sorted(matched))}")


@dataclass(frozen=True)
class RetryTask:
    """A subscriber that is down for a while (a redeploy) and slightly flaky otherwise."""

    outage_start: float = 10.0
    outage_seconds: float = 8.0
    failure_probability: float = 0.05
    arrival_rate: float = 50.0
    events: int = 2000
    max_p99_seconds: float = 13.0
    seed: int = 6


RETRY_TASK = RetryTask()


def simulate_retry_answer(delivery: Any, task: RetryTask = RETRY_TASK) -> DeliverySimResult:
    """Run the task's failure pattern through a `spec.delivery` map (as written in YAML)."""
    spec = parse_delivery(delivery, "delivery")
    if spec is None:
        spec = parse_delivery({"retry": 0}, "delivery")
    assert spec is not None
    return simulate_delivery(
        failure_probability=task.failure_probability, retry=spec.retry,
        backoff_policy=spec.backoff_policy, backoff_delay=spec.backoff_delay,
        events=task.events, arrival_rate=task.arrival_rate,
        outages=((task.outage_start, task.outage_start + task.outage_seconds),), seed=task.seed)


def check_retry_policy(delivery: Any) -> None:
    """No event may reach the dead-letter sink, and p99 delivery latency must stay bounded."""
    _answered("delivery", delivery)
    try:
        result = simulate_retry_answer(delivery)
    except SpecError as err:
        fail(f"Knative would refuse this delivery spec: {err}",
             "use retry (an integer), backoffPolicy (linear or exponential) and backoffDelay "
             "(an ISO-8601 duration such as PT0.5S).")
    task = RETRY_TASK
    if result.dead_letter_rate > 0:
        fail(f"{result.dead_letter_rate:.1%} of the events still end in the dead-letter sink.",
             f"an event that arrives when the outage starts must still be retrying "
             f"{task.outage_seconds:g} s later: add up the waits your policy makes before its "
             "last attempt (Knative's runtime: linear 0, d, 2d, ...; exponential d, 2d, 4d, ...).")
    if result.latency_p99 > task.max_p99_seconds:
        fail(f"every event arrives, but the p99 latency is {result.latency_p99:.0f} s, over "
             f"{task.max_p99_seconds:g} s.",
             "the last waits are what the unlucky events pay: grow the waits more gently "
             "(a smaller delay, or linear instead of exponential) while still covering the outage.")
    passed("no event is dead-lettered and the p99 latency stays within the bound")
