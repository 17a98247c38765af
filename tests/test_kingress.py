"""The KIngress a Route becomes (`labkit.serving.expand`): its ingress class, and during a
gradual rollout the splits and rollout state the Route reconciler writes on it."""

from __future__ import annotations

import json

import yaml

from labkit.cluster import LocalCluster
from labkit.manifests import load_text
from labkit.serving.expand import (
    DEFAULT_INGRESS_CLASS,
    INGRESS_CLASS,
    ROLLOUT_ANNOTATION,
    expand,
)
from labkit.serving.models import KnativeService
from labkit.serving.rollout_duration import ROLLOUT_DURATION
from labkit.serving.service import configure_serving, knative_service


def manifest(env: str = "v1", **annotations: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "web", "annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{
            "image": "labkit/httpbin", "env": [{"name": "VERSION", "value": env}]}]}}}})


def kingress(objects: list[dict]) -> dict:
    (found,) = [o for o in objects if o["kind"] == "Ingress"]
    assert found["apiVersion"] == "networking.internal.knative.dev/v1alpha1"
    return found


def test_the_ingress_class_defaults_to_istio_and_follows_the_annotation() -> None:
    (svc,) = load_text(manifest())
    assert isinstance(svc, KnativeService)
    assert kingress(expand(svc))["metadata"]["annotations"] == {
        INGRESS_CLASS: DEFAULT_INGRESS_CLASS}
    (kourier,) = load_text(manifest(**{INGRESS_CLASS: "kourier.ingress.networking.knative.dev"}))
    assert isinstance(kourier, KnativeService)
    annotations = kingress(expand(kourier))["metadata"]["annotations"]
    assert annotations[INGRESS_CLASS] == "kourier.ingress.networking.knative.dev"


def test_each_split_appends_the_headers_the_activator_routes_by() -> None:
    (svc,) = load_text(manifest())
    assert isinstance(svc, KnativeService)
    rules = kingress(expand(svc))["spec"]["rules"]
    assert [r["visibility"] for r in rules] == ["ClusterLocal", "ExternalIP"]
    assert rules[1]["hosts"] == ["web.default.example.com"]
    (split,) = rules[1]["http"]["paths"][0]["splits"]
    assert split["serviceName"] == "web-00001" and split["percent"] == 100
    assert split["appendHeaders"] == {"Knative-Serving-Revision": "web-00001",
                                      "Knative-Serving-Namespace": "default"}


def test_live_a_rollout_shows_on_the_kingress(cluster: LocalCluster) -> None:
    configure_serving(cluster, ingress_class="kourier.ingress.networking.knative.dev")
    cluster.apply(manifest(**{ROLLOUT_DURATION: "600s"}))
    cluster.apply(manifest("v2", **{ROLLOUT_DURATION: "600s"}))
    svc = knative_service(cluster, "web")
    assert svc.obj is not None
    ingress = kingress(expand(svc.obj, live=svc))
    annotations = ingress["metadata"]["annotations"]
    assert annotations[INGRESS_CLASS] == "kourier.ingress.networking.knative.dev"
    state = json.loads(annotations[ROLLOUT_ANNOTATION])
    (config,) = state["configurations"]
    assert config["revisions"] == [{"revisionName": "web-00001", "percent": 99},
                                   {"revisionName": "web-00002", "percent": 1}]
    # 600 s, first step observed after 1 s: 99 steps of 1 % every (600 - 1) / 99 s.
    assert config["stepParams"]["stepSize"] == 1
    external = next(r for r in ingress["spec"]["rules"] if r["visibility"] == "ExternalIP")
    splits = {s["serviceName"]: s["percent"] for s in external["http"]["paths"][0]["splits"]}
    assert splits == {"web-00001": 99, "web-00002": 1}
