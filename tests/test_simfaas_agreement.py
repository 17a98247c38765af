"""labkit's platform simulator agrees with SimFaaS (the peer it re-implements) in distribution.

Random runs: both simulators run several seeds on the same parameters; for each metric the
difference of the means must stay within 4 combined standard errors (plus a tiny absolute
floor for metrics that are almost constant). Deterministic runs (constant gaps and service
times) follow a single path, ties included, so there the results must be equal. simfaas is a test dependency of this file: if it is missing the
test errors instead of skipping, because an agreement nobody checked is not an agreement.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from labkit.sim import TraceReplay, simulate_platform

METRICS = ("cold_start_probability", "rejection_probability", "avg_server_count", "avg_running_count", "avg_idle_count")
SIMFAAS_SEEDS = range(20)
LABKIT_SEEDS = range(100, 160)


@dataclass(frozen=True)
class Case:
    name: str
    arrival_rate: float
    warm_service_time: float
    cold_service_time: float
    expiration_threshold: float
    max_time: float
    maximum_concurrency: int = 1000

    def params(self) -> dict:
        return {
            "arrival_rate": self.arrival_rate,
            "warm_service_time": self.warm_service_time,
            "cold_service_time": self.cold_service_time,
            "expiration_threshold": self.expiration_threshold,
            "max_time": self.max_time,
            "maximum_concurrency": self.maximum_concurrency,
        }


CASES = [
    # the SimFaaS README workload, on a short horizon
    Case("readme", 0.9, 1.991, 2.244, 600.0, 1e4),
    # a short keep-alive: many cold starts, and which idle instance is reused changes the counts
    Case("short-keepalive", 1.0, 1.991, 2.244, 10.0, 6e3),
    # a small concurrency cap: rejections
    Case("rejections", 3.0, 1.0, 1.5, 20.0, 3e3, maximum_concurrency=3),
]


def _simfaas():
    from simfaas.ServerlessSimulator import ServerlessSimulator

    return ServerlessSimulator


def run_simfaas(case: Case, seed: int) -> dict[str, float]:
    np.random.seed(seed)  # SimFaaS draws from numpy's global RNG
    sim = _simfaas()(
        arrival_rate=case.arrival_rate,
        warm_service_rate=1 / case.warm_service_time,
        cold_service_rate=1 / case.cold_service_time,
        expiration_threshold=case.expiration_threshold,
        max_time=case.max_time,
        maximum_concurrency=case.maximum_concurrency,
    )
    sim.generate_trace()
    sim.calculate_time_lengths()
    return {
        "cold_start_probability": sim.get_cold_start_prob(),
        "rejection_probability": sim.total_reject_count / sim.total_req_count,
        "avg_server_count": float(sim.get_average_server_count()),
        "avg_running_count": float(sim.get_average_server_running_count()),
        "avg_idle_count": float(sim.get_average_server_idle_count()),
    }


def run_labkit(case: Case, seed: int, **overrides) -> dict[str, float]:
    result = simulate_platform(**{**case.params(), **overrides}, seed=seed, timeline_points=1)
    return {m: getattr(result, m) for m in METRICS}


def disagreements(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[str]:
    """Metrics whose means differ by more than 4 combined standard errors (+ a small floor)."""
    out = []
    for metric in METRICS:
        x = np.array([r[metric] for r in a])
        y = np.array([r[metric] for r in b])
        se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
        floor = 1e-3 * max(abs(x.mean()), abs(y.mean()), 1e-3)
        diff = abs(x.mean() - y.mean())
        if diff > 4 * se + floor:
            out.append(f"{metric}: simfaas {x.mean():.5g} vs labkit {y.mean():.5g} (diff {diff:.3g}, se {se:.3g})")
    return out


@pytest.fixture(scope="module")
def simfaas_results() -> dict[str, list[dict[str, float]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {case.name: [run_simfaas(case, s) for s in SIMFAAS_SEEDS] for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_labkit_agrees_with_simfaas(case: Case, simfaas_results) -> None:
    ours = [run_labkit(case, s) for s in LABKIT_SEEDS]
    assert disagreements(simfaas_results[case.name], ours) == []


def test_the_comparison_detects_a_different_keepalive(simfaas_results) -> None:
    # The same check must fail when labkit runs a different model: a doubled keep-alive.
    case = CASES[1]
    ours = [run_labkit(case, s, expiration_threshold=2 * case.expiration_threshold) for s in LABKIT_SEEDS]
    found = disagreements(simfaas_results[case.name], ours)
    assert any(line.startswith("avg_server_count") for line in found), found


@pytest.mark.parametrize(
    "gap, service, threshold, horizon, cap",
    [
        (1.0, 1.0, 600.0, 11.0, 1000),  # every request ends exactly as the next arrives
        (3.0, 1.0, 2.0, 21.0, 1000),  # every keep-alive ends exactly as the next arrives
        (0.5, 1.25, 0.75, 30.25, 1000),
        (0.25, 1.0, 0.5, 20.25, 3),  # rejections
    ],
)
def test_deterministic_runs_match_simfaas_exactly(gap, service, threshold, horizon, cap) -> None:
    # With constant gaps and service times both simulators follow one path, ties included, so
    # counts and time integrals must be equal, not just close. Each horizon falls on an
    # instance event, where SimFaaS's end of trace and labkit's max_time coincide.
    from simfaas.SimProcess import ConstSimProcess

    sim = _simfaas()(
        arrival_process=ConstSimProcess(1 / gap),
        warm_service_process=ConstSimProcess(1 / service),
        cold_service_process=ConstSimProcess(1 / service),
        expiration_threshold=threshold,
        max_time=horizon,
        maximum_concurrency=cap,
    )
    sim.generate_trace()
    sim.calculate_time_lengths()
    assert sim.get_trace_end() == horizon
    ours = simulate_platform(
        workload=TraceReplay(np.arange(1, horizon / gap + 2) * gap),
        warm_service_time=service,
        cold_service_time=service,
        expiration_threshold=threshold,
        max_time=horizon,
        maximum_concurrency=cap,
        service_distribution="deterministic",
        seed=0,
    )
    assert (ours.requests, ours.cold_starts, ours.warm_starts, ours.rejections) == (
        sim.total_req_count,
        sim.total_cold_count,
        sim.total_warm_count,
        sim.total_reject_count,
    )
    assert ours.avg_server_count == pytest.approx(sim.get_average_server_count(), rel=1e-12)
    assert ours.avg_running_count == pytest.approx(sim.get_average_server_running_count(), rel=1e-12)
    assert ours.avg_idle_count == pytest.approx(sim.get_average_server_idle_count(), rel=1e-12, abs=1e-12)
