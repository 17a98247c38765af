from __future__ import annotations

import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labkit.cluster import ApplyError, LocalCluster, NotFoundError
from labkit.core.models import Deployment
from labkit.manifests import ManifestError

HELLO_YAML = Path(__file__).resolve().parents[1] / "data" / "manifests" / "hello.yaml"
HELLO_TEXT = HELLO_YAML.read_text()
DEPLOYMENT_TEXT, SERVICE_TEXT = HELLO_TEXT.split("---\n")


def pid_behind(url: str) -> int:
    """The pid of the replica that answered (hello sends it in x-labkit-pod)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.headers["x-labkit-pod"])


def pod_pids(cluster: LocalCluster, name: str = "hello") -> list[int]:
    return [pod["pid"] for pod in cluster.get("Deployment", name).status.detail["pods"]]


def port_accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def test_service_spreads_connections_over_both_replicas(cluster: LocalCluster) -> None:
    seen = []
    cluster.apply(HELLO_YAML, on_ready=lambda r: seen.append((r.status.kind, r.status.ready)))
    assert seen == [("Deployment", True), ("Service", True)]
    url = cluster.url("Service", "hello")
    pids = [pid_behind(url) for _ in range(4)]
    assert sorted(set(pids)) == sorted(pod_pids(cluster))
    assert len(set(pids)) == 2
    assert pids[0] != pids[1]  # round robin per connection
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"Hello labkit!\n"
    pods = cluster.get("Deployment", "hello").status.detail["pods"]
    assert all(pod["ready"] and pod["startSeconds"] > 0 for pod in pods)


def test_scale_down_stops_a_process_and_scale_up_adds_one(
    cluster: LocalCluster, process_alive, wait_for
) -> None:
    cluster.apply(HELLO_YAML)
    before = pod_pids(cluster)
    cluster.apply(HELLO_TEXT.replace("replicas: 2", "replicas: 1"))
    (kept,) = pod_pids(cluster)
    (gone,) = set(before) - {kept}
    assert not process_alive(gone)
    url = cluster.url("Service", "hello")
    assert {pid_behind(url) for _ in range(3)} == {kept}
    cluster.apply(HELLO_TEXT.replace("replicas: 2", "replicas: 3"))
    after = pod_pids(cluster)
    assert len(after) == 3 and kept in after
    assert {pid_behind(url) for _ in range(3)} == set(after)
    assert cluster.get("Service", "hello").status.message == "3 endpoint(s)"


def test_changed_template_replaces_every_pod(cluster: LocalCluster, process_alive) -> None:
    cluster.apply(HELLO_YAML)
    old = pod_pids(cluster)
    cluster.apply(HELLO_TEXT.replace("value: labkit", "value: again"))
    new = pod_pids(cluster)
    assert not set(old) & set(new)
    assert not any(process_alive(pid) for pid in old)
    with urllib.request.urlopen(cluster.url("Service", "hello")) as response:
        assert response.read() == b"Hello again!\n"


def test_get_change_apply_in_python(cluster: LocalCluster) -> None:
    cluster.apply(HELLO_YAML)
    deployment = cluster.get("Deployment", "hello").object
    assert isinstance(deployment, Deployment)
    deployment.spec.replicas = 1
    cluster.apply(deployment)
    assert len(pod_pids(cluster)) == 1
    applied = cluster.get("Deployment", "hello").object
    assert isinstance(applied, Deployment) and applied.spec.replicas == 1


def test_reapplying_the_same_manifest_changes_nothing(cluster: LocalCluster) -> None:
    cluster.apply(HELLO_YAML)
    pids, url = pod_pids(cluster), cluster.url("Service", "hello")
    cluster.apply(HELLO_YAML)
    assert pod_pids(cluster) == pids and cluster.url("Service", "hello") == url


def test_delete_stops_processes_and_frees_the_port(cluster: LocalCluster, process_alive) -> None:
    cluster.apply(HELLO_YAML)
    pids, url = pod_pids(cluster), cluster.url("Service", "hello")
    cluster.delete("Service", "hello")
    assert not port_accepts(url)
    cluster.delete("Deployment", "hello")
    assert not any(process_alive(pid) for pid in pids)
    assert cluster.status() == []
    with pytest.raises(NotFoundError, match="no Deployment named 'hello'"):
        cluster.get("Deployment", "hello")


def test_deleting_an_owner_deletes_what_it_owns_and_nothing_else(cluster: LocalCluster, process_alive) -> None:
    owned = SERVICE_TEXT.replace("metadata:\n", "metadata:\n  ownerReferences:\n"
                                 "  - {apiVersion: apps/v1, kind: Deployment, name: hello, uid: u1, controller: true}\n", 1)
    another = SERVICE_TEXT.replace("name: hello\n", "name: other\n", 1)
    cluster.apply(DEPLOYMENT_TEXT + "---\n" + owned + "---\n" + another)
    pids, url = pod_pids(cluster), cluster.url("Service", "hello")
    cluster.delete("Deployment", "hello")
    assert [(row.kind, row.name) for row in cluster.status()] == [("Service", "other")]
    assert not port_accepts(url)
    assert not any(process_alive(pid) for pid in pids)


def test_close_leaves_no_child_process_and_no_listener(child_pids) -> None:
    before = child_pids()
    with LocalCluster() as cluster:
        cluster.apply(HELLO_YAML)
        pids = set(pod_pids(cluster))
        assert pids <= child_pids()
        url = cluster.url("Service", "hello")
    assert child_pids() - before == set()
    assert not port_accepts(url)
    cluster.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        cluster.apply(HELLO_YAML)


CRASHING = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: crasher
spec:
  replicas: 1
  selector:
    matchLabels: {{app: crasher}}
  template:
    metadata:
      labels: {{app: crasher}}
    spec:
      containers:
        - name: crasher
          image: local/crasher
          command: ["{sys.executable}", "-c", "import sys; print('cannot start: no model', file=sys.stderr); sys.exit(3)"]
"""


def test_a_failing_replica_rolls_back_the_whole_apply(cluster: LocalCluster, child_pids) -> None:
    before = child_pids()
    with pytest.raises(ApplyError) as info:
        cluster.apply(HELLO_TEXT + "---\n" + CRASHING)
    message = str(info.value)
    assert message.startswith("Deployment/crasher: pod crasher-")
    assert "exited with code 3" in message and "cannot start: no model" in message
    assert "rolled back" in message
    assert cluster.status() == []
    assert child_pids() - before == set()


def test_a_failed_update_restores_the_previous_state(cluster: LocalCluster) -> None:
    cluster.apply(HELLO_YAML)
    with pytest.raises(ApplyError):
        cluster.apply(HELLO_TEXT.replace("replicas: 2", "replicas: 3") + "---\n" + CRASHING)
    status = cluster.get("Deployment", "hello").status
    assert status.detail["replicas"] == 2 and status.ready
    applied = cluster.get("Deployment", "hello").object
    assert isinstance(applied, Deployment) and applied.spec.replicas == 2
    assert [s.name for s in cluster.status()] == ["hello", "hello"]


def test_a_bad_second_document_starts_nothing(cluster: LocalCluster, write, child_pids) -> None:
    path = write(
        "app.yaml", DEPLOYMENT_TEXT + "---\n" + SERVICE_TEXT.replace("port: 80", "port: http")
    )
    before = child_pids()
    with pytest.raises(ManifestError) as info:
        cluster.apply(path)
    assert str(info.value) == (
        f"{path}:41: Service/hello: spec.ports[0].port: expected an integer, got string 'http'"
    )
    assert cluster.status() == [] and child_pids() == before


def test_service_applied_before_its_pods_starts_forwarding_when_they_appear(
    cluster: LocalCluster,
) -> None:
    cluster.apply(SERVICE_TEXT)
    url = cluster.url("Service", "hello")
    assert cluster.get("Service", "hello").status.message == "no ready endpoints yet"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, timeout=10)
    cluster.apply(DEPLOYMENT_TEXT)
    assert pid_behind(url) in pod_pids(cluster)


def test_a_dead_pod_leaves_the_endpoints(wait_for) -> None:
    with LocalCluster(restart_backoff=None) as cluster:  # no self-healing: watch the failure
        cluster.apply(HELLO_YAML)
        victim, survivor = pod_pids(cluster)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: cluster.get("Service", "hello").status.message == "1 endpoint(s)",
            what="the dead pod to leave the endpoints",
        )
        status = cluster.get("Deployment", "hello").status
        # Once the Deployment has noticed the exit, the message also says which pod and why.
        assert not status.ready and status.message.split("; ")[0] == "1/2 ready"
        dead = next(p for p in status.detail["pods"] if p["pid"] == victim)
        assert dead["exitCode"] == -signal.SIGKILL and dead["restarts"] == 0
        url = cluster.url("Service", "hello")
        assert {pid_behind(url) for _ in range(3)} == {survivor}
        # Scaling down removes the pod that is not ready first, as a ReplicaSet does.
        cluster.apply(HELLO_TEXT.replace("replicas: 2", "replicas: 1"))
        assert pod_pids(cluster) == [survivor]
        assert cluster.get("Deployment", "hello").status.ready


def test_an_exited_pod_is_restarted_and_rejoins_the_endpoints(wait_for, process_alive) -> None:
    with LocalCluster() as cluster:  # the first restart is immediate, as with the kubelet
        cluster.apply(HELLO_YAML)
        victim, survivor = pod_pids(cluster)
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            pods = cluster.get("Deployment", "hello").status.detail["pods"]
            return [p["restarts"] for p in pods] == [1, 0] and all(p["ready"] for p in pods)

        wait_for(restarted, what="the killed pod to be restarted")
        fresh, kept = pod_pids(cluster)
        assert kept == survivor and fresh != victim and process_alive(fresh)
        url = cluster.url("Service", "hello")
        assert {pid_behind(url) for _ in range(4)} == {fresh, survivor}


def test_any_program_reading_port_can_be_a_workload(cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("static page\n")
    manifest = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: files}}
spec:
  selector: {{matchLabels: {{app: files}}}}
  template:
    metadata: {{labels: {{app: files}}}}
    spec:
      containers:
        - name: files
          image: python:3.11
          command: ["{sys.executable}", "-m", "http.server"]
          args: ["--bind", "127.0.0.1", "$(PORT)"]
          workingDir: "{tmp_path}"
---
apiVersion: v1
kind: Service
metadata: {{name: files}}
spec:
  selector: {{app: files}}
  ports: [{{port: 80}}]
"""
    cluster.apply(manifest)
    with urllib.request.urlopen(cluster.url("Service", "files") + "/index.html") as response:
        assert response.read() == b"static page\n"


def test_lookups_and_their_errors(cluster: LocalCluster) -> None:
    cluster.apply(HELLO_YAML)
    assert cluster.get("apps/v1/Deployment", "hello").object.kind == "Deployment"
    assert cluster.get("deployment", "hello").status.ready
    with pytest.raises(NotFoundError, match="has no URL of its own"):
        cluster.url("Deployment", "hello")
    with pytest.raises(NotFoundError, match="unknown kind 'Pod'"):
        cluster.get("Pod", "hello")
    with pytest.raises(NotFoundError, match=r"present: Deployment/hello, Service/hello"):
        cluster.get("Service", "other")
    table = str(cluster.status())
    assert table.splitlines()[0].split() == ["KIND", "NAME", "READY", "URL", "MESSAGE"]
    assert cluster.url("Service", "hello") in table
    assert [o.kind for o in cluster.objects()] == ["Deployment", "Service"]


def test_kinds_resolve_as_kubectl_reads_them(cluster: LocalCluster) -> None:
    cluster.apply(HELLO_YAML)
    for kind in ("svc", "Service", "v1/Service", "/Service"):
        assert cluster.get(kind, "hello").object.api_version == "v1", kind
    for kind in ("deploy", "apps/Deployment", "DEPLOYMENT"):
        assert cluster.get(kind, "hello").object.kind == "Deployment", kind
    with pytest.raises(NotFoundError, match=r"no Service named 'hello'"):
        cluster.get("ksvc", "hello")  # a Knative Service is another kind, even with the same name
    with pytest.raises(NotFoundError, match="unknown kind 'nosuch/Service'"):
        cluster.get("nosuch/Service", "hello")


def test_deployment_selector_is_immutable(cluster: LocalCluster) -> None:
    cluster.apply(HELLO_YAML)
    changed = DEPLOYMENT_TEXT.replace("app: hello", "app: hi")
    with pytest.raises(ApplyError, match="spec.selector is immutable"):
        cluster.apply(changed)
    assert cluster.get("Deployment", "hello").status.ready
