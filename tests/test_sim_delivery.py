"""The delivery simulator: the live policy's decisions in simulated time."""

from __future__ import annotations

import math

import pytest

from labkit.eventing.delivery import DeliverySpec, backoff_delay
from labkit.sim import simulate_delivery


def test_no_failures_means_one_attempt_and_the_service_time():
    r = simulate_delivery(events=1000, service_time=0.004)
    assert r.delivered == 1000 and r.dead_letter_rate == 0 and r.mean_attempts == 1
    assert r.latency_p99 == pytest.approx(0.004)


@pytest.mark.parametrize("p, retry", [(0.5, 0), (0.5, 2), (0.3, 3), (0.9, 5)])
def test_dead_letter_rate_is_p_to_the_number_of_attempts(p, retry):
    r = simulate_delivery(failure_probability=p, retry=retry, events=40_000, seed=3)
    expected = p ** (retry + 1)
    assert r.dead_letter_rate == pytest.approx(expected, abs=4 * math.sqrt(expected / 40_000) + 1e-4)
    assert r.mean_attempts == pytest.approx((1 - p ** (retry + 1)) / (1 - p), rel=0.03)


def test_latency_of_an_event_retried_k_times_is_the_policys_waits():
    spec = DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay=0.2)
    r = simulate_delivery(failure_probability=0.5, retry=3, backoff_policy="exponential",
                          backoff_delay=0.2, events=5000, service_time=0.01, failure_time=0.01)
    # every delivered latency is (attempts * 10 ms) + the sum of the first k backoffs
    possible = {round(0.01 * (k + 1) + sum(backoff_delay(spec, i) for i in range(1, k + 1)), 6)
                for k in range(4)}
    assert {round(x, 6) for x in r.latencies} <= possible
    assert len({round(x, 6) for x in r.latencies}) == 4


def test_without_a_dead_letter_sink_failures_are_dropped():
    r = simulate_delivery(failure_probability=1.0, retry=1, dead_letter_sink=False, events=100)
    assert r.dropped == 100 and r.dead_lettered == 0 and r.dead_letter_rate == 1.0


def test_an_outage_needs_enough_total_backoff_to_be_ridden_out():
    outage = ((5.0, 15.0),)
    short = simulate_delivery(outages=outage, retry=3, backoff_policy="linear", backoff_delay=0.5,
                              events=3000, arrival_rate=100, seed=2)
    long = simulate_delivery(outages=outage, retry=6, backoff_policy="exponential",
                             backoff_delay=0.5, events=3000, arrival_rate=100, seed=2)
    assert short.dead_letter_rate > 0.2  # 0 + 0.5 + 1.0 s of waits cannot span 10 s
    assert long.dead_letter_rate == 0.0  # 0.5 .. 16 s: 31.5 s in total
    assert long.latency_p99 > 5.0  # riding it out costs latency


def test_same_seed_same_result_and_bad_arguments_are_refused():
    a = simulate_delivery(failure_probability=0.2, retry=2, events=2000, seed=7)
    b = simulate_delivery(failure_probability=0.2, retry=2, events=2000, seed=7)
    assert (a.dead_lettered, a.attempts) == (b.dead_lettered, b.attempts)
    with pytest.raises(ValueError, match="failure_probability"):
        simulate_delivery(failure_probability=1.5)
