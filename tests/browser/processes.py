"""Which labkit processes (replicas, sidecars, brokers: `python -m labkit.…`) a process tree runs,
and whether they are still alive later, when their parent may be gone (re-parented to PID 1)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class LabkitProcess:
    pid: int
    created: float  # with the pid, tells this process from a later one given the same pid
    command: str

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return process.create_time() == self.created and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


def is_labkit(cmdline: list[str]) -> bool:
    """`python -m labkit.apps.httpbin …` and the like; the kernel itself is not one."""
    return any(flag == "-m" and module.startswith("labkit.") for flag, module in itertools.pairwise(cmdline))


def labkit_descendants(root_pid: int) -> list[LabkitProcess]:
    """labkit processes below `root_pid` (a kernel, or the JupyterLab server and its kernels)."""
    found = []
    for process in psutil.Process(root_pid).children(recursive=True):
        try:
            cmdline = process.cmdline()
            if is_labkit(cmdline) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(LabkitProcess(process.pid, process.create_time(), " ".join(cmdline)))
        except psutil.NoSuchProcess:
            continue
    return found


def wait_gone(processes: list[LabkitProcess], timeout: float) -> list[LabkitProcess]:
    """Poll until none of `processes` is alive; return those still alive after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if p.alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def stop(processes: list[LabkitProcess]) -> None:
    """End leftovers the test's own kernel started (by pid, checked against the start time)."""
    for p in processes:
        if p.alive():
            try:
                psutil.Process(p.pid).kill()
            except psutil.NoSuchProcess:
                pass
