"""Knative's per-revision progress deadline (`labkit.serving.progress_deadline`): the annotation,
its validation, the PA giving up, and a live revision that never comes up failing with
Knative's reason and message."""

from __future__ import annotations

import sys
import time

import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.manifests import ManifestError, load_text
from labkit.serving.autoscaler_config import AnnotationError, AutoscalerConfig, RevisionAutoscaling
from labkit.serving.expand import expand
from labkit.serving.kpa_scaler import Activity, PodAutoscalerState, decide_replicas
from labkit.serving.models import KnativeService
from labkit.serving.progress_deadline import (
    PROGRESS_DEADLINE,
    deadline_exceeded,
    revision_progress_deadline,
)
from labkit.serving.service import knative_service


def manifest(annotations: dict[str, str], command: list[str] | None = None,
             env: str = "v1") -> str:
    container: dict = {"image": "labkit/httpbin", "env": [{"name": "VERSION", "value": env}]}
    if command:
        container["command"] = command
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"template": {"metadata": {"annotations": annotations},
                              "spec": {"containers": [container]}}}}, sort_keys=False)


def test_the_annotation_overrides_config_deployment() -> None:
    assert revision_progress_deadline({}, 600.0) == 600.0
    assert revision_progress_deadline({PROGRESS_DEADLINE: "42s"}, 600.0) == 42.0
    assert revision_progress_deadline({PROGRESS_DEADLINE: "1m30s"}, 600.0) == 90.0
    settings = RevisionAutoscaling.resolve({PROGRESS_DEADLINE: "5s"},
                                           AutoscalerConfig(progress_deadline=503.0))
    assert settings.progress_deadline == 5.0
    assert RevisionAutoscaling.resolve({}, AutoscalerConfig(progress_deadline=503.0)) \
        .progress_deadline == 503.0


@pytest.mark.parametrize("text", ["42", "soon", "0s", "-5s"])
def test_a_bad_deadline_is_refused_naming_the_annotation(text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid value: {text}: {PROGRESS_DEADLINE}"):
        revision_progress_deadline({PROGRESS_DEADLINE: text}, 600.0)
    with pytest.raises(AnnotationError):
        RevisionAutoscaling.resolve({PROGRESS_DEADLINE: text})


def test_a_bad_deadline_in_a_manifest_names_file_line_and_field() -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(manifest({PROGRESS_DEADLINE: "ten"}))
    text = str(caught.value)
    assert ":9: Service/web:" in text  # the line of the annotation
    assert f"spec.template.metadata.annotations['{PROGRESS_DEADLINE}']: invalid value" in text
    assert "is not a duration" in text


def test_the_deployment_carries_the_revision_deadline() -> None:
    (svc,) = load_text(manifest({PROGRESS_DEADLINE: "42s"}))
    assert isinstance(svc, KnativeService)
    deployments = [o for o in expand(svc) if o["kind"] == "Deployment"]
    assert deployments[0]["spec"]["progressDeadlineSeconds"] == 42


def test_deadline_exceeded_only_for_a_revision_never_ready() -> None:
    assert not deadline_exceeded(100.0, 104.9, 5.0, ever_ready=False)
    assert deadline_exceeded(100.0, 105.0, 5.0, ever_ready=False)
    assert not deadline_exceeded(100.0, 500.0, 5.0, ever_ready=True)


def test_the_pa_stops_activating_after_the_revision_deadline_plus_30s() -> None:
    # Knative's scaler test "scale to zero while activating after revision deadline exceeded".
    settings = RevisionAutoscaling.resolve({PROGRESS_DEADLINE: "5s"})
    waiting = decide_replicas(0, settings, PodAutoscalerState(Activity.ACTIVATING, 34.0))
    assert not waiting.apply and waiting.recheck_after == 35.0
    given_up = decide_replicas(0, settings, PodAutoscalerState(Activity.ACTIVATING, 36.0))
    assert given_up.apply and given_up.replicas == 0


def test_a_revision_that_never_comes_up_fails_at_its_deadline(cluster: LocalCluster) -> None:
    cluster.apply(manifest({}))
    hang = [sys.executable, "-c", "import time; time.sleep(120)"]  # never listens on $PORT
    started = time.monotonic()
    cluster.apply(manifest({PROGRESS_DEADLINE: "2s"}, command=hang, env="v2"))
    waited = time.monotonic() - started
    # apply() returns at the deadline, not after the 20 s start timeout.
    assert 1.5 <= waited < 10, waited
    svc = knative_service(cluster, "web")
    revision = {c.type: c for c in svc.revision("web-00002").knative_status.conditions}
    assert revision["ResourcesAvailable"].status == "False"
    assert revision["ResourcesAvailable"].reason == "ProgressDeadlineExceeded"
    assert revision["ResourcesAvailable"].message == "Initial scale was never achieved"
    assert revision["Ready"].reason == "ProgressDeadlineExceeded"
    config = svc.knative_status.condition("ConfigurationsReady")
    assert config is not None and (config.status, config.reason) == ("False", "RevisionFailed")
    assert config.message == ('Revision "web-00002" failed with message: '
                              'Initial scale was never achieved.')
    assert svc.knative_status.latest_ready_revision_name == "web-00001"
    assert not cluster.get("serving.knative.dev/v1/Service", "web").status.ready
