"""Knative Eventing, locally: CloudEvents codec, Trigger filters, delivery policy, durable store.

The modules here have no server: `events` (CloudEvents over HTTP through the official SDK),
`filters` (Trigger filter semantics), `delivery` (retry/backoff/dead-letter decisions, pure)
and `store` (the SQLite log that makes a 202 mean "will be delivered"). The broker, channels and
sources are built on top of them.

How a broker combines them (one event, one trigger):

    event = events.decode_request(headers, body, max_body_bytes=...)   # EventError -> 400/413
    matched = [t.name for t in triggers if t.filter.matches(event)]     # filters.parse_trigger_filter
    store.append(event, broker, matched)                                # committed -> answer 202
    for claim in store.claim(now=time.time()):
        policy = delivery.DeliveryPolicy(delivery.effective_delivery(trigger_spec, broker_spec))
        headers, body = events.encode(claim.event)                      # binary by default
        outcome = ... POST with timeout=policy.attempt_timeout -> delivery.Outcome
        decision = policy.decide(claim.attempt, outcome, now, subscriber_url,
                                 to_dead_letter_sink=claim.target == store_mod.DEAD_LETTER_SINK)
        Delivered -> store.ack;  RetryAt -> store.retry(at=time.time() + decision.wait)
        DeadLetter -> store.dead_letter(extensions);  Drop -> store.drop
"""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A Broker/Trigger/Subscription spec that Knative's webhook would reject.

    Carries the field path (e.g. ``spec.filters[1].prefix``) so the manifest loader can prefix
    file and line, and a student sees exactly which field to fix.
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")
