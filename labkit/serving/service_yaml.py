"""A Knative Service manifest from a few choices, as the autoscaling lab writes many of them.

The annotations are given without their `autoscaling.knative.dev/` prefix (`{"target": "2"}`)
because that is how one thinks of them; the manifest carries the full keys, as Knative reads
them (serving.knative.dev/v1 Service, spec.template.metadata.annotations).
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

__all__ = ["AUTOSCALING", "service_yaml"]

AUTOSCALING = "autoscaling.knative.dev/"


def service_yaml(name: str, annotations: Mapping[str, str], container_concurrency: int = 0,
                 image: str = "labkit/httpbin") -> str:
    """A Knative Service running `image`; `container_concurrency` 0 means no limit (Knative's default)."""
    spec: dict = {"containers": [{"image": image}]}
    if container_concurrency:
        spec["containerConcurrency"] = container_concurrency
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {
            "metadata": {"annotations": {AUTOSCALING + key: str(value) for key, value in annotations.items()}},
            "spec": spec,
        }},
    }, sort_keys=False)
