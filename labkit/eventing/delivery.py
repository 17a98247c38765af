"""Delivery policy: retries, backoff, Retry-After, dead-letter sink. Pure decisions, no I/O.

`DeliverySpec` is Knative's `spec.delivery` (on Broker, Trigger, Channel, Subscription).
`DeliveryPolicy.decide()` takes the attempt number, what happened and the current time, and
says what to do next: done, retry at time T, send to the dead-letter sink, or drop. It never
sleeps, so the live broker (with a wall clock) and the simulator (with simulated time) make the
same decisions.

Knative facts encoded here (reference §5.2, §7; knative/eventing pkg/kncloudevents/retries.go):

* attempts = 1 + `retry`; retried: no response (connection error, timeout), 404, 408, 409, 429
  and every 5xx; 1xx, 3xx and the other 4xx go straight to the dead-letter sink.
* backoff before retry k (k = 1..retry), Knative's Go sender: linear d*(k-1), exponential
  d*2^(k-1) -- one step earlier than the API docs (d*k, d*2^k), because go-retryablehttp passes
  a 0-based attempt index. Both schedules are available; the runtime one is the default.
  No backoffPolicy or no backoffDelay: immediate retries. No jitter, no cap.
* `Retry-After` counts only for 429 and 503 and only when `retryAfterMax` is set:
  wait = max(backoff, min(Retry-After, retryAfterMax)); `PT0S` switches it off.
* A Trigger's delivery replaces the Broker's wholesale (no field merge); a Broker created
  without `delivery` gets the cluster default (retry 10, exponential, PT0.2S).
* Dead-lettered events carry knativeerrordest, knativeerrorcode (500 when there was no
  response) and knativeerrordata (base64 of the response body, cut at 1024 characters).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from labkit.eventing import SpecError
from labkit.suggest import did_you_mean

__all__ = [
    "BROKER_DEFAULT_DELIVERY",
    "DOCUMENTED_SCHEDULE",
    "ERROR_DATA_MAX_CHARS",
    "RUNTIME_SCHEDULE",
    "DeadLetter",
    "Decision",
    "Delivered",
    "DeliveryPolicy",
    "DeliverySpec",
    "Drop",
    "Outcome",
    "RetryAt",
    "backoff_delay",
    "dead_letter_extensions",
    "effective_delivery",
    "is_retryable",
    "parse_delivery",
    "parse_duration",
    "parse_retry_after",
]

RUNTIME_SCHEDULE = "runtime"
"""Knative's Go sender: linear d*(k-1), exponential d*2^(k-1) before retry k."""
DOCUMENTED_SCHEDULE = "documented"
"""Knative's API docs and the Kafka broker: linear d*k, exponential d*2^k before retry k."""

ERROR_DATA_MAX_CHARS = 1024
RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
_FIELDS = ("retry", "backoffPolicy", "backoffDelay", "timeout", "retryAfterMax",
           "deadLetterSink", "format")
_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"^P(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?$"
)
_SHORTHAND = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$", re.IGNORECASE)


@dataclass(frozen=True)
class DeliverySpec:
    """Knative's DeliverySpec with durations in seconds.

    `dead_letter_sink` is the Destination as written (`uri` and/or `ref`); resolving it to a URL
    is the broker's job.
    """

    retry: int = 0
    backoff_policy: str | None = None
    backoff_delay: float | None = None
    timeout: float | None = None
    retry_after_max: float | None = None
    dead_letter_sink: Mapping[str, Any] | None = None
    format: str | None = None


BROKER_DEFAULT_DELIVERY = DeliverySpec(retry=10, backoff_policy="exponential", backoff_delay=0.2)
"""What Knative's config-br-defaults gives a Broker created without `spec.delivery`."""


def parse_duration(text: Any, path: str) -> float:
    """Seconds in an ISO-8601 duration such as PT0.2S, PT1M30S, P1D or P1W.

    Years and months are refused: they have no fixed length, and a delivery delay never needs
    them. Raises `SpecError` at `path`, with a hint for the common `1s`-style mistake.
    """
    if not isinstance(text, str):
        raise SpecError(path, f"must be an ISO-8601 duration string such as PT0.2S, "
                              f"got {type(text).__name__}")
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        hint = ""
        short = _SHORTHAND.match(text.strip())
        if short:
            hint = f" (did you mean {_shorthand_to_iso(short.group(1), short.group(2))!r}?)"
        raise SpecError(path, f"invalid ISO-8601 duration {text!r}{hint}; "
                              "expected e.g. PT0.2S, PT1M, PT1H30M, P1D")
    years, months, weeks, days, hours, minutes, seconds = (
        float(g.replace(",", ".")) if g else 0.0 for g in match.groups()
    )
    if years or months:
        raise SpecError(path, f"{text!r} uses years or months, which have no fixed length; "
                              "use weeks (W), days (D), hours (H), minutes (M) or seconds (S)")
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def _shorthand_to_iso(number: str, unit: str) -> str:
    unit = unit.lower()
    if unit == "ms":
        return f"PT{float(number) / 1000:g}S"
    if unit == "d":
        return f"P{number}D"
    return f"PT{number}{unit.upper()}"


def parse_delivery(spec: Any, path: str = "spec.delivery") -> DeliverySpec | None:
    """A `delivery:` map -> DeliverySpec; None when absent or empty (so it does not override).

    Applies Knative's validation: retry >= 0, backoffPolicy linear|exponential, durations valid
    ISO-8601, timeout > 0, retryAfterMax >= 0, deadLetterSink with `uri` or `ref`.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise SpecError(path, "must be a map with fields " + ", ".join(_FIELDS))
    for name in spec:
        if name not in _FIELDS:
            hint = did_you_mean(name, _FIELDS)
            raise SpecError(f"{path}.{name}", "unknown field" + (f" ({hint})" if hint else "")
                            + "; expected one of " + ", ".join(_FIELDS))
    if not spec:
        return None
    retry = spec.get("retry", 0)
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise SpecError(f"{path}.retry", f"must be an integer, got {retry!r}")
    if retry < 0:
        raise SpecError(f"{path}.retry", f"must be >= 0, got {retry}")
    policy = spec.get("backoffPolicy")
    if policy is not None and policy not in ("linear", "exponential"):
        raise SpecError(f"{path}.backoffPolicy",
                        f"unknown backoff policy {policy!r}; expected 'linear' or 'exponential'")
    delay = _optional_duration(spec, "backoffDelay", path)
    timeout = _optional_duration(spec, "timeout", path)
    if timeout is not None and timeout <= 0:
        raise SpecError(f"{path}.timeout", "must be greater than zero")
    retry_after_max = _optional_duration(spec, "retryAfterMax", path)
    sink = spec.get("deadLetterSink")
    if sink is not None:
        _check_destination(sink, f"{path}.deadLetterSink")
    delivery_format = spec.get("format")
    if delivery_format is not None and delivery_format not in ("json", "binary"):
        raise SpecError(f"{path}.format", f"unknown format {delivery_format!r}; "
                                          "expected 'json' or 'binary'")
    return DeliverySpec(retry, policy, delay, timeout, retry_after_max, sink, delivery_format)


def _optional_duration(spec: Mapping[str, Any], name: str, path: str) -> float | None:
    return None if spec.get(name) is None else parse_duration(spec[name], f"{path}.{name}")


def _check_destination(sink: Any, path: str) -> None:
    if not isinstance(sink, Mapping) or not (sink.get("uri") or sink.get("ref")):
        raise SpecError(path, "must be a Destination with `uri` and/or `ref`")
    if sink.get("uri") is not None and not isinstance(sink["uri"], str):
        raise SpecError(f"{path}.uri", "must be a string URL")
    ref = sink.get("ref")
    if ref is not None:
        if not isinstance(ref, Mapping):
            raise SpecError(f"{path}.ref", "must be a map with kind, name (and apiVersion)")
        for key in ("kind", "name"):
            if not ref.get(key):
                raise SpecError(f"{path}.ref.{key}", "missing required field")


def effective_delivery(
    own: DeliverySpec | None,
    parent: DeliverySpec | None,
    *,
    parent_default: DeliverySpec | None = BROKER_DEFAULT_DELIVERY,
) -> DeliverySpec:
    """The spec that governs a Trigger (or Subscription): its own if set, wholesale.

    `parent` is the Broker's (or Channel's) delivery; when the parent has none it gets
    `parent_default` (Knative defaults Brokers, not Channels: pass None for channels).
    """
    if own is not None:
        return own
    if parent is not None:
        return parent
    return parent_default if parent_default is not None else DeliverySpec()


def backoff_delay(
    spec: DeliverySpec, retry_number: int, schedule: str = RUNTIME_SCHEDULE
) -> float:
    """Seconds to wait before retry `retry_number` (1 for the first retry)."""
    if retry_number < 1:
        raise ValueError(f"retry_number counts from 1, got {retry_number}")
    if schedule == RUNTIME_SCHEDULE:
        step = retry_number - 1
    elif schedule == DOCUMENTED_SCHEDULE:
        step = retry_number
    else:
        raise ValueError(f"unknown backoff schedule {schedule!r}; expected "
                         f"{RUNTIME_SCHEDULE!r} or {DOCUMENTED_SCHEDULE!r}")
    if spec.backoff_policy is None or spec.backoff_delay is None:
        return 0.0
    if spec.backoff_policy == "linear":
        return spec.backoff_delay * step
    return spec.backoff_delay * 2**step


# ---------------------------------------------------------------------------------------------
# Outcomes and decisions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt produced.

    `status` None means no HTTP response at all (connection refused, DNS, timeout); `error`
    then says what happened. `retry_after` is the Retry-After header already turned into
    seconds (see `parse_retry_after`). A 2xx whose body is not a CloudEvent is a failure in
    Knative (the broker filter answers 502): record it as status 502.
    """

    status: int | None
    body: bytes = b""
    retry_after: float | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def is_retryable(outcome: Outcome) -> bool:
    """Knative's SelectiveRetry: no response, 404, 408, 409, 429 and all 5xx."""
    if outcome.status is None:
        return True
    return outcome.status in RETRYABLE_STATUSES or outcome.status >= 500


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds requested by a Retry-After header (delta-seconds or HTTP-date); None if absent
    or unparsable (Knative ignores such values). `now_epoch` is wall-clock Unix time, needed
    only for the HTTP-date form."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return when.timestamp() - now_epoch


@dataclass(frozen=True)
class Delivered:
    """Success: nothing more to do."""


@dataclass(frozen=True)
class RetryAt:
    """Try again at clock time `at` (`wait` seconds from now) as attempt number `attempt`."""

    at: float
    wait: float
    attempt: int


@dataclass(frozen=True)
class DeadLetter:
    """Give up on the destination; send the original event plus `extensions` to the DLS."""

    extensions: Mapping[str, str | int]


@dataclass(frozen=True)
class Drop:
    """Give up and lose the event (no DLS, or the DLS itself failed); `reason` says why."""

    reason: str


Decision = Delivered | RetryAt | DeadLetter | Drop


def dead_letter_extensions(destination: str, outcome: Outcome) -> dict[str, str | int]:
    """knativeerrordest / knativeerrorcode / knativeerrordata for the last failed attempt."""
    if outcome.status is None:
        code = 500
        body = f"dispatch error: {outcome.error or 'no response'}".encode()
    else:
        code = outcome.status
        body = outcome.body
    data = base64.b64encode(body).decode("ascii")[:ERROR_DATA_MAX_CHARS]
    return {"knativeerrordest": destination, "knativeerrorcode": code, "knativeerrordata": data}


class DeliveryPolicy:
    """Decides, attempt by attempt, how one event reaches one destination."""

    def __init__(self, spec: DeliverySpec, schedule: str = RUNTIME_SCHEDULE) -> None:
        backoff_delay(spec, 1, schedule)  # rejects an unknown schedule now, not mid-delivery
        self.spec = spec
        self.schedule = schedule

    @property
    def max_attempts(self) -> int:
        return 1 + self.spec.retry

    @property
    def attempt_timeout(self) -> float | None:
        """Per-attempt timeout in seconds (None: no timeout); expiry is a retryable failure."""
        return self.spec.timeout

    def wait_before_retry(self, retry_number: int, outcome: Outcome) -> float:
        """Backoff for retry `retry_number`, stretched by an honoured Retry-After."""
        wait = backoff_delay(self.spec, retry_number, self.schedule)
        if (
            self.spec.retry_after_max is not None
            and outcome.status in RETRY_AFTER_STATUSES
            and outcome.retry_after is not None
        ):
            wait = max(wait, min(outcome.retry_after, self.spec.retry_after_max))
        return wait

    def decide(
        self,
        attempt: int,
        outcome: Outcome,
        now: float,
        destination: str,
        *,
        to_dead_letter_sink: bool = False,
    ) -> Decision:
        """The next step after attempt number `attempt` (1 = first try) ended with `outcome`.

        `destination` is the URL that failed (the subscriber, or the reply address when the
        reply leg failed); it becomes knativeerrordest. With `to_dead_letter_sink` the attempts
        were to the DLS itself (retried with the same spec), and final failure means loss.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        if outcome.succeeded:
            return Delivered()
        if is_retryable(outcome) and attempt < self.max_attempts:
            wait = self.wait_before_retry(attempt, outcome)
            return RetryAt(at=now + wait, wait=wait, attempt=attempt + 1)
        why = _describe(outcome, attempt, retryable=is_retryable(outcome))
        if to_dead_letter_sink:
            return Drop(f"dead-letter sink failed too: {why}")
        if self.spec.dead_letter_sink is not None:
            return DeadLetter(dead_letter_extensions(destination, outcome))
        return Drop(f"no dead-letter sink configured: {why}")


def _describe(outcome: Outcome, attempt: int, *, retryable: bool) -> str:
    what = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error or "no response"
    if retryable:
        return f"{what} after {attempt} attempt(s), retries exhausted"
    return f"{what} is not retryable"
