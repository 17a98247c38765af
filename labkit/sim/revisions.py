"""A Knative Service's revisions over simulated days: gradual rollout, garbage collection and
the progress deadline, decided by the same pure policy code the live Service runs.

    from labkit.sim.revisions import Deploy, simulate_revisions
    from labkit.sim.workloads import Poisson

    r = simulate_revisions([Deploy(0), Deploy(86400), Deploy(2 * 86400, startup=None)],
                           horizon=4 * 86400, rollout_duration=600, workload=Poisson(2.0))
    print(r)              # what happened when, in words
    r.summary()           # scalars; r.splits: every change of the main URL's traffic split

Each `Deploy` is a new ``spec.template``: Knative makes the Service's next revision
(``web-00001``, ``web-00002``, ...) whose pods come up after ``startup`` seconds, or never
(None). The simulated controller does what the live one (`labkit.serving.service`,
`labkit.serving.revision`) does on the wall clock, calling the same functions:

- *Progress deadline* (`labkit.serving.progress_deadline`): the revision's
  ``serving.knative.dev/progress-deadline`` annotation, else config-deployment's
  ``progress-deadline`` (600 s). A revision whose pods are not up when ``deadline_exceeded``
  says so fails with ``ProgressDeadlineExceeded`` ("Initial scale was never achieved"); the
  route keeps sending to the latest *ready* revision
  (https://knative.dev/docs/serving/configuration/deployment/#progress-deadline). Pods slower
  than the deadline never make the revision ready here; live, one up within the 30 s the
  PodAutoscaler keeps trying past the deadline (`labkit.serving.kpa_scaler`) still would.
- *Gradual rollout* (`labkit.serving.rollout_duration`): when a newer revision becomes ready,
  the route's 100 % latestRevision share moves to it through ``advance``, called at once and
  again whenever ``Rollout.next_step`` is due: 1 % first, then equal steps
  (https://knative.dev/docs/serving/rolling-out-latest-revision/).
- *Routing state*: a revision is referenced while the split holds it or it is the latest
  created one; the time that last changed is its last-active time (``_reroute`` in
  `labkit.serving.service`; Knative's ``routingStateModified``).
- *Garbage collection* (`labkit.serving.gc`, config-gc and ``serving.knative.dev/no-gc``):
  ``collect`` runs when a revision changes (created, ready or failed, its routing state) and
  on every resync, as Knative's GC reconciler does: it is enqueued by Revision events and the
  informers resync every 10 h by default (knative/serving ``pkg/reconciler/gc/controller.go``;
  knative.dev/pkg ``controller.DefaultResyncPeriod``). So a revision that goes stale with the
  passing of time alone is deleted at the next event or resync, not the moment it goes stale.
  (labkit's live controller runs it on every monitor tick: ``gc_resync`` of a second.)

Requests from a `labkit.sim.workloads.Workload` are split between revisions as the route
splits them: the arrivals in each interval of constant split are shared out by one multinomial
draw, which is what a uniform pick per request (`RouteTable.pick`, live) adds up to.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from labkit.params import check_range, check_seed
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.gc import GCConfig, RevisionRecord, collect
from labkit.serving.gc import routed as gc_routed
from labkit.serving.progress_deadline import (
    PROGRESS_DEADLINE_MESSAGE,
    PROGRESS_DEADLINE_REASON,
    deadline_exceeded,
    revision_progress_deadline,
)
from labkit.serving.rollout_duration import Rollout, advance
from labkit.serving.rollout_duration import rollout_duration as service_rollout_duration
from labkit.sim.results import Scalar, SimResult
from labkit.sim.workloads import Workload

__all__ = ["KNATIVE_RESYNC", "Deploy", "RevisionsResult", "RolloutRecord", "simulate_revisions"]

#: knative.dev/pkg controller.DefaultResyncPeriod: how often informers replay every object.
KNATIVE_RESYNC = 10 * 3600.0
#: The Service's traffic: the default ``- latestRevision: true, percent: 100``.
_SHARE = 100

Split = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Deploy:
    """A new revision template applied at `at` seconds; its pods are ready `startup` seconds
    after it is created (None: never). `annotations` are the template's
    (``serving.knative.dev/progress-deadline``, ``serving.knative.dev/no-gc``)."""

    at: float
    startup: float | None = 10.0
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutRecord:
    """One revision's rollout: 1 % at `started`, the whole share at `finished` (None: a
    newer revision took over first, or the run ended), `steps` changes of its share."""

    revision: str
    started: float
    finished: float | None
    steps: int


@dataclass
class _Revision:
    """The controller's view of one revision (the live `LiveRevision`'s fields GC reads)."""

    name: str
    generation: int
    created: float
    annotations: Mapping[str, str]
    deadline: float
    ready: bool = False
    reachable: bool = True
    routing_changed: float | None = None


@dataclass
class RevisionsResult(SimResult):
    """What happened to the Service's revisions and its traffic."""

    horizon: float
    seed: int
    events: list[tuple[float, str, str]]
    """(time, revision, what happened), in order."""
    splits: list[tuple[float, Split]]
    """(time, the main URL's split from then on), at each change."""
    rollouts: list[RolloutRecord]
    deleted: list[tuple[float, str]]
    failed: list[tuple[float, str]]
    requests: dict[str, int]
    """Requests each revision served; ``""`` counts those that came while none was ready."""
    remaining: list[str]
    latest_ready: str | None

    def split_at(self, t: float) -> Split:
        """The main URL's split in force at time `t`."""
        current: Split = ()
        for when, split in self.splits:
            if when > t:
                break
            current = split
        return current

    def shares(self, revision: str) -> list[tuple[float, int]]:
        """(time, percent) of `revision` at each change of the split, for a step plot."""
        return [(when, dict(split).get(revision, 0)) for when, split in self.splits]

    def summary(self) -> dict[str, Scalar]:
        finished = [r.finished - r.started for r in self.rollouts if r.finished is not None]
        served = sum(n for name, n in self.requests.items() if name)
        return {
            "revisions_created": sum(1 for _, _, what in self.events if what == "created"),
            "revisions_ready": sum(1 for _, _, what in self.events if what == "ready"),
            "revisions_failed": len(self.failed),
            "revisions_deleted": len(self.deleted),
            "revisions_remaining": len(self.remaining),
            "latest_ready": self.latest_ready,
            "rollouts": len(self.rollouts),
            "rollout_steps": sum(r.steps for r in self.rollouts),
            "mean_rollout_seconds": sum(finished) / len(finished) if finished else None,
            "requests": served + self.requests.get("", 0),
            "requests_without_revision": self.requests.get("", 0),
            "first_failure_at": self.failed[0][0] if self.failed else None,
        }

    def __str__(self) -> str:
        lines = [f"{_clock(t):>12}  {name}  {what}" for t, name, what in self.events]
        for ro in self.rollouts:
            end = f"100 % at {_clock(ro.finished)}" if ro.finished is not None else "not finished"
            lines.append(f"rollout of {ro.revision}: 1 % at {_clock(ro.started)}, {end}, "
                         f"{ro.steps} steps")
        served = ", ".join(f"{name} {n:,}" for name, n in self.requests.items() if name)
        lines.append(f"requests served: {served or 'none'}; with no ready revision: "
                     f"{self.requests.get('', 0):,}")
        lines.append(f"remaining: {', '.join(self.remaining) or 'none'}; "
                     f"latest ready: {self.latest_ready}")
        return "\n".join(lines)


def _clock(t: float) -> str:
    """Simulated time as ``[Nd ]HH:MM:SS`` (hundredths shown when not a whole second)."""
    days, rest = divmod(round(t, 2), 86400.0)
    hours, rest = divmod(rest, 3600.0)
    minutes, seconds = divmod(rest, 60.0)
    secs = f"{seconds:02.0f}" if seconds.is_integer() else f"{seconds:05.2f}"
    text = f"{int(hours):02d}:{int(minutes):02d}:{secs}"
    return f"{int(days)}d {text}" if days else text


class _Service:
    """The Service's controller on a simulated clock: revisions, route, rollout, GC."""

    def __init__(self, env: simpy.Environment, name: str, duration: float,
                 gc: GCConfig) -> None:
        self.env = env
        self.name = name
        self.duration = duration
        self.gc = gc
        self.revisions: dict[str, _Revision] = {}
        self.generations = 0
        self.rollout: Rollout | None = None
        self.events: list[tuple[float, str, str]] = []
        self.splits: list[tuple[float, Split]] = []
        self.rollouts: list[RolloutRecord] = []
        self.deleted: list[tuple[float, str]] = []
        self.failed: list[tuple[float, str]] = []
        self._armed: float | None = None
        """When the pending rollout-step timer fires (one timer per due time)."""

    @property
    def latest_created(self) -> str:
        return max(self.revisions.values(), key=lambda r: r.generation).name

    @property
    def latest_ready(self) -> str | None:
        ready = [r for r in self.revisions.values() if r.ready]
        return max(ready, key=lambda r: r.generation).name if ready else None

    def deploy(self, spec: Deploy, deadline: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(spec.at)
        self.generations += 1
        rev = _Revision(f"{self.name}-{self.generations:05d}", self.generations, self.env.now,
                        spec.annotations, deadline)
        self.revisions[rev.name] = rev
        self._event(rev.name, "created")
        self._reroute()  # the older latest created one may lose its reference
        self._collect()
        yield from self._come_up(rev, spec.startup)

    def _come_up(self, rev: _Revision, startup: float | None) -> Generator[simpy.Event, Any, None]:
        """Ready when its pods are up, failed once the progress deadline has passed
        (`LiveRevision` waits for the same two things)."""
        given_up = self.env.timeout(rev.deadline)
        up = self.env.timeout(startup) if startup is not None else None
        fired = yield self.env.any_of([given_up] if up is None else [given_up, up])
        if up is None or up not in fired:
            # created + deadline can round a hair below the deadline: step to the next
            # representable instant until the policy agrees it has passed.
            while not deadline_exceeded(rev.created, self.env.now, rev.deadline, False):
                yield self.env.timeout(math.nextafter(self.env.now, math.inf) - self.env.now)
        if rev.name not in self.revisions:
            return  # collected meanwhile
        if deadline_exceeded(rev.created, self.env.now, rev.deadline, False):
            self.failed.append((self.env.now, rev.name))
            self._event(rev.name, f"failed: {PROGRESS_DEADLINE_REASON}: "
                                  f"{PROGRESS_DEADLINE_MESSAGE}")
        else:
            rev.ready = True
            self._event(rev.name, "ready")
            self._reroute()
        self._collect()

    def _event(self, name: str, what: str) -> None:
        self.events.append((self.env.now, name, what))

    def _reroute(self) -> None:
        """The Route reconciler: the latestRevision share through the gradual rollout, then
        each revision's routing state (`KnativeServiceController._roll_out`, `_reroute`)."""
        now, latest = self.env.now, self.latest_ready
        self.rollout = None if latest is None else advance(self.rollout, latest, _SHARE, now,
                                                           self.duration)
        split: Split = self.rollout.revisions if self.rollout is not None else ()
        if not self.splits or self.splits[-1][1] != split:
            self.splits.append((now, split))
            self._note_rollout()
        due = self.rollout.next_step if self.rollout is not None else None
        if due is not None and due != self._armed:
            self._armed = due
            self.env.process(self._step_at(due))
        changed = False
        routed = {name for name, _ in split}
        for rev in self.revisions.values():
            reachable = gc_routed(rev.name, routed, self.latest_created)
            if reachable != rev.reachable:
                rev.reachable, rev.routing_changed, changed = reachable, now, True
        if changed:  # a Revision's routing-state label changed: GC is enqueued
            self._collect()

    def _note_rollout(self) -> None:
        """Keep `rollouts` up to date after the split changed."""
        ro, now = self.rollout, self.env.now
        if ro is None or not ro.revisions:
            return
        newest = ro.revisions[-1][0]
        last = self.rollouts[-1] if self.rollouts else None
        if last is not None and last.revision == newest and last.finished is None:
            self.rollouts[-1] = RolloutRecord(newest, last.started, now if ro.done else None,
                                              last.steps + 1)
        elif not ro.done:  # a newer revision got its first 1 %
            self.rollouts.append(RolloutRecord(newest, now, None, 0))

    def _step_at(self, due: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(due - self.env.now)
        self._reroute()  # advance() steps only if the step is still due

    def resync(self, period: float) -> Generator[simpy.Event, Any, None]:
        while True:
            yield self.env.timeout(period)
            self._collect()

    def _collect(self) -> None:
        records = [RevisionRecord(r.name, r.created, r.reachable, r.routing_changed,
                                  r.annotations) for r in self.revisions.values()]
        for name in collect(self.gc, records, self.latest_ready, self.env.now):
            del self.revisions[name]
            self.deleted.append((self.env.now, name))
            self._event(name, "deleted by GC")


def _seconds(name: str, value: object, *, zero: bool = False) -> float:
    """`value` as a finite number of seconds, > 0 (>= 0 if `zero`); ParameterError naming `name`."""
    return check_range(name, value, 0, math.inf, closed="left" if zero else "neither")


def _deadlines(deploys: Sequence[Deploy], horizon: float, default: float) -> list[float]:
    """Each deploy's progress deadline; ValueError naming the deploy and field otherwise."""
    deadlines, previous = [], 0.0
    for i, spec in enumerate(deploys):
        at = _seconds(f"deploys[{i}].at", spec.at, zero=True)
        if at < previous:
            raise ValueError(f"deploys[{i}].at: {at:g} is before deploys[{i - 1}].at "
                             f"({previous:g}); list deploys in time order")
        if at >= horizon:
            raise ValueError(f"deploys[{i}].at: {at:g} is not before horizon ({horizon:g})")
        if spec.startup is not None:
            _seconds(f"deploys[{i}].startup", spec.startup, zero=True)
        try:
            deadlines.append(revision_progress_deadline(spec.annotations, default))
        except ValueError as exc:
            raise ValueError(f"deploys[{i}].annotations: {exc}") from None
        previous = at
    return deadlines


def _requests(splits: list[tuple[float, Split]], workload: Workload, horizon: float,
              seed: int) -> dict[str, int]:
    """Share the workload's arrivals out between revisions as the splits say."""
    arrivals_rng, split_rng = (np.random.default_rng(s)
                               for s in np.random.SeedSequence(seed).spawn(2))
    starts = np.array([t for t, _ in splits])
    counts = np.zeros(len(splits) + 1, dtype=np.int64)  # [0]: before the first split
    for chunk in workload.arrival_chunks(arrivals_rng, horizon):
        interval = np.searchsorted(starts, chunk, side="right")
        counts += np.bincount(interval, minlength=counts.size)
    served: dict[str, int] = {"": int(counts[0])}
    for n, (_, split) in zip(counts[1:], splits):
        if not split:
            served[""] += int(n)
            continue
        drawn = split_rng.multinomial(int(n), [p / _SHARE for _, p in split])
        for (name, _), k in zip(split, drawn):
            served[name] = served.get(name, 0) + int(k)
    return served


def simulate_revisions(deploys: Sequence[Deploy], *, horizon: float,
                       rollout_duration: float = 0.0,
                       annotations: Mapping[str, str] | None = None,
                       gc: GCConfig | Mapping[str, str] | None = None,
                       progress_deadline: float = AutoscalerConfig().progress_deadline,
                       gc_resync: float | None = KNATIVE_RESYNC,
                       workload: Workload | None = None, seed: int = 1,
                       name: str = "web") -> RevisionsResult:
    """Run a Service through `deploys` for `horizon` seconds.

    `rollout_duration` is config-network's (seconds, 0: switch at once), overridden by the
    Service's `annotations` (``serving.knative.dev/rollout-duration``); `gc` is config-gc (a
    `GCConfig` or the ConfigMap's data; Knative's defaults when None); `progress_deadline` is
    config-deployment's, overridden per revision by its annotation. `gc_resync`: seconds
    between GC runs beyond those revision events trigger (None: events only). `workload`
    sends requests (none when None); `seed` seeds them. Bad input raises ValueError naming
    the parameter.
    """
    horizon = _seconds("horizon", horizon)
    default_duration = _seconds("rollout_duration", rollout_duration, zero=True)
    default_deadline = _seconds("progress_deadline", progress_deadline)
    duration = service_rollout_duration(annotations, default_duration)
    config = gc if isinstance(gc, GCConfig) else GCConfig.from_configmap(gc or {})
    if gc_resync is not None:
        gc_resync = _seconds("gc_resync", gc_resync)
    seed = check_seed(seed)
    deadlines = _deadlines(deploys, horizon, default_deadline)

    env = simpy.Environment()
    service = _Service(env, name, duration, config)
    for spec, deadline in zip(deploys, deadlines):
        env.process(service.deploy(spec, deadline))
    if gc_resync is not None:
        env.process(service.resync(gc_resync))
    env.run(until=horizon)

    requests = _requests(service.splits, workload, horizon, seed) if workload else {"": 0}
    return RevisionsResult(horizon, seed, service.events, service.splits,
                           service.rollouts, service.deleted, service.failed, requests,
                           list(service.revisions), service.latest_ready)
