"""Event delivery under failures, in simulated time: retries, backoff, dead letters.

Every decision comes from `labkit.eventing.delivery.DeliveryPolicy`, the same object the live
broker uses; this module only supplies the failures and advances simulated time by the
policy's waits (so a million seconds of retry schedules cost milliseconds).

The subscriber fails an attempt when (a) it falls in an outage window (the subscriber is down:
every attempt then fails, like a deploy or a crash loop) or (b) a seeded coin with
`failure_probability` says so (flakiness). A failed attempt costs `failure_time` seconds
(time until the error, or the timeout for a hanging subscriber); a good one `service_time`.
Events arrive as a Poisson stream at `arrival_rate`, so an outage hits a burst of them.

    r = simulate_delivery(failure_probability=0.3, retry=3, backoff_policy="exponential",
                          backoff_delay=0.2, events=10_000, seed=1)
    r.dead_letter_rate, r.latency_p50, r.latency_p99, r.mean_attempts
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from labkit.eventing.delivery import (
    RUNTIME_SCHEDULE,
    DeadLetter,
    Delivered,
    DeliveryPolicy,
    DeliverySpec,
    Outcome,
    RetryAt,
)
from labkit.params import check_range, check_seed
from labkit.sim.results import Scalar, SimResult
from labkit.stats import percentile

__all__ = ["DeliverySimResult", "simulate_delivery"]


@dataclass(frozen=True)
class DeliverySimResult(SimResult):
    """What happened to `events` events; latencies (s) are arrival -> subscriber's 2xx."""

    events: int
    delivered: int
    dead_lettered: int
    dropped: int
    attempts: int
    latencies: np.ndarray = field(repr=False)

    @property
    def dead_letter_rate(self) -> float:
        """Share of events that did not reach the subscriber (dead-lettered or dropped)."""
        return (self.dead_lettered + self.dropped) / self.events if self.events else 0.0

    @property
    def mean_attempts(self) -> float:
        return self.attempts / self.events if self.events else 0.0

    def latency_percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the delivered events' latency (NaN if none was)."""
        return percentile(self.latencies, q)

    @property
    def latency_p50(self) -> float:
        return self.latency_percentile(50)

    @property
    def latency_p99(self) -> float:
        return self.latency_percentile(99)

    def summary(self) -> dict[str, Scalar]:
        return {"events": self.events, "delivered": self.delivered, "dead_lettered": self.dead_lettered,
                "dropped": self.dropped, "attempts": self.attempts, "dead_letter_rate": self.dead_letter_rate,
                "mean_attempts": self.mean_attempts, "latency_p50": self.latency_p50,
                "latency_p99": self.latency_p99}


def simulate_delivery(*, failure_probability: float = 0.0, retry: int = 0,
                      backoff_policy: str | None = None, backoff_delay: float | None = None,
                      dead_letter_sink: bool = True, events: int = 10_000,
                      arrival_rate: float = 100.0, service_time: float = 0.005,
                      failure_time: float = 0.005,
                      outages: tuple[tuple[float, float], ...] = (),
                      retry_after_max: float | None = None,
                      schedule: str = RUNTIME_SCHEDULE, seed: int = 1) -> DeliverySimResult:
    """Deliver `events` events through one trigger's DeliverySpec; see the module docstring.

    `outages` are (start, end) windows in seconds from the first arrival during which every
    attempt fails.
    """
    check_range("failure_probability", failure_probability, 0, 1)
    events = check_range("events", events, 0, integer=True)
    check_range("arrival_rate", arrival_rate, 0, closed="neither")
    check_range("service_time", service_time, 0, closed="left")
    check_range("failure_time", failure_time, 0, closed="left")
    seed = check_seed(seed)
    spec = DeliverySpec(retry=retry, backoff_policy=backoff_policy, backoff_delay=backoff_delay,
                        retry_after_max=retry_after_max,
                        dead_letter_sink={"uri": "sim://dls"} if dead_letter_sink else None)
    policy = DeliveryPolicy(spec, schedule)
    rng = random.Random(seed)
    latencies = []
    delivered = dead_lettered = dropped = attempts = 0
    arrival = 0.0
    for _ in range(events):
        arrival += rng.expovariate(arrival_rate)
        now, number = arrival, 1
        while True:
            attempts += 1
            down = any(start <= now < end for start, end in outages)
            failed = down or rng.random() < failure_probability
            now += failure_time if failed else service_time
            decision = policy.decide(number, Outcome(503 if failed else 200), now, "subscriber")
            if isinstance(decision, RetryAt):
                now, number = decision.at, decision.attempt
                continue
            if isinstance(decision, Delivered):
                delivered += 1
                latencies.append(now - arrival)
            elif isinstance(decision, DeadLetter):
                dead_lettered += 1
            else:
                dropped += 1
            break
    return DeliverySimResult(events, delivered, dead_lettered, dropped, attempts,
                             np.asarray(latencies))
