"""Measure a real cold start: what the first user of a scaled-to-zero function waits for.

When a serverless platform has scaled a function to zero, the first request has to wait
for a new instance: the process starts, imports its libraries, initialises, becomes
ready, and only then handles the request. Later ("warm") requests skip all of that.
:func:`measure_cold_start` does exactly this on the laptop with a real process and real
HTTP on loopback, so lab 01 can put a measured number next to the simulator's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from labkit.net import ReplicaProcess, python_command
from labkit.stats import percentile

DEFAULT_PATH = "/predict?index=0"


def default_command() -> list[str]:
    """The bundled digit-classifier function (:mod:`labkit.apps.function`)."""
    return python_command("labkit.apps.function")


@dataclass(frozen=True)
class ColdStartMeasurement:
    """One cold start and the warm requests after it, in seconds.

    ``cold_seconds`` is what the first user waits: ``startup_seconds`` (spawn until the
    instance answers its readiness probe) plus ``first_request_seconds``.
    """

    command: tuple[str, ...]
    path: str
    pid: int
    startup_seconds: float
    first_request_seconds: float
    warm_seconds: tuple[float, ...]
    app_init: Mapping[str, float]

    @property
    def cold_seconds(self) -> float:
        return self.startup_seconds + self.first_request_seconds

    @property
    def warm_p50(self) -> float:
        return percentile(self.warm_seconds, 50)

    @property
    def warm_p95(self) -> float:
        return percentile(self.warm_seconds, 95)

    @property
    def warm_p99(self) -> float:
        return percentile(self.warm_seconds, 99)

    @property
    def slowdown(self) -> float:
        """How many times longer the cold request took than a typical warm one."""
        return self.cold_seconds / self.warm_p50

    def cold_breakdown(self) -> dict[str, float]:
        """Where the cold request's time went, in seconds, in the order it was spent.

        The app's own report (imports, model, ...) is carved out of the start-up; the rest
        of the start-up is the process spawn, interpreter start and readiness polling.
        """
        inside = {k.removesuffix("_seconds"): v for k, v in self.app_init.items()}
        parts = {"spawn + interpreter + readiness": max(self.startup_seconds - sum(inside.values()), 0.0)}
        parts.update(inside)
        parts["first request"] = self.first_request_seconds
        return parts

    def summary(self) -> str:
        """A few lines for a notebook: the cold request, its parts, and the warm ones."""
        ms = 1000.0
        parts = ", ".join(f"{name} {seconds * ms:.1f} ms" for name, seconds in self.cold_breakdown().items())
        return "\n".join([
            f"cold request : {self.cold_seconds * ms:8.1f} ms = {parts}",
            f"warm requests: {len(self.warm_seconds)} x, p50 {self.warm_p50 * ms:.2f} ms,"
            f" p95 {self.warm_p95 * ms:.2f} ms, p99 {self.warm_p99 * ms:.2f} ms",
            f"cold / warm p50: {self.slowdown:.0f}x",
        ])

    def plot(self, ax: Any = None) -> Any:
        """Draw the cold request's parts as one stacked bar next to the warm p50 (in ms)."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(9, 2.6), layout="constrained")
        left = 0.0
        for name, seconds in self.cold_breakdown().items():
            ax.barh("cold request", seconds * 1000, left=left, label=name)
            left += seconds * 1000
        ax.barh("warm request (p50)", self.warm_p50 * 1000, color="tab:green")
        # The warm bar is too thin to see at this scale, so both bars carry their value.
        ax.annotate(f" {self.cold_seconds * 1000:.0f} ms", (left, 0), va="center")
        ax.annotate(f" {self.warm_p50 * 1000:.2f} ms", (self.warm_p50 * 1000, 1), va="center")
        ax.set(xlabel="milliseconds", title="where a cold request's time goes", xlim=(0, left * 1.15))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncols=4, fontsize="small")
        return ax

    def __str__(self) -> str:
        return self.summary()


def measure_cold_start(command: Sequence[str] | None = None, *, warm_requests: int = 20,
                       path: str = DEFAULT_PATH, ready_path: str = "/",
                       env: Mapping[str, str] | None = None, timeout: float = 60.0) -> ColdStartMeasurement:
    """Start ``command`` from nothing, time its first request, then ``warm_requests`` more.

    ``command`` is any program that serves HTTP on 127.0.0.1 at the port given in the
    ``PORT`` environment variable (default: the bundled digit classifier). ``path`` is the
    request a user sends (a GET); ``ready_path`` is the readiness probe. The process is
    always stopped before this returns, also when a request fails.

    The start-up is :meth:`labkit.net.ReplicaProcess.start`'s spawn-to-first-answer time. Its
    readiness polling (every 10 ms, backing off to 100 ms) can add up to one poll interval,
    as a platform's own readiness probe does.
    """
    if warm_requests < 1:
        raise ValueError(f"warm_requests: must be at least 1, got {warm_requests}")
    argv = list(command) if command is not None else default_command()
    replica = ReplicaProcess(argv, env=dict(env) if env else None, ready_path=ready_path, name="coldstart")
    startup = replica.start(timeout=timeout)
    pid = replica.pid
    assert pid is not None  # start() returned: the process runs
    try:
        with httpx.Client(base_url=replica.url, timeout=timeout) as client:
            first = timed_get(client, path)
            warm = tuple(timed_get(client, path) for _ in range(warm_requests))
            app_init = read_app_init(client, ready_path)
    finally:
        replica.stop()
    return ColdStartMeasurement(tuple(argv), path, pid, startup, first, warm, app_init)


def timed_get(client: httpx.Client, path: str) -> float:
    """Seconds for one GET, from sending to the full body; a non-2xx answer is an error."""
    started = time.perf_counter()
    response = client.get(path)
    response.read()
    elapsed = time.perf_counter() - started
    if not response.is_success:
        raise RuntimeError(f"GET {path}: HTTP {response.status_code}: {response.text[:200]}")
    return elapsed


def read_app_init(client: httpx.Client, ready_path: str) -> dict[str, float]:
    """The app's own account of its start-up, if it reports one (labkit's apps do)."""
    try:
        report = client.get(ready_path).json()["init"]
        return {str(k): float(v) for k, v in report.items() if isinstance(v, (int, float))}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}
