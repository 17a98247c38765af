"""Flagger's canary analysis as one pure step (policy): (canary, status, routes, readings, now) ->
(next status, desired routes, actions, events).

One call is one tick of Flagger's scheduler (`advanceCanary`, run every `analysis.interval`),
making the same decision in the same order and recording the same event messages; the live
controller (controller.py) runs it on the wall clock and carries out the actions, a simulator
runs it on a simulated clock with modelled readings. No I/O here and no clock reads: webhooks
are asked through `Readings.webhook`, which the caller backs with real HTTP or a model, and
only the webhooks Flagger would call at this point are asked.

Followed: fluxcd/flagger pkg/controller/scheduler.go (advanceCanary, runCanary, runAB,
runBlueGreen, runPromotionTrafficShift, rollback, nextStepWeight, maxWeight),
scheduler_hooks.go, scheduler_metrics.go (the messages), pkg/canary/status.go (what each status
write resets, MakeStatusConditions), pkg/canary/deployment_ready.go (progress deadline) and
docs/gitbook/usage/how-it-works.md, deployment-strategies.md.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from labkit.flagger.models import BUILTIN_METRICS, Canary, CanaryMetric, CanaryWebhook

__all__ = [
    "FAILED",
    "FINALISING",
    "INITIALIZE",
    "INITIALIZED",
    "INITIALIZING",
    "POST_ROLLOUT",
    "PROGRESSING",
    "PROMOTE",
    "PROMOTING",
    "SCALE_FROM_ZERO",
    "SCALE_TO_ZERO",
    "SUCCEEDED",
    "WAITING",
    "WAITING_PROMOTION",
    "CanaryStatus",
    "Condition",
    "Event",
    "HookResult",
    "Readings",
    "Routes",
    "Step",
    "go_duration_text",
    "hooks",
    "max_weight",
    "next_step_weight",
    "post_rollout_events",
    "step",
]

INITIALIZING, INITIALIZED, WAITING, PROGRESSING = "Initializing", "Initialized", "Waiting", "Progressing"
WAITING_PROMOTION, PROMOTING, FINALISING = "WaitingPromotion", "Promoting", "Finalising"
SUCCEEDED, FAILED = "Succeeded", "Failed"

# Actions the caller carries out after a step (in this order when several are given).
INITIALIZE = "initialize"          # create/refresh <target>-primary, the services and the routing
PROMOTE = "promote"                # copy the target's pod template to the primary
SCALE_TO_ZERO = "scale-to-zero"    # the target (the canary) down to zero replicas
SCALE_FROM_ZERO = "scale-from-zero"  # the target up again, for a new analysis
POST_ROLLOUT = "post-rollout"      # call the post-rollout webhooks with the new phase

TOTAL_WEIGHT = 100


@dataclass(frozen=True)
class Routes:
    """What the router sends where: weights of primary and canary, and whether the canary gets
    a mirrored copy of the primary's traffic (Flagger's GetRoutes/SetRoutes)."""

    primary: int = TOTAL_WEIGHT
    canary: int = 0
    mirrored: bool = False


@dataclass(frozen=True)
class Condition:
    """The `Promoted` condition Flagger keeps on every Canary."""

    status: str
    reason: str
    message: str
    last_transition_time: float
    type: str = "Promoted"


@dataclass(frozen=True)
class CanaryStatus:
    """Canary.status as Flagger writes it. Times are seconds on the caller's clock."""

    phase: str = ""
    canary_weight: int = 0
    failed_checks: int = 0
    iterations: int = 0
    last_applied_spec: str = ""
    last_promoted_spec: str = ""
    last_transition_time: float | None = None
    conditions: tuple[Condition, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The status as `kubectl get canary -o yaml` shows it (RFC 3339 times, UTC)."""
        out: dict[str, Any] = {
            "phase": self.phase,
            "canaryWeight": self.canary_weight,
            "failedChecks": self.failed_checks,
            "iterations": self.iterations,
            "lastAppliedSpec": self.last_applied_spec,
            "lastPromotedSpec": self.last_promoted_spec,
        }
        if self.last_transition_time is not None:
            out["lastTransitionTime"] = _rfc3339(self.last_transition_time)
        out["conditions"] = [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
             "lastTransitionTime": _rfc3339(c.last_transition_time),
             "lastUpdateTime": _rfc3339(c.last_transition_time)}
            for c in self.conditions
        ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryStatus:
        """Inverse of to_dict() (to resume from a persisted status)."""
        conditions = tuple(
            Condition(c["status"], c["reason"], c["message"], _parse_rfc3339(c["lastTransitionTime"]),
                      c.get("type", "Promoted"))
            for c in data.get("conditions", ())
        )
        ltt = data.get("lastTransitionTime")
        return cls(
            phase=data.get("phase", ""),
            canary_weight=int(data.get("canaryWeight", 0)),
            failed_checks=int(data.get("failedChecks", 0)),
            iterations=int(data.get("iterations", 0)),
            last_applied_spec=data.get("lastAppliedSpec", ""),
            last_promoted_spec=data.get("lastPromotedSpec", ""),
            last_transition_time=_parse_rfc3339(ltt) if ltt else None,
            conditions=conditions,
        )


def _rfc3339(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _parse_rfc3339(text: str) -> float:
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class HookResult:
    """A webhook's answer: ok for 2xx; message says why not (Flagger puts it in the event)."""

    ok: bool
    message: str = ""


WebhookCaller = Callable[[CanaryWebhook, str], HookResult]
"""(webhook, phase sent in its payload) -> result."""


def hooks(results: Mapping[str, bool | HookResult] | None = None) -> WebhookCaller:
    """A webhook caller from a table name -> result (missing names pass): for simulations."""
    table = dict(results or {})

    def call(hook: CanaryWebhook, phase: str) -> HookResult:
        answer = table.get(hook.name, True)
        if isinstance(answer, HookResult):
            return answer
        return HookResult(answer, "" if answer else "webhook returned 500 Internal Server Error")

    return call


MetricValue = float | str | None
"""A metric reading: a number; None when the query found no values (no traffic); a string is
the error message of a failed query (e.g. a MetricTemplate that does not exist)."""


@dataclass(frozen=True)
class Readings:
    """What a step may look at, read by the caller just before the step.

    `revision`: a checksum of the target's pod template (Deployment) or its latest revision
    (Knative Service). `canary_not_ready`: empty when the canary workload is ready, else why not
    ("waiting for rollout to finish: 0 of 1 updated replicas are available");
    `canary_unavailable_since`: since when it has had too few replicas (for
    progressDeadlineSeconds). `metrics`: analysis metric name -> value over the metric's
    interval (request-success-rate in %, request-duration in ms, templates as queried).
    """

    revision: str
    primary_ready: bool = True
    canary_not_ready: str = ""
    canary_unavailable_since: float | None = None
    metrics: Mapping[str, MetricValue] = field(default_factory=dict)
    webhook: WebhookCaller = field(default_factory=hooks)


@dataclass(frozen=True)
class Event:
    """A Kubernetes event Flagger records on the Canary ("Normal" or "Warning")."""

    type: str
    message: str


@dataclass(frozen=True)
class Step:
    """A step's outcome: write `status`, set `routes` (if they differ from the current ones),
    carry out `actions`, record `events`."""

    status: CanaryStatus
    routes: Routes
    actions: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()


# ---------------------------------------------------------------------------------------------
# Weights


def max_weight(canary: Canary) -> int:
    """Flagger's maxWeight: the last of stepWeights (at most 100), else maxWeight, else 100."""
    a = canary.spec.analysis
    if a.step_weights:
        return min(TOTAL_WEIGHT, a.step_weights[-1])
    return a.max_weight or TOTAL_WEIGHT


def next_step_weight(canary: Canary, canary_weight: int) -> int:
    """How much the next step adds to `canary_weight` (0: no progressive traffic at all)."""
    a = canary.spec.analysis
    steps = a.step_weights
    if a.step_weight or not steps:
        return a.step_weight or 0
    max_step = TOTAL_WEIGHT - canary_weight
    if max_step == 0:  # at 100 %: any positive step leads to promotion
        return 1
    if canary_weight == 0:
        return min(max_step, steps[0])
    for i in range(len(steps) - 1):
        if steps[i] == canary_weight:
            return min(max_step, steps[i + 1] - canary_weight)
    return max_step


# ---------------------------------------------------------------------------------------------
# Messages


def go_duration_text(ms: float) -> str:
    """A duration in milliseconds as Go's time.Duration prints it ("1.5s", "250ms", "1m30s")."""
    ns = round(ms * 1e6)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim(ns / 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim(ns / 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{_trim(rest / 1e9)}s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


def _v(x: float) -> str:
    """Go's %v of a float64: shortest form, no trailing .0."""
    return f"{x:g}" if x != int(x) or abs(x) >= 1e21 else str(int(x))


_CONDITIONS = {
    INITIALIZING: ("Unknown", "New {kind} detected, starting initialization."),
    INITIALIZED: ("True", "{kind} initialization completed."),
    WAITING: ("Unknown", "Waiting for approval."),
    WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
    PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
    PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
    FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
    SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
    FAILED: ("False", "Canary analysis failed, {kind} scaled to zero."),
}


# ---------------------------------------------------------------------------------------------
# The step


class _Tick:
    """One run of advanceCanary: the decisions, collected."""

    def __init__(self, canary: Canary, status: CanaryStatus, routes: Routes, readings: Readings,
                 now: float) -> None:
        self.cd, self.status, self.routes, self.r, self.now = canary, status, routes, readings, now
        self.actions: list[str] = []
        self.events: list[Event] = []
        ns = canary.metadata.namespace
        self.name = f"{canary.metadata.name}.{ns}"            # Flagger's cd.Name.cd.Namespace
        self.target = f"{canary.spec.target_ref.name}.{ns}"   # ... and TargetRef.Name.Namespace
        self.primary = f"{canary.spec.target_ref.name}-primary.{ns}"

    def result(self) -> Step:
        return Step(self.status, self.routes, tuple(self.actions), tuple(self.events))

    def info(self, message: str) -> None:
        self.events.append(Event("Normal", message))

    def warn(self, message: str) -> None:
        self.events.append(Event("Warning", message))

    # status writes, each as its pkg/canary/status.go counterpart
    def _write(self, **changes: Any) -> None:
        phase = changes.get("phase", self.status.phase)
        changes["conditions"] = self._conditions(phase)
        self.status = replace(self.status, last_transition_time=self.now, **changes)

    def _conditions(self, phase: str) -> tuple[Condition, ...]:
        if phase not in _CONDITIONS:
            return self.status.conditions
        state, text = _CONDITIONS[phase]
        current = self.status.conditions[0] if self.status.conditions else None
        if current is not None and current.status == state and current.reason == phase:
            return self.status.conditions
        since = current.last_transition_time if current and current.status == state else self.now
        message = text.format(kind=self.cd.spec.target_ref.kind)
        return (Condition(state, phase, message, since),)

    def sync_status(self, phase: str, weight: int = 0, failed: int = 0, iterations: int = 0) -> None:
        changes: dict[str, Any] = {"phase": phase, "canary_weight": weight, "failed_checks": failed,
                                   "iterations": iterations, "last_applied_spec": self.r.revision}
        if phase == INITIALIZED:
            changes["last_promoted_spec"] = self.r.revision
        self._write(**changes)

    def set_phase(self, phase: str) -> None:
        changes: dict[str, Any] = {"phase": phase}
        if phase not in (PROGRESSING, WAITING):
            changes.update(canary_weight=0, iterations=0)
            if phase == WAITING_PROMOTION:
                changes["iterations"] = (self.cd.spec.analysis.iterations or 0) - 1
        if phase in (INITIALIZED, SUCCEEDED):
            changes["last_promoted_spec"] = self.status.last_applied_spec
        self._write(**changes)

    def set_routes(self, primary: int, canary: int, mirrored: bool = False) -> None:
        self.routes = Routes(primary, canary, mirrored)

    def advance_iteration(self, iteration: int, wanted: int) -> None:
        """Count an A/B or blue/green iteration, with Flagger's event."""
        self._write(iterations=iteration)
        self.info(f"Advance {self.name} canary iteration {iteration}/{wanted}")

    # the hooks
    def _run_hooks(self, kind: str, phase: str, *, until_ok: bool = False,
                   otherwise: str = "") -> tuple[CanaryWebhook, HookResult] | None:
        """Call the `kind` hooks in order and return the first whose answer's `ok` is
        `until_ok`: Flagger stops at the first gate that fails, or at the first rollback hook
        that signals (fluxcd/flagger pkg/controller/scheduler_hooks.go, `runConfirm*Hooks`,
        `runPreRolloutHooks`, `runRollbackHooks`; scheduler.go, `runAnalysis`). Each hook passed
        on the way logs `otherwise` (with `{name}`) when given."""
        for hook in self._hooks(kind):
            result = self.r.webhook(hook, phase)
            if result.ok == until_ok:
                return hook, result
            if otherwise:
                self.info(otherwise.format(name=hook.name))
        return None

    def _hooks(self, kind: str) -> list[CanaryWebhook]:
        return [h for h in self.cd.spec.analysis.webhooks if h.kind == kind]

    def confirm_rollout(self) -> bool:
        stopped = self._run_hooks("confirm-rollout", self.status.phase,
                                  otherwise="Confirm-rollout check {name} passed")
        if stopped is not None and self.status.phase != WAITING:
            self.set_phase(WAITING)
            self.warn(f"Halt {self.name} advancement waiting for approval {stopped[0].name}")
        return stopped is None

    def confirm_promotion(self) -> bool:
        stopped = self._run_hooks("confirm-promotion", PROGRESSING,
                                  otherwise="Confirm-promotion check {name} passed")
        if stopped is None:
            return True
        if self.status.phase != WAITING_PROMOTION:
            self.set_phase(WAITING_PROMOTION)
            self.warn(f"Halt {self.name} advancement waiting for promotion approval {stopped[0].name}")
        else:
            self._write(iterations=(self.cd.spec.analysis.iterations or 0) - 1)
        return False

    def confirm_traffic_increase(self) -> bool:
        stopped = self._run_hooks("confirm-traffic-increase", PROGRESSING,
                                  otherwise="Confirm-traffic-increase check {name} passed")
        if stopped is not None:
            self.warn(f"Halt {self.name} advancement waiting for traffic increase approval "
                      f"{stopped[0].name}")
        return stopped is None

    def pre_rollout(self) -> bool:
        stopped = self._run_hooks("pre-rollout", PROGRESSING, otherwise="Pre-rollout check {name} passed")
        if stopped is not None:
            hook, result = stopped
            self.warn(f"Halt {self.name} advancement pre-rollout check {hook.name} failed "
                      f"{result.message}")
        return stopped is None

    def rollback_requested(self) -> bool:
        signal = self._run_hooks("rollback", self.status.phase, until_ok=True,
                                 otherwise="Rollback hook {name} not signaling a rollback")
        if signal is not None:
            self.warn(f"Rollback check {signal[0].name} passed")
        return signal is not None

    # analysis: rollout webhooks, then built-in metrics, then the rest, first failure halts
    def analysis_passes(self) -> bool:
        stopped = self._run_hooks("rollout", PROGRESSING)
        if stopped is not None:
            hook, result = stopped
            self.warn(f"Halt {self.name} advancement external check {hook.name} failed {result.message}")
            return False
        metrics = self.cd.spec.analysis.metrics
        builtin = [m for m in metrics if m.name in BUILTIN_METRICS and m.template_ref is None]
        others = [m for m in metrics if m not in builtin]
        return all(self._metric_passes(m) for m in builtin + others)

    def _metric_passes(self, m: CanaryMetric) -> bool:
        value = self.r.metrics.get(m.name)
        builtin = m.name in BUILTIN_METRICS and m.template_ref is None
        if value is None:
            if builtin:
                self.warn(f"Halt advancement no values found for {self.cd.provider} metric {m.name} "
                          f"probably {self.target} is not receiving traffic")
            elif m.template_ref is not None:
                self.warn(f"Halt advancement no values found for custom metric: {m.name}: no values found")
            else:
                self.warn(f"Halt advancement no values found for metric: {m.name}")
            return False
        if isinstance(value, str):
            if builtin:
                self.warn(f"Prometheus query failed: {value}")
            else:
                self.warn(f"Metric query failed for {m.name}: {value}")
            return False
        # without thresholdRange, the legacy `threshold` is a minimum for the success rate
        # and a maximum for everything else
        if m.threshold_range is not None:
            lo, hi = m.threshold_range.min, m.threshold_range.max
        elif m.name == "request-success-rate" and builtin:
            lo, hi = m.threshold, None
        else:
            lo, hi = None, m.threshold
        if m.name == "request-success-rate" and builtin:
            return self._within(f"success rate {value:.2f}%", value, lo, hi, lambda b: f"{_v(b)}%")
        if m.name == "request-duration" and builtin:
            return self._within(f"request duration {go_duration_text(value)}", value, lo, hi,
                                go_duration_text)
        return self._within(f"{m.name} {value:.2f}", value, lo, hi, _v)

    def _within(self, shown: str, value: float, lo: float | None, hi: float | None,
                bound: Callable[[float], str]) -> bool:
        """Whether `value` is in [lo, hi]; if not, Flagger's halt event ("... < min")."""
        if lo is not None and value < lo:
            self.warn(f"Halt {self.name} advancement {shown} < {bound(lo)}")
            return False
        if hi is not None and value > hi:
            self.warn(f"Halt {self.name} advancement {shown} > {bound(hi)}")
            return False
        return True

    def fail_check(self) -> None:
        self._write(failed_checks=self.status.failed_checks + 1)

    def rollback(self) -> None:
        threshold = self.cd.spec.analysis.threshold_value
        if self.status.failed_checks >= threshold:
            self.warn(f"Rolling back {self.name} failed checks threshold reached {self.status.failed_checks}")
        self.set_routes(TOTAL_WEIGHT, 0)
        self.warn(f"Canary failed! Scaling down {self.name}")
        self.actions.append(SCALE_TO_ZERO)
        self.sync_status(FAILED)
        self.actions.append(POST_ROLLOUT)

    def promote(self) -> None:
        self.info(f"Copying {self.target} template spec to {self.primary}")
        self.actions.append(PROMOTE)
        self.set_phase(PROMOTING)

    def has_changed(self) -> bool:
        """pkg/canary hasSpecChanged: a new revision, unless it is the promoted one (a manual
        revert of the target to what the primary runs starts nothing)."""
        revision = self.r.revision
        if not self.status.last_applied_spec:
            return True
        if revision == self.status.last_promoted_spec:
            return False
        return revision != self.status.last_applied_spec


def step(canary: Canary, status: CanaryStatus, routes: Routes, readings: Readings, now: float) -> Step:
    """One analysis tick of `canary`: Flagger's advanceCanary as a pure function.

    `status` and `routes` are as left by the previous step (a fresh Canary: CanaryStatus(),
    Routes()); `now` is the caller's clock in seconds, used for progressDeadlineSeconds and the
    status timestamps. Call it every `canary.spec.analysis.interval_seconds`.
    """
    t = _Tick(canary, status, routes, readings, now)
    spec, a = canary.spec, canary.spec.analysis
    if spec.suspend:
        t.info("skipping canary run as object is suspended")
        return t.result()

    phase = status.phase
    if phase in ("", INITIALIZING):
        t.actions.append(INITIALIZE)
        t.set_routes(TOTAL_WEIGHT, 0)
        if not readings.primary_ready and not spec.skip_analysis:
            if phase == "":
                t.set_phase(INITIALIZING)
            t.warn(f"{t.primary} not ready: waiting for rollout to finish")
            return t.result()
        t.actions.append(SCALE_TO_ZERO)
        t.sync_status(INITIALIZED)
        t.info(f"Initialization done! {t.name}")
        return t.result()

    advancing = phase in (PROGRESSING, WAITING, WAITING_PROMOTION, PROMOTING, FINALISING) or t.has_changed()
    if not advancing:
        return t.result()
    if not spec.skip_analysis and not readings.primary_ready:
        t.warn(f"{t.primary} not ready: waiting for rollout to finish")
        return t.result()
    canary_weight, primary_weight, mirrored = routes.canary, routes.primary, routes.mirrored

    # checkCanaryStatus: a new revision (or an approval awaited) starts an analysis
    if phase not in (PROGRESSING, WAITING_PROMOTION, PROMOTING, FINALISING):
        if t.confirm_rollout():
            t.info(f"New revision detected! Scaling up {t.target}")
            t.actions.append(SCALE_FROM_ZERO)
            t.sync_status(PROGRESSING)
        return t.result()

    if phase in (PROGRESSING, WAITING_PROMOTION) and t.has_changed():
        t.info(f"New revision detected! Restarting analysis for {t.target}")
        t.set_routes(TOTAL_WEIGHT, 0)
        t.sync_status(PROGRESSING)
        return t.result()

    retriable, not_ready = True, readings.canary_not_ready
    if not_ready:
        since = readings.canary_unavailable_since
        retriable = since is None or since + spec.deadline_seconds >= now
        if retriable:
            t.warn(f"canary deployment {t.target} not ready: {not_ready}")
            return t.result()
    deadline = (f"Rolling back {t.name} progress deadline exceeded canary deployment {t.target} "
                f"not ready: {not_ready}")

    if spec.skip_analysis:
        if not retriable:
            t.warn(deadline)
            t.rollback()
            return t.result()
        t.set_routes(TOTAL_WEIGHT, 0)
        t.info(f"Copying {t.target} template spec to {t.primary}")
        t.actions += [PROMOTE, SCALE_TO_ZERO]
        t.set_phase(SUCCEEDED)
        t.info(f"Promotion completed! Canary analysis was skipped for {t.target}")
        return t.result()

    if phase in (PROGRESSING, WAITING, WAITING_PROMOTION) and t.rollback_requested():
        t.warn(f"Rolling back {t.name} manual webhook invoked")
        t.rollback()
        return t.result()

    if phase == PROMOTING:
        _promotion_traffic_shift(t, primary_weight, canary_weight)
        return t.result()

    if phase == FINALISING:
        t.actions.append(SCALE_TO_ZERO)
        t.set_phase(SUCCEEDED)
        t.actions.append(POST_ROLLOUT)
        t.info(f"Promotion completed! Scaling down {t.target}")
        return t.result()

    if phase in (PROGRESSING, WAITING_PROMOTION) and (
            not retriable or status.failed_checks >= a.threshold_value):
        if not retriable:
            t.warn(deadline)
        t.rollback()
        return t.result()

    # the checks: pre-rollout hooks before any traffic reaches the canary, the analysis after
    if canary_weight == 0 and status.iterations == 0 and not (a.mirror and mirrored):
        t.info(f"Starting canary analysis for {t.target}")
        if not t.pre_rollout():
            t.fail_check()
            return t.result()
    elif not t.analysis_passes():
        t.fail_check()
        return t.result()

    if a.match and a.iterations:
        _run_ab(t)
    elif a.iterations:
        _run_blue_green(t, mirrored)
    elif next_step_weight(canary, canary_weight) > 0:
        if (not mirrored and t.status.phase not in (PROMOTING, WAITING_PROMOTION, FINALISING)
                and not t.confirm_traffic_increase()):
            return t.result()
        _run_canary(t, primary_weight, canary_weight, mirrored)
    return t.result()


def _promotion_traffic_shift(t: _Tick, primary_weight: int, canary_weight: int) -> None:
    promotion_step = t.cd.spec.analysis.step_weight_promotion or 0
    if not promotion_step:
        t.info("Routing all traffic to primary")
        t.set_routes(TOTAL_WEIGHT, 0)
        t.set_phase(FINALISING)
        return
    if canary_weight > 0:
        primary_weight = min(TOTAL_WEIGHT, primary_weight + promotion_step)
        canary_weight = max(0, canary_weight - promotion_step)
        t.set_routes(primary_weight, canary_weight)
        t.info(f"Advance {t.name} primary weight {primary_weight}")
        if primary_weight == TOTAL_WEIGHT:
            t.set_phase(FINALISING)
        else:
            t._write(canary_weight=canary_weight)


def _run_canary(t: _Tick, primary_weight: int, canary_weight: int, mirrored: bool) -> None:
    cd = t.cd
    top = max_weight(cd)
    if canary_weight < top:
        step_size = next_step_weight(cd, canary_weight)
        if cd.spec.analysis.mirror and canary_weight == 0:
            # one step of mirroring (all answers from the primary) before the first weight
            if not mirrored:
                mirrored, primary_weight, canary_weight = True, TOTAL_WEIGHT, 0
            else:
                mirrored, primary_weight, canary_weight = False, TOTAL_WEIGHT - step_size, step_size
        else:
            primary_weight = max(0, primary_weight - step_size)
            canary_weight = min(TOTAL_WEIGHT, canary_weight + step_size)
        t.set_routes(primary_weight, canary_weight, mirrored)
        t._write(canary_weight=canary_weight)
        t.info(f"Advance {t.name} canary weight {canary_weight}")
        return
    if t.confirm_promotion():
        t.promote()


def _run_ab(t: _Tick) -> None:
    wanted, done = t.cd.spec.analysis.iterations or 0, t.status.iterations
    if wanted > done:
        # the matched requests all go to the canary, the rest stay on the primary
        t.set_routes(0, TOTAL_WEIGHT)
        t.advance_iteration(done + 1, wanted)
        return
    if not t.confirm_promotion():
        return
    if wanted == t.status.iterations:
        t.promote()


def _run_blue_green(t: _Tick, mirrored: bool) -> None:
    a = t.cd.spec.analysis
    wanted, done = a.iterations or 0, t.status.iterations
    if wanted > done:
        if a.mirror and not mirrored:
            t.set_routes(TOTAL_WEIGHT, 0, True)
        t.advance_iteration(done + 1, wanted)
        return
    if not t.confirm_promotion():
        return
    if wanted == t.status.iterations:
        t.info("Stop traffic mirroring and route all traffic to canary" if a.mirror
               else "Routing all traffic to canary")
        t.set_routes(0, TOTAL_WEIGHT)
        t._write(iterations=t.status.iterations + 1)
        return
    if wanted < t.status.iterations:
        t.promote()


def post_rollout_events(results: list[tuple[CanaryWebhook, HookResult]]) -> list[Event]:
    """The events Flagger records for the post-rollout hooks the caller ran (after
    POST_ROLLOUT); it stops at the first failure."""
    events = []
    for hook, result in results:
        if not result.ok:
            events.append(Event("Warning", f"Post-rollout hook {hook.name} failed {result.message}"))
            break
        events.append(Event("Normal", f"Post-rollout check {hook.name} passed"))
    return events
