"""The live sidecar and the mesh simulator make the same decisions in the same order.

Each scenario runs twice from one seed: in `simulate_mesh`, and live through a real `Sidecar`
over loopback sockets to real upstream servers. The upstream servers replay the simulator's
own host model (its seeded service-time and failure streams, taken from the simulator's
`_Model`, drawn try by try in the same order), so both sides see the same answers; the
decisions (which tries are made, attempt counts, statuses, response flags) are each side's
own, by the one router (`labkit.mesh.router`) both drive. Requests are sequential on both
sides (the simulated arrivals are checked not to overlap), and each scenario's decisions do
not depend on which host a balancer picks (one host, or hosts that behave alike), because the
two sides seed their balancers differently. The live side never waits on time to decide:
an answered try is answered at once, a try the model makes outlast the per-try timeout is
never answered.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httptools
import pytest
import simpy

from labkit.mesh import flags
from labkit.mesh.destination import DestinationRule
from labkit.mesh.pool import PoolLimits
from labkit.mesh.proxy import Sidecar
from labkit.mesh.proxy_config import Endpoint, MeshConfig, ServiceInfo, Workload
from labkit.mesh.retries import RetryPolicy
from labkit.mesh.routing import VirtualService
from labkit.sim import simulate_mesh
from labkit.sim.mesh import _Model

RETRY_5XX = {"attempts": 2, "retryOn": "5xx"}
LONG_EJECTION = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "600s",
                 "maxEjectionPercent": 100}
"""Ejected hosts stay out for the whole run on both clocks (the simulated run lasts 300 s)."""


@dataclass(frozen=True)
class Scenario:
    hosts: int = 1
    failure_rate: float = 0.5
    service_time: float = 0.001
    retries: Mapping[str, Any] | None = None
    outlier_detection: Mapping[str, Any] | None = None
    seed: int = 2
    expect: frozenset[str] = frozenset()
    """Response flag sets ("-" for none) the scenario must show, so it tests what it names."""

    def sim_args(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "failing_hosts": self.hosts, "failure_rate": self.failure_rate,
                "service_time": self.service_time, "retries": self.retries,
                "outlier_detection": self.outlier_detection, "seed": self.seed,
                "arrival_rate": 0.04, "duration": 300.0}

    @property
    def per_try_timeout(self) -> float | None:
        return RetryPolicy.from_spec(self.retries).per_try_timeout


SCENARIOS = {
    "retries with a flaky host": Scenario(retries=RETRY_5XX, expect=frozenset({"-", "URX"})),
    "no healthy host": Scenario(failure_rate=1.0, retries=RETRY_5XX,
                                outlier_detection=LONG_EJECTION, expect=frozenset({"UH"})),
    "outlier ejection of one of two flaky hosts": Scenario(
        hosts=2, retries=RETRY_5XX, outlier_detection={**LONG_EJECTION, "maxEjectionPercent": 50},
        expect=frozenset({"-", "URX"})),
    "ejection with Istio's default retries": Scenario(
        hosts=2, failure_rate=0.7, outlier_detection=LONG_EJECTION, seed=3,
        expect=frozenset({"-", "UH"})),
    "a per-try timeout": Scenario(
        failure_rate=0.0, service_time=0.75,
        retries={**RETRY_5XX, "perTryTimeout": "300ms"}, expect=frozenset({"-", "UT,URX"})),
}


@dataclass(frozen=True)
class Request:
    """One request's decisions: its answer and the attempt numbers of the tries it made."""

    status: int
    flags: str
    attempts: tuple[int, ...]


def simulated(scenario: Scenario) -> list[Request]:
    result = simulate_mesh(**scenario.sim_args())
    model = _Model.last  # type: ignore[attr-defined]  # set by the patched __init__ below
    records = sorted(model.records)
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(records):
        assert end < start, "simulated requests overlap: the scenario needs a lower arrival rate"
    assert len(records) == result.requests >= 5
    out = []
    for start, end, status, fl in records:
        tries = sum(1 for when, _ in model.try_log if start <= when <= end)
        out.append(Request(status, flags.format_flags(fl) if fl else "-",
                           tuple(range(1, tries + 1))))
    return out


class HostModel:
    """The simulator's host behaviour (`_Model._serve`), drawn from a fresh model built with
    the same seed: per try, a service time; a try that would outlast the per-try timeout is
    held, any other is answered at once, 503 with the host's failure probability."""

    def __init__(self, scenario: Scenario) -> None:
        a = scenario.sim_args()
        self.model = _Model(
            simpy.Environment(), hosts=a["hosts"], failing_hosts=a["failing_hosts"],
            failure_rate=a["failure_rate"], base_failure_rate=0.0, service_time=a["service_time"],
            host_concurrency=8, connect_time=0.0, retry=RetryPolicy.from_spec(a["retries"]),
            timeout=None, limits=PoolLimits(), outlier=None, load_balancer=None, seed=a["seed"])
        self.per_try_timeout = scenario.per_try_timeout
        self.tries: list[int] = []

    def answer(self, host: int, attempt: int) -> int | None:
        self.tries.append(attempt)
        model = self.model
        service = model.rng_service.expovariate(1.0 / model.service_time)
        if self.per_try_timeout is not None and service >= self.per_try_timeout:
            return None
        return 503 if model.rng_fail.random() < model.fail_p[model.hosts[host]] else 200


class Upstream(asyncio.Protocol):
    def __init__(self, host: int, hosts: HostModel) -> None:
        self.host, self.hosts = host, hosts
        self.parser = httptools.HttpRequestParser(self)
        self.attempt = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP server's transport is a Transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-envoy-attempt-count":
            self.attempt = int(value)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        status = self.hosts.answer(self.host, self.attempt)
        if status is not None:  # None: held until the sidecar gives up on the try
            reason = b"OK" if status == 200 else b"Service Unavailable"
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n\r\n" % (status, reason))


async def live(scenario: Scenario, requests: int) -> list[Request]:
    loop = asyncio.get_running_loop()
    hosts = HostModel(scenario)
    servers = [await loop.create_server(lambda i=i: Upstream(i, hosts), "127.0.0.1", 0)  # type: ignore[misc]  # mypy cannot type a lambda's default; i binds this host
               for i in range(scenario.hosts)]
    sidecar = Sidecar(Workload("load"), seed=scenario.seed)
    await sidecar.start()
    try:
        service = ServiceInfo("app", "default", (80,), tuple(
            Endpoint(f"127.0.0.1:{s.sockets[0].getsockname()[1]}", f"app-{i}")
            for i, s in enumerate(servers)))
        route: dict[str, Any] = {"route": [{"destination": {"host": "app"}}]}
        if scenario.retries is not None:
            route["retries"] = scenario.retries
        vs = VirtualService.from_spec({"hosts": ["app"], "http": [route]})
        rules = {}
        if scenario.outlier_detection is not None:
            rules[service.fqdn] = DestinationRule.from_spec(
                {"host": "app", "trafficPolicy": {"outlierDetection": scenario.outlier_detection}})
        sidecar.push(MeshConfig(1, {service.fqdn: service},
                                (vs,) if scenario.retries is not None else (), rules))
        out: list[Request] = []
        for _ in range(requests):  # one at a time, as the simulated ones
            before = len(hosts.tries)
            reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports["outbound"])
            writer.write(b"GET /x HTTP/1.1\r\nhost: app\r\n\r\n")
            status = int((await reader.readline()).split()[1])
            writer.close()
            await _logged(sidecar, len(out) + 1)
            line = sidecar.access_log()[-1].split('"')[2].split()
            assert int(line[0]) == status
            out.append(Request(status, line[1], tuple(hosts.tries[before:])))
        return out
    finally:
        await sidecar.close()
        for s in servers:
            s.close()


async def _logged(sidecar: Sidecar, entries: int) -> None:
    """Wait, a loop turn at a time, until the sidecar has logged `entries` requests."""
    for _ in range(100_000):
        if len(sidecar.access_log()) >= entries:
            return
        await asyncio.sleep(0)
    raise AssertionError("the sidecar never logged the request")


@pytest.fixture(autouse=True)
def _remember_the_models_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """`simulate_mesh` keeps its model to itself: note the last one built, to read its
    per-request records and per-try log."""
    init = _Model.__init__

    def remember(self: _Model, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        _Model.last = self  # type: ignore[attr-defined]  # the simulator's model, kept for the test to read

    monkeypatch.setattr(_Model, "__init__", remember)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_live_and_simulated_decisions_are_the_same(name: str) -> None:
    scenario = SCENARIOS[name]
    sim = simulated(scenario)
    live_run = asyncio.run(live(scenario, len(sim)))
    assert live_run == sim
    assert {r.flags for r in sim} >= scenario.expect  # the scenario shows what it names

