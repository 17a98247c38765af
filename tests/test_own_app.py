"""Your own FastAPI app, run by uvicorn from a container `command`: as a Deployment, as a Knative
Service (revisions, scale to zero) and behind the mesh; and the ways it can go wrong."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labkit import cli
from labkit.cluster import ApplyError, LocalCluster
from labkit.mesh.control import control_plane
from labkit.net import free_port
from labkit.serving.autoscaler_config import AutoscalerConfig
from labkit.serving.service import configure_serving, knative_service

KSVC = "serving.knative.dev/v1/Service"

APP = textwrap.dedent('''
    import os
    from fastapi import FastAPI

    app = FastAPI()
    GREETING = "{greeting}"

    @app.get("/")
    def hello() -> dict:
        return {{"greeting": GREETING, "revision": os.environ.get("K_REVISION")}}

    @app.get("/crash")
    def crash() -> dict:
        raise RuntimeError("the app failed on this request")
''')


def write_app(folder: Path, greeting: str = "hello", source: str | None = None) -> Path:
    path = folder / "main.py"
    path.write_text(source if source is not None else APP.format(greeting=greeting))
    return path


def container(folder: Path, port_arg: str = "$(PORT)", **extra: Any) -> dict:
    """uvicorn serving main:app from `folder` on the port the platform gives ($PORT)."""
    return {"name": "app", "image": "my-fastapi-app",
            "command": [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1",
                        "--port", port_arg],
            "workingDir": str(folder), **extra}


def deployment(folder: Path, name: str = "myapp", **extra: Any) -> str:
    docs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [container(folder, **extra)]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80,
                                                        "targetPort": 8080}]}},
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def knative(folder: Path, env: str = "v1", annotations: dict[str, str] | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "myfn"},
        "spec": {"template": {
            "metadata": {"annotations": annotations or {}},
            "spec": {"containers": [container(
                folder, env=[{"name": "APP_VERSION", "value": env}])]}}}}, sort_keys=False)


def test_a_fastapi_app_as_a_deployment_keeps_serving_after_a_failing_request(
        cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_app(tmp_path)
    cluster.apply(deployment(tmp_path))
    url = cluster.url("Service", "myapp")
    assert httpx.get(url + "/", timeout=30).json() == {"greeting": "hello", "revision": None}
    crashed = httpx.get(url + "/crash", timeout=30)
    assert crashed.status_code == 500
    assert httpx.get(url + "/", timeout=30).status_code == 200
    pod = cluster.get("Deployment", "myapp").status.detail["pods"][0]
    assert pod["restarts"] == 0 and pod["state"] == "Running"
    assert "RuntimeError: the app failed on this request" in cluster.logs("Deployment", "myapp")
    # `labkit logs` from a terminal shows the same uvicorn output.
    assert cli.main(["logs", "deployment/myapp", "--tail", "40"]) == 0
    assert "RuntimeError: the app failed on this request" in capsys.readouterr().out


def test_a_fastapi_app_as_a_knative_service_new_revision_and_scale_to_zero(
        cluster: LocalCluster, tmp_path: Path, wait_for: Callable[..., None]) -> None:
    configure_serving(cluster, autoscaler=AutoscalerConfig(
        scale_to_zero_grace_period=1.0, allow_zero_initial_scale=True))
    write_app(tmp_path, "hello")
    window = {"autoscaling.knative.dev/window": "6s"}
    cluster.apply(knative(tmp_path, annotations=window))
    svc = knative_service(cluster, "myfn")
    assert httpx.get(svc.url + "/", timeout=30).json() == {
        "greeting": "hello", "revision": "myfn-00001"}
    # Edit the code and change the template (as a new image tag would): a new revision.
    write_app(tmp_path, "bonjour")
    cluster.apply(knative(tmp_path, env="v2", annotations=window))
    assert httpx.get(svc.url + "/", timeout=30).json() == {
        "greeting": "bonjour", "revision": "myfn-00002"}
    revision = svc.revision("myfn-00002")
    wait_for(lambda: revision.replica_count == 0, 40, "scale to zero")
    assert httpx.get(svc.url + "/", timeout=30).json()["greeting"] == "bonjour"
    assert revision.cold_starts[-1].from_zero


def test_a_fastapi_app_behind_the_mesh(tmp_path: Path) -> None:
    write_app(tmp_path)
    namespace = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "default",
                                             "labels": {"istio-injection": "enabled"}}})
    with LocalCluster(start_timeout=30.0) as cluster:
        cluster.apply(namespace + "---\n" + deployment(tmp_path))
        sleep = control_plane(cluster).client()
        answer = httpx.get(sleep.outbound_url + "/", headers={"Host": "myapp"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["greeting"] == "hello"
        assert "x-envoy-upstream-service-time" in answer.headers  # it went through the sidecars
        failed = httpx.get(sleep.outbound_url + "/crash", headers={"Host": "myapp"}, timeout=30)
        assert failed.status_code == 500


# -- bad input ------------------------------------------------------------------------------


def test_an_app_that_fails_to_import_shows_its_traceback(
        cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_app(tmp_path, source="import fastapi\nimport no_such_module\napp = fastapi.FastAPI()\n")
    with pytest.raises(ApplyError) as err:
        cluster.apply(deployment(tmp_path))
    message = str(err.value)
    assert "exited with code" in message
    assert "ModuleNotFoundError: No module named 'no_such_module'" in message
    # Nothing was left half-applied, and the same app as a Knative Service says so in its status.
    assert cluster.status() == []
    cluster.apply(knative(tmp_path))
    status = knative_service(cluster, "myfn").knative_status.condition("ConfigurationsReady")
    assert status is not None and status.status == "False"
    assert "No module named 'no_such_module'" in (status.message or "")
    # The whole traceback is in the failed pod's log.
    assert "Traceback (most recent call last)" in cluster.logs(KSVC, "myfn", previous=True)
    assert cli.main(["logs", "revision/myfn-00001", "--previous", "--tail", "1"]) == 0
    assert "ModuleNotFoundError" in capsys.readouterr().out


def test_an_app_on_the_wrong_port_never_becomes_ready(tmp_path: Path) -> None:
    write_app(tmp_path)
    wrong = free_port()  # not the $PORT it is given
    with LocalCluster(start_timeout=4.0) as cluster:
        with pytest.raises(ApplyError) as err:
            cluster.apply(deployment(tmp_path, port_arg=str(wrong)))
        message = str(err.value)
        assert "readiness probe (tcp-socket" in message and "did not answer within 4 s" in message
        assert f"Uvicorn running on http://127.0.0.1:{wrong}" in message  # the app's own log
