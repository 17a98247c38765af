from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from labkit import cli
from labkit.manifests import load
from labkit.net import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
HELLO_YAML = REPO / "data" / "manifests" / "hello.yaml"
LABKIT = [sys.executable, "-m", "labkit.cli"]


class Lines:
    """A child's stdout read line by line on a thread, so a test can wait with a deadline."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))

    def next(self, timeout: float = 30.0) -> str:
        return self._queue.get(timeout=timeout)


def stop(proc: subprocess.Popen) -> None:
    """End a child the way a user does (Ctrl-C), so even after a failed assertion it stops the
    replicas it started; SIGKILL only if it will not stop, which would orphan them."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ("lab", "up", "export"):
        assert f"    {name}" in out


def test_a_command_is_one_registration(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", list(cli.COMMANDS))
    cli.register_command(
        cli.Command(
            "hello",
            "say hello",
            lambda p: p.add_argument("who"),
            lambda a: print(f"hi {a.who}") or 0,
        )
    )
    assert cli.main(["hello", "you"]) == 0
    assert capsys.readouterr().out == "hi you\n"


def test_up_prints_ready_lines_serves_and_stops_on_sigterm(process_alive) -> None:
    proc = subprocess.Popen(
        [*LABKIT, "up", str(HELLO_YAML)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = Lines(proc.stdout)
        deployment_line, service_line = lines.next(), lines.next()
        word, name, pod_urls = deployment_line.split()
        assert (word, name) == ("READY", "Deployment/hello")
        word, name, url = service_line.split()
        assert (word, name) == ("READY", "Service/hello")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"Hello labkit!\n"
        pids = []
        for pod_url in pod_urls.split(","):
            with urllib.request.urlopen(pod_url, timeout=10) as response:
                pids.append(int(response.headers["x-labkit-pod"]))
        assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not any(process_alive(pid) for pid in pids)
        assert "stopped" in proc.stderr.read()
    finally:
        stop(proc)


def test_up_with_a_bad_file_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    good = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: marker}}
spec:
  selector: {{matchLabels: {{app: m}}}}
  template:
    metadata: {{labels: {{app: m}}}}
    spec:
      containers:
        - name: m
          image: local/marker
          command: ["{sys.executable}", "-c", "open({str(marker)!r}, 'w')"]
"""
    bad = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  prots: [{port: 80}]\n"
    path = tmp_path / "app.yaml"
    path.write_text(good + "---\n" + bad)
    done = subprocess.run([*LABKIT, "up", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{path}:17: Service/s: spec.ports: required field is missing",
        f"{path}:18: Service/s: spec.prots: unknown field 'prots'; did you mean 'ports'?",
    ]
    assert not marker.exists()


def test_up_with_a_crashing_workload_exits_1_with_its_output(tmp_path: Path) -> None:
    manifest = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: crasher}}
spec:
  selector: {{matchLabels: {{app: c}}}}
  template:
    metadata: {{labels: {{app: c}}}}
    spec:
      containers:
        - name: c
          image: local/c
          command: ["{sys.executable}", "-c", "raise SystemExit('no config file')"]
"""
    path = tmp_path / "c.yaml"
    path.write_text(manifest)
    done = subprocess.run([*LABKIT, "up", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "exited with code 1" in done.stderr and "no config file" in done.stderr


def test_export_prints_normalised_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", str(HELLO_YAML)]) == 0
    out = capsys.readouterr().out
    assert load(out) == load(HELLO_YAML)
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["Deployment", "Service"]


def test_export_of_a_bad_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: v1\nkind: Servce\nmetadata: {name: s}\n")
    assert cli.main(["export", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:2: Servce/s: kind: unknown kind 'Servce'")


def test_lab_command_line_binds_loopback_and_roots_at_labs() -> None:
    labs = cli.find_labs_dir()
    assert labs == REPO / "labs"
    command = cli.lab_command(labs, 9999, no_browser=True)
    assert command[:4] == [sys.executable, "-m", "jupyter", "lab"]
    assert "--ServerApp.ip=127.0.0.1" in command
    assert f"--ServerApp.root_dir={labs}" in command
    assert "--ServerApp.port=9999" in command and "--no-browser" in command


def test_lab_without_a_labs_folder_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.labkit, "__file__", str(tmp_path / "pkg" / "labkit" / "__init__.py"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lab", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "cannot find the labs/ folder" in err and str(tmp_path / "labs") in err


def test_lab_starts_jupyterlab_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [*LABKIT, "lab", "--no-browser", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/api", timeout=90, process=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        stop(proc)


def test_sigterm_while_starting_stops_the_replica_and_exits_0(
    tmp_path: Path, wait_for, process_alive
) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    manifest = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: slow}}
spec:
  selector: {{matchLabels: {{app: s}}}}
  template:
    metadata: {{labels: {{app: s}}}}
    spec:
      containers:
        - name: s
          image: local/slow
          command: ["{sys.executable}", "-c", "{code}"]
"""
    path = tmp_path / "slow.yaml"
    path.write_text(manifest)
    proc = subprocess.Popen(
        [*LABKIT, "up", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text() != "", 30, "the replica to run")
        replica_pid = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "interrupted by SIGTERM while starting" in proc.stderr.read()
        assert proc.stdout.read() == ""
        assert not process_alive(replica_pid)
    finally:
        stop(proc)


def test_up_reports_a_pod_that_exits_and_its_restart() -> None:
    proc = subprocess.Popen(
        [*LABKIT, "up", str(HELLO_YAML)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = Lines(proc.stdout)
        pod_urls = lines.next().split()[2].split(",")
        lines.next()
        with urllib.request.urlopen(pod_urls[0], timeout=10) as response:
            os.kill(int(response.headers["x-labkit-pod"]), signal.SIGKILL)
        assert lines.next() == "NOT READY Deployment/hello 1/2 ready"
        word, name, urls = lines.next().split()
        assert (word, name) == ("READY", "Deployment/hello")
        assert urls.split(",")[1] == pod_urls[1] and urls.split(",")[0] != pod_urls[0]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc)
