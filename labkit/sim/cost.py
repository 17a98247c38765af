"""Cost of serverless (pay per use) versus an always-on instance, in US dollars per month.

Pay per use bills the memory held while a request runs (GB-seconds) plus a fee per request;
an always-on instance bills every hour whether it works or not. The break-even request rate,
where both cost the same, is the number lab 01 argues from.

Default prices are public list prices (see :class:`Prices` for sources and dates). Free tiers,
billing granularity (AWS rounds each invocation up to 1 ms), data transfer and the separate
price of provisioned concurrency are left out on purpose: they shift the numbers a little and
hide the shape of the trade-off. Change any price by building your own ``Prices(...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from labkit.params import check_range

__all__ = [
    "HOURS_PER_MONTH",
    "SECONDS_PER_MONTH",
    "Prices",
    "always_on_monthly_cost",
    "break_even_rate",
    "serverless_monthly_cost",
    "serverless_monthly_cost_for_rate",
]

#: AWS prices a month as 730 hours (365 days * 24 h / 12 months) on its pricing pages.
HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0


@dataclass(frozen=True)
class Prices:
    """Unit prices in US dollars. Build your own to compare providers or regions.

    Defaults are on-demand list prices, looked up on 2026-11-28:

    * ``gb_second`` and ``per_million_requests``: AWS Lambda, x86, us-east-1, first pricing
      tier (up to 6 billion GB-s a month): $0.0000166667 per GB-second and $0.20 per 1M
      requests. Sources: https://aws.amazon.com/lambda/pricing/ and
      https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html
    * ``always_on_hourly``: an AWS Fargate task (Linux/x86, us-east-1) with 0.25 vCPU and
      0.5 GB, the smallest Fargate size and the nearest always-on match for a small function:
      0.25 * $0.04048 per vCPU-hour + 0.5 * $0.004445 per GB-hour = $0.0123425 per hour
      (about $9 a month). Sources: https://aws.amazon.com/fargate/pricing/ and
      https://www.vantage.sh/blog/fargate-pricing (a summary of the
      AWS page, confirmed there in 2026-03)
    """

    gb_second: float = 0.0000166667
    per_million_requests: float = 0.20
    always_on_hourly: float = 0.25 * 0.04048 + 0.5 * 0.004445

    def __post_init__(self) -> None:
        for name in ("gb_second", "per_million_requests", "always_on_hourly"):
            check_range(f"Prices.{name}", getattr(self, name), 0, closed="left")

    @property
    def per_request(self) -> float:
        return self.per_million_requests / 1e6


class _Billable(Protocol):
    """What a simulation result must expose to be priced (``PlatformResult`` does)."""

    @property
    def requests(self) -> int: ...
    @property
    def rejections(self) -> int: ...
    @property
    def busy_instance_seconds(self) -> float: ...
    @property
    def max_time(self) -> float: ...
    @property
    def memory_mb(self) -> float: ...


def serverless_monthly_cost_for_rate(
    rate: float, mean_duration: float, memory_mb: float, prices: Prices | None = None
) -> float:
    """Pay-per-use cost of a month at ``rate`` requests/s lasting ``mean_duration`` s each."""
    prices = prices or Prices()
    rate = check_range("rate", rate, 0, closed="left")
    gb_s_per_request = (
        check_range("mean_duration", mean_duration, 0, closed="left")
        * check_range("memory_mb", memory_mb, 0, closed="neither")
        / 1024.0
    )
    return rate * SECONDS_PER_MONTH * (gb_s_per_request * prices.gb_second + prices.per_request)


def serverless_monthly_cost(result: _Billable, prices: Prices | None = None) -> float:
    """Pay-per-use cost of a simulated run, scaled from its horizon to a month.

    Billed time is the time instances spent serving requests (``busy_instance_seconds``), cold
    starts included: Lambda's pricing page counts initialization code outside the handler in
    the billed duration. Rejected requests are not billed.
    """
    prices = prices or Prices()
    served = result.requests - result.rejections
    gb_seconds = result.busy_instance_seconds * result.memory_mb / 1024.0
    cost = gb_seconds * prices.gb_second + served * prices.per_request
    return cost * SECONDS_PER_MONTH / result.max_time


def always_on_monthly_cost(instances: float = 1, prices: Prices | None = None) -> float:
    """Cost of ``instances`` always-on instances running the whole month."""
    prices = prices or Prices()
    return check_range("instances", instances, 0, closed="left") * prices.always_on_hourly * HOURS_PER_MONTH


def break_even_rate(
    mean_duration: float, memory_mb: float, prices: Prices | None = None, instances: float = 1
) -> float:
    """Request rate (req/s) at which pay per use costs as much as ``instances`` always-on ones.

    Serverless cost grows linearly with the rate while always-on is flat, so the closed form is
    ``rate = instances * hourly / (3600 * cost_per_request)``. Below it serverless is cheaper.
    This ignores whether that many instances could serve that rate: check
    ``rate * mean_duration <= instances`` before reading it as a sizing answer.
    """
    prices = prices or Prices()
    per_request = serverless_monthly_cost_for_rate(1.0, mean_duration, memory_mb, prices) / SECONDS_PER_MONTH
    if per_request == 0:
        return math.inf
    return always_on_monthly_cost(instances, prices) / (SECONDS_PER_MONTH * per_request)
