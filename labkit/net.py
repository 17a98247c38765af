"""Loopback networking: free ports, waiting for a server to answer, and replica processes.

A replica is any program that serves HTTP on the port named by the `PORT` environment variable,
the contract Knative gives its containers. labkit runs each replica as a real subprocess on
127.0.0.1 in its own process group, so stopping it also stops anything it forked, and measures
its cold start honestly: from spawn to the first HTTP answer. A replica also ends when the
Python process that started it ends, however it ends (labkit.lifeline), and is listed in the
run registry while it runs (labkit.runs), for `labkit ps` and `labkit doctor`.
"""

from __future__ import annotations

import atexit
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from labkit import lifeline, runs
from labkit.commands import python_command
from labkit.ports import HOST, free_port

__all__ = [
    "HOST",
    "ReplicaProcess",
    "ReplicaStartError",
    "free_port",
    "http_status",
    "process_alive",
    "python_command",
    "wait_until",
    "wait_until_ready",
]

_LOG_TAIL_BYTES = 64 * 1024
_LOG_LIMIT_BYTES = 1024 * 1024
"""A running replica's log file is cut back to its last _LOG_TAIL_BYTES past this size."""


def process_alive(pid: int) -> bool:
    """True while `pid` exists and has not exited: a zombie (exited, not yet reaped) is not alive.

    Checking that a replica is really gone is how labs and tests show "no orphans".
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 is all there is to know
    return state not in ("Z", "X")


class _Watched(Protocol):
    def poll(self) -> int | None: ...


def wait_until_ready(
    url: str,
    timeout: float = 30.0,
    *,
    process: _Watched | None = None,
    interval: float = 0.01,
) -> float:
    """Poll `url` until it gives any HTTP response below 500; return the seconds waited.

    A refused connection or a 5xx means "not yet". If `process` is given and exits first, fail
    at once with its exit code (and its log tail, if it is a ReplicaProcess) instead of waiting
    out the deadline for a server that will never come.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"wait_until_ready needs an http://host:port/path URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host, port = parts.hostname, parts.port or 80

    def check(remaining: float) -> str | None:
        status = http_status(host, port, path, min(remaining, 2.0))
        if isinstance(status, int) and status < 500:
            return None
        return f"HTTP {status}" if isinstance(status, int) else status

    return wait_until(check, url, timeout, process=process, interval=interval)


def wait_until(
    check: Callable[[float], str | None],
    what: str,
    timeout: float,
    *,
    process: _Watched | None = None,
    interval: float = 0.01,
) -> float:
    """Call `check(seconds_left)` until it returns None (success, anything else is the reason
    it failed); return the seconds waited. Fails at once if `process` exits first, and with
    TimeoutError naming `what` and the last reason (and the process's log tail) at `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    last_problem = "no attempt made"
    delay = interval
    while True:
        if process is not None:
            code = process.poll()
            if code is not None:
                raise ReplicaStartError(_exit_message(what, code, process))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"{what} did not answer within {timeout:g} s (last attempt: {last_problem})"
                + _log_suffix(process)
            )
        problem = check(remaining)
        if problem is None:
            return time.monotonic() - start
        last_problem = problem
        # Back off gently: fast first polls keep cold-start measurements tight, later polls
        # keep a slow starter from being hammered.
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 1.5, 0.1)


def http_status(host: str, port: int, path: str, timeout: float) -> int | str:
    """One GET; the status code, or the reason there was none."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        conn.close()


def _exit_message(url: str, code: int, process: object) -> str:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    who = getattr(process, "name", None) or "the process"
    return f"{who} {how} before {url} answered" + _log_suffix(process)


def _log_suffix(process: object, lines: int = 15) -> str:
    tail = getattr(process, "log_tail", None)
    if tail is None:
        return ""
    text = tail(lines)
    return f"\n--- last output lines ---\n{text}" if text.strip() else "\n(no output)"


class ReplicaStartError(RuntimeError):
    """A replica exited or never answered while starting."""


_live: weakref.WeakSet[ReplicaProcess] = weakref.WeakSet()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    """Safety net: a notebook kernel or script that forgot stop() still leaves no orphans."""
    with _live_lock:
        leftovers = list(_live)
    for replica in leftovers:
        replica.stop(grace=1.0)


class ReplicaProcess:
    """A command run as a subprocess serving HTTP on a free port of 127.0.0.1.

    The process gets `PORT` (and the user's env) like a Knative container, runs in its own
    process group (stop() signals the whole group, so forked workers die too), and writes
    stdout+stderr to a log file whose tail is shown when it fails. `workload` says what it
    belongs to (a Deployment, a Revision...) in the run registry. `readiness(replica, timeout)`,
    when given, is the wait start() does after spawning (a pod's readiness probe, see
    labkit.core.prober) instead of waiting for an HTTP answer on `ready_path`.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_path: str = "/",
        name: str | None = None,
        port: int | None = None,
        workload: runs.Workload | None = None,
        readiness: Callable[[ReplicaProcess, float], object] | None = None,
    ) -> None:
        if isinstance(command, str) or not command:
            raise ValueError(f"command must be a non-empty list of strings, got {command!r}")
        self.command = [str(part) for part in command]
        self.env = dict(env or {})
        self.cwd = cwd
        self.ready_path = ready_path if ready_path.startswith("/") else "/" + ready_path
        self.name = name or Path(self.command[0]).name
        self.port = port if port is not None else free_port()
        self.workload = workload or runs.Workload(name=self.name)
        self.readiness = readiness
        self.startup_seconds: float | None = None
        self.spawned_at: float | None = None
        """time.monotonic() at spawn: how long a container ran decides its restart back-off."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._final_log: str | None = None
        self._stopped = False
        self._started_at: float | None = None  # the process's start time, as the registry has it
        self._swept = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        """The file stdout and stderr go to while the process runs (gone once stopped)."""
        return self._log_path if self._final_log is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        """Exit code if the process has ended, else None (also None before start)."""
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is not None and not self._swept:
            self._sweep()
        return code

    def _sweep(self) -> None:
        """The main process ended: end what is left of its group (the lifeline watcher, any
        workers), as a container's end takes its other processes with it, and drop the record."""
        self._swept = True
        assert self._proc is not None
        # The group id stays reserved while any member lives (and Linux hands out pids
        # cyclically), so this reaches only the group's stragglers.
        _signal_group(self._proc.pid, signal.SIGKILL)
        if self._started_at is not None:
            runs.forget(self._proc.pid, self._started_at)

    def start(self, timeout: float = 30.0) -> float:
        """Spawn and wait for the first HTTP answer; return seconds from spawn to that answer.

        On failure the process is stopped and ReplicaStartError (exit, with its output) or
        TimeoutError is raised.
        """
        spawned_at = self.spawn()
        try:
            if self.readiness is not None:
                self.readiness(self, timeout)
            else:
                wait_until_ready(self.url + self.ready_path, timeout, process=self)
        except BaseException:
            self.stop(grace=1.0)
            raise
        self.startup_seconds = time.monotonic() - spawned_at
        return self.startup_seconds

    def spawn(self) -> float:
        """Start the process without waiting; return the monotonic spawn time."""
        with self._lock:
            if self._proc is not None:
                raise RuntimeError(f"replica {self.name} was already started; make a new one")
            if self._stopped:  # stop() from another thread won the race: never start
                raise ReplicaStartError(f"replica {self.name} was stopped before it started")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, "PORT": str(self.port),
                   **runs.owner_env()}
            self._check_runnable(env)
            fd, log = tempfile.mkstemp(prefix=f"labkit-{self.name}-", suffix=".log")
            os.close(fd)
            # Appending, so that trim_log() can cut the file while the process writes to it.
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
            self._log_path = Path(log)
            try:
                spawned_at = self.spawned_at = time.monotonic()
                self._proc = lifeline.spawn(self.command, env=env, cwd=self.cwd, stdout=fd)
            except OSError as exc:
                self._log_path.unlink(missing_ok=True)
                raise ReplicaStartError(
                    f"cannot run {self.name}: {exc.strerror or exc} (command: {self.command})"
                ) from exc
            finally:
                os.close(fd)
            self._register()
        with _live_lock:
            _live.add(self)
        return spawned_at

    def _check_runnable(self, env: Mapping[str, str]) -> None:
        """Fail before spawning when the program cannot be run: the lifeline wrapper would
        only report it as exit code 127."""
        program = self.command[0]
        if os.sep in program:
            path = Path(self.cwd or ".", program)
            runnable = path.is_file() and os.access(path, os.X_OK)
        else:  # looked up on the child's PATH, as exec does
            runnable = shutil.which(program, path=env.get("PATH", os.defpath)) is not None
        if not runnable:
            raise ReplicaStartError(
                f"cannot run {self.name}: {program} is not an executable file"
                f" (command: {self.command})")

    def _register(self) -> None:
        assert self._proc is not None
        self._started_at = runs.started_at(self._proc.pid)
        if self._started_at is None:  # already gone: nothing to list
            return
        owner_pid, owner_started = runs.this_owner()
        runs.record(runs.RunRecord(
            pid=self._proc.pid, started=self._started_at, command=self.command, pod=self.name,
            workload=self.workload, ports=[self.port], owner_pid=owner_pid,
            owner_started=owner_started, lab=os.environ.get("JPY_SESSION_NAME"),
            cwd=os.getcwd(), log=str(self.log_path or "")))
        if self._swept:  # it ended (and was swept by another thread) while being recorded
            runs.forget(self._proc.pid, self._started_at)

    def log_tail(self, lines: int | None = 20) -> str:
        """The last `lines` lines the process wrote to stdout/stderr (None: all that is kept,
        the last 64 KiB)."""
        if self._final_log is not None:
            text = self._final_log
        elif self._log_path is not None and self._log_path.exists():
            text = _read_tail(self._log_path)
        else:
            return ""
        return text if lines is None else "\n".join(text.splitlines()[-lines:])

    def trim_log(self) -> None:
        """Cut a running replica's log file back to its last 64 KiB once it passes 1 MiB
        (logrotate's copytruncate, as the kubelet rotates container logs), so a chatty app
        cannot fill the disk. Output written between the copy and the cut is lost."""
        with self._lock:
            path = self._log_path
            if path is None or self._final_log is not None:
                return
            try:
                if path.stat().st_size <= _LOG_LIMIT_BYTES:
                    return
                kept = _read_tail(path).encode()
                with open(path, "r+b") as f:
                    f.write(kept)
                    f.truncate()
            except OSError:
                return  # it ended and its file went meanwhile

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL what is left after `grace` s; reap; return code."""
        with self._lock:
            self._stopped = True
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.poll()  # the leader is gone: sweep its group and its record
            if self._log_path is not None and self._final_log is None:
                self._final_log = _read_tail(self._log_path) if self._log_path.exists() else ""
                self._log_path.unlink(missing_ok=True)
        with _live_lock:
            _live.discard(self)
        return proc.returncode

    def __enter__(self) -> ReplicaProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else ("new" if self._proc is None else "stopped")
        return f"<ReplicaProcess {self.name} {self.url} pid={self.pid} {state}>"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - _LOG_TAIL_BYTES, 0))
        return f.read().decode("utf-8", "replace")
