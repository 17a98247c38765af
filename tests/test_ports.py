"""labkit.ports: a port free_port() gives is claimed until its server binds it, so no other
labkit process and no bind to port 0 (the kernel's choice) can take it in between."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import ports
from labkit.net import free_port

CLAIMER = """
import json, sys
from labkit import ports
ports._cursor = int(sys.argv[1])
print(json.dumps([ports.free_port() for _ in range(int(sys.argv[2]))]), flush=True)
sys.stdin.read()  # keep the claims until the test closes stdin
"""


def claimer(start: int, count: int) -> subprocess.Popen[str]:
    """A process that claims `count` ports looking from `start`, and holds them."""
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(start), str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def claimed(process: subprocess.Popen[str]) -> list[int]:
    assert process.stdout is not None
    return list(json.loads(process.stdout.readline()))


def release(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def test_free_port_is_bindable_and_in_labkits_range() -> None:
    port = free_port()
    assert port in ports.PORT_RANGE
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: free for any server, not only most


@pytest.mark.skipif(not Path("/proc/sys/net/ipv4/ip_local_port_range").exists(), reason="Linux only")
def test_labkits_range_is_below_the_kernels_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert ports.PORT_RANGE.stop <= low


def test_processes_looking_from_the_same_port_never_get_the_same_one() -> None:
    start = ports.PORT_RANGE.start + 5000
    processes = [claimer(start, 40) for _ in range(4)]
    try:
        given = [claimed(process) for process in processes]
    finally:
        release(*processes)
    every = [port for one in given for port in one]
    assert len(every) == 160
    assert len(set(every)) == 160, "two processes were given the same port"


def test_a_port_another_process_claimed_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    start = ports.PORT_RANGE.start + 6000
    other = claimer(start, 3)
    try:
        theirs = claimed(other)
        monkeypatch.setattr(ports, "_cursor", start)
        mine = free_port()
    finally:
        release(other)
    assert mine not in theirs
    assert mine > max(theirs)


def test_a_port_a_server_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    ports._unclaim(port)
    with socket.create_server(("127.0.0.1", port)):
        monkeypatch.setattr(ports, "_cursor", port)
        assert free_port() != port


def test_a_claim_ends_after_claim_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setitem(ports._claims, port, 0.0)  # as if CLAIM_SECONDS had passed
    free_port()  # drops the claims that have ended
    other = claimer(port, 1)
    try:
        assert claimed(other) == [port]
    finally:
        release(other)
