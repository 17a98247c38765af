"""One delivery attempt over HTTP, and an in-memory retry loop around it.

`attempt()` is the data-plane half of Knative's dispatcher: POST the event (binary mode by
default, `Prefer: reply` always), then classify the answer as `delivery.Outcome` plus, for a
2xx that carries a CloudEvent, the reply event (reference §5). The decision of what to do next
is not made here: `delivery.DeliveryPolicy` makes it. The broker drives attempts from its
durable store; channels and sources, which are in-memory by design, use `send()`, which sleeps
between attempts as the policy says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from labkit.eventing.delivery import (
    Decision,
    DeliveryPolicy,
    Outcome,
    RetryAt,
    parse_retry_after,
)
from labkit.eventing.events import Event, EventError, decode_request, encode
from labkit.eventing.wire import Client

__all__ = ["Attempt", "Sent", "attempt", "send"]


@dataclass(frozen=True)
class Attempt:
    """What one POST produced: the outcome for the policy and an optional reply event."""

    outcome: Outcome
    reply: Event | None = None
    seconds: float = 0.0


async def attempt(client: Client, url: str, event: Event, *, timeout: float | None,
                  mode: str = "binary", namespace: str | None = None) -> Attempt:
    """POST `event` to `url` once and classify the answer (Knative's rules, reference §5.2-5.3).

    A 2xx other than 202 that carries a CloudEvent yields a reply; a non-empty 2xx body that is
    not a CloudEvent is a failure, recorded as 502 as Knative's broker filter does.
    """
    headers, body = encode(event, mode)
    headers["prefer"] = "reply"
    if namespace is not None:
        headers["kn-namespace"] = namespace
    started = time.perf_counter()
    try:
        response = await client.request("POST", url, headers, body, timeout=timeout)
    except asyncio.TimeoutError:
        return Attempt(Outcome(None, error=f"timeout: no answer within {timeout:g} s"),
                       seconds=time.perf_counter() - started)
    except Exception as err:  # noqa: BLE001 (any failure to get an answer is "no response")
        return Attempt(Outcome(None, error=str(err) or type(err).__name__),
                       seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    if not 200 <= response.status < 300:
        return Attempt(Outcome(response.status, response.body, retry_after), seconds=seconds)
    carries_event = bool(response.body) or any(h.startswith("ce-") for h in response.headers)
    if response.status == 202 or not carries_event:
        return Attempt(Outcome(response.status), seconds=seconds)
    try:
        reply = decode_request(response.headers, response.body)
    except EventError as err:
        if not response.body:
            return Attempt(Outcome(response.status), seconds=seconds)  # e.g. unknown specversion
        return Attempt(Outcome(502, response.body, error=f"reply is not a CloudEvent: {err}"),
                       seconds=seconds)
    return Attempt(Outcome(response.status), reply, seconds)


@dataclass(frozen=True)
class Sent:
    """The end of `send()`: the final decision, the last attempt and how many were made."""

    decision: Decision
    last: Attempt
    attempts: int


async def send(client: Client, url: str, event: Event, policy: DeliveryPolicy, *,
               destination: str | None = None, mode: str = "binary",
               namespace: str | None = None, to_dead_letter_sink: bool = False,
               on_attempt: Callable[[int, Attempt, Decision], None] | None = None) -> Sent:
    """Attempt until the policy says stop, sleeping its backoff between attempts (in memory:
    a process exit loses what is waiting, as with Knative's InMemoryChannel)."""
    number = 1
    while True:
        result = await attempt(client, url, event, timeout=policy.attempt_timeout, mode=mode,
                               namespace=namespace)
        decision = policy.decide(number, result.outcome, time.monotonic(), destination or url,
                                 to_dead_letter_sink=to_dead_letter_sink)
        if on_attempt is not None:
            on_attempt(number, result, decision)
        if not isinstance(decision, RetryAt):
            return Sent(decision, result, number)
        await asyncio.sleep(decision.wait)
        number = decision.attempt
