"""`labkit export -o DIR` / LocalCluster.export: YAML a real cluster takes, checked against the
official CRD schemas kept in tests/crds/ (see tests/crds/SOURCES.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from crds.validator import check, check_all

from labkit import cli, manifests
from labkit.canary_lab import inference_service, knative_model_service, model_deployment
from labkit.core import images
from labkit.export import MESH_LABEL, MODEL_CLAIM, build_image, export_objects, write_export

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "data" / "manifests"
# Every manifest a lab or sample uses; the broken ones exist to show errors.
EXPORTED = sorted(p for p in [*MANIFESTS.glob("*.yaml"), *MANIFESTS.glob("samples/**/*.yaml")]
                  if "broken" not in p.name)


def _documents(folder: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(folder.rglob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _images(documents: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("image"), str):
                found.append(node["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(documents)
    return found


def _assert_real(folder: Path) -> list[dict[str, Any]]:
    """Every document valid for its CRD, no labkit-only image, kind or storage left."""
    documents = _documents(folder)
    assert check_all(documents) == {}
    builds = {build_image(row) for row in images.IMAGES if row.public is None}
    for image in _images(documents):
        row = images.builtin_image(image)
        assert image in builds or row is None or images.image_name(image) != row.name, image
    assert not [d for d in documents if d["apiVersion"].split("/")[0].endswith("labkit.dev")]
    assert "file://" not in "".join(p.read_text() for p in folder.rglob("*.yaml"))
    assert (folder / "README.txt").is_file()
    return documents


def test_the_image_table_runs_public_images_and_exports_labkit_ones() -> None:
    hello = images.builtin_image("labkit/hello")
    assert hello is not None and hello.public
    # Running: the public image, its aliases and labkit's name run the same program.
    for name in ("labkit/hello", hello.public, "gcr.io/knative-samples/helloworld-go:v1"):
        assert images.image_command(name) == hello.command
    for name in ("kennethreitz/httpbin", "docker.io/kennethreitz/httpbin:latest",
                 "docker.io/mccutchen/go-httpbin:v2.15.0"):
        assert images.image_command(name) == images.builtin_image("labkit/httpbin").command  # type: ignore[union-attr]  # a built-in image: never None
    # Export-only rows (started by their controller with arguments) are not run bare.
    assert images.image_command("docker.io/kserve/sklearnserver") is None
    # Every row names a module that exists.
    for row in images.IMAGES:
        assert (REPO / (row.module.replace(".", "/") + ".py")).is_file(), row


def test_export_replaces_images_storage_and_local_kinds(tmp_path: Path) -> None:
    text = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: labkit/httpbin, ports: [{containerPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo, namespace: shop}
spec:
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers: [{name: demo, image: labkit/mesh-demo}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: iris, namespace: shop}
spec:
  predictor:
    model: {modelFormat: {name: sklearn}, storageUri: data/models/iris}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop}
---
apiVersion: sources.labkit.dev/v1alpha1
kind: DirectorySource
metadata: {name: uploads, namespace: shop}
spec:
  directory: /tmp/uploads
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
"""
    path = tmp_path / "in.yaml"
    path.write_text(text)
    export = export_objects(manifests.load(path))
    by_kind = {d.kind: d for d in export.documents}
    web = next(d for d in export.documents if d.kind == "Deployment" and d.name == "web")
    containers = web.body["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == images.builtin_image("labkit/httpbin").public  # type: ignore[union-attr]  # a built-in image: never None
    demo = next(d for d in export.documents if d.kind == "Deployment" and d.name == "demo")
    assert demo.body["spec"]["template"]["spec"]["containers"][0]["image"] == build_image(
        images.builtin_image("labkit/mesh-demo"))  # type: ignore[arg-type]  # a built-in image: never None
    assert any("containers[0].image: labkit/httpbin ->" in n for n in web.notes)
    isvc = by_kind["InferenceService"]
    assert isvc.body["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{MODEL_CLAIM}/iris/iris"
    assert [u.local for u in export.uploads] == ["data/models/iris"]
    # DirectorySource -> watcher Deployment + SinkBinding + its claim, each with the reason.
    assert "DirectorySource" not in by_kind and by_kind["SinkBinding"].notes
    assert any(d.name == "uploads-uploads" for d in export.documents
               if d.kind == "PersistentVolumeClaim")
    # The namespace is created and, since a VirtualService lives there, injected.
    assert by_kind["Namespace"].body["metadata"]["labels"] == {MESH_LABEL: "enabled"}
    written = write_export(export, tmp_path / "out")
    names = [p.name for p in written]
    assert names.index("00-namespace-shop.yaml") < names.index("03-deployment-shop-web.yaml")
    # A built labkit program must answer other pods, not only its own loopback.
    assert "ENV LABKIT_BIND_ADDRESS=0.0.0.0" in (tmp_path / "out" / "Dockerfile").read_text()
    readme = (tmp_path / "out" / "README.txt").read_text()
    assert "kubectl cp data/models/iris shop/model-store:/pv/iris/iris" in readme
    assert "--build-arg MODULE=labkit.apps.mesh_demo" in readme
    assert (tmp_path / "out" / "03-deployment-shop-web.yaml").read_text().startswith(
        "# Exported by labkit")
    _assert_real(tmp_path / "out")


def test_the_validator_rejects_what_a_cluster_rejects() -> None:
    bad = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"template": {"spec": {"containers": [{"image": "a", "prots": []}]}}}}
    assert any("prots" in p for p in check(bad) or [])
    assert check({"apiVersion": "networking.istio.io/v1", "kind": "Nope",
                  "metadata": {"name": "x"}}) == [
        "apiVersion networking.istio.io/v1 kind Nope: no CRD here defines it"]
    assert check({"apiVersion": "apps/v1", "kind": "Deployment"}) is None


@pytest.mark.parametrize("path", EXPORTED, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_exports_to_valid_real_cluster_yaml(path: Path, tmp_path: Path) -> None:
    assert cli.main(["export", str(path), "-o", str(tmp_path)]) == 0
    documents = _assert_real(tmp_path)
    mesh = {d["metadata"].get("namespace") for d in documents
            if d["apiVersion"].startswith(("networking.istio.io", "security.istio.io"))}
    labelled = {d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"
                and d["metadata"].get("labels", {}).get(MESH_LABEL) == "enabled"}
    assert mesh <= labelled


def test_lab10_objects_export_without_running_them(tmp_path: Path) -> None:
    objects = manifests.load([model_deployment("v1"), knative_model_service("v2"),
                              inference_service("v1", 10)])
    write_export(export_objects(objects), tmp_path)
    documents = _assert_real(tmp_path)
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container and container["image"] == "docker.io/kserve/sklearnserver"
    isvc = next(d for d in documents if d["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith(f"pvc://{MODEL_CLAIM}/")


IGNORABLE = """
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: web}
spec:
  template:
    spec:
      nodeSelector: {disk: ssd}
      containers:
      - image: ghcr.io/knative/helloworld-go:latest
        imagePullPolicy: IfNotPresent
        resources: {requests: {cpu: 100m}, limits: {memory: 128Mi}}
"""


def test_fields_labkit_ignores_are_written_back_for_a_real_cluster(tmp_path: Path) -> None:
    warnings: list[manifests.ManifestIssue] = []
    [service] = manifests.load(IGNORABLE, warnings)
    assert {w.path for w in warnings} >= {"spec.template.spec.nodeSelector",
                                           "spec.template.spec.containers[0].resources.limits"}
    assert manifests.load(manifests.export(service)) == [service]
    write_export(export_objects([service.model_copy(deep=True)]), tmp_path)  # as cluster.objects() gives them
    [document] = [d for d in _assert_real(tmp_path) if d["kind"] == "Service"]
    pod = document["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}
    assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_a_running_cluster_exports_what_lab07_applied(tmp_path: Path) -> None:
    from labkit.cluster import LocalCluster

    with LocalCluster() as cluster:
        cluster.apply(MANIFESTS / "knative-hello.yaml")
        written = cluster.export(tmp_path)
    assert {p.name for p in written} >= {"README.txt", "03-service-default-hello.yaml"}
    documents = _assert_real(tmp_path)
    hello = next(d for d in documents if d["kind"] == "Service")
    assert hello["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "ghcr.io/knative/helloworld-go")


def test_export_without_out_still_prints_and_a_file_as_out_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hello = MANIFESTS / "knative-hello.yaml"
    assert cli.main(["export", str(hello)]) == 0
    assert "kind: Service" in capsys.readouterr().out
    target = tmp_path / "file"
    target.write_text("")
    assert cli.main(["export", str(hello), "-o", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_real_cluster_script_parses() -> None:
    script = REPO / "tools" / "real-cluster.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ps_does_not_import_grading() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, labkit.cli as c; c.build_parser('ps'); "
         "print(any(m.startswith(('labkit.grading', 'nbformat')) for m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_servers_listen_on_loopback_unless_the_built_image_says_otherwise() -> None:
    import subprocess
    import sys

    probe = [sys.executable, "-c", "from labkit.http1 import BIND_ADDRESS; print(BIND_ADDRESS)"]
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_BIND_ADDRESS"}
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "127.0.0.1"
    env["LABKIT_BIND_ADDRESS"] = "0.0.0.0"
    assert subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout.strip() == "0.0.0.0"


BUILT_PROGRAM = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME}
spec:
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      containers: [{name: app, image: labkit/mesh-demo, ports: [{containerPort: 9080}]}]
"""


def test_a_built_program_in_a_deployment_is_told_its_port(tmp_path: Path) -> None:
    [document] = [d for d in export_objects(manifests.load_text(BUILT_PROGRAM.replace("NAME", "web"))).documents
                  if d.kind == "Deployment"]
    container = document.body["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "PORT", "value": "9080"} in container["env"]
    assert any("PORT=9080" in note for note in document.notes)


def test_a_new_export_replaces_the_files_of_an_earlier_one(tmp_path: Path) -> None:
    first = write_export(export_objects(manifests.load_text(BUILT_PROGRAM.replace("NAME", "web"))), tmp_path)
    (tmp_path / "notes.md").write_text("mine")
    second = write_export(export_objects(manifests.load_text(BUILT_PROGRAM.replace("NAME", "api"))), tmp_path)
    assert [p for p in first if p.suffix == ".yaml" and not p.exists()]  # web's files are gone
    assert all(p.exists() for p in second) and (tmp_path / "notes.md").read_text() == "mine"


def test_exporting_again_never_leaves_a_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A lab run twice at once (nbval beside the browser tests) exports the same objects into one
    # folder: a file the other run wrote, and may be reading, must never be removed, only replaced.
    export = export_objects(manifests.load_text(BUILT_PROGRAM.replace("NAME", "web")))
    first = write_export(export, tmp_path)
    removed: list[Path] = []
    real_unlink = Path.unlink

    def unlink_noting(path: Path, missing_ok: bool = False) -> None:
        removed.append(path)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink_noting)
    assert write_export(export, tmp_path) == first
    assert not [p for p in removed if p in first]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in first)  # no temporary left


def test_a_service_sends_to_the_port_the_public_image_listens_on() -> None:
    text = BUILT_PROGRAM.replace("NAME", "display").replace("labkit/mesh-demo", "labkit/event-display").replace(
        ", ports: [{containerPort: 9080}]", "") + """---
apiVersion: v1
kind: Service
metadata: {name: display}
spec:
  selector: {app: display}
  ports: [{port: 80}]
"""
    [service] = [d for d in export_objects(manifests.load_text(text)).documents if d.kind == "Service"]
    row = images.builtin_image("labkit/event-display")
    assert row is not None and service.body["spec"]["ports"] == [{"port": 80, "targetPort": row.port}]
    assert any("targetPort: 80 -> 8080" in note for note in service.notes)
