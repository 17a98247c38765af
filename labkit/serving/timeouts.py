"""Knative's three request time limits: their defaults, their rules, and when one cuts a request.

A Revision has three limits, each in whole seconds (``serving.knative.dev/v1`` RevisionSpec):

- ``timeoutSeconds``: how long a request may wait for the *first byte* of its answer. Once the
  answer has started it no longer applies (a stream may run past it);
- ``responseStartTimeoutSeconds``: the same, usually shorter; 0 or unset is off;
- ``idleTimeoutSeconds``: how long the answer may go without a byte, counted from the request's
  start until the first byte and from the last byte after; 0 or unset is off.

The queue-proxy (and the activator, from a request's arrival there) runs one timer per limit
(knative/serving ``pkg/http/handler/timeout.go``, ``timeoutHandler.ServeHTTP``): a timer that
fires before the app wrote anything answers **504** with the body ``request timeout``
(``activator request timeout`` from the activator, ``cmd/activator``; Knative's e2e test
``TestActivatorRevisionTimeout`` checks that body); the timeout and response-start timers that
fire after the first write are ignored; the idle timer after the first write appends its message
to the started answer and ends it (``tryIdleTimeoutAndWriteError``). The queue-proxy reads the
limits from ``REVISION_TIMEOUT_SECONDS``, ``REVISION_RESPONSE_START_TIMEOUT_SECONDS``,
``REVISION_IDLE_TIMEOUT_SECONDS`` (``pkg/queue/sharedmain/handlers.go``, ``mainHandler``).

Defaults and maxima are config-defaults settings (``pkg/apis/config/defaults.go``,
``NewDefaultsConfigFromMap``; documented at
https://knative.dev/docs/serving/configuration/config-defaults/): ``revision-timeout-seconds``
300, ``max-revision-timeout-seconds`` 600, ``revision-response-start-timeout-seconds`` defaults
to ``revision-timeout-seconds``, ``revision-idle-timeout-seconds`` 0 (infinite). A Revision's
unset fields get them as ``RevisionSpec.SetDefaults`` does (``pkg/apis/serving/v1/
revision_defaults.go``): ``timeoutSeconds`` unset or 0 takes the default; the other two take
theirs only when it is non-zero and below the revision's ``timeoutSeconds``.

`next_deadline` is the one decision, shared by the live queue-proxy and activator (which wait on
it) and by a simulator (through `cut`, given the times the answer's bytes arrive).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ACTIVATOR_TIMEOUT_BODY",
    "IDLE",
    "KNATIVE_DEFAULTS",
    "RESPONSE_START",
    "TIMEOUT",
    "TIMEOUT_BODY",
    "ConfigDefaults",
    "Deadline",
    "RequestTimeouts",
    "cut",
    "next_deadline",
    "revision_timeouts",
    "spec_problems",
]

TIMEOUT = "timeoutSeconds"
RESPONSE_START = "responseStartTimeoutSeconds"
IDLE = "idleTimeoutSeconds"
TIMEOUT_BODY = "request timeout"
"""The queue-proxy's 504 body (``mainHandler``: ``handler.NewTimeoutHandler(..., "request timeout", ...)``)."""
ACTIVATOR_TIMEOUT_BODY = "activator request timeout"
"""The activator's 504 body (``cmd/activator/main.go``; e2e ``TestActivatorRevisionTimeout``)."""


@dataclass(frozen=True)
class ConfigDefaults:
    """The timeout keys of Knative's config-defaults ConfigMap, checked as Knative checks them."""

    revision_timeout_seconds: int = 300
    max_revision_timeout_seconds: int = 600
    revision_response_start_timeout_seconds: int | None = None
    """None: the same as revision_timeout_seconds (defaults.go: "We default this to what the
    user has specified")."""
    revision_idle_timeout_seconds: int = 0

    def __post_init__(self) -> None:
        # NewDefaultsConfigFromMap's checks, with its messages.
        timeout, start = self.revision_timeout_seconds, self.response_start
        if timeout > self.max_revision_timeout_seconds:
            raise ValueError(f"revision-timeout-seconds ({timeout}) cannot be greater than "
                             f"max-revision-timeout-seconds ({self.max_revision_timeout_seconds})")
        if start > 0 and start > timeout:
            raise ValueError(f"revision-response-start-timeout-seconds ({start}) cannot be "
                             f"greater than revision-timeout-seconds ({timeout})")
        idle = self.revision_idle_timeout_seconds
        if idle > 0 and idle > timeout:
            raise ValueError(f"revision-idle-timeout-seconds ({idle}) cannot be greater than "
                             f"revision-timeout-seconds ({timeout})")

    @property
    def response_start(self) -> int:
        start = self.revision_response_start_timeout_seconds
        return self.revision_timeout_seconds if start is None else start


KNATIVE_DEFAULTS = ConfigDefaults()


@dataclass(frozen=True)
class RequestTimeouts:
    """One revision's limits after defaulting, in seconds; 0 turns the last two off."""

    timeout: float
    response_start: float = 0.0
    idle: float = 0.0

    def seconds(self, limit: str) -> float:
        """The value of the limit named by its field (TIMEOUT, RESPONSE_START or IDLE)."""
        return {TIMEOUT: self.timeout, RESPONSE_START: self.response_start, IDLE: self.idle}[limit]


def revision_timeouts(timeout_seconds: int | None, response_start_timeout_seconds: int | None,
                      idle_timeout_seconds: int | None,
                      defaults: ConfigDefaults = KNATIVE_DEFAULTS) -> RequestTimeouts:
    """A RevisionSpec's three fields as ``RevisionSpec.SetDefaults`` fills them in."""
    timeout = timeout_seconds or defaults.revision_timeout_seconds

    def optional(value: int | None, default: int) -> int:
        if value is not None:
            return value
        return default if 0 < default < timeout else 0

    return RequestTimeouts(timeout,
                           optional(response_start_timeout_seconds, defaults.response_start),
                           optional(idle_timeout_seconds, defaults.revision_idle_timeout_seconds))


def spec_problems(timeout_seconds: int | None, response_start_timeout_seconds: int | None,
                  idle_timeout_seconds: int | None,
                  defaults: ConfigDefaults = KNATIVE_DEFAULTS) -> Iterator[tuple[str, str]]:
    """(field, message) for each limit a Revision may not have.

    ``timeoutSeconds`` is checked as ``validateTimeoutSeconds`` does (``apis.ErrOutOfBoundsValue``
    against max-revision-timeout-seconds: "expected 0 <= 700 <= 600"). For the other two labkit
    applies the rule config-defaults holds its own keys to (at most the timeout, defaults.go)
    per revision: a longer one could never fire, as the timeout cuts first.
    """
    maximum = defaults.max_revision_timeout_seconds
    if timeout_seconds is not None and not 0 <= timeout_seconds <= maximum:
        yield TIMEOUT, f"expected 0 <= {timeout_seconds} <= {maximum}"
        return
    timeout = timeout_seconds or defaults.revision_timeout_seconds
    for name, value in ((RESPONSE_START, response_start_timeout_seconds),
                        (IDLE, idle_timeout_seconds)):
        if value is None:
            continue
        if value < 0:
            yield name, f"expected 0 <= {value} <= {timeout}"
        elif value > timeout:
            yield name, f"{name} ({value}) cannot be greater than {TIMEOUT} ({timeout})"


class Deadline(NamedTuple):
    """The moment a limit cuts a request unless a byte of its answer arrives first."""

    at: float
    limit: str
    """TIMEOUT, RESPONSE_START or IDLE: the RevisionSpec field that fires."""


def next_deadline(limits: RequestTimeouts, start: float,
                  last_write: float | None) -> Deadline | None:
    """The earliest moment a limit could cut a request that began at `start`, whose answer's
    last byte so far arrived at `last_write` (None: nothing yet). None: nothing can cut it.

    Before the first byte all three timers run from the start (the idle timer's "last write" is
    Go's zero time, so it fires at start + idle); after it only the idle timer counts. Equal
    moments go to the narrower limit (response start, then idle, then the timeout): they answer
    alike, only the name differs.
    """
    if last_write is not None:
        return Deadline(last_write + limits.idle, IDLE) if limits.idle > 0 else None
    candidates = [Deadline(start + limits.response_start, RESPONSE_START)] \
        if limits.response_start > 0 else []
    if limits.idle > 0:
        candidates.append(Deadline(start + limits.idle, IDLE))
    if limits.timeout > 0:
        candidates.append(Deadline(start + limits.timeout, TIMEOUT))
    return min(candidates, key=lambda d: d.at) if candidates else None


def cut(limits: RequestTimeouts, start: float, writes: Sequence[float],
        end: float) -> Deadline | None:
    """Which limit ends a request (None: it completes at `end`), given the ascending times its
    answer's bytes arrive (`writes`; an answer written at once is ``[end]``). A byte that
    arrives exactly at a deadline is in time."""
    last: float | None = None
    for moment in (*writes, end):
        deadline = next_deadline(limits, start, last)
        if deadline is not None and deadline.at < moment:
            return deadline
        last = moment
    return None
