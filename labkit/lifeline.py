"""Lifelines: every process labkit starts ends when the Python process that started it ends.

Replicas run in their own session (so stopping one can signal its whole group), which also means
nothing ends them when their owner dies without running its exit handlers: a notebook kernel
restarted or lost, kill -9, a crash. Two independent mechanisms close that gap, and both work
for any `command`, not only labkit's own apps:

- The lifeline pipe (any POSIX system, macOS included). A child is started by a tiny /bin/sh
  wrapper whose stdin is the read end of a pipe; only this process holds the write end (pipes
  are close-on-exec, so no other child inherits it). The wrapper forks a watcher and then execs
  the real command, which so keeps the pid labkit reports. When this process ends, however it
  ends, the kernel closes the write end, the watcher's read returns end-of-file, and the watcher
  signals the process group: SIGTERM, then SIGKILL after a grace period.
- PR_SET_PDEATHSIG (Linux): the kernel sends the child SIGTERM when its parent dies. The wrapper
  sets it with util-linux's `setpriv --pdeathsig TERM` just before the command, not in a Python
  preexec_fn: that would force a full fork() of the owner, 20-40 ms for a 200 MB notebook
  kernel on a busy laptop, counted in every measured cold start, where the wrapper costs ~1 ms.
  prctl(2): "the 'parent' in this case is considered to be the thread that created this
  process", so a child forked by a short-lived thread (the Deployment controller's start pool,
  a Knative revision's start thread) would be killed as soon as that thread finished. Every
  child is therefore forked by one spawner thread that lives as long as the process.
"""

from __future__ import annotations

import functools
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

__all__ = ["GRACE_SECONDS", "WRAPPER_NAME", "spawn", "wrapped_command"]

WRAPPER_NAME = "labkit-lifeline"  # the wrapper's $0: how `labkit ps` and `doctor` recognise it
GRACE_SECONDS = 3  # from SIGTERM to SIGKILL once the owner is gone; whole seconds for sleep(1)

# fd 0 is the lifeline when the shell starts. It moves to fd 3 so the command gets /dev/null on
# stdin as before, and is closed for the command (`3<&-`) so the command cannot keep it open.
# The watcher ignores the signals it sends its own group, and so does the sleep it runs
# (an ignored signal stays ignored across exec); SIGKILL at the end takes the watcher too.
_SCRIPT = (
    "exec 3<&0 </dev/null\n"
    '(trap "" HUP INT TERM; read -r line <&3; kill -TERM 0; sleep "$1"; kill -KILL 0) &\n'
    "shift\n"
    'exec "$@" 3<&-\n'
)


@functools.cache
def _pdeathsig_prefix() -> tuple[str, ...]:
    """`setpriv --pdeathsig TERM --` where setpriv(1) can do it (Linux, util-linux 2.33 or
    later), else nothing: the lifeline pipe alone does the job."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return ()
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "TERM", "--") if "--pdeathsig" in usage.stdout else ()


def wrapped_command(command: Sequence[str], grace: int = GRACE_SECONDS) -> list[str]:
    """The argv that runs `command` under the lifeline wrapper (same pid as `command`)."""
    return ["/bin/sh", "-c", _SCRIPT, WRAPPER_NAME, str(grace), *_pdeathsig_prefix(), *command]


class _Spawner:
    """The lifeline pipe and the one thread that forks children, for the current process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # Non-inheritable (PEP 446): only the child we hand the read end to gets a copy.
        self.read_end, self.write_end = os.pipe()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]] = (
            queue.SimpleQueue())
        # A daemon thread is never joined, so it lives until the process itself ends.
        threading.Thread(target=self._serve, name="labkit-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job, result = self._jobs.get()
            if result.set_running_or_notify_cancel():
                try:
                    result.set_result(job())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                    result.set_exception(exc)

    def run(self, job: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        result: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((job, result))
        return result.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _drop_lifeline_in_child() -> None:
    """A process forked from this one (multiprocessing, os.fork) must not hold the write end,
    or the replicas would outlive their owner for as long as that fork runs. The fork gets a
    fresh lock too: another thread may have held this one at the moment of the fork."""
    global _spawner, _spawner_lock
    if _spawner is not None:
        for fd in (_spawner.read_end, _spawner.write_end):
            try:
                os.close(fd)
            except OSError:
                pass
    _spawner, _spawner_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_drop_lifeline_in_child)


def _current_spawner() -> _Spawner:
    global _spawner
    with _spawner_lock:
        # A fork that bypassed Python's at-fork hooks (a C-level fork()) has the parent's
        # spawner object but neither its thread nor a lifeline of its own.
        if _spawner is None or _spawner.pid != os.getpid():
            _spawner = _Spawner()
        return _spawner


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None,
    stdout: int,
) -> subprocess.Popen[bytes]:
    """Start `command` in a new session, tied to this process's life (see the module text).

    stdout and stderr go to the file descriptor `stdout`. Raises OSError as Popen does, for
    example when `cwd` does not exist; a missing program is reported by the wrapper's shell
    (exit code 127), so callers check the program exists first.
    """
    spawner = _current_spawner()
    argv = wrapped_command(command)

    def job() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=spawner.read_end,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    return spawner.run(job)
