"""The `labkit` command: lab | up | export | logs | release | grade | load | ps | doctor.

Each subcommand is one `Command` (name, help, add_arguments, run) in COMMANDS; adding one is a
function pair and a line here. `run` returns the exit code: 0 ok, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import labkit
from labkit.doctor import add_doctor_arguments, add_ps_arguments, run_doctor, run_ps

if TYPE_CHECKING:
    from labkit.cluster import LocalCluster, ObjectStatus

__all__ = ["COMMANDS", "Command", "build_parser", "find_labs_dir", "main", "register_command"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []


def register_command(command: Command) -> None:
    """Add a subcommand (later parts of labkit: release, grade)."""
    COMMANDS.append(command)


def _deferred(module: str, name: str) -> Callable[..., Any]:
    """`module.name`, imported when first called: grading imports nbformat and jsonschema
    (seconds), which `labkit ps` and `labkit doctor` should not wait for."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args)

    return call


def _err(message: str) -> None:
    print(f"labkit: {message}", file=sys.stderr, flush=True)


# -- labkit up --------------------------------------------------------------------------------


def _up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="Kubernetes YAML manifests")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds each replica may take to answer its first request (default 30)",
    )


class _Interrupted(BaseException):
    """SIGINT/SIGTERM arrived while objects were still starting. A BaseException, like
    KeyboardInterrupt, so it passes through error handling and the cluster rolls back."""


def _run_up(args: argparse.Namespace) -> int:
    from labkit.cluster import ApplyError, LocalCluster
    from labkit.manifests import ManifestError, ManifestIssue, load

    warnings: list[ManifestIssue] = []
    try:
        objects = load(args.files, warnings)  # validate everything before starting anything
    except ManifestError as exc:
        print(exc, file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    finally:
        for warning in warnings:  # file:line: Kind/name: field.path: warning: why it is ignored
            print(warning, file=sys.stderr, flush=True)

    stop = threading.Event()
    starting = True
    reported: list[ObjectStatus] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if starting:  # abort the apply: the cluster rolls back what it started
            raise _Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalCluster(start_timeout=args.timeout) as cluster:
            try:
                cluster.apply(objects, on_ready=lambda resource: reported.append(_report(resource.status)))
            except ApplyError as exc:
                _err(str(exc))
                return EXIT_FAILED
            finally:
                starting = False
            print("labkit: running; press Ctrl-C to stop", file=sys.stderr, flush=True)
            _watch(cluster, stop, reported)
        print("labkit: stopped", file=sys.stderr, flush=True)
        return EXIT_OK
    except _Interrupted as exc:
        _err(f"interrupted by {exc} while starting; stopped everything")
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(status: ObjectStatus) -> ObjectStatus:
    """READY Kind/name URL (a Deployment, having no URL, lists its pods' URLs), or NOT READY."""
    if status.ready:
        where = status.url or ",".join(status.urls) or "-"
        print(f"READY {status.kind}/{status.name} {where}", flush=True)
    else:
        print(f"NOT READY {status.kind}/{status.name} {status.message}", flush=True)
    return status


def _watch(cluster: LocalCluster, stop: threading.Event, reported: list[ObjectStatus]) -> None:
    """Until `stop`, print a line whenever an object's readiness changes (a pod exited, was
    restarted...). Driven by pod changes, so even a quick restart shows both lines; compared
    with what was last printed, so a change between apply() and subscribing is not lost."""
    ready = {(s.kind, s.namespace, s.name): s.ready for s in reported}
    lock = threading.Lock()

    def on_change() -> None:
        with lock:
            for status in cluster.status():
                key = (status.kind, status.namespace, status.name)
                if ready.get(key) != status.ready:
                    ready[key] = status.ready
                    _report(status)

    unsubscribe = cluster.pods.subscribe(on_change)
    on_change()
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        unsubscribe()


# -- labkit export ----------------------------------------------------------------------------


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="Kubernetes YAML manifests")
    parser.add_argument(
        "-o", "--out", type=Path, metavar="DIR",
        help="write YAML for a real cluster into DIR (one file per object, README.txt) instead "
             "of printing the normalised manifests")


def _run_export(args: argparse.Namespace) -> int:
    from labkit.manifests import ManifestError, export, load

    try:
        objects = load(args.files)
    except ManifestError as exc:
        print(exc, file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    if args.out is None:
        sys.stdout.write(export(objects))
        sys.stdout.flush()
        return EXIT_OK
    from labkit.export import export_objects, write_export

    if args.out.exists() and not args.out.is_dir():
        _err(f"-o {args.out}: exists and is not a folder")
        return EXIT_BAD_INPUT
    written = write_export(export_objects(objects), args.out)
    print(f"labkit: wrote {len(written)} file(s) to {args.out}; read {args.out / 'README.txt'}",
          file=sys.stderr, flush=True)
    return EXIT_OK


# -- labkit logs ------------------------------------------------------------------------------


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="KIND/NAME",
                        help="pod/NAME, deployment/NAME or revision/NAME (a Knative revision)")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("-p", "--previous", action="store_true",
                        help="the output of the container before its last restart or crash")
    parser.add_argument("--tail", type=int, default=-1, metavar="N",
                        help="only the last N lines (-1, the default: all that is kept)")


def _run_logs(args: argparse.Namespace) -> int:
    from labkit.core.podlogs import KINDS, find_logs

    kind, _, name = args.target.partition("/")
    if kind.lower() not in KINDS or not name:
        _err(f"{args.target}: say KIND/NAME, KIND one of pod, deployment, revision")
        return EXIT_BAD_INPUT
    try:
        text = find_logs(KINDS[kind.lower()], name, args.namespace, previous=args.previous,
                         tail=None if args.tail < 0 else args.tail)
    except LookupError as exc:
        _err(str(exc))
        return EXIT_FAILED
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    sys.stdout.flush()
    return EXIT_OK


# -- labkit lab -------------------------------------------------------------------------------


def find_labs_dir() -> Path:
    """labs/ beside the package (a source checkout), else ./labs; error when neither exists."""
    candidates = [Path(labkit.__file__).resolve().parents[1] / "labs", Path.cwd() / "labs"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"cannot find the labs/ folder (looked in {tried}); run labkit lab from the labkit checkout"
    )


def _lab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="port for JupyterLab (default: Jupyter's choice)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")


def lab_command(labs: Path, port: int | None = None, no_browser: bool = False) -> list[str]:
    """The JupyterLab command line: this interpreter, bound to 127.0.0.1, rooted at labs/."""
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={labs}",
    ]
    if port is not None:
        command.append(f"--ServerApp.port={port}")
    if no_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Jupyter refuses root by default; containers and CI commonly run as root, and the
        # server listens on loopback only.
        command.append("--allow-root")
    return command


def _run_lab(args: argparse.Namespace) -> int:
    try:
        labs = find_labs_dir()
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.port is not None and not 0 < args.port < 65536:
        _err(f"--port must be between 1 and 65535, got {args.port}")
        return EXIT_BAD_INPUT
    command = lab_command(labs, args.port, args.no_browser)
    try:
        process = subprocess.Popen(command, cwd=labs)
    except OSError as exc:
        _err(f"cannot start JupyterLab: {exc}")
        return EXIT_FAILED
    # Forward SIGTERM so a supervisor stopping `labkit lab` stops Jupyter too; Ctrl-C already
    # reaches Jupyter directly (same process group).
    previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue  # Jupyter asks for confirmation itself; wait for it to decide
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- entry point ------------------------------------------------------------------------------

for _command in (
    Command("lab", "start JupyterLab on the labs", _lab_arguments, _run_lab),
    Command("up", "run Kubernetes manifests locally until Ctrl-C", _up_arguments, _run_up),
    Command("export", "validate manifests and print them normalised, or with -o DIR write them "
            "for a real cluster", _export_arguments, _run_export),
    Command("logs", "print a pod's stdout and stderr, like kubectl logs", _logs_arguments,
            _run_logs),
    Command("release", "write student copies of lab notebooks",
            _deferred("labkit.grading.release", "add_release_arguments"),
            _deferred("labkit.grading.release", "run_release")),
    Command("grade", "grade submitted notebooks into a CSV gradebook",
            _deferred("labkit.grading.gradebook", "add_grade_arguments"),
            _deferred("labkit.grading.gradebook", "run_grade")),
    Command("load", "send HTTP load (like fortio) and report status codes and latency",
            _deferred("labkit.load", "add_load_arguments"), _deferred("labkit.load", "run_load")),
    Command("ps", "list the processes labkit runs, by owner (lab) and kind, with ports", add_ps_arguments, run_ps),
    Command("doctor", "stop processes left over from earlier runs and free their ports",
            add_doctor_arguments, run_doctor),
):
    register_command(_command)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `labkit` parser; with `only`, just that subcommand gets its arguments (the others
    keep their names and help), so running one command imports nothing for the rest."""
    parser = argparse.ArgumentParser(
        prog="labkit",
        description="labkit: local, faithful Knative, Istio and KServe for teaching.",
    )
    parser.add_argument("--version", action="version", version=f"labkit {labkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        if only is None or command.name == only:
            command.add_arguments(sub_parser)
        sub_parser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in given if not a.startswith("-")), None)
    args = build_parser(chosen).parse_args(given)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
