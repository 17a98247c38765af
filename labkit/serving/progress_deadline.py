"""How long a revision may take to come up before Knative gives up on it (pure).

Knative reads the deadline from the revision's ``serving.knative.dev/progress-deadline``
annotation (``spec.template.metadata.annotations``, a Go duration such as ``"30s"``) and, without
it, from ``config-deployment``'s ``progress-deadline`` (600 s). It becomes the Deployment's
``progressDeadlineSeconds`` (``MakeDeployment`` in
``pkg/reconciler/revision/resources/deploy.go``: "with progress-deadline annotation" in
``deploy_test.go``; the annotation exists since Knative 1.4, serving PR #12751).

A revision whose pods never reach their initial scale within the deadline fails: the
PodAutoscaler stops activating it (after the deadline plus 30 s, ``activationTimeoutBuffer`` in
``pkg/reconciler/autoscaling/kpa/scaler.go``, here `labkit.serving.kpa_scaler`) and the revision
is marked ``ResourcesAvailable=False``, reason ``ProgressDeadlineExceeded``, message ``Initial
scale was never achieved`` (``PropagateAutoscalerStatus`` in
``pkg/apis/serving/v1/revision_lifecycle.go``). The Service then shows ``ConfigurationsReady=False``,
reason ``RevisionFailed``, ``Revision "<name>" failed with message: Initial scale was never
achieved.`` (as Knative's docs on startup probes quote it).
"""

from __future__ import annotations

from collections.abc import Mapping

from labkit.serving.autoscaler_config import parse_go_duration

__all__ = [
    "PROGRESS_DEADLINE",
    "PROGRESS_DEADLINE_MESSAGE",
    "PROGRESS_DEADLINE_REASON",
    "deadline_exceeded",
    "revision_progress_deadline",
]

PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
PROGRESS_DEADLINE_REASON = "ProgressDeadlineExceeded"
PROGRESS_DEADLINE_MESSAGE = "Initial scale was never achieved"


def revision_progress_deadline(annotations: Mapping[str, str] | None, default: float) -> float:
    """Seconds this revision may take to reach its initial scale: the annotation, else
    `default` (config-deployment's progress-deadline). Raises ValueError naming the key when
    the annotation is not a positive Go duration (Knative's webhook refuses it too)."""
    text = (annotations or {}).get(PROGRESS_DEADLINE)
    if text is None:
        return default
    try:
        seconds = parse_go_duration(text)
    except ValueError as exc:
        raise ValueError(f"invalid value: {text}: {PROGRESS_DEADLINE}: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"invalid value: {text}: {PROGRESS_DEADLINE}: must be a positive "
                         "duration")
    return seconds


def deadline_exceeded(created: float, now: float, deadline: float, ever_ready: bool) -> bool:
    """True once a revision that never reached its initial scale has used up its deadline
    (`created` and `now` on one clock). A revision that was ready once never fails this way:
    later crashes are reported by their exit code instead."""
    return not ever_ready and now - created >= deadline
