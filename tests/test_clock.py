from __future__ import annotations

import asyncio
import threading

import pytest
import simpy

from labkit.clock import Clock, SimClock, WallClock
from labkit.core.loop import BackgroundLoop


def test_simclock_now_follows_environment_and_timers_fire_at_their_time() -> None:
    env = simpy.Environment(initial_time=5)
    clock = SimClock(env)
    fired: list[tuple[str, float]] = []
    clock.call_later(3, lambda: fired.append(("b", clock.now())))
    clock.call_later(1.5, lambda: fired.append(("a", clock.now())))
    assert clock.now() == 5.0
    env.run()
    assert fired == [("a", 6.5), ("b", 8.0)]
    assert clock.now() == 8.0


def test_simclock_cancel_prevents_the_callback() -> None:
    env = simpy.Environment()
    clock = SimClock(env)
    fired: list[str] = []
    handle = clock.call_later(1, lambda: fired.append("cancelled one"))
    clock.call_later(2, lambda: fired.append("kept"))
    handle.cancel()
    env.run()
    assert fired == ["kept"]
    assert handle.cancelled


def test_policy_code_written_once_runs_on_both_clocks() -> None:
    def schedule_ticks(clock: Clock, out: list[float]) -> None:
        clock.call_later(0, lambda: out.append(clock.now()))

    env = simpy.Environment()
    sim_ticks: list[float] = []
    schedule_ticks(SimClock(env), sim_ticks)
    env.run()
    assert sim_ticks == [0.0]

    async def live() -> list[float]:
        ticks: list[float] = []
        done = asyncio.get_running_loop().create_future()
        clock = WallClock()
        schedule_ticks(clock, ticks)
        clock.call_later(0, lambda: done.set_result(None))
        await done
        return ticks

    assert len(asyncio.run(live())) == 1
    assert isinstance(WallClock(), Clock) and isinstance(SimClock(env), Clock)


@pytest.mark.parametrize("delay", [-1, float("nan")])
def test_bad_delays_are_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        SimClock(simpy.Environment()).call_later(delay, lambda: None)


def test_wallclock_without_a_loop_says_why() -> None:
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        WallClock().call_later(1, lambda: None)


def test_wallclock_now_is_monotonic() -> None:
    clock = WallClock()
    readings = [clock.now() for _ in range(100)]
    assert readings == sorted(readings)


def test_wallclock_timer_cancel_inside_loop() -> None:
    async def scenario() -> list[str]:
        clock = WallClock()
        fired: list[str] = []
        done = asyncio.get_running_loop().create_future()
        clock.call_later(0, lambda: fired.append("cancelled")).cancel()
        clock.call_later(0.01, lambda: done.set_result(None))
        await done
        return fired

    assert asyncio.run(scenario()) == []


def test_wallclock_schedules_from_another_thread_onto_its_loop() -> None:
    background = BackgroundLoop()
    try:
        clock = WallClock(loop=background.loop)
        fired = threading.Event()
        threads: list[str] = []

        def callback() -> None:
            threads.append(threading.current_thread().name)
            fired.set()

        # Hold the loop while scheduling and cancelling, so the cancel is queued before the
        # timer could fire: a timer that already fired cannot be cancelled, on any thread.
        gate = threading.Event()
        background.loop.call_soon_threadsafe(gate.wait, 10)
        cancelled = clock.call_later(0, lambda: threads.append("cancelled"))
        cancelled.cancel()
        gate.set()
        clock.call_later(0.01, callback)
        assert fired.wait(10)
        assert threads == ["labkit-loop"]
    finally:
        background.close()
