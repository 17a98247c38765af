"""Free loopback ports for the servers labkit starts, claimed so that no one takes them first.

A replica learns its port from $PORT, so labkit picks the port before the program starts, and
the program binds it a fraction of a second later (seconds on a busy machine). In Kubernetes each
pod has an IP of its own and this gap does not exist; on one loopback address it does. Asking the
OS for a free port (bind to port 0, then close) leaves the gap open to everyone: the kernel hands
ports of its ephemeral range (/proc/sys/net/ipv4/ip_local_port_range) to any bind to port 0 and to
every outgoing connection, so another process may get the same port before the replica binds it.
With nbval, the browser tests and the unit tests side by side on two cores, that happened: a
replica died on "address already in use".

So labkit picks ports from PORT_RANGE, below the ephemeral range, which the kernel never hands
out by itself, and claims each one across processes with a record lock on its byte of one
per-user lock file (record locks end with their process, however it ends). A claim lasts
CLAIM_SECONDS, enough for a replica to bind; from then on its listener holds the port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import threading
import time

__all__ = ["CLAIM_SECONDS", "HOST", "PORT_RANGE", "free_port"]

HOST = "127.0.0.1"
PORT_RANGE = range(20000, 32768)
"""Below Linux's default ephemeral range (32768-60999) and macOS's (49152-65535)."""
CLAIM_SECONDS = 120.0

_lock = threading.Lock()
_claims: dict[int, float] = {}
"""Ports this process claimed -> time.monotonic() when the claim ends."""
_lock_fd: int | None = None


def _first_look() -> int:
    """Where a process starts looking: processes start apart, so they rarely contend for a port."""
    return PORT_RANGE.start + (os.getpid() * 7919) % len(PORT_RANGE)


_cursor = _first_look()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and claimed for this process for CLAIM_SECONDS,
    so that neither another labkit process nor the kernel gives it out before the server that
    it is meant for binds it."""
    global _cursor
    with _lock:
        now = time.monotonic()
        for port in [p for p, ends in _claims.items() if ends <= now]:
            _unclaim(port)
        for step in range(len(PORT_RANGE)):
            port = PORT_RANGE.start + (_cursor - PORT_RANGE.start + step) % len(PORT_RANGE)
            if port in _claims or not _claim(port):
                continue
            if _bindable(port):
                _claims[port] = now + CLAIM_SECONDS
                _cursor = port + 1
                return port
            _unclaim(port)
    return _os_port()  # every port of the range in use: the kernel's choice, unclaimed


def _bindable(port: int) -> bool:
    """Whether any server could bind `port` now, even one that does not set SO_REUSEADDR (so a
    port that a closed connection holds in TIME_WAIT does not count as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _claim(port: int) -> bool:
    lock_file = _lock_file()  # a lock file that cannot be opened is an error, not a claimed port
    try:
        fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another process holds it
        return False
    return True


def _unclaim(port: int) -> None:
    _claims.pop(port, None)
    fcntl.lockf(_lock_file(), fcntl.LOCK_UN, 1, port)


def _lock_file() -> int:
    """This process's one descriptor of the lock file: closing any descriptor of a file drops
    all of the process's record locks on it, so it is opened once and never closed."""
    global _lock_fd
    if _lock_fd is None:
        path = os.path.join(tempfile.gettempdir(), f"labkit-ports-{os.getuid()}.lock")
        _lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return _lock_fd


def _os_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _forget_claims_in_child() -> None:
    """A forked child holds none of its parent's record locks, so none of its claims."""
    global _lock, _cursor
    _lock = threading.Lock()
    _claims.clear()
    _cursor = _first_look()


os.register_at_fork(after_in_child=_forget_claims_in_child)
