"""The kubelet's Service environment variables, on real pods started by the Deployment controller."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from labkit.cluster import LocalCluster
from labkit.core.models import Service
from labkit.core.service import link_variables

# A pod that answers with its own environment, so a test sees exactly what the kubelet set.
ENV_APP = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"env": dict(os.environ), "args": sys.argv[1:]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def service(name: str, *ports: dict, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": list(ports)}}


def env_pod(app: Path, *, namespace: str = "default", env: dict[str, str] | None = None,
            args: list[str] | None = None, **pod_spec: object) -> dict:
    container = {"name": "app", "image": "env-app", "command": [sys.executable, str(app)], "args": args or [],
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "env-app", "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"app": "env-app"}},
                     "template": {"metadata": {"labels": {"app": "env-app"}},
                                  "spec": {**pod_spec, "containers": [container]}}}}


def pod_answer(cluster: LocalCluster, namespace: str = "default") -> dict:
    (pod,) = cluster.get("Deployment", "env-app", namespace).status.detail["pods"]
    with urllib.request.urlopen(pod["url"], timeout=10) as response:
        return json.loads(response.read())


def pod_env(cluster: LocalCluster, namespace: str = "default") -> dict[str, str]:
    return pod_answer(cluster, namespace)["env"]


def local_port(cluster: LocalCluster, name: str, number: int, namespace: str = "default") -> str:
    ports = cluster.get("v1/Service", name, namespace).status.detail["ports"]
    return str(next(urlsplit(p["url"]).port for p in ports if p["port"] == number))


@pytest.fixture
def app(write) -> Path:
    return write("env_app.py", ENV_APP)


def test_link_variables_are_the_kubelets_set_with_the_local_address() -> None:
    svc = Service.model_validate(service("redis-primary", {"name": "db", "port": 6379},
                                         {"name": "admin-api", "port": 8080}))
    assert link_variables(svc, {6379: 41001, 8080: 41002}, host="127.0.0.1") == {
        "REDIS_PRIMARY_SERVICE_HOST": "127.0.0.1",
        "REDIS_PRIMARY_SERVICE_PORT": "41001",
        "REDIS_PRIMARY_SERVICE_PORT_DB": "41001",
        "REDIS_PRIMARY_SERVICE_PORT_ADMIN_API": "41002",
        "REDIS_PRIMARY_PORT": "tcp://127.0.0.1:41001",
        "REDIS_PRIMARY_PORT_6379_TCP": "tcp://127.0.0.1:41001",
        "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_6379_TCP_PORT": "41001",
        "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "127.0.0.1",
        "REDIS_PRIMARY_PORT_8080_TCP": "tcp://127.0.0.1:41002",
        "REDIS_PRIMARY_PORT_8080_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_8080_TCP_PORT": "41002",
        "REDIS_PRIMARY_PORT_8080_TCP_ADDR": "127.0.0.1",
    }


def test_unnamed_single_port_has_no_named_port_variable() -> None:
    svc = Service.model_validate(service("web", {"port": 80}))
    env = link_variables(svc, {80: 5000})
    assert env["WEB_SERVICE_PORT"] == "5000" and not any(k.startswith("WEB_SERVICE_PORT_") for k in env)


def test_pod_gets_the_variables_of_services_that_exist_when_it_starts(cluster, app) -> None:
    cluster.apply([service("backend", {"name": "http", "port": 9080}), env_pod(app)])
    env = pod_env(cluster)
    port = local_port(cluster, "backend", 9080)
    assert env["BACKEND_SERVICE_HOST"] == "127.0.0.1" and env["BACKEND_SERVICE_PORT"] == port
    assert env["BACKEND_SERVICE_PORT_HTTP"] == port
    assert env["BACKEND_PORT_9080_TCP"] == f"tcp://127.0.0.1:{port}"
    assert env["HOSTNAME"].startswith("env-app-")
    # A Service created after the pod is not seen by it ...
    cluster.apply(service("late", {"port": 80}))
    assert "LATE_SERVICE_HOST" not in pod_env(cluster)
    # ... until a new pod starts (here: a rollout of a changed template).
    cluster.apply(env_pod(app, env={"ROLLOUT": "2"}))
    assert pod_env(cluster)["LATE_SERVICE_PORT"] == local_port(cluster, "late", 80)


def test_a_restarted_container_sees_the_services_of_its_restart(cluster, app, wait_for) -> None:
    cluster.apply(env_pod(app))
    cluster.apply(service("late", {"port": 80}))
    (pod,) = cluster.get("Deployment", "env-app").status.detail["pods"]
    os.kill(pod["pid"], signal.SIGKILL)

    def restarted() -> bool:
        (now,) = cluster.get("Deployment", "env-app").status.detail["pods"]
        return now["restarts"] == 1 and now["ready"]

    wait_for(restarted, timeout=20, what="the container to be restarted")
    assert pod_env(cluster)["LATE_SERVICE_HOST"] == "127.0.0.1"


def test_service_variables_expand_in_args(cluster, app) -> None:
    cluster.apply([service("backend", {"port": 9080}),
                   env_pod(app, args=["--backend=$(BACKEND_SERVICE_HOST):$(BACKEND_SERVICE_PORT)"])])
    assert pod_answer(cluster)["args"] == [f"--backend=127.0.0.1:{local_port(cluster, 'backend', 9080)}"]


def test_container_env_wins_and_enable_service_links_false_turns_them_off(cluster, app) -> None:
    cluster.apply([service("backend", {"port": 9080}),
                   env_pod(app, env={"BACKEND_SERVICE_HOST": "backend.example"})])
    env = pod_env(cluster)
    assert env["BACKEND_SERVICE_HOST"] == "backend.example"
    assert env["BACKEND_SERVICE_PORT"] == local_port(cluster, "backend", 9080)
    cluster.apply(env_pod(app, enableServiceLinks=False))
    assert not any(k.startswith("BACKEND_") for k in pod_env(cluster))


def test_only_services_of_the_pods_namespace(cluster, app) -> None:
    cluster.apply([service("mine", {"port": 80}, namespace="team-a"),
                   service("theirs", {"port": 80}, namespace="team-b"),
                   env_pod(app, namespace="team-a")])
    env = pod_env(cluster, "team-a")
    assert env["MINE_SERVICE_PORT"] == local_port(cluster, "mine", 80, "team-a")
    assert "THEIRS_SERVICE_HOST" not in env


def test_enable_service_links_round_trips_and_is_type_checked(app) -> None:
    from labkit.manifests import ManifestError, export, load

    (obj,) = load(env_pod(app, enableServiceLinks=False))
    assert "enableServiceLinks: false" in export(obj) and load(yaml.safe_load(export(obj))) == [obj]
    with pytest.raises(ManifestError, match="enableServiceLinks"):
        load(env_pod(app, enableServiceLinks="no"))
