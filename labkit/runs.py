"""The run registry: one small JSON file per process labkit runs, so `labkit ps` can say what
runs and `labkit doctor` can find what an earlier run left behind.

Files live in a per-user folder: $LABKIT_RUN_DIR, else $XDG_RUNTIME_DIR/labkit (the XDG Base
Directory spec's place for runtime files: user-only, emptied at logout), else
~/.cache/labkit/run. A record is written when a process is spawned and removed when labkit
sees it end; a record whose owner died first stays behind, and that is what doctor looks for.

A pid alone does not name a process (pids are reused), so every process is named by its pid
and its start time, and the owner's pid and start time also go into each child's environment
(LABKIT_OWNER): a leftover is recognisable even if its record is lost.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from labkit.files import write_atomic

__all__ = [
    "OWNER_ENV",
    "RUN_DIR_ENV",
    "RunRecord",
    "Workload",
    "forget",
    "owner_env",
    "parse_owner",
    "read_records",
    "record",
    "run_dir",
    "same_process",
    "started_at",
    "this_owner",
]

OWNER_ENV = "LABKIT_OWNER"
RUN_DIR_ENV = "LABKIT_RUN_DIR"


@dataclass(frozen=True)
class Workload:
    """What a process belongs to, as Kubernetes would name it."""

    kind: str = "Process"
    name: str = ""
    namespace: str = "default"


@dataclass(frozen=True)
class RunRecord:
    pid: int
    started: float  # the process's start time (seconds since the epoch), told apart from reuse
    command: list[str]
    pod: str  # the replica's own name (a pod name for Deployments and revisions)
    workload: Workload
    ports: list[int]
    owner_pid: int
    owner_started: float
    lab: str | None = None  # the notebook, when the owner is a Jupyter kernel
    cwd: str = ""  # the owner's working directory
    log: str = ""  # the file the process's stdout and stderr go to (labkit logs)
    path: Path | None = field(default=None, compare=False)  # where the record was read from

    def to_json(self) -> str:
        data = asdict(self)
        del data["path"]
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, path: Path | None = None) -> RunRecord:
        data = json.loads(text)
        data["workload"] = Workload(**data["workload"])
        return cls(**data, path=path)


def run_dir() -> Path:
    """The registry folder (created, user-only)."""
    if configured := os.environ.get(RUN_DIR_ENV):
        folder = Path(configured)
    elif runtime := os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(runtime) / "labkit"
    else:
        folder = Path.home() / ".cache" / "labkit" / "run"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def started_at(pid: int) -> float | None:
    """The start time of process `pid` (rounded as it is stored), or None if there is none."""
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # another user's process: it exists, but it is not ours
        return None


def same_process(pid: int, started: float) -> bool:
    """True while the process `pid` that started at `started` runs (not a zombie, not a
    newer process that got the same pid)."""
    try:
        proc = psutil.Process(pid)
        return (abs(round(proc.create_time(), 2) - started) < 0.015
                and proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


def this_owner() -> tuple[int, float]:
    pid = os.getpid()
    started = started_at(pid)
    assert started is not None  # this process runs
    return pid, started


def owner_env() -> dict[str, str]:
    """The variable that marks a child as started by this process."""
    pid, started = this_owner()
    return {OWNER_ENV: f"{pid}:{started:.2f}"}


def parse_owner(value: str) -> tuple[int, float] | None:
    """LABKIT_OWNER's value as (pid, start time), or None if it is not one."""
    pid, _, started = value.partition(":")
    try:
        return int(pid), float(started)
    except ValueError:
        return None


def record(entry: RunRecord) -> None:
    """Write `entry` (atomically: a reader never sees half a file)."""
    try:
        folder = run_dir()
        write_atomic(folder / f"{entry.pid}.json", entry.to_json())
    except OSError as exc:
        # The lifeline still ends the process with its owner; only ps and doctor see less.
        warnings.warn(f"labkit: cannot record pid {entry.pid} in the run registry: {exc}",
                      RuntimeWarning, stacklevel=2)


def forget(pid: int, started: float) -> None:
    """Remove the record of process (`pid`, `started`), if it is that process's."""
    path = run_dir() / f"{pid}.json"
    try:
        entry = RunRecord.from_json(path.read_text(), path)
    except (OSError, ValueError, TypeError, KeyError):
        return
    if abs(entry.started - started) < 0.015:
        path.unlink(missing_ok=True)


def read_records() -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """Every record, and the files that could not be read as one (path, why)."""
    entries: list[RunRecord] = []
    unreadable: list[tuple[Path, str]] = []
    for path in sorted(run_dir().glob("*.json")):
        try:
            entries.append(RunRecord.from_json(path.read_text(), path))
        except FileNotFoundError:
            continue  # removed meanwhile: its process ended
        except (OSError, ValueError, TypeError, KeyError) as exc:
            unreadable.append((path, f"{type(exc).__name__}: {exc}"))
    return entries, unreadable
