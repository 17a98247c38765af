"""The Knative Pod Autoscaler's decider: how many pods a revision wants, every 2 seconds.

A pure function of configuration, metrics, the ready pod count and time, like Knative's
``pkg/autoscaler/scaling``: the live autoscaler (wall clock) and the simulator (simulated
clock) call the same `Autoscaler.scale`. Nothing here reads a clock or the network.

One decision, in Knative's order:

1. ``R = max(1, ready)``; rates limit the change: up to ``ceil(max_scale_up_rate * R)`` pods,
   down to ``floor(R / max_scale_down_rate)`` (0 when the revision is unreachable).
2. ``ceil(stable / target)`` and ``ceil(panic / target)``, each clamped into those limits, and
   raised to ``activation_scale`` when non-zero.
3. Panic starts (or is extended) whenever ``ceil(panic / target) / R >= panic_threshold`` and
   ends on the first tick more than one stable window after the last such tick. In panic the
   count is the larger of the two and never goes down.
4. With a ``scale_down_delay`` the count is the maximum decided during the delay.
5. Excess burst capacity ``floor(ready * total - target_burst_capacity - panic)`` says whether
   the activator must stay in the request path (negative) or may leave it; the activator
   count sizes the activators for the revision's capacity plus the burst.

Observed values are revision-wide totals averaged over the windows (see
`labkit.serving.metrics_window`), not per-pod values.

Followed: knative/serving ``pkg/autoscaler/scaling/autoscaler.go`` and its
``autoscaler_test.go`` (the version with the OpenTelemetry meter and the not-reachable
scale-down-delay test), activator count from ``pkg/reconciler/autoscaling/kpa/kpa.go``, per the
reference note /work/shared/reference/knative-kpa.md (Knative commit
98e5ef90aa7033797aa0a61ef97f3ff7e49a3944). Own code, no Knative text copied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from labkit.serving.metrics_window import MaxWindow

__all__ = [
    "INVALID_SCALE_RESULT",
    "MIN_ACTIVATORS",
    "Autoscaler",
    "DeciderSpec",
    "ScaleResult",
    "initial_excess_burst_capacity",
    "num_activators",
]

MIN_ACTIVATORS = 2
"""A revision always gets at least this many activators (for high availability)."""

_METRICS = ("concurrency", "rps")


@dataclass(frozen=True)
class DeciderSpec:
    """What the decider scales on: Knative's ``DeciderSpec`` in snake_case, times in seconds.

    The defaults are Knative's configuration defaults with ``containerConcurrency`` 0: a
    target of 70 concurrent requests per pod (100 at 70 % utilisation), burst capacity 211,
    panic at 200 %, a 60 s stable window. `labkit.serving.autoscaler_config` builds one from a
    revision's annotations.
    """

    scaling_metric: str = "concurrency"
    target_value: float = 70.0
    total_value: float = 100.0
    target_burst_capacity: float = 211.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    activator_capacity: float = 100.0
    stable_window: float = 60.0
    scale_down_delay: float = 0.0
    reachable: bool = True
    activation_scale: int = 1

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"DeciderSpec.{name}: {why}, got {getattr(self, name)!r}")

        if self.scaling_metric not in _METRICS:
            raise bad("scaling_metric", "must be 'concurrency' or 'rps'")
        for name in ("target_value", "max_scale_down_rate", "activator_capacity", "stable_window"):
            if not getattr(self, name) > 0:  # also rejects NaN
                raise bad(name, "must be > 0")
        for name in ("total_value", "max_scale_up_rate", "panic_threshold", "scale_down_delay"):
            if not getattr(self, name) >= 0:
                raise bad(name, "must be >= 0")
        if not (self.target_burst_capacity >= 0 or self.target_burst_capacity == -1):
            raise bad("target_burst_capacity", "must be >= 0, or -1 for unlimited")
        if not self.activation_scale >= 0:
            raise bad("activation_scale", "must be >= 0")


class ScaleResult(NamedTuple):
    """One decision. With ``scale_valid`` False the caller keeps its previous decision."""

    desired_pod_count: int
    excess_burst_capacity: int
    num_activators: int
    scale_valid: bool


INVALID_SCALE_RESULT = ScaleResult(0, 0, 0, False)
"""No decision (no metrics yet, or the pod count could not be read)."""


def num_activators(ready_pods: int, spec: DeciderSpec) -> int:
    """How many activators the revision gets when the activator is in its path.

    Enough activator capacity for the revision's total capacity plus the burst capacity, at
    least `MIN_ACTIVATORS`; with burst capacity 0 the activator only serves scale-from-zero,
    so the minimum.
    """
    tbc = spec.target_burst_capacity
    if tbc == 0:
        return MIN_ACTIVATORS
    capacity = ready_pods * spec.total_value + max(tbc, 0.0)
    return max(MIN_ACTIVATORS, math.ceil(capacity / spec.activator_capacity))


def _excess_burst_capacity(ready_pods: int, spec: DeciderSpec, observed_panic: float) -> int:
    tbc = spec.target_burst_capacity
    if tbc == 0:
        return 0
    if tbc < 0:
        return -1
    return math.floor(ready_pods * spec.total_value - tbc - observed_panic)


def initial_excess_burst_capacity(spec: DeciderSpec, initial_scale: int) -> int:
    """The burst capacity a new revision starts with, before its first decision.

    Knative's multiscaler seeds it from the initial scale so that a revision created with
    enough pods does not route through the activator. It truncates toward zero (not a floor).
    """
    tbc = spec.target_burst_capacity
    if tbc == 0:
        return 0
    if tbc < 0:
        return -1
    return int(initial_scale * spec.total_value - tbc)


class Autoscaler:
    """The decider of one revision: its spec and its panic and scale-down-delay state.

    `Autoscaler(spec, ready_pods)` starts in panic when created with more than one ready pod,
    as Knative's does: an autoscaler that restarts has lost its metric history and must not
    scale a busy revision down on an empty window. `now` is the creation time on the clock
    that `scale` will be given (0.0, the start of a simulation, by default); it is when that
    initial panic started.
    """

    def __init__(self, spec: DeciderSpec, ready_pods: int = 0, now: float = 0.0) -> None:
        if ready_pods < 0:
            raise ValueError(f"ready_pods must be >= 0, got {ready_pods!r}")
        self.spec = spec
        self.panic_time: float | None = now if ready_pods > 1 else None
        self.max_panic_pods = ready_pods
        # Knative creates the delay window once, with the decider: updating the spec later
        # neither adds nor removes it.
        self._delay = MaxWindow(spec.scale_down_delay) if spec.scale_down_delay > 0 else None

    def __repr__(self) -> str:
        return (
            f"Autoscaler(spec={self.spec!r}, panic_time={self.panic_time!r}, "
            f"max_panic_pods={self.max_panic_pods!r})"
        )

    @property
    def in_panic(self) -> bool:
        """Whether the decider is in panic mode."""
        return self.panic_time is not None

    def update(self, spec: DeciderSpec) -> None:
        """Use a new spec from the next decision on (the panic state is kept)."""
        self.spec = spec

    def scale(
        self,
        now: float,
        ready_pods: int | None,
        observed_stable: float | None,
        observed_panic: float | None,
    ) -> ScaleResult:
        """Decide the desired pod count at time `now` (seconds).

        `ready_pods` is the revision's ready pod count (None when it cannot be read);
        `observed_stable` and `observed_panic` are the revision-wide window averages of the
        spec's metric (None when there is no data). Missing inputs give an invalid result
        and leave the state untouched, as in Knative.
        """
        if ready_pods is None or observed_stable is None or observed_panic is None:
            return INVALID_SCALE_RESULT
        if ready_pods < 0:
            raise ValueError(f"ready_pods must be >= 0, got {ready_pods!r}")
        spec = self.spec
        pods = float(max(1, ready_pods))

        # ceil lets a slow rate (1.1 x 2 pods) still grow by at least one pod.
        max_up = math.ceil(spec.max_scale_up_rate * pods)
        max_down = math.floor(pods / spec.max_scale_down_rate) if spec.reachable else 0

        want_stable = math.ceil(observed_stable / spec.target_value)
        want_panic = math.ceil(observed_panic / spec.target_value)
        # Clamp into [max_down, max_up]; if the limits cross, the upper one wins.
        stable_count = min(max(want_stable, max_down), max_up)
        panic_count = min(max(want_panic, max_down), max_up)
        if spec.activation_scale > 1:
            if want_stable > 0 and stable_count < spec.activation_scale:
                stable_count = spec.activation_scale
            if want_panic > 0 and panic_count < spec.activation_scale:
                panic_count = spec.activation_scale

        # The panic test uses the unclamped panic count against the ready pods (at least 1).
        if want_panic / pods >= spec.panic_threshold:
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + spec.stable_window < now:
            self.panic_time = None
            self.max_panic_pods = 0

        desired = stable_count
        if self.panic_time is not None:
            # The stable value can be the larger one: provision for whichever asks more,
            # and never go down while panicking.
            desired = max(desired, panic_count, self.max_panic_pods)
            self.max_panic_pods = desired

        if spec.reachable and self._delay is not None:
            self._delay.record(now, desired)
            desired = int(self._delay.current())

        return ScaleResult(
            desired_pod_count=int(desired),
            excess_burst_capacity=_excess_burst_capacity(ready_pods, spec, observed_panic),
            num_activators=num_activators(ready_pods, spec),
            scale_valid=True,
        )
