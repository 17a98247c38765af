"""No orphaned processes: every replica ends with the Python process that started it, however
that process ends (kill -9 included), and `labkit doctor` cleans what an earlier run left.

Each test runs the registry in its own folder (LABKIT_RUN_DIR), so it reads only its own records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from test_net import port_is_free

from labkit import lifeline, runs
from labkit.cluster import LocalCluster
from labkit.doctor import scan
from labkit.lifeline import WRAPPER_NAME
from labkit.net import ReplicaProcess, python_command

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "data" / "manifests"
LABKIT = [sys.executable, "-m", "labkit.cli"]

# A stand-in for a notebook kernel: starts a cluster, says so, and waits to be killed.
OWNER = """\
import sys, threading
from labkit.cluster import LocalCluster
cluster = LocalCluster(start_timeout=60)
cluster.apply(sys.argv[1:])
print("READY", flush=True)
threading.Event().wait()
"""


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "runs"
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def owner() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """owner(*manifests) -> a running Python process with a LocalCluster of those manifests."""
    started: list[subprocess.Popen[str]] = []

    def start(*manifests: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", OWNER, *manifests], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the cluster's own start timeout
        assert line == "READY\n", proc.stderr.read() if proc.stderr else ""
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer, even a 404, is a live server
    except OSError:
        return False


def records_of(owner_pid: int) -> list[runs.RunRecord]:
    return [r for r in runs.read_records()[0] if r.owner_pid == owner_pid]


def marked_by(owner_pid: int) -> list[int]:
    """Live processes carrying `owner_pid` as their LABKIT_OWNER (replicas, watchers, forks)."""
    return [p.pid for p in scan() if p.owner and p.owner[0] == owner_pid]


@pytest.mark.parametrize(
    ("manifests", "kinds"),
    [
        (["hello.yaml"], {"Deployment": 2}),
        (["knative-hello.yaml"], {"Revision": 1}),
        (["kserve-iris.yaml"], {"Revision": 1}),
    ],
    ids=["Deployment", "KnativeService", "InferenceService"],
)
def test_kill_9_of_the_owner_ends_every_replica(
    owner, manifests: list[str], kinds: dict[str, int], wait_for
) -> None:
    proc = owner(*(str(MANIFESTS / name) for name in manifests))
    records = records_of(proc.pid)
    found: dict[str, int] = {}
    for record in records:
        found[record.workload.kind] = found.get(record.workload.kind, 0) + 1
    assert found == kinds
    ports = [port for record in records for port in record.ports]
    assert all(answers(port) for port in ports)
    assert marked_by(proc.pid)  # the replicas and their lifeline watchers

    proc.kill()  # SIGKILL: no exit handler runs
    proc.wait()
    wait_for(lambda: not any(runs.same_process(r.pid, r.started) for r in records), 15,
             "every replica to end")
    wait_for(lambda: all(port_is_free(port) for port in ports), 15, "their ports to close")
    # The watchers end too, SIGKILLing their groups after the grace period.
    wait_for(lambda: not marked_by(proc.pid), 15, "every process it started to end")


# A replica that ignores SIGTERM, so only the lifeline's SIGKILL ends it (not PDEATHSIG's TERM).
STUBBORN = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "pathlib.Path(sys.argv[1]).touch(); time.sleep(600)")


def stubborn_owner(flag: Path, fork: bool) -> subprocess.Popen[str]:
    """A Python process that spawns a STUBBORN replica (and, if `fork`, forks a sleeper);
    it prints the replica's pid, then the fork's."""
    code = ("import os, sys, threading, time; from labkit.net import ReplicaProcess\n"
            "r = ReplicaProcess(sys.argv[1:]); r.spawn(); print(r.pid, flush=True)\n"
            "if FORK:\n"
            "    child = os.fork()\n"
            "    if child == 0:\n"
            "        time.sleep(600); os._exit(0)\n"
            "    print(child, flush=True)\n"
            "threading.Event().wait()\n").replace("FORK", str(fork))
    return subprocess.Popen([sys.executable, "-c", code, sys.executable, "-c", STUBBORN,
                             str(flag)], stdout=subprocess.PIPE, text=True)


def test_the_lifeline_kills_a_replica_that_ignores_sigterm(tmp_path: Path, wait_for) -> None:
    """SIGTERM (from the watcher and from PDEATHSIG) is ignored; the watcher's SIGKILL after
    the grace period is what ends it."""
    flag = tmp_path / "ignoring"
    proc = stubborn_owner(flag, fork=False)
    try:
        assert proc.stdout is not None
        replica = int(proc.stdout.readline())
        started = runs.started_at(replica)
        assert started is not None
        wait_for(flag.exists, 30, "the replica to ignore SIGTERM")
        proc.kill()
        proc.wait()
        wait_for(lambda: not runs.same_process(replica, started), 20,
                 "the watcher's SIGKILL after the grace period")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_fork_of_the_owner_does_not_hold_its_lifeline(tmp_path: Path, wait_for) -> None:
    """A kernel that forks (multiprocessing, os.fork) must not hand the fork its lifeline: the
    replica ends with the owner while the fork lives on."""
    flag = tmp_path / "ignoring"
    proc = stubborn_owner(flag, fork=True)
    fork_pid = None
    try:
        assert proc.stdout is not None
        replica = int(proc.stdout.readline())
        fork_pid = int(proc.stdout.readline())
        started = runs.started_at(replica)
        assert started is not None
        wait_for(flag.exists, 30, "the replica to ignore SIGTERM")
        proc.kill()
        proc.wait()
        wait_for(lambda: not runs.same_process(replica, started), 20,
                 "the replica to end while the fork lives")
        assert psutil.pid_exists(fork_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if fork_pid is not None:
            os.kill(fork_pid, signal.SIGKILL)


def test_pdeathsig_ends_a_replica_whose_watcher_was_killed(owner, wait_for) -> None:
    if not lifeline._pdeathsig_prefix():
        pytest.skip("no setpriv --pdeathsig (Linux util-linux 2.33+): the lifeline pipe alone")
    proc = owner(str(MANIFESTS / "hello.yaml"))
    records = records_of(proc.pid)
    watchers = [p for p in scan() if p.owner and p.owner[0] == proc.pid
                and p.command[3:4] == [WRAPPER_NAME]]
    assert len(watchers) == len(records) == 2
    for watcher in watchers:
        os.kill(watcher.pid, signal.SIGKILL)
    wait_for(lambda: not any(runs.same_process(w.pid, w.started) for w in watchers), 10,
             "the watchers to die")
    assert all(runs.same_process(r.pid, r.started) for r in records)
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(runs.same_process(r.pid, r.started) for r in records), 15,
             "the kernel's SIGTERM to end every replica")


def test_a_replica_outlives_the_thread_that_started_it(wait_for) -> None:
    """PR_SET_PDEATHSIG fires when the *thread* that forked a child exits; labkit forks from a
    spawner thread that lives as long as the process, so a start thread may come and go."""
    replicas: list[ReplicaProcess] = []
    tids: list[int] = []

    def start() -> None:
        tids.append(threading.get_native_id())
        replica = ReplicaProcess(python_command("labkit.apps.hello"))
        replica.start()
        replicas.append(replica)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (replica,) = replicas
    try:
        if sys.platform.startswith("linux"):  # the kernel has finished with the thread
            wait_for(lambda: not Path(f"/proc/self/task/{tids[0]}").exists(), 10,
                     "the start thread to be gone")
        assert answers(replica.port) and replica.running
    finally:
        replica.stop()


def test_a_long_lived_cluster_keeps_its_pods_and_stops_them_cleanly(wait_for) -> None:
    """Pods are started by short-lived threads (the Deployment's start pool, a revision's start
    thread); they run on after those threads end, and close() still ends every process."""
    cluster = LocalCluster(start_timeout=60)
    try:
        cluster.apply([MANIFESTS / "hello.yaml", MANIFESTS / "knative-hello.yaml"])
        wait_for(lambda: not [t for t in threading.enumerate()
                              if t.name.startswith("labkit-start")], 30,
                 "the start threads to end")
        records = records_of(os.getpid())
        assert len(records) == 3
        assert all(answers(port) for record in records for port in record.ports)
        with urllib.request.urlopen(cluster.url("Service", "hello"), timeout=10) as response:
            assert response.read() == b"Hello labkit!\n"
        pids = {record.pid for record in records}
        assert all(pod.pid in pids and pod.restarts == 0 for pod in cluster.pods.all())
    finally:
        cluster.close()
    assert not any(runs.same_process(r.pid, r.started) for r in records)
    assert all(port_is_free(port) for record in records for port in record.ports)
    assert records_of(os.getpid()) == []  # each record removed as its process ended
    # The watchers went with their groups (zombies aside: init reaps them, in its own time).
    assert not [pid for record in records for pid in _group(record.pid) if _running(pid)]


def test_an_exited_replica_takes_its_watcher_and_record_with_it(wait_for) -> None:
    replica = ReplicaProcess([sys.executable, "-c", "import time; time.sleep(600)"])
    replica.spawn()
    pid = replica.pid
    assert pid is not None
    wait_for(lambda: len(_group(pid)) == 2, 10, "the replica and its watcher")
    group = _group(pid)
    assert [r.pid for r in runs.read_records()[0]] == [pid]
    os.kill(pid, signal.SIGKILL)  # a crash, not a stop()
    wait_for(lambda: replica.poll() is not None, 10, "the replica to exit")
    wait_for(lambda: not [p for p in group if _running(p)], 10, "the watcher to go")
    assert runs.read_records()[0] == []
    replica.stop()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group(pgid: int) -> list[int]:
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except ProcessLookupError:
            pass
    return members


def test_what_counts_as_a_leftover() -> None:
    from labkit.doctor import Seen, leftover_reason

    hello = ["/venv/bin/python", "-m", "labkit.apps.hello"]
    alive = {(10, 1.0)}

    def owner_alive(pid: int, started: float) -> bool:
        return (pid, started) in alive

    def seen(command: list[str], owner=None, ppid: int = 10, parent: str = "python3") -> Seen:
        return Seen(20, ppid, 2.0, command, owner, parent)

    assert leftover_reason(seen(hello, (10, 1.0)), None, owner_alive) is None
    assert leftover_reason(seen(["my-server"], (10, 1.5)), None, owner_alive) == (
        "its owner, pid 10, is gone")  # same pid, another start time: a reused pid
    record = runs.RunRecord(pid=20, started=2.0, command=hello, pod="p", workload=runs.Workload(),
                            ports=[8080], owner_pid=11, owner_started=1.0)
    assert leftover_reason(seen(["my-server"]), record, owner_alive) == "its owner, pid 11, is gone"
    # Unmarked and unrecorded (labkit before the registry): orphaned only once adopted.
    assert leftover_reason(seen(hello), None, owner_alive) is None
    assert leftover_reason(seen(hello, parent="bash"), None, owner_alive) is None
    adopted = leftover_reason(seen(hello, ppid=1, parent="tini"), None, owner_alive)
    assert adopted is not None and "orphaned (its parent is now pid 1, tini)" in adopted
    assert leftover_reason(seen(hello, ppid=900, parent="systemd"), None, owner_alive)
    assert leftover_reason(seen(["python", "-m", "labkit.cli", "up"], ppid=1), None,
                           owner_alive) is None  # the CLI is an owner, not a replica
    assert leftover_reason(seen(["sleep", "9"], ppid=1), None, owner_alive) is None


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_a_kernel_restarted_or_lost_leaves_no_replica(how: str, wait_for) -> None:
    """What a student does: Kernel > Restart Kernel, or the kernel dies, while a lab runs."""
    from jupyter_client.manager import start_new_kernel
    from jupyter_client.provisioning import LocalProvisioner

    env = {**os.environ, "JPY_SESSION_NAME": "labs/05_knative_autoscaling.ipynb"}
    manager, client = start_new_kernel(cwd=str(REPO), env=env)
    try:
        reply = client.execute_interactive(
            "from labkit.cluster import LocalCluster\n"
            "cluster = LocalCluster()\n"
            "cluster.apply('data/manifests/hello.yaml')\n", timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert isinstance(manager.provisioner, LocalProvisioner) and manager.provisioner.process is not None
        kernel_pid = manager.provisioner.process.pid
        records = records_of(kernel_pid)
        assert len(records) == 2
        assert {r.lab for r in records} == {"labs/05_knative_autoscaling.ipynb"}
        ports = [port for record in records for port in record.ports]
        assert all(answers(port) for port in ports)
        if how == "restart":
            manager.restart_kernel(now=False)
        else:
            os.kill(kernel_pid, signal.SIGKILL)
        wait_for(lambda: not any(runs.same_process(r.pid, r.started) for r in records), 30,
                 "every replica to end")
        wait_for(lambda: all(port_is_free(port) for port in ports), 15, "their ports to close")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
