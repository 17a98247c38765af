from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.net import (
    ReplicaProcess,
    ReplicaStartError,
    free_port,
    python_command,
    wait_until_ready,
)

HELLO = python_command("labkit.apps.hello")


def get(url: str) -> tuple[str, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode(), {k.lower(): v for k, v in response.headers.items()}


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on `port`. SO_REUSEADDR, as servers set it, so a
    closed connection lingering in TIME_WAIT does not count as "in use"; a listener does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


def test_free_port_is_bindable_on_loopback() -> None:
    assert port_is_free(free_port())


def test_python_command_uses_this_interpreter() -> None:
    assert python_command("x.y", "--a") == [sys.executable, "-m", "x.y", "--a"]


def test_hello_replica_gets_port_and_env_and_measures_its_start() -> None:
    with ReplicaProcess(HELLO, env={"TARGET": "test"}, name="hello") as replica:
        assert replica.running and replica.startup_seconds is not None
        assert replica.startup_seconds > 0
        body, headers = get(replica.url + "/anything")
        assert body == "Hello test!\n"
        assert headers["x-labkit-pod"] == str(replica.pid)
        assert replica.url == f"http://127.0.0.1:{replica.port}"
    assert not replica.running


def test_stop_reaps_frees_the_port_and_reports_clean_exit(process_alive) -> None:
    replica = ReplicaProcess(HELLO)
    seconds = replica.start()
    assert seconds == replica.startup_seconds
    pid, port = replica.pid, replica.port
    assert replica.stop() == 0  # hello exits cleanly on SIGTERM
    assert pid is not None and not process_alive(pid)
    assert port_is_free(port)
    assert replica.stop() == 0  # idempotent


def test_stop_kills_the_whole_process_group(tmp_path: Path, process_alive, wait_for) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; exec {sys.executable} -m labkit.apps.hello"
    with ReplicaProcess(["sh", "-c", script]):
        child = int(pidfile.read_text())
        assert process_alive(child)
    wait_for(lambda: not process_alive(child), what="forked child to die")


def test_a_replica_ignoring_sigterm_is_killed_after_grace() -> None:
    code = (
        "import http.server, os, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), "
        "http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    replica = ReplicaProcess([sys.executable, "-c", code], cwd="/")
    replica.start()
    assert replica.stop(grace=0.2) == -signal.SIGKILL


def test_a_replica_that_exits_fails_fast_with_code_and_output() -> None:
    code = "import sys; print('boom: missing config', file=sys.stderr); sys.exit(3)"
    replica = ReplicaProcess([sys.executable, "-c", code], name="crasher")
    with pytest.raises(ReplicaStartError) as info:
        replica.start(timeout=20)
    message = str(info.value)
    assert "crasher exited with code 3" in message
    assert "boom: missing config" in message
    assert not replica.running
    assert "boom: missing config" in replica.log_tail()


def test_a_missing_program_is_a_clear_error() -> None:
    with pytest.raises(ReplicaStartError, match="cannot run"):
        ReplicaProcess(["/nonexistent/program"]).start()


def test_a_replica_cannot_start_twice() -> None:
    with ReplicaProcess(HELLO) as replica, pytest.raises(RuntimeError, match="already started"):
        replica.start()


def test_command_must_be_a_list() -> None:
    with pytest.raises(ValueError, match="list of strings"):
        ReplicaProcess("python -m labkit.apps.hello")


def test_wait_until_ready_times_out_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    with pytest.raises(TimeoutError, match=f"{url} did not answer within 0.3 s"):
        wait_until_ready(url, timeout=0.3)


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_5xx_is_not_ready(failing_server: str) -> None:
    with pytest.raises(TimeoutError, match="HTTP 503"):
        wait_until_ready(failing_server, timeout=0.3)


def test_wait_until_ready_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http://"):
        wait_until_ready("localhost:80", timeout=1)


def test_atexit_safety_net_leaves_no_orphans(process_alive) -> None:
    script = (
        "from labkit.net import ReplicaProcess, python_command\n"
        "r = ReplicaProcess(python_command('labkit.apps.hello'))\n"
        "r.start()\n"
        "print(r.pid, flush=True)\n"  # exit without stop(): atexit must clean up
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert not process_alive(int(done.stdout.strip()))


def test_hello_keeps_connections_alive_and_answers_head() -> None:
    import http.client

    with ReplicaProcess(HELLO) as replica:
        conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=10)
        try:
            for _ in range(2):  # two requests, one connection
                conn.request("POST", "/", body=b"ignored body")
                response = conn.getresponse()
                assert response.read() == b"Hello World!\n"
            conn.request("HEAD", "/")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b""
            assert response.headers["content-length"] == "13"
        finally:
            conn.close()


def test_a_replica_is_recorded_while_it_runs_with_its_owner(tmp_path: Path, monkeypatch) -> None:
    from labkit import runs

    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("JPY_SESSION_NAME", "labs/05_knative_autoscaling.ipynb")
    workload = runs.Workload("Deployment", "hello", "demo")
    with ReplicaProcess(HELLO, name="hello-1", workload=workload) as replica:
        (record,) = runs.read_records()[0]
        assert (record.pid, record.pod, record.workload, record.ports) == (
            replica.pid, "hello-1", workload, [replica.port])
        assert record.command == HELLO
        assert (record.owner_pid, record.owner_started) == runs.this_owner()
        assert record.lab == "labs/05_knative_autoscaling.ipynb"
        assert runs.same_process(record.pid, record.started)
        environ = Path(f"/proc/{replica.pid}/environ")
        if environ.exists():  # the mark that lets doctor find it without the record
            owner = f"{runs.OWNER_ENV}={os.getpid()}:".encode()
            assert owner in environ.read_bytes()
    assert runs.read_records() == ([], [])


def test_a_file_that_is_not_executable_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "serve.sh"
    script.write_text("echo hi\n")
    with pytest.raises(ReplicaStartError, match=r"cannot run x: .*serve.sh is not an executable"):
        ReplicaProcess([str(script)], name="x").start()
