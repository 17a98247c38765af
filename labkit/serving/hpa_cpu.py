"""The CPU a replica has used, read from the operating system: what the HPA class scales on.

On Kubernetes the kubelet reads each container's cgroup CPU counter and metrics-server turns
it into a rate the HPA reads. labkit's pods are processes, so the counter is the process's
user + system CPU time (and its descendants', for a ``command`` that starts the app under a
shell), read with psutil; `labkit.serving.hpa.cpu_readings` turns two readings a sync
period apart into millicores, the same step the simulator takes with simulated CPU seconds.
"""

from __future__ import annotations

import psutil

__all__ = ["process_cpu_seconds"]

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def _own_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    # children_user/children_system: descendants that have exited and been waited for.
    return times.user + times.system + times.children_user + times.children_system


def process_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds `pid` and its running descendants have used, or None if it is gone."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        total = _own_seconds(process)
        children = process.children(recursive=True)
    except _GONE:
        return None
    for child in children:
        try:
            times = child.cpu_times()
        except _GONE:
            continue  # exited meanwhile: its time shows in its parent's children_* once reaped
        total += times.user + times.system
    return total
