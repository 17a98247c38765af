"""An HPA over containers without resources.requests.cpu never scales: labkit warns when it is
applied (ConfigWarning) and the HPA's status says why, as Kubernetes' does; with a request,
no warning."""

from __future__ import annotations

import re
import warnings

import pytest
import yaml

from labkit.core.controller import ConfigWarning
from labkit.core.hpa_controller import configure_hpa
from labkit.serving.service import configure_serving

HPA_CLASS = {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
             "autoscaling.knative.dev/metric": "cpu"}


def _deployment_and_hpa(resources: dict) -> str:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "labkit/hello", **resources}]}}}}
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "maxReplicas": 3,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}}
    return yaml.safe_dump_all([deployment, hpa])


def _knative_service(resources: dict) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "cpu"},
        "spec": {"template": {"metadata": {"annotations": HPA_CLASS},
                              "spec": {"containers": [{"image": "labkit/hello", **resources}]}}}})


def _scaling_active(conditions: list[dict]) -> dict | None:
    return next((c for c in conditions if c["type"] == "ScalingActive"), None)


def test_hpa_kind_without_a_cpu_request_warns_and_says_so_in_its_conditions(cluster, wait_for):
    configure_hpa(cluster, sync_seconds=0.3)
    with pytest.warns(ConfigWarning, match=r"HorizontalPodAutoscaler default/web: container 'app' of "
                                           r"Deployment web has no resources\.requests\.cpu"):
        cluster.apply(_deployment_and_hpa({}))

    def failed() -> dict | None:
        conditions = cluster.get("HorizontalPodAutoscaler", "web").status.detail["conditions"]
        return _scaling_active(conditions)

    wait_for(lambda: failed() is not None, 20, "the HPA's first sync")
    condition = failed()
    assert condition is not None
    pod = cluster.get("Deployment", "web").status.detail["pods"][0]["name"]
    assert (condition["status"], condition["reason"]) == ("False", "FailedGetResourceMetric")
    assert condition["message"] == ("the HPA was unable to compute the replica count: missing request for cpu "
                                    f"in container app of Pod {pod}")
    status = cluster.get("HorizontalPodAutoscaler", "web").status
    assert not status.ready and status.detail["desiredReplicas"] == 1


def test_hpa_kind_with_a_cpu_request_applies_quietly(cluster):
    configure_hpa(cluster, sync_seconds=60.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        cluster.apply(_deployment_and_hpa({"resources": {"requests": {"cpu": "100m"}}}))


def test_knative_hpa_class_without_a_cpu_request_warns_and_the_service_stays_ready(cluster, wait_for):
    configure_serving(cluster, hpa_sync_seconds=0.3)
    with pytest.warns(ConfigWarning, match=r"HorizontalPodAutoscaler default/cpu-00001 .*container "
                                           r"'user-container' of Revision cpu-00001 has no resources\.requests\.cpu"):
        cluster.apply(_knative_service({}))

    def hpa() -> dict:
        return cluster.get("serving.knative.dev/v1/Service", "cpu").status.detail["horizontalPodAutoscalers"]

    wait_for(lambda: _scaling_active(hpa()["cpu-00001"]["conditions"]) is not None, 20, "the HPA's first sync")
    condition = _scaling_active(hpa()["cpu-00001"]["conditions"])
    assert condition is not None and (condition["status"], condition["reason"]) == ("False", "FailedGetResourceMetric")
    assert re.fullmatch(r"the HPA was unable to compute the replica count: missing request for cpu in container "
                        r"user-container of Pod cpu-00001-deployment-\d+", condition["message"])
    # Knative does not copy the HPA's conditions into the Service's: it is Ready.
    assert cluster.get("serving.knative.dev/v1/Service", "cpu").status.ready


def test_knative_hpa_class_with_a_cpu_request_applies_quietly(cluster):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        cluster.apply(_knative_service({"resources": {"requests": {"cpu": "100m"}}}))
    assert "cpu-00001" in cluster.get("serving.knative.dev/v1/Service", "cpu").status.detail[
        "horizontalPodAutoscalers"]
