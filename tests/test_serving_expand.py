"""expand(): the Kubernetes and Knative objects a Service becomes, checked against the CRDs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.manifests import ManifestError, export, load_file
from labkit.serving.expand import expand, expand_yaml, object_names
from labkit.serving.models import KnativeService
from labkit.serving.service import knative_service

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"


def _knative_docs(text: str) -> str:
    docs = [d for d in yaml.safe_load_all(text) if d["apiVersion"].startswith("serving.")]
    return "---\n".join(yaml.safe_dump(d) for d in docs)


def test_a_service_becomes_the_objects_knative_names() -> None:
    [svc] = load_file(MANIFESTS / "knative-split.yaml")
    assert isinstance(svc, KnativeService)
    assert object_names(expand(svc)) == [
        ("Configuration", "shop"), ("Revision", "shop-00001"),
        ("Deployment", "shop-00001-deployment"), ("PodAutoscaler", "shop-00001"),
        ("ServerlessService", "shop-00001"), ("Service", "shop-00001-private"),
        ("Service", "shop-00001"), ("Route", "shop"), ("Ingress", "shop"),
        ("Service", "shop"), ("Service", "candidate-shop"),
    ]


def test_the_deployment_has_the_queue_proxy_sidecar() -> None:
    [svc] = load_file(MANIFESTS / "knative-split.yaml")
    assert isinstance(svc, KnativeService)
    deployment = next(o for o in expand(svc) if o["kind"] == "Deployment")
    user, queue = deployment["spec"]["template"]["spec"]["containers"]
    assert user["name"] == "user-container" and user["image"] == "labkit/httpbin"
    assert {p["containerPort"] for p in queue["ports"]} == {8012, 8022, 9090, 9091}
    env = {e["name"]: e.get("value") for e in queue["env"]}
    assert env["CONTAINER_CONCURRENCY"] == "10" and env["SERVING_REVISION"] == "shop-00001"
    assert env["QUEUE_SERVING_PORT"] == "8012" and env["USER_PORT"] == "8080"
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Revision", "shop-00001")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_public_service_has_no_selector_private_one_selects_the_pods() -> None:
    [svc] = load_file(MANIFESTS / "knative-hello.yaml")
    assert isinstance(svc, KnativeService)
    objects = {(o["kind"], o["metadata"]["name"]): o for o in expand(svc)}
    assert "selector" not in objects[("Service", "hello-00001")]["spec"]
    assert objects[("Service", "hello-00001-private")]["spec"]["selector"]
    assert objects[("ServerlessService", "hello-00001")]["spec"]["mode"] == "Proxy"


def test_ingress_splits_by_percent_and_gives_each_tag_a_host() -> None:
    [svc] = load_file(MANIFESTS / "knative-split.yaml")
    assert isinstance(svc, KnativeService)
    ingress = next(o for o in expand(svc) if o["kind"] == "Ingress")
    external = [r for r in ingress["spec"]["rules"] if r["visibility"] == "ExternalIP"]
    assert [r["hosts"] for r in external] == [["shop.default.example.com"],
                                              ["candidate-shop.default.example.com"]]
    main = external[0]["http"]["paths"][0]["splits"]
    assert [(s["serviceName"], s["percent"]) for s in main] == [("shop-00001", 90),
                                                               ("shop-00001", 10)]
    assert main[0]["appendHeaders"]["Knative-Serving-Revision"] == "shop-00001"


def test_expansion_and_example_manifests_pass_the_official_crds(crd_validate: Callable[[str], str]) -> None:
    for name in ("knative-hello.yaml", "knative-split.yaml"):
        objects = load_file(MANIFESTS / name)
        assert isinstance(objects[0], KnativeService)
        crd_validate(export(objects))
        crd_validate(_knative_docs(expand_yaml(objects[0])))


def test_the_broken_example_reports_every_problem_with_its_line() -> None:
    with pytest.raises(ManifestError) as info:
        load_file(MANIFESTS / "knative-broken.yaml")
    assert [e.line for e in info.value.errors] == [10, 11, 12, 14, 17, 21]
    text = str(info.value)
    assert "target fast should be at least 0.01" in text
    assert "traffic targets sum to 90, want 100" in text


def test_a_live_service_expands_every_revision(cluster: LocalCluster) -> None:
    [svc] = load_file(MANIFESTS / "knative-hello.yaml")
    assert isinstance(svc, KnativeService)
    cluster.apply(svc)
    changed = svc.model_copy(deep=True)
    changed.spec.template.spec.containers[0].env[0].value = "again"
    cluster.apply(changed)
    live = knative_service(cluster, "hello")
    names = object_names(expand(changed, live))
    assert ("Revision", "hello-00001") in names and ("Revision", "hello-00002") in names
    route = next(o for o in expand(changed, live) if o["kind"] == "Revision"
                 and o["metadata"]["name"] == "hello-00001")
    assert route["metadata"]["labels"]["serving.knative.dev/routingState"] == "reserve"
