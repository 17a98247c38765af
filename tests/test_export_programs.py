"""Export of containers that run a program by command: the image a shared built-in module
stands for, and what to build for a student's own Python program."""

from __future__ import annotations

from typing import Any

from labkit import manifests
from labkit.export import Document, export_objects


def deployment(container: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                     "template": {"metadata": {"labels": {"app": "app"}},
                                  "spec": {"containers": [{"name": "app", **container}]}}}}


def exported(container: dict[str, Any]) -> tuple[dict[str, Any], Document]:
    [doc] = [d for d in export_objects(manifests.load([deployment(container)])).documents
             if d.kind == "Deployment"]
    return doc.body["spec"]["template"]["spec"]["containers"][0], doc


def test_a_module_several_images_share_exports_as_the_one_its_arguments_name() -> None:
    # Bookinfo's reviews v1, v2 and v3 all run labkit.apps.bookinfo.reviews, with v1/v2/v3
    written, _ = exported({"image": "labkit/bookinfo-reviews-v2",
                           "command": ["python", "-m", "labkit.apps.bookinfo.reviews", "v2"]})
    assert written["image"] == "docker.io/istio/examples-bookinfo-reviews-v2:1.20.1"
    assert "command" not in written and "args" not in written  # the image runs v2 itself
    written, _ = exported({"image": "python",
                           "command": ["python", "-m", "labkit.apps.bookinfo.reviews", "v3"]})
    assert written["image"] == "docker.io/istio/examples-bookinfo-reviews-v3:1.20.1"


def test_a_module_several_images_share_keeps_the_containers_own_image() -> None:
    # KServe's model servers share labkit.inference.server: the xgboost one stays xgboost
    written, _ = exported({"image": "kserve/xgbserver", "command": ["python", "-m", "labkit.inference.server"],
                           "args": ["--model-name", "m"]})
    assert written["image"] == "docker.io/kserve/xgbserver"
    assert written["args"] == ["--model-name", "m"]
    written, _ = exported({"image": "python", "command": ["python", "-m", "labkit.inference.server"]})
    assert written["image"] == "docker.io/kserve/sklearnserver"  # not a server's image: the first


def test_a_students_own_script_is_kept_and_says_what_to_build() -> None:
    # lab 01's worker: `image: python` running a file written on this machine
    command = ["/usr/bin/python3", "/tmp/lab01-x/worker.py"]
    written, doc = exported({"image": "python", "command": command})
    assert written["command"] == command and written["image"] == "python"
    [note] = doc.notes
    assert note.startswith("spec.template.spec.containers[0].command: your own program "
                           "worker.py: build an image from it")
    assert "/tmp" not in note  # the lab's temporary folder: the note reads the same each run
    assert 'COPY worker.py /app/, CMD ["python", "/app/worker.py"]' in note
    assert "0.0.0.0" in note


def test_a_students_fastapi_app_says_what_to_build() -> None:
    _, doc = exported({"image": "my-fastapi-app", "workingDir": "myapp",
                       "command": ["python", "-m", "uvicorn", "main:app", "--host", "127.0.0.1",
                                   "--port", "$(PORT)"]})
    [note] = doc.notes
    assert "your own app (main:app under uvicorn): build an image from the folder myapp" in note
    assert "CMD uvicorn main:app --host 0.0.0.0 --port $PORT" in note
    assert "without the `command` and `workingDir`" in note


def test_other_commands_get_no_build_note() -> None:
    _, doc = exported({"image": "busybox", "command": ["sleep", "infinity"]})
    assert doc.notes == []
    _, doc = exported({"image": "python", "command": ["python", "-c", "print(1)"]})
    assert doc.notes == []
