"""Knative's gradual rollout of a new latest revision (pure): ``rollout-duration``.

Without it, when a newer revision becomes ready, a Route's ``latestRevision`` share moves to it
at once. With ``rollout-duration`` (``config-network``, default 0 = off; or per Service/Route
the annotation ``serving.knative.dev/rollout-duration``) the Route reconciler moves it in steps:

1. the new revision gets 1 % at once, taken from the newest revision that still has traffic;
2. once the ingress serves that (here: at once), the time that first step took, rounded up to a
   whole second and at least 1 s (``min_step``), sets the pace: the rest of the duration,
   ``max(1, duration - min_step)``, is cut into ``max(1, rest / min_step)`` steps, but no more
   steps than the percent left to move; each step moves ``round(left / steps)`` percent;
3. at each step the old revisions give up that much, the newest of them first (one left with
   nothing drops out), and the new one gains it, until it holds the whole share and the
   rollout is done. (A smaller share takes from the oldest first, a larger one goes to the
   newest.)

A newer revision arriving mid-rollout starts another rollout from the current split (several
old revisions can hold traffic at once). A share of 0 or 1 % is never rolled out gradually.
While a rollout runs, the Route's status lists each revision's current share and its ingress
condition is Unknown, reason ``RolloutInProgress`` (``MarkIngressRolloutInProgress`` in
``pkg/apis/serving/v1/route_lifecycle.go``), so the Service's RoutesReady and Ready are too.

Followed: knative/serving ``pkg/reconciler/route/traffic/rollout.go`` (``Step``,
``stepConfig``, ``adjustPercentage``, ``stepRevisions``, ``ObserveReady``,
``computeProperties``) and the docs page "Configuring gradual rollout of traffic to Revisions"
(https://knative.dev/docs/serving/rolling-out-latest-revision/). labkit rolls out the main
URL's ``latestRevision`` share; a tag's URL still switches at once (its listener serves one
revision).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from labkit.serving.autoscaler_config import parse_go_duration

__all__ = ["ROLLOUT_DURATION", "Rollout", "advance", "rollout_duration"]

ROLLOUT_DURATION = "serving.knative.dev/rollout-duration"


@dataclass(frozen=True)
class Rollout:
    """One configuration target's rollout state (Knative's ``ConfigurationRollout``).

    `revisions` are (name, percent of all route traffic), oldest first; the last is the
    newest. Times are seconds on the caller's clock, None while not set; `step_duration` and
    `step_size` are 0 until the pace is known.
    """

    percent: int
    revisions: tuple[tuple[str, int], ...]
    start_time: float | None = None
    next_step_time: float | None = None
    step_duration: float = 0.0
    step_size: int = 0

    @property
    def done(self) -> bool:
        return len(self.revisions) < 2

    @property
    def next_step(self) -> float | None:
        """When the next step is due, or None when the rollout is done."""
        return None if self.done else self.next_step_time


def rollout_duration(annotations: Mapping[str, str] | None, default: float) -> float:
    """Seconds of the rollout: the Service's (Route's) annotation, else config-network's.
    Raises ValueError naming the key for anything but a non-negative Go duration."""
    text = (annotations or {}).get(ROLLOUT_DURATION)
    if text is None:
        return default
    try:
        seconds = parse_go_duration(text)
    except ValueError as exc:
        raise ValueError(f"invalid value: {text}: {ROLLOUT_DURATION}: {exc}") from None
    if seconds < 0:
        raise ValueError(f"invalid value: {text}: {ROLLOUT_DURATION}: must be non-negative")
    return seconds


def _go_round(x: float) -> int:
    """Go's math.Round: halves away from zero (Python's round() goes to even)."""
    return math.floor(x + 0.5)


@dataclass
class _Share:
    """A revision's share while a step is worked out (mutable, like the Go slices)."""

    name: str
    percent: int


def _shares(revisions: tuple[tuple[str, int], ...]) -> list[_Share]:
    return [_Share(name, percent) for name, percent in revisions]


def _frozen(shares: list[_Share]) -> tuple[tuple[str, int], ...]:
    return tuple((s.name, s.percent) for s in shares)


def _adjust_percentage(goal: int, revisions: list[_Share]) -> list[_Share]:
    """The share changed: add the difference to the newest, or take it from the oldest."""
    diff = goal - sum(s.percent for s in revisions)
    if goal == 0:
        return []
    if diff > 0:
        revisions[-1].percent += diff
    elif diff < 0:
        diff = -diff
        i = 0
        while diff > 0 and i < len(revisions):
            if revisions[i].percent > diff:
                revisions[i].percent -= diff
                break
            diff -= revisions[i].percent
            i += 1
        revisions = revisions[i:]
    return revisions


def _step_revisions(ro: Rollout, now: float) -> Rollout:
    """Move one step of traffic to the newest revision, taken from the old ones newest
    first, if it is due (Knative: "by design we drain newest revision first")."""
    if ro.next_step_time is None or now < ro.next_step_time or ro.done:
        return ro
    revs = _shares(ro.revisions)
    remaining, write, read = ro.step_size, len(revs) - 1, len(revs) - 2
    while remaining > 0 and read >= 0:
        if revs[read].percent > remaining:
            revs[read].percent -= remaining
            break
        remaining -= revs[read].percent
        write -= 1
        read -= 1
    revs[write] = revs[-1]
    revs[write].percent = min(revs[write].percent + ro.step_size, ro.percent)
    shares = _frozen(revs[:write + 1])
    if len(shares) > 1:
        return replace(ro, revisions=shares, next_step_time=now + ro.step_duration)
    return Rollout(ro.percent, shares)  # the last step: done, parameters cleared


def _step(goal: Rollout, prev: Rollout, now: float) -> Rollout:
    """Knative's ``stepConfig``: merge the goal (one revision) with the previous state."""
    revs = _adjust_percentage(goal.percent, _shares(prev.revisions))
    newest = goal.revisions[0][0]
    if not revs or revs[-1].name == newest:
        if len(revs) > 1:  # a rollout in progress: keep its pace, step it when due
            ongoing = replace(prev, percent=goal.percent, revisions=_frozen(revs))
            return _step_revisions(ongoing, now) if ongoing.step_size > 0 else ongoing
        return goal
    # A new revision: it takes 1 % from the newest revision that has traffic.
    for entry in reversed(revs):
        if entry.percent > 0:
            entry.percent -= 1
            break
    kept = _frozen([r for r in revs if r.percent > 0])
    return Rollout(goal.percent, kept + ((newest, 1),), start_time=now)


def _observe_ready(ro: Rollout, now: float, duration: float) -> Rollout:
    """Knative's ``ObserveReady`` + ``computeProperties``: set the pace once the first 1 % is
    served, from how long that took."""
    if ro.step_duration or ro.start_time is None:
        return ro
    min_step = max(1.0, math.ceil(now - ro.start_time))
    rest = max(1.0, duration - min_step)
    steps = max(1.0, rest / min_step)
    left = float(ro.percent - 1)
    steps = min(steps, left)
    step_duration = rest / steps
    return replace(ro, step_duration=step_duration, step_size=_go_round(left / steps),
                   next_step_time=now + step_duration)


def advance(previous: Rollout | None, latest: str, percent: int, now: float,
            duration: float) -> Rollout:
    """The rollout state at `now` for a `percent` share that follows `latest` (the latest
    ready revision), given the state of the previous reconcile. `duration` 0 switches at
    once. Call it again at `.next_step` to take the next step."""
    goal = Rollout(percent, ((latest, percent),) if percent else ())
    if duration <= 0 or previous is None or not previous.revisions or percent <= 1:
        return goal
    return _observe_ready(_step(goal, previous, now), now, duration)
