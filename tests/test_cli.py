from __future__ import annotations

import argparse
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

    def add_who(p: argparse.ArgumentParser) -> None:
        p.add_argument("who")

    cli.register_command(
        cli.Command(
            "hello",
            "say hello",
            add_who,
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
        assert proc.stderr is not None
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
        assert proc.stdout is not None and proc.stderr is not None
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


# -- labkit ps / labkit doctor -----------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of this test's own (LABKIT_RUN_DIR), for this process and its children."""
    from labkit import runs

    folder = tmp_path / "runs"
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(folder))
    return folder


def dead_owner() -> str:
    """A LABKIT_OWNER value naming a process that has ended (as a killed kernel has)."""
    code = "from labkit import runs; print(runs.owner_env()[runs.OWNER_ENV])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_ps_lists_a_running_cluster_by_owner_and_kind(
    run_dir: Path, cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from labkit import runs

    cluster.apply(HELLO_YAML)
    pods = {pod.pid: pod for pod in cluster.pods.all()}
    # A record left by a run whose processes have ended: listed, marked stale.
    parsed = runs.parse_owner(dead_owner())
    assert parsed is not None
    owner_pid, owner_started = parsed
    runs.record(runs.RunRecord(pid=owner_pid, started=owner_started, command=["gone"],
                               pod="old-pod", workload=runs.Workload("Revision", "old-00001"),
                               ports=[1], owner_pid=owner_pid, owner_started=owner_started))
    assert cli.main(["ps", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = [row for row in rows if row["owner_pid"] == os.getpid() and row["registered"]]
    assert {row["pid"] for row in mine} == set(pods)
    for row in mine:
        pod = pods[row["pid"]]
        assert (row["kind"], row["namespace"], row["name"]) == ("Deployment", "default", "hello")
        assert (row["pod"], row["ports"], row["state"]) == (pod.name, [pod.port], "running")
    (old,) = [row for row in rows if row["pod"] == "old-pod"]
    assert old["state"] == "stale: process gone"

    assert cli.main(["ps"]) == 0
    text = capsys.readouterr().out
    assert f"owner pid {os.getpid()}" in text
    for pod in pods.values():
        line = next(line for line in text.splitlines() if pod.name in line)
        assert "Deployment default/hello" in line
        assert f"pid {pod.pid}" in line and f"port {pod.port}" in line
    assert "[stale: process gone]" in text and "labkit doctor" in text


def test_doctor_stops_leftovers_frees_their_ports_and_spares_live_runs(
    run_dir: Path, cluster, capsys: pytest.CaptureFixture[str], process_alive
) -> None:
    from labkit import runs

    cluster.apply(HELLO_YAML)
    live = cluster.pods.all()
    hello = [sys.executable, "-m", "labkit.apps.hello"]
    # 1. Started outside the lifeline, marked by an owner that has died, and recorded.
    marked_port = free_port()
    owner = dead_owner()
    marked = subprocess.Popen(hello, env={**os.environ, "PORT": str(marked_port),
                                          runs.OWNER_ENV: owner},
                              stdout=subprocess.DEVNULL, start_new_session=True)
    # 2. As labkit before the registry left them: unmarked, its parent gone (a shell that
    #    exited), adopted by init.
    orphan_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != runs.OWNER_ENV}
    orphan = int(subprocess.run(
        ["sh", "-c", f'PORT={orphan_port} "$@" >/dev/null 2>&1 & echo $!', "sh", *hello],
        env=env, capture_output=True, text=True, check=True).stdout)
    try:
        for port in (marked_port, orphan_port):
            wait_until_ready(f"http://127.0.0.1:{port}/", 30)
        parsed = runs.parse_owner(owner)
        started = runs.started_at(marked.pid)
        assert parsed is not None and started is not None
        owner_pid, owner_started = parsed
        runs.record(runs.RunRecord(pid=marked.pid, started=started, command=hello,
                                   pod="planted-1", workload=runs.Workload("Deployment", "planted"),
                                   ports=[marked_port], owner_pid=owner_pid,
                                   owner_started=owner_started))

        assert cli.main(["doctor", "--dry-run"]) == 1
        dry = capsys.readouterr().out
        assert f"would stop pid {marked.pid} " in dry and f"would stop pid {orphan} " in dry
        assert process_alive(marked.pid) and process_alive(orphan)

        assert cli.main(["doctor", "--grace", "5"]) == 0
        out = capsys.readouterr().out
        print(out)  # shown when the test fails
        line = next(line for line in out.splitlines() if f"pid {marked.pid} " in line)
        assert line.startswith("stopped") and "Deployment default/planted, pod planted-1" in line
        assert f"port {marked_port}" in line and f"its owner, pid {owner_pid}, is gone" in line
        line = next(line for line in out.splitlines() if f"pid {orphan} " in line)
        assert line.startswith("stopped") and "labkit.apps.hello was orphaned" in line
        assert "freed port" in out and str(orphan_port) in out
        assert marked.wait(timeout=10) == 0  # hello ends cleanly on SIGTERM
        assert not process_alive(orphan)
        assert not [r for r in runs.read_records()[0] if r.pod == "planted-1"]
        # The live cluster (its owner, this process, runs) is untouched.
        assert [pod.pid for pod in cluster.pods.all()] == [pod.pid for pod in live]
        for pod in live:
            with urllib.request.urlopen(pod.url, timeout=10) as response:
                assert response.status == 200

        assert cli.main(["doctor"]) == 0
        assert "clean, nothing left over" in capsys.readouterr().out
    finally:
        for pid in (marked.pid, orphan):
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        marked.wait()


def test_doctor_from_the_shell_says_when_all_is_clean(run_dir: Path) -> None:
    done = subprocess.run([*LABKIT, "doctor", "--dry-run"], capture_output=True, text=True,
                          timeout=120)
    # Another run on this machine may have left something; what matters is the contract.
    assert done.returncode in (0, 1), done.stderr
    assert ("clean" in done.stdout) == (done.returncode == 0)
    bad = subprocess.run([*LABKIT, "doctor", "--grace", "-1"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--grace must be 0 or more" in bad.stderr
