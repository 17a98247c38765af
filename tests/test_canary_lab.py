"""Lab 10's helpers (labkit.canary_lab) and manifests: the model versions, the objects they
become, and users whose labels reach the model monitor over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labkit.canary_lab import (
    MODELS,
    ModelTraffic,
    holdout,
    inference_service,
    knative_model_service,
    model_deployment,
    timeline,
)
from labkit.cluster import LocalCluster
from labkit.core.models import Deployment
from labkit.manifests import load_text
from labkit.params import ParameterError

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
LAB10 = sorted(MANIFESTS.glob("lab10-*.yaml"))


def test_held_out_accuracy_is_the_one_recorded_at_training() -> None:
    from labkit.canary_lab import holdout_accuracy

    recorded = json.loads((MODELS / "digits-versions.json").read_text())
    labels, pixels = holdout()
    assert labels.shape == (recorded["holdout_rows"],) and pixels.shape == (recorded["holdout_rows"], 64)
    for version in ("v1", "v3"):
        assert round(holdout_accuracy(version), 4) == recorded["versions"][version]["holdout_accuracy"]


@pytest.mark.parametrize("path", LAB10, ids=lambda p: p.name)
def test_lab_manifests_load(path: Path) -> None:
    assert load_text(path.read_text())


def test_canary_and_routing_pass_the_official_crds(crd_validate: Callable[[str], str]) -> None:
    for name in ("lab10-canary.yaml", "lab10-digits-mesh.yaml", "lab10-retries.yaml"):
        docs = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text())
                if d["kind"] in ("Canary", "VirtualService", "DestinationRule")]
        crd_validate(yaml.safe_dump_all(docs, sort_keys=False))
    crd_validate(yaml.safe_dump_all([inference_service("v2", 10),
                                     knative_model_service("v2", [{"latestRevision": True, "percent": 100}])]))


def test_generated_objects_load_and_a_flagger_target_has_a_stable_selector() -> None:
    [versioned, target] = load_text(yaml.safe_dump_all([
        model_deployment("v1"), model_deployment("v2", name="digits", namespace="prod")]))
    assert isinstance(versioned, Deployment) and isinstance(target, Deployment)
    assert versioned.spec.selector.match_labels == {"app": "digits", "version": "v1"}
    # Flagger copies the target's template to <name>-primary; a selector with the version in it
    # would change with every model and Kubernetes refuses a changed selector
    assert target.spec.selector.match_labels == {"app": "digits"}
    args = target.spec.template.spec.containers[0].args
    assert args is not None
    assert args[args.index("--namespace") + 1] == "prod" and str(MODELS / "digits-v2") in args


def test_timeline_counts_seconds_from_the_first_event() -> None:
    detail: dict[str, Any] = {"events": [
        {"type": "Normal", "message": "New revision detected!", "time": "2026-12-06T05:00:00.000Z"},
        {"type": "Warning", "message": "Rolling back", "time": "2026-12-06T05:00:04.250Z"}]}
    assert timeline(detail) == [(0.0, "Normal", "New revision detected!"), (4.25, "Warning", "Rolling back")]
    assert timeline({"events": []}) == []


def test_users_labels_reach_the_monitor_and_agree_with_the_clients_count() -> None:
    with LocalCluster() as cluster:
        cluster.apply(MANIFESTS / "model-monitor.yaml")
        monitor = cluster.url("Service", "model-monitor")
        cluster.apply([model_deployment("v3", logger_url=monitor + "/"),
                       {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "digits"},
                        "spec": {"selector": {"app": "digits"}, "ports": [{"port": 80, "targetPort": 8080}]}}])
        users = ModelTraffic(cluster.url("Service", "digits"), monitors=[monitor], rows=5, users=7, seed=3)
        users.send(40)
        [row] = httpx.get(monitor + "/accuracy").json()["versions"]
    assert users.served == {"v3": 40} and users.feedback_errors == []
    assert users.labelled == row["labelled"] == 200
    assert row["correct"] == users.correct["v3"] and row["version"] == "v3"
    assert sum(sum(c.values()) for c in users.by_user.values()) == 40 and len(users.by_user) <= 7


def _answering_v9(arrivals: list[float], fifth: threading.Event) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) >= 5:
            fifth.set()
        rows = json.loads(request.content)["inputs"][0]["shape"][0]
        return httpx.Response(200, json={"model_version": "v9", "outputs": [{"data": [0] * rows}]})

    return httpx.MockTransport(handler)


def test_paced_users_send_request_i_no_sooner_than_i_over_rate_after_the_start() -> None:
    arrivals: list[float] = []
    fifth = threading.Event()
    users = ModelTraffic("http://digits", rows=2, workers=4, rate=50)
    users._http = httpx.Client(transport=_answering_v9(arrivals, fifth))
    started = time.monotonic()
    users.send(10)
    assert users.served == {"v9": 10}
    assert all(at - started >= i / 50 for i, at in enumerate(sorted(arrivals)))
    # the pacing counts from each run's start: a second run is not owed the time since the first
    arrivals.clear()
    fifth.clear()
    started = time.monotonic()
    with users:
        assert fifth.wait(timeout=10)
    assert all(at - started >= i / 50 for i, at in enumerate(sorted(arrivals)))


def test_a_rate_that_is_not_a_positive_number_is_refused_by_name() -> None:
    with pytest.raises(ParameterError, match=r"rate must be a number in the range \(0, inf\), got 0"):
        ModelTraffic("http://digits", rate=0)
