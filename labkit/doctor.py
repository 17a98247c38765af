"""`labkit ps` and `labkit doctor`: what labkit runs now, and what an earlier run left behind.

Two sources, so that nothing is missed and nothing unrelated is touched:
- the run registry (labkit.runs): every replica labkit spawned, with its owner and ports;
- a scan of this user's processes: anything carrying LABKIT_OWNER in its environment (every
  process labkit started, and whatever those forked), and, for runs of labkit versions from
  before the registry, any `python -m labkit.<app>` that init or a subreaper has adopted.

A process is a leftover when the process that started it is gone. Every process is named by
its pid *and* start time, so a pid the system has since given to another program is never
signalled. Deciding (leftover_reason) is a pure function; the rest reads /proc (via psutil)
and sends signals.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from labkit import runs
from labkit.lifeline import WRAPPER_NAME

__all__ = [
    "Leftover",
    "Row",
    "Seen",
    "add_doctor_arguments",
    "add_ps_arguments",
    "find_leftovers",
    "leftover_reason",
    "run_doctor",
    "run_ps",
    "scan",
    "stop_leftovers",
]


# What adopts an orphan: init (pid 1: systemd, tini, launchd...) or a subreaper (systemd --user
# on a desktop, whose pid is not 1).
_ADOPTERS = ("systemd", "init", "tini", "dumb-init", "launchd")


@dataclass(frozen=True)
class Seen:
    """A process of this user as the scan found it."""

    pid: int
    ppid: int
    started: float
    command: list[str]
    owner: tuple[int, float] | None  # from LABKIT_OWNER
    parent_name: str
    ports: list[int] = field(default_factory=list)  # where it listens

    @property
    def watcher(self) -> bool:
        """The lifeline wrapper's watcher (`sh -c SCRIPT labkit-lifeline ...`)."""
        return len(self.command) > 3 and self.command[3] == WRAPPER_NAME


@dataclass(frozen=True)
class Leftover:
    process: Seen
    reason: str
    record: runs.RunRecord | None


def labkit_module(command: Sequence[str]) -> str | None:
    """The labkit module a `python -m labkit.X` command runs (not the `labkit` CLI itself)."""
    for flag, module in itertools.pairwise(command):
        if flag == "-m" and module.startswith("labkit.") and module != "labkit.cli":
            return module
    return None


def leftover_reason(
    process: Seen, record: runs.RunRecord | None, owner_alive: Callable[[int, float], bool]
) -> str | None:
    """Why `process` is a leftover, or None when it is not one (or not labkit's)."""
    owner = process.owner or (record and (record.owner_pid, record.owner_started))
    if owner:
        return None if owner_alive(*owner) else f"its owner, pid {owner[0]}, is gone"
    # Before the registry: a replica's parent was its owner (a kernel, a script, `labkit up`);
    # once that died, init or a subreaper adopted it. One started by hand from a shell that
    # still runs is left alone.
    module = labkit_module(process.command)
    if module and (process.ppid <= 1 or process.parent_name in _ADOPTERS):
        return f"{module} was orphaned (its parent is now pid {process.ppid}, {process.parent_name})"
    return None


def _listening_ports(proc: psutil.Process) -> list[int]:
    try:
        connections = proc.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return []
    return sorted({c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN})


_ATTRS = ["pid", "ppid", "cmdline", "create_time", "uids", "environ", "status"]


def _seen(proc: psutil.Process, info: dict[str, Any]) -> Seen | None:
    """`proc` as a Seen, or None when it is not this user's or has already ended."""
    if not info["uids"] or info["uids"].real != os.getuid() or info["create_time"] is None:
        return None
    if info["status"] == psutil.STATUS_ZOMBIE:
        return None  # already ended: nothing to stop, its parent (or init) reaps it
    marker = (info["environ"] or {}).get(runs.OWNER_ENV)
    try:
        parent_name = psutil.Process(info["ppid"]).name() if info["ppid"] else "none"
    except psutil.Error:
        parent_name = "gone"
    return Seen(info["pid"], info["ppid"], round(info["create_time"], 2), info["cmdline"] or [],
                runs.parse_owner(marker) if marker else None, parent_name,
                _listening_ports(proc))


def scan(records: dict[int, runs.RunRecord] | None = None) -> list[Seen]:
    """This user's processes that belong to labkit: marked, running a labkit module, or
    recorded in `records` (still the recorded process)."""
    found = []
    for proc in psutil.process_iter(_ATTRS):
        if proc.pid == os.getpid():
            continue
        seen = _seen(proc, proc.info)
        if seen is None:
            continue
        if seen.owner or labkit_module(seen.command) or _record_for(seen, records or {}):
            found.append(seen)
    return found


def _records_by_pid() -> tuple[dict[int, runs.RunRecord], list[str]]:
    records, unreadable = runs.read_records()
    notes = [f"unreadable registry file {path}: {why}" for path, why in unreadable]
    return {r.pid: r for r in records}, notes


def _record_for(process: Seen, records: dict[int, runs.RunRecord]) -> runs.RunRecord | None:
    record = records.get(process.pid)
    return record if record and abs(record.started - process.started) < 0.015 else None


def find_leftovers(processes: Iterable[Seen], records: dict[int, runs.RunRecord]) -> list[Leftover]:
    found = []
    for process in processes:
        record = _record_for(process, records)
        reason = leftover_reason(process, record, runs.same_process)
        if reason:
            found.append(Leftover(process, reason, record))
    return found


def _describe(leftover: Leftover) -> str:
    process, record = leftover.process, leftover.record
    what = "lifeline watcher" if process.watcher else " ".join(process.command)[:80] or "?"
    if record:
        workload = record.workload
        what += f"; {workload.kind} {workload.namespace}/{workload.name}, pod {record.pod}"
    ports = sorted(set(process.ports) | set(record.ports if record else []))
    if ports:
        what += "; port" + ("s " if len(ports) > 1 else " ") + ", ".join(map(str, ports))
    return f"pid {process.pid} ({what})"


def _port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (a socket in TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _signal(process: Seen, sig: signal.Signals) -> None:
    """Signal `process` (its group when it leads one: its forked workers go too), after
    checking it is still the process that was found."""
    if not runs.same_process(process.pid, process.started):
        return
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            os.kill(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(processes: list[Seen], timeout: float) -> list[Seen]:
    """Wait up to `timeout` s for `processes` to end; those still running."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes if runs.same_process(p.pid, p.started)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def stop_leftovers(leftovers: list[Leftover], grace: float) -> tuple[list[str], list[Seen]]:
    """SIGTERM each (SIGKILL at once for lifeline watchers: plumbing with nothing to save),
    SIGKILL what is left after `grace` s. Returns report lines and the processes that survived."""
    lines = []
    for leftover in leftovers:
        sig = signal.SIGKILL if leftover.process.watcher else signal.SIGTERM
        _signal(leftover.process, sig)
    processes = [leftover.process for leftover in leftovers]
    stubborn = {p.pid for p in _wait_gone(processes, grace)}
    for process in processes:
        if process.pid in stubborn:
            _signal(process, signal.SIGKILL)
    survivors = _wait_gone(processes, 5.0)
    for leftover in leftovers:
        process = leftover.process
        if process in survivors:
            lines.append(f"could not stop {_describe(leftover)}: {leftover.reason}")
            continue
        how = "SIGKILL" if process.watcher or process.pid in stubborn else "SIGTERM"
        lines.append(f"stopped {_describe(leftover)} with {how}: {leftover.reason}")
        runs.forget(process.pid, process.started)
    return lines, survivors


def _remove_stale_records(records: dict[int, runs.RunRecord]) -> list[str]:
    lines = []
    for record in records.values():
        if not runs.same_process(record.pid, record.started) and record.path is not None:
            record.path.unlink(missing_ok=True)
            lines.append(f"removed the record of pid {record.pid} (pod {record.pod}): "
                         "it had already ended")
    return lines


# -- labkit doctor ------------------------------------------------------------------------------


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="only say what would be stopped (exit 1 if anything would)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="S",
                        help="seconds between SIGTERM and SIGKILL (default 5)")


def run_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when nothing of an earlier run is left running (found and stopped, or none)."""
    if args.grace < 0:
        print(f"labkit doctor: --grace must be 0 or more, got {args.grace:g}", file=sys.stderr)
        return 2
    records, notes = _records_by_pid()
    leftovers = find_leftovers(scan(records), records)
    for note in notes:
        print(f"labkit doctor: {note}")
    if args.dry_run:
        for leftover in leftovers:
            print(f"would stop {_describe(leftover)}: {leftover.reason}")
        print(f"labkit doctor: {len(leftovers)} leftover process(es)" if leftovers
              else "labkit doctor: clean, nothing left over from earlier runs")
        return 1 if leftovers else 0
    lines, survivors = stop_leftovers(leftovers, args.grace)
    lines += _remove_stale_records(records)
    ports = sorted({port for leftover in leftovers for port in leftover.process.ports}
                   | {port for leftover in leftovers if leftover.record
                      for port in leftover.record.ports})
    busy = [port for port in ports if not _port_free(port)]
    for line in lines:
        print(line)
    if ports:
        freed = [port for port in ports if port not in busy]
        if freed:
            print(f"freed port{'s' if len(freed) > 1 else ''} {', '.join(map(str, freed))}")
        if busy:
            print(f"still in use: port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))}")
    if survivors or busy:
        print("labkit doctor: some leftovers could not be stopped (see above)")
        return 1
    print(f"labkit doctor: stopped {len(leftovers)} leftover process(es); clean now" if leftovers
          else "labkit doctor: clean, nothing left over from earlier runs")
    return 0


# -- labkit ps ----------------------------------------------------------------------------------


def add_ps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per process")


@dataclass(frozen=True)
class Row:
    """One line of `labkit ps`."""

    pid: int
    state: str  # "running", or "stale: why"
    command: list[str]
    ports: list[int]
    owner_pid: int | None
    kind: str = ""
    namespace: str = ""
    name: str = ""
    pod: str = ""
    lab: str | None = None
    cwd: str = ""
    registered: bool = True


def _rows() -> list[Row]:
    """Every labkit process: registered ones (with stale records marked) and unregistered
    ones the scan finds; lifeline watchers are plumbing and left out."""
    records, _ = _records_by_pid()
    unregistered = {p.pid: p for p in scan(records) if not p.watcher}
    rows = []
    for record in records.values():
        process = unregistered.get(record.pid)
        if process is None or _record_for(process, records) is None:
            state = "stale: process gone"
        else:
            del unregistered[record.pid]
            alive = runs.same_process(record.owner_pid, record.owner_started)
            state = "running" if alive else "stale: owner gone"
        workload = record.workload
        rows.append(Row(record.pid, state, record.command, record.ports, record.owner_pid,
                        workload.kind, workload.namespace, workload.name, record.pod,
                        record.lab, record.cwd))
    for process in unregistered.values():
        reason = leftover_reason(process, None, runs.same_process)
        rows.append(Row(process.pid, f"stale: {reason}" if reason else "running",
                        process.command, process.ports,
                        process.owner[0] if process.owner else None, registered=False))
    return rows


def run_ps(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.json:
        for row in rows:
            print(json.dumps(asdict(row)))
        return 0
    if not rows:
        print("labkit runs nothing now")
        return 0
    by_owner: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_owner[(row.owner_pid or 0, row.lab or row.cwd)].append(row)
    for (owner_pid, where), group in sorted(by_owner.items()):
        print((f"owner pid {owner_pid}" if owner_pid else "no known owner")
              + (f"  {where}" if where else ""))
        for row in sorted(group, key=lambda r: (r.kind, r.namespace, r.name, r.pod)):
            workload = (f"{row.kind} {row.namespace}/{row.name}" if row.registered
                        else "not in the registry")
            what = row.pod or " ".join(row.command)[:60]
            ports = ",".join(map(str, row.ports)) or "-"
            state = "" if row.state == "running" else f"  [{row.state}]"
            print(f"  {workload:<32} {what:<28} pid {row.pid:<7} port {ports}{state}")
    if any(row.state.startswith("stale") for row in rows):
        print("stale entries are leftovers of an earlier run: `labkit doctor` stops them")
    return 0
