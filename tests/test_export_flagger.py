"""Export of a cluster with a Flagger Canary: the Canary and the student's own objects are
written, the objects Flagger makes (owned by the Canary, as on a real cluster) are not, and the
target is written as the student applied it, not as Flagger left it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from crds.validator import check_all

from labkit import manifests
from labkit.core.models import Deployment
from labkit.export import export_objects, write_export
from labkit.flagger import router
from labkit.flagger.analysis import Routes
from labkit.flagger.models import Canary
from labkit.flagger.podinfo import podinfo_deployment
from labkit.manifests import ManifestError

NS = "default"
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NS, "labels": {"istio-injection": "enabled"}}}
FLAGGER_MADE = {("Deployment", "podinfo-primary"), ("Service", "podinfo"),
                ("Service", "podinfo-primary"), ("Service", "podinfo-canary"),
                ("DestinationRule", "podinfo-primary"), ("DestinationRule", "podinfo-canary"),
                ("VirtualService", "podinfo")}


def canary_body(provider: str = "istio") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "1s", "threshold": 2, "stepWeight": 50}}
    if provider == "knative":
        spec.update(provider="knative", targetRef={"apiVersion": "serving.knative.dev/v1",
                                                   "kind": "Service", "name": "podinfo"})
        del spec["service"]
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": NS}, "spec": spec}


def _written(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for path in sorted(folder.glob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d}


# -- pure: the objects as router.py makes them, exported without running them ----------------


def flagger_objects(replicas: int) -> list[manifests.KubeObject]:
    """What a cluster holds once Flagger initialised: the target scaled to 0, and router.py's
    objects (the primary with the target's replicas)."""
    target_body = podinfo_deployment("v1")
    target_body["spec"]["replicas"] = replicas
    [target, canary] = manifests.load([target_body, canary_body()])
    assert isinstance(target, Deployment) and isinstance(canary, Canary)
    made = [router.primary_deployment(canary, target), *router.services(canary, target),
            *router.destination_rules(canary), router.virtual_service(canary, Routes())]
    scaled = podinfo_deployment("v1")
    scaled["spec"]["replicas"] = 0
    return manifests.load([NAMESPACE, scaled, *made, canary_body()])


def test_every_object_flagger_makes_is_controlled_by_its_canary() -> None:
    objects = flagger_objects(2)
    canary = next(o for o in objects if o.kind == "Canary")
    assert isinstance(canary, Canary)
    owned = {(o.kind, o.metadata.name): o.metadata.owner_references for o in objects
             if o.metadata.owner_references}
    assert set(owned) == FLAGGER_MADE
    for refs in owned.values():
        [ref] = refs
        # metav1.NewControllerRef(cd, flagger.app/v1beta1 Canary)
        assert ref.model_dump(by_alias=True) == {
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "podinfo",
            "uid": router.canary_uid(canary), "controller": True, "blockOwnerDeletion": True}
    assert router.canary_uid(canary) != router.canary_uid(canary.model_copy(update={
        "metadata": canary.metadata.model_copy(update={"name": "other"})}))


def test_export_skips_what_flagger_makes_and_restores_the_target(tmp_path: Path) -> None:
    export = export_objects(flagger_objects(2))
    assert {(s.kind, s.name) for s in export.skipped} == FLAGGER_MADE
    assert {s.why for s in export.skipped} == {
        "created by Flagger from Canary/podinfo on a real cluster"}
    write_export(export, tmp_path)
    written = _written(tmp_path)
    assert set(written) == {("Namespace", NS), ("Deployment", "podinfo"), ("Canary", "podinfo")}
    assert check_all(list(written.values())) == {}
    # the target with the replicas the primary runs (the student's 2), not Flagger's 0
    assert written[("Deployment", "podinfo")]["spec"]["replicas"] == 2
    head = (tmp_path / "03-deployment-default-podinfo.yaml").read_text()
    assert "spec.replicas: 0 -> 2: Flagger scaled it to 0" in head
    readme = (tmp_path / "README.txt").read_text()
    assert "VirtualService/podinfo in default: created by Flagger from Canary/podinfo" in readme
    assert "07-virtualservice" not in readme
    # Flagger's Services send to the port the public image (go-httpbin, in podinfo's place) listens on
    assert written[("Canary", "podinfo")]["spec"]["service"] == {"port": 9898, "targetPort": 8080}


def test_an_owned_object_whose_owner_is_not_exported_says_so() -> None:
    [primary] = [o for o in flagger_objects(1)
                 if (o.kind, o.metadata.name) == ("Deployment", "podinfo-primary")]
    [skipped] = export_objects([primary]).skipped
    assert skipped.why == ("created by Flagger from Canary/podinfo on a real cluster "
                           "(Canary/podinfo is not in this export)")


def test_two_controller_references_are_refused() -> None:
    body = podinfo_deployment("v1")
    ref = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "uid": "1", "controller": True}
    body["metadata"]["ownerReferences"] = [{**ref, "name": "a"}, {**ref, "name": "b"}]
    with pytest.raises(ManifestError, match=r"metadata.ownerReferences: Only one reference can "
                                            r"have Controller set to true.*Canary/a and Canary/b"):
        manifests.load([body])


# -- live: a running Canary ---------------------------------------------------------------------


@pytest.fixture()
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from labkit.cluster import LocalCluster

    monkeypatch.setenv("LABKIT_FLAGGER_STATE", str(tmp_path / "state"))
    with LocalCluster() as c:
        yield c


def test_a_running_istio_canary_exports_the_students_objects(
        cluster: Any, tmp_path: Path, crd_validate: Callable[[str], str]) -> None:
    # the student's own apex Service, applied before the Canary: Flagger takes it over
    # without owning it (kubernetes_default.go reconcileService updates selector and ports)
    apex = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": NS, "labels": {"team": "a"}},
            "spec": {"selector": {"app": "podinfo"}, "ports": [{"port": 9898}]}}
    cluster.apply([NAMESPACE, podinfo_deployment("v1"), apex])
    cluster.apply(canary_body())
    assert cluster.get("Deployment", "podinfo", NS).object.spec.replicas == 0
    service = cluster.get("Service", "podinfo", NS).object
    assert service.metadata.labels == {"team": "a"} and not service.metadata.owner_references
    assert service.spec.selector == {"app": "podinfo-primary"}
    for kind, name in FLAGGER_MADE - {("Service", "podinfo")}:
        [ref] = cluster.get(kind, name, NS).object.metadata.owner_references
        assert (ref.kind, ref.name, ref.controller) == ("Canary", "podinfo", True)

    out = tmp_path / "export"
    cluster.export(out)
    written = _written(out)
    assert set(written) == {("Namespace", NS), ("Deployment", "podinfo"), ("Service", "podinfo"),
                            ("Canary", "podinfo")}
    assert written[("Deployment", "podinfo")]["spec"]["replicas"] == 1
    for path in out.glob("*.yaml"):
        crd_validate(path.read_text(encoding="utf-8"))
    readme = (out / "README.txt").read_text()
    for kind, name in FLAGGER_MADE - {("Service", "podinfo")}:
        assert f"{kind}/{name} in default: created by Flagger from Canary/podinfo" in readme


def test_a_running_knative_canary_exports_the_service_without_flaggers_routing(
        cluster: Any, tmp_path: Path, crd_validate: Callable[[str], str]) -> None:
    ksvc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": NS},
            "spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go"}]}}}}
    cluster.apply(ksvc)
    cluster.apply(canary_body("knative"))
    live = cluster.get("ksvc", "podinfo", NS).object
    assert live.metadata.annotations[router.PRIMARY_REVISION] == "podinfo-00001"
    assert live.spec.traffic

    cluster.export(tmp_path)
    written = _written(tmp_path)
    assert set(written) == {("Namespace", NS), ("Service", "podinfo"), ("Canary", "podinfo")}
    service = written[("Service", "podinfo")]
    assert "traffic" not in service["spec"]
    assert router.PRIMARY_REVISION not in service["metadata"].get("annotations", {})
    for path in tmp_path.glob("*.yaml"):
        crd_validate(path.read_text(encoding="utf-8"))
    head = (tmp_path / "03-service-default-podinfo.yaml").read_text()
    assert "spec.traffic: removed, written by Flagger for Canary/podinfo" in head
