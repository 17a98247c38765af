"""Checks for labs/01_serverless_tradeoffs.ipynb.

Each task's givens live here, next to its check, so the notebook shows the same numbers
the check recomputes from, and a student cannot pass by changing the question.
The expected answers come from labkit's simulator and cost model (no live components).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labkit.grading.checks import check_at_most, check_choices, check_close, fail, passed, require_number
from labkit.sim import (
    SECONDS_PER_MONTH,
    Bursty,
    Diurnal,
    PlatformResult,
    Poisson,
    Prices,
    Workload,
    always_on_monthly_cost,
    break_even_rate,
    simulate_platform,
)

# --- Exercise 1: the break-even rate with Lambda's free tier -------------------------------


@dataclass(frozen=True)
class BreakEvenTask:
    """A function, the always-on service it is compared with (default list prices), and the
    monthly free tier AWS Lambda gives every account: 1 million requests and 400,000
    GB-seconds a month (https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html).
    labkit's cost model (``break_even_rate``) leaves the free tier out: it is per account, not
    per function; this exercise is about the one function the account runs."""

    mean_duration: float = 0.12
    memory_mb: float = 1024.0
    free_requests: float = 1_000_000.0
    free_gb_seconds: float = 400_000.0


BREAK_EVEN_TASK = BreakEvenTask()


def monthly_bill_with_free_tier(rate: float, task: BreakEvenTask = BREAK_EVEN_TASK,
                                prices: Prices | None = None) -> float:
    """Lambda's monthly bill at ``rate`` req/s once the free allowances are used up."""
    prices = prices or Prices()
    requests = rate * SECONDS_PER_MONTH
    gb_seconds = requests * task.mean_duration * task.memory_mb / 1024
    return (max(0.0, gb_seconds - task.free_gb_seconds) * prices.gb_second
            + max(0.0, requests - task.free_requests) * prices.per_request)


def break_even_with_free_tier(task: BreakEvenTask = BREAK_EVEN_TASK, prices: Prices | None = None) -> float:
    """The rate where the free-tier bill equals one always-on instance (bisection: the bill
    is piecewise linear, growing, and zero at rate 0)."""
    target = always_on_monthly_cost(1, prices)
    low, high = 0.0, 1.0
    while monthly_bill_with_free_tier(high, task, prices) < target:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if monthly_bill_with_free_tier(middle, task, prices) < target else (low, middle)
    return (low + high) / 2


def check_break_even_rate(answer: object) -> None:
    """The request rate (req/s) where Lambda's bill, free tier included, equals one always-on instance."""
    task = BREAK_EVEN_TASK
    value = require_number("break-even rate", answer)
    if math.isclose(value, break_even_rate(task.mean_duration, task.memory_mb), rel_tol=0.01):
        fail("break-even rate: that is the break-even WITHOUT the free tier (what break_even_rate() gives).",
             "the first free_requests requests and free_gb_seconds GB-seconds of each month cost nothing: "
             "subtract them before pricing, then solve bill(rate) = always-on monthly cost.")
    check_close(
        "break-even rate", value, break_even_with_free_tier(task), rel_tol=0.01, unit=" req/s",
        hint="a month's requests = rate x seconds per month (labkit's month is 730 hours). Bill = (GB-seconds - "
             "free GB-seconds) x price per GB-second + (requests - free requests) x price per request, each part "
             "at least 0 (GB-seconds = requests x duration x memory in GB, 1 GB = 1024 MB). Set it equal to the "
             "always-on monthly cost and solve for the rate in requests per SECOND; then check that both free "
             "allowances really are used up at that rate.",
    )


# --- Exercise 2: a keep-alive for a target cold-start probability -----------------------


@dataclass(frozen=True)
class KeepAliveTask:
    """A rarely called function: pick the shortest keep-alive that meets the target."""

    arrival_rate: float = 0.02
    warm_service_time: float = 0.2
    cold_service_time: float = 1.2
    target: float = 0.05
    max_time: float = 1_000_000.0
    seed: int = 2026


KEEP_ALIVE_TASK = KeepAliveTask()
#: Statistical slack on the target: the check's own run has a sampling error of a few %.
TARGET_SLACK = 1.1
#: "Shortest" within reason: a keep-alive 30% shorter must miss the target.
SHORTER = 0.7


def keep_alive_cold_start_probability(keep_alive: float, task: KeepAliveTask = KEEP_ALIVE_TASK) -> float:
    """Cold-start probability of ``task``'s function with this keep-alive (seconds)."""
    return simulate_platform(
        arrival_rate=task.arrival_rate, warm_service_time=task.warm_service_time,
        cold_service_time=task.cold_service_time, expiration_threshold=keep_alive,
        max_time=task.max_time, seed=task.seed,
    ).cold_start_probability


def check_keep_alive(answer: object) -> None:
    """Met the target (within sampling error), and not wastefully long."""
    task = KEEP_ALIVE_TASK
    keep_alive = require_number("keep-alive", answer)
    if keep_alive < 0:
        fail(f"keep-alive: {keep_alive:g} s is negative.", "a keep-alive is a number of seconds, 0 or more.")
    check_at_most(
        "cold-start probability with your keep-alive", keep_alive_cold_start_probability(keep_alive),
        task.target * TARGET_SLACK,
        hint="a longer keep-alive catches more of the gaps between requests. Sweep keep-alive values with "
             "simulate_platform (or use P(cold) ~ exp(-rate x keep-alive) for a first guess) and keep the "
             "smallest that meets the target.",
    )
    if keep_alive_cold_start_probability(SHORTER * keep_alive) <= task.target:
        fail(f"keep-alive: {keep_alive:g} s meets the target, but so does a keep-alive 30% shorter.",
             "every second of keep-alive is an idle instance someone pays for; look for the SMALLEST "
             "keep-alive whose cold-start probability is at most the target.")
    passed("keep-alive meets the target and is not wastefully long")


# --- Exercise 3: does serverless fit? ----------------------------------------------------

SERVERLESS, ALWAYS_ON = "serverless", "always-on"
#: Exercise 3's platform: instances expire after 10 idle minutes.
KEEP_ALIVE = 600.0
SEED = 7


@dataclass(frozen=True)
class Scenario:
    """A workload, its latency objective, and the always-on deployment it competes with."""

    what: str
    workload: Workload
    warm_service_time: float
    cold_start: float
    memory_mb: float
    p99_slo: float
    always_on_instances: int
    horizon: float

    def simulate(self) -> PlatformResult:
        """This scenario on the serverless platform (lognormal service times, CV 0.3)."""
        return simulate_platform(
            workload=self.workload, warm_service_time=self.warm_service_time,
            cold_service_time=self.warm_service_time + self.cold_start, expiration_threshold=KEEP_ALIVE,
            max_time=self.horizon, seed=SEED, memory_mb=self.memory_mb,
            service_distribution="lognormal", service_cv=0.3,
        )


DAY = 86400.0
SCENARIOS: dict[str, Scenario] = {
    "thumbnails": Scenario("make a thumbnail when a photo is uploaded (bursts of uploads)",
                           Bursty(0.1, 0.0, mean_high_duration=300, mean_low_duration=5700),
                           warm_service_time=0.8, cold_start=1.5, memory_mb=1024, p99_slo=10.0,
                           always_on_instances=1, horizon=14 * DAY),
    "checkout-api": Scenario("the shop's checkout API, busy all day",
                             Poisson(30.0), warm_service_time=0.05, cold_start=1.0, memory_mb=512, p99_slo=0.5,
                             always_on_instances=3, horizon=3600.0),
    "fraud-score": Scenario("score a rare wire transfer for fraud while the customer waits",
                            Poisson(0.002), warm_service_time=0.03, cold_start=2.0, memory_mb=1024, p99_slo=0.3,
                            always_on_instances=1, horizon=30 * DAY),
    "chat-webhook": Scenario("answer a chat bot's webhook (office hours busier than nights)",
                             Diurnal(0.2, 10.0), warm_service_time=0.3, cold_start=1.0, memory_mb=512, p99_slo=3.0,
                             always_on_instances=1, horizon=2 * DAY),
}


def best_fit(scenario: Scenario) -> str:
    """Serverless if it is cheaper than the always-on deployment AND meets the p99 objective."""
    result = scenario.simulate()
    cheaper = result.monthly_cost < always_on_monthly_cost(scenario.always_on_instances)
    fast_enough = result.response_time_p99 <= scenario.p99_slo
    return SERVERLESS if cheaper and fast_enough else ALWAYS_ON


def check_serverless_fit(answer: object) -> None:
    """The student's {scenario name: "serverless" | "always-on"}."""
    check_choices(
        "serverless or always-on", answer, {name: best_fit(s) for name, s in SCENARIOS.items()},
        hint="for each scenario, simulate it (Scenario.simulate()) and ask two questions: is result.monthly_cost "
             "below always_on_monthly_cost(always_on_instances)? Is result.response_time_p99 within p99_slo? "
             "Serverless fits only if both are yes.",
    )


def scenario_table() -> str:
    """The scenarios as aligned text, for the notebook."""
    header = (f"{'name':<13} {'mean req/s':>10} {'warm s':>7} {'cold start s':>12} {'MB':>5} {'p99 SLO s':>9} "
              f"{'always-on':>9}")
    rows = [header] + [
        f"{name:<13} {s.workload.mean_rate:>10.3g} {s.warm_service_time:>7.2f} {s.cold_start:>12.1f} "
        f"{s.memory_mb:>5.0f} {s.p99_slo:>9.1f} {s.always_on_instances:>9d}  {s.what}"
        for name, s in SCENARIOS.items()
    ]
    return "\n".join(rows)


__all__ = [
    "ALWAYS_ON",
    "BREAK_EVEN_TASK",
    "KEEP_ALIVE",
    "KEEP_ALIVE_TASK",
    "SCENARIOS",
    "SERVERLESS",
    "Scenario",
    "best_fit",
    "break_even_with_free_tier",
    "check_break_even_rate",
    "check_keep_alive",
    "check_serverless_fit",
    "keep_alive_cold_start_probability",
    "monthly_bill_with_free_tier",
    "scenario_table",
]
