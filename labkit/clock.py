"""Clocks: one interface for time, so policy code runs unchanged live and in simulation.

Policy code (an autoscaler, an outlier detector, a retry budget) asks a `Clock` what time it is
and to call it back later. Live, `WallClock` answers from `time.monotonic()` and the running
asyncio loop; in a simulation, `SimClock` answers from a `simpy.Environment`, so a day of traffic
runs in a second and gives the same decisions for the same seed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Cancellable", "Clock", "SimClock", "WallClock"]


@runtime_checkable
class Cancellable(Protocol):
    """What `Clock.call_later` returns: a pending callback that can be called off."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Time in seconds plus one-shot timers; all policy code needs from time."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Cancellable: ...


def _check_delay(delay: float) -> float:
    delay = float(delay)
    if not delay >= 0:  # also rejects NaN
        raise ValueError(f"call_later delay must be >= 0 seconds, got {delay!r}")
    return delay


class WallClock:
    """Real time: `time.monotonic()` (immune to NTP jumps) and asyncio timers.

    Timers need an event loop: either the one given here, or the loop running in the calling
    thread. Outside a loop `call_later` raises, because a timer nobody drives would silently
    never fire.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Cancellable:
        delay = _check_delay(delay)
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "WallClock.call_later needs a running asyncio event loop: call it from a "
                    "coroutine or callback, or create WallClock(loop=...) with the loop that "
                    "will run the timer"
                ) from None
        # call_later must run on the loop's own thread; from elsewhere go through the
        # threadsafe door so the timer is registered without racing the loop.
        if _running_loop_or_none() is loop:
            return loop.call_later(delay, callback)
        return _ThreadsafeTimer(loop, delay, callback)


def _running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _ThreadsafeTimer:
    """A timer scheduled onto a loop from another thread; cancel() is also thread-safe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], Any]):
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._cancelled = False
        loop.call_soon_threadsafe(self._arm, delay, callback)

    def _arm(self, delay: float, callback: Callable[[], Any]) -> None:
        if not self._cancelled:
            self._handle = self._loop.call_later(delay, callback)

    def cancel(self) -> None:
        self._cancelled = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._disarm)

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class SimTimer:
    """A pending callback in simulated time. simpy events cannot be withdrawn, so cancel()
    marks the timer and the timeout fires into nothing."""

    def __init__(self, callback: Callable[[], Any]) -> None:
        self._callback: Callable[[], Any] | None = callback

    @property
    def cancelled(self) -> bool:
        return self._callback is None

    def cancel(self) -> None:
        self._callback = None

    def _fire(self, _event: object) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class SimClock:
    """Simulated time from a `simpy.Environment`: now() is env.now, timers are env timeouts.

    simpy is only imported by whoever builds the Environment; this class just uses its
    `now` and `timeout()`, so policy modules stay free of simpy.
    """

    def __init__(self, env: Any) -> None:
        self.env = env

    def now(self) -> float:
        return float(self.env.now)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> SimTimer:
        timer = SimTimer(callback)
        self.env.timeout(_check_delay(delay)).callbacks.append(timer._fire)
        return timer
