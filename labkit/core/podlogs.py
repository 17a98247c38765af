"""Pod logs where another process can read them, as the kubelet keeps them on a node.

The running container's output is its replica's log file (named in the run registry); the
previous container's output, which `kubectl logs --previous` shows, is kept in one file per pod
beside the registry until the pod is deleted, as the kubelet keeps the last dead container's
log (https://kubernetes.io/docs/concepts/cluster-administration/logging/). Both are bounded: a
replica keeps the last 64 KiB of its output once it ends, and a previous log is that tail.

`find_logs` is what `labkit logs KIND/NAME` reads from a separate process; in the process that
runs the cluster, `LocalCluster.logs` asks the controllers directly.
"""

from __future__ import annotations

import re
from pathlib import Path

from labkit.runs import RunRecord, read_records, run_dir, same_process

__all__ = ["KINDS", "drop_previous", "find_logs", "keep_previous", "tail_lines"]

KINDS = {"pod": "Pod", "po": "Pod", "pods": "Pod", "deployment": "Deployment",
         "deploy": "Deployment", "deployments": "Deployment", "revision": "Revision",
         "rev": "Revision", "revisions": "Revision"}
"""The kinds `labkit logs` takes, by the names kubectl accepts."""


def _previous_dir() -> Path:
    folder = run_dir() / "previous-logs"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _previous_path(namespace: str, pod: str) -> Path:
    return _previous_dir() / f"{namespace}_{pod}.log"


def keep_previous(namespace: str, pod: str, text: str) -> None:
    """Keep `text` as the output of `pod`'s previous container."""
    try:
        _previous_path(namespace, pod).write_text(text)
    except OSError:
        pass  # a full or read-only disk loses `labkit logs --previous`, nothing else


def drop_previous(namespace: str, pod: str) -> None:
    """The pod is gone: so is its previous container's log."""
    _previous_path(namespace, pod).unlink(missing_ok=True)


def _pod_pattern(kind: str, name: str) -> re.Pattern[str]:
    """The names of `kind`/`name`'s pods (labkit.core.deployment and serving.revision)."""
    if kind == "Deployment":
        return re.compile(re.escape(name) + r"-[0-9a-f]{10}-\d+")
    if kind == "Revision":
        return re.compile(re.escape(name) + r"-deployment-\d+")
    return re.compile(re.escape(name))


def tail_lines(text: str, tail: int | None) -> str:
    """The last `tail` lines of `text` (all of it for None), as `kubectl logs --tail`."""
    if tail is None:
        return text
    return "\n".join(text.splitlines()[-tail:]) if tail > 0 else ""


def find_logs(kind: str, name: str, namespace: str = "default", *, previous: bool = False,
              tail: int | None = None) -> str:
    """The output of one pod of `kind` ("Pod", "Deployment" or "Revision") `name`, read from
    the files its owner keeps; LookupError when there is none."""
    pattern = _pod_pattern(kind, name)
    where = f"{kind.lower()}/{name} in namespace {namespace}"
    if previous:
        found = sorted((p for p in _previous_dir().glob(f"{namespace}_*.log")
                        if pattern.fullmatch(p.stem[len(namespace) + 1:])),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        if not found:
            raise LookupError(f"{where}: no previous terminated container (no restart or "
                              "crash seen by a cluster that is still open)")
        return tail_lines(found[0].read_text(errors="replace"), tail)
    running: list[RunRecord] = sorted(
        (r for r in read_records()[0]
         if r.workload.namespace == namespace and pattern.fullmatch(r.pod)
         and r.log and same_process(r.pid, r.started)),
        key=lambda r: r.pod)
    if not running:
        raise LookupError(f"{where}: no running pod (is the notebook or `labkit up` that runs "
                          "it still open? `labkit ps` lists what runs)")
    try:
        text = Path(running[0].log).read_bytes()[-64 * 1024:].decode("utf-8", "replace")
    except FileNotFoundError:  # it ended between the two reads
        text = ""
    return tail_lines(text, tail)
