"""service_yaml: the manifest lab 05 applies is a Knative Service labkit and Knative accept."""

from __future__ import annotations

import yaml

from labkit.manifests import load_text
from labkit.serving.service_yaml import service_yaml


def test_annotations_get_their_prefix_and_concurrency_its_field():
    doc = yaml.safe_load(service_yaml("burst", {"min-scale": "2", "target": "10"}, container_concurrency=10))
    template = doc["spec"]["template"]
    assert template["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "2",
                                                   "autoscaling.knative.dev/target": "10"}
    assert template["spec"] == {"containerConcurrency": 10, "containers": [{"image": "labkit/httpbin"}]}
    assert "containerConcurrency" not in yaml.safe_load(service_yaml("any", {}))["spec"]["template"]["spec"]


def test_the_manifest_passes_labkits_validation():
    (obj,) = load_text(service_yaml("by-rps", {"metric": "rps", "target": "10", "window": "6s"}))
    assert obj.metadata.name == "by-rps"
