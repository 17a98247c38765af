"""Pod semantics: default TCP readiness, readiness/liveness probes, CrashLoopBackOff."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from labkit import cli
from labkit.cluster import LocalCluster
from labkit.core.models import Deployment
from labkit.core.prober import PodProber
from labkit.core.probes import ProbeCounter, ProbeSpec, crash_backoff, http_success
from labkit.manifests import ManifestError, load
from labkit.net import ReplicaProcess
from labkit.serving.service import knative_service

# A tiny app whose health the test controls through files next to it: /healthz answers 500
# while `sick` exists; the process listens only once `go` exists (or at once without it).
APP = textwrap.dedent("""
    import http.server, os, pathlib, time
    here = pathlib.Path(__file__).parent
    while (here / "hold").exists() and not (here / "go").exists():
        time.sleep(0.02)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 500 if (here / "sick").exists() and self.path == "/healthz" else 200
            self.send_response(code); self.send_header("Content-Length", "2"); self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a): pass
    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
""")


def deployment(app: Path, container_extra: str = "", name: str = "probed") -> str:
    return textwrap.dedent(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              containers:
                - name: app
                  image: local/app
                  command: [{sys.executable}, {app}]
                  ports: [{{containerPort: 8080}}]
        """) + textwrap.indent(textwrap.dedent(container_extra), " " * 10)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def pod(cluster: LocalCluster, name: str = "probed") -> dict[str, Any]:
    pods = cluster.get("Deployment", name).status.detail["pods"]
    assert len(pods) == 1
    return pods[0]


# -- pure ---------------------------------------------------------------------------------


def test_http_probe_success_is_200_to_399() -> None:
    assert [http_success(c) for c in (199, 200, 302, 399, 400, 404, 500)] == [
        False, True, True, True, False, False, False]


def test_counter_flips_only_at_the_thresholds() -> None:
    counter = ProbeCounter(ProbeSpec("http", failure_threshold=3, success_threshold=2),
                           passing=True)
    assert [counter.observe(ok) for ok in (False, False, True, False, False, False)] == [
        False, False, False, False, False, True]
    assert not counter.passing
    assert [counter.observe(ok) for ok in (True, False, True, True)] == [False, False, False, True]
    assert counter.passing


def test_crash_backoff_doubles_to_five_minutes_and_resets_after_ten() -> None:
    delays, count = [], 0
    for _ in range(8):
        delay, count = crash_backoff(count, ran_seconds=1.0)
        delays.append(delay)
    assert delays == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert crash_backoff(count, ran_seconds=599.0)[0] == 300.0
    assert crash_backoff(count, ran_seconds=600.0) == (0.0, 1)


def test_probes_load_with_kubernetes_defaults_and_liveness_is_no_longer_ignored(
        app: Path) -> None:
    warnings: list[Any] = []
    (obj, ) = load(deployment(app, """
        readinessProbe: {tcpSocket: {port: 8080}}
        livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 3}
        """), warnings)
    assert warnings == [] and isinstance(obj, Deployment)
    container = obj.container
    assert container.readiness == ProbeSpec("tcp")
    assert container.liveness == ProbeSpec("http", "/healthz", period=3.0)


def test_a_container_without_probes_is_ready_on_tcp(app: Path) -> None:
    (obj, ) = load(deployment(app))
    assert isinstance(obj, Deployment) and obj.container.readiness.action == "tcp"
    assert obj.container.liveness is None


@pytest.mark.parametrize("probe, message", [
    ("{periodSeconds: 2}", "must specify a handler type"),
    ("{httpGet: {port: 8080}, tcpSocket: {port: 8080}}", "may not specify more than 1 handler"),
])
def test_a_probe_needs_exactly_one_handler(app: Path, probe: str, message: str) -> None:
    with pytest.raises(ManifestError) as err:
        load(deployment(app, f"livenessProbe: {probe}\n"))
    assert "spec.template.spec.containers[0].livenessProbe" in str(err.value)
    assert message in str(err.value)


# -- live ---------------------------------------------------------------------------------


def test_default_readiness_is_a_tcp_connect_not_an_http_answer(
        cluster: LocalCluster, tmp_path: Path) -> None:
    # Answers every request with 503: an HTTP wait would never pass, a TCP probe does.
    app = tmp_path / "busy.py"
    app.write_text(textwrap.dedent("""
        import http.server, os
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers()
            def log_message(self, *a): pass
        http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
    """))
    cluster.apply(deployment(app, name="busy"))
    assert cluster.get("Deployment", "busy").status.ready


def test_readiness_failure_takes_the_pod_out_of_the_service_and_back(
        cluster: LocalCluster, app: Path, wait_for: Callable[..., None]) -> None:
    cluster.apply(deployment(app, """
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1,
                         failureThreshold: 2}
        """) + textwrap.dedent("""
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: probed}
        spec:
          selector: {app: probed}
          ports: [{port: 80, targetPort: 8080}]
        """))
    url = cluster.url("Service", "probed")
    assert httpx.get(url + "/").status_code == 200
    pid = pod(cluster)["pid"]
    (app.parent / "sick").touch()
    wait_for(lambda: not cluster.get("Deployment", "probed").status.ready, 10,
             "readiness to fail twice")
    assert cluster.pods_of({"app": "probed"}) == []
    assert pod(cluster)["pid"] == pid  # not ready is not dead: the process keeps running
    (app.parent / "sick").unlink()
    wait_for(lambda: cluster.get("Deployment", "probed").status.ready, 10, "readiness back")
    assert httpx.get(url + "/").status_code == 200


def test_liveness_failure_kills_and_restarts_with_a_restart_count(
        app: Path, wait_for: Callable[..., None]) -> None:
    with LocalCluster(start_timeout=20.0, restart_backoff=(0.5, 1.0)) as cluster:
        cluster.apply(deployment(app, """
            livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1,
                            failureThreshold: 1}
            """))
        first = pod(cluster)["pid"]
        (app.parent / "sick").touch()
        wait_for(lambda: pod(cluster)["restarts"] >= 1, 15, "a liveness restart")
        (app.parent / "sick").unlink()
        wait_for(lambda: cluster.get("Deployment", "probed").status.ready, 15, "ready again")
        assert pod(cluster)["pid"] != first


def test_a_crashing_app_goes_into_crash_loop_back_off(
        tmp_path: Path, app: Path, wait_for: Callable[..., None],
        capsys: pytest.CaptureFixture[str]) -> None:
    crasher = tmp_path / "crash.py"
    crasher.write_text("import os, sys, time\n"
                       "print('starting', flush=True)\n"
                       "import socket; s = socket.socket(); "
                       "s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
                       "time.sleep(0.3)\n"
                       "sys.exit('boom: the app gave up')\n")
    with LocalCluster(start_timeout=20.0, restart_backoff=(30.0, 300.0)) as cluster:
        cluster.apply(deployment(crasher, name="crashy") + "---\n" + deployment(app))
        # First restart is immediate; the second waits the back-off (30 s here).
        wait_for(lambda: pod(cluster, "crashy")["state"] == "CrashLoopBackOff", 20,
                 "CrashLoopBackOff")
        status = cluster.get("Deployment", "crashy").status
        described = pod(cluster, "crashy")
        assert described["restarts"] == 1 and described["lastExitCode"] == 1
        assert "back-off 30s restarting failed container=app" in status.message
        assert not status.ready
        # kubectl logs --previous: the crashed container's own output.
        previous = cluster.logs("Deployment", "crashy", previous=True)
        assert "starting" in previous and "boom: the app gave up" in previous
        assert cluster.logs("Deployment", "crashy", previous=True, tail=1) == \
            "boom: the app gave up"
        # The same from another process's point of view: `labkit logs` reads the kept files.
        assert cli.main(["logs", "deploy/crashy", "--previous", "--tail", "1"]) == 0
        assert capsys.readouterr().out == "boom: the app gave up\n"
        assert cli.main(["logs", "deployment/nothing-here"]) == 1
        assert "no running pod" in capsys.readouterr().err
        assert cli.main(["logs", "crashy"]) == 2
        # The rest of the cluster keeps serving.
        assert cluster.get("Deployment", "probed").status.ready
        assert httpx.get(pod(cluster)["url"]).status_code == 200


def test_a_declared_readiness_path_is_what_a_knative_revision_waits_for(
        app: Path) -> None:
    (app.parent / "sick").touch()  # /healthz answers 500, / answers 200
    ksvc = textwrap.dedent(f"""
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata: {{name: probed}}
        spec:
          template:
            spec:
              containers:
                - image: local/app
                  command: [{sys.executable}, {app}]
                  readinessProbe: {{httpGet: {{path: /healthz}}}}
        """)
    with LocalCluster(start_timeout=3.0) as cluster:
        cluster.apply(ksvc)
        status = knative_service(cluster, "probed").knative_status
        config = status.condition("ConfigurationsReady")
        assert config is not None and config.status == "False"
        assert "HTTP probe failed with statuscode: 500" in (config.message or "")


def test_a_running_replica_log_is_cut_back_to_its_tail(wait_for: Callable[..., None]) -> None:
    chatty = ("import os, sys, socket, time\n"
              "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
              "sys.stdout.write(('x' * 99 + '\\n') * 15000 + 'last line\\n'); sys.stdout.flush()\n"
              "time.sleep(60)\n")
    replica = ReplicaProcess([sys.executable, "-c", chatty], name="chatty",
                             readiness=PodProber(ProbeSpec("tcp"), None, periodic=False))
    with replica:
        path = replica.log_path
        assert path is not None
        wait_for(lambda: path.stat().st_size > 1_500_000, 10, "the output to be written")
        replica.trim_log()
        assert path.stat().st_size <= 64 * 1024
        assert replica.log_tail(1) == "last line"
