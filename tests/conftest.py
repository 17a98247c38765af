"""Shared fixtures for the spine's tests: a cluster that always closes, process checks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import yaml
from markers import mark

from labkit.cluster import LocalCluster
from labkit.net import process_alive

REPO = Path(__file__).resolve().parents[1]
HELLO_YAML = REPO / "data" / "manifests" / "hello.yaml"


def child_pids() -> set[int]:
    """Live descendants of this test process."""
    try:
        import psutil
    except ImportError:  # /proc fallback: direct children are enough for our replicas
        me = str(os.getpid())
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[1] == me and fields[0] != "Z":
                    found.add(int(entry))
        return found
    return {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    }


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `condition` until true; fail the test (not hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """unit / live / browser markers by what each test needs (tests/markers.py)."""
    mark(items)


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(start_timeout=20.0) as c:
        yield c


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """write(name, text) -> path of a file in the test's temporary folder."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write


@pytest.fixture(name="process_alive")
def _process_alive_fixture() -> Callable[[int], bool]:
    return process_alive


@pytest.fixture(name="child_pids")
def _child_pids_fixture() -> Callable[[], set[int]]:
    return child_pids


@pytest.fixture(name="wait_for")
def _wait_for_fixture() -> Callable[..., None]:
    return wait_for


@pytest.fixture
def crd_validate() -> Callable[[str], str]:
    """Check manifest YAML against the official Knative/Istio/KServe/Flagger CRD schemas kept in
    tests/crds (copies of ../shared/crds with their licences; tests/crds/SOURCES.md).
    Returns the validator's report; fails the test with that report on any problem."""
    from crds.validator import check

    def validate(manifest_yaml: str) -> str:
        """One line per object: "OK Kind/name", "built-in Kind/name" (no CRD), or its problems."""
        lines, problems = [], []
        for document in yaml.safe_load_all(manifest_yaml):
            if not document:
                continue
            found = check(document)
            name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
            problems += [f"{name}: {problem}" for problem in found or []]
            lines.append(f"built-in {name}" if found is None else f"OK {name}" if not found else "")
        assert not problems, "rejected by the official CRD schema:\n" + "\n".join(problems)
        return "\n".join(lines)

    return validate


# --- dashboards (labkit.widgets), driven without a kernel -------------------------------------

matplotlib.use("Agg")  # tests draw figures with no display, whichever test file runs first


@pytest.fixture
def headless_dashboard(capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """headless_dashboard(factory, **kwargs) -> the dashboard the factory builds, its first run
    done. Outside a kernel, display() of a figure prints its repr; that noise is dropped."""

    def build(factory: Callable[..., Any], **kwargs: Any) -> Any:
        dashboard = factory(**kwargs)
        capsys.readouterr()
        return dashboard

    return build
