"""The browser tests' own judges, on known inputs: what counts as a widget repr, a readable
fallback, a labkit process, and a process left behind. No browser needed (seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

pytest.importorskip("playwright.sync_api", reason="browser tests skipped: Python playwright not installed")

from dashboards import Dashboard
from lab_run import LabRun
from notebook import Output
from processes import is_labkit, labkit_descendants, stop, wait_gone

from labkit.net import free_port

REPR = ("HBox(children=(VBox(children=(Dropdown(description='workload', layout=Layout(width='300px'), "
        "options=('one bur…")


def test_widget_reprs_are_told_from_readable_fallbacks() -> None:
    assert Output(3, "text/plain", REPR).is_widget_repr
    assert Output(3, "text/plain", "interactive(children=(FloatSlider(value=0.5, min=0.1), Output()))").is_widget_repr
    assert not Output(3, "text/plain", "Autoscaling dashboard (run this cell to make it live)").is_widget_repr


def test_fallback_problems_name_each_dashboard_cell() -> None:
    run = LabRun("lab.ipynb", dashboards=[Dashboard(0, 2), Dashboard(1, 5), Dashboard(2, 7), Dashboard(3, 9)])
    run.before_run = [Output(2, "text/plain", REPR),
                      Output(5, "text/plain", "pods over time"),
                      Output(7, "text/html", "Explore the autoscaler: run this cell"),
                      Output(9, "image/png", "")]
    problems = run.fallback_problems()
    assert [p.split(":")[0] for p in problems] == ["cell 2", "cell 5"]
    assert "widget repr" in problems[0] and "no word of running" in problems[1]
    assert LabRun("lab.ipynb", dashboards=[Dashboard(0, 4)]).fallback_problems() == [
        "cell 4: shows nothing before it runs"]


def test_labkit_processes_are_told_from_others() -> None:
    assert is_labkit([sys.executable, "-m", "labkit.apps.httpbin"])
    assert is_labkit(["python", "-m", "labkit.lifeline", "python", "-m", "labkit.apps.function"])
    assert not is_labkit([sys.executable, "-m", "ipykernel_launcher", "-f", "kernel-1.json"])
    assert not is_labkit(["labkit.apps.httpbin"])


def test_a_replica_that_outlives_its_parent_is_reported(wait_for: Callable[..., None]) -> None:
    """What the kernel-restart test relies on: a replica started the way issue 11 found them
    (its own session, cleaned only by an exit handler) survives its parent, and is caught."""
    spawn = ("import subprocess, sys; "
             "subprocess.Popen([sys.executable, '-m', 'labkit.apps.httpbin'], start_new_session=True); "
             "sys.stdin.read()")
    parent = subprocess.Popen([sys.executable, "-c", spawn], stdin=subprocess.PIPE,
                              env=dict(os.environ, PORT=str(free_port())))
    started = []
    try:
        wait_for(lambda: labkit_descendants(parent.pid), 30.0, "the replica to start")
        started = labkit_descendants(parent.pid)
        assert len(started) == 1 and "labkit.apps.httpbin" in started[0].command
        assert parent.stdin is not None
        parent.stdin.close()  # the parent ends; nothing ends the replica
        parent.wait(timeout=30)
        assert wait_gone(started, timeout=1.0) == started
        stop(started)
        assert wait_gone(started, timeout=30.0) == []
    finally:
        stop(started)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
