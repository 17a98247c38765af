"""Kernel > Restart Kernel in the middle of a live lab must not leave its replicas running
(issue 11: 9 of 9 replicas of lab 05 survived a restart, re-parented to PID 1, ports open)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="browser tests skipped: Python playwright not installed")

from lab_run import OPEN_TIMEOUT_MS, VIEWPORT
from notebook import Notebook
from processes import labkit_descendants, stop, wait_gone

pytestmark = pytest.mark.timeout(900)

LAB = "05_knative_autoscaling.ipynb"
REPLICAS = 2
"""Restart once the live part runs at least this many labkit processes (its first Service)."""
START_TIMEOUT_S = 300.0
GONE_TIMEOUT_S = 30.0
"""Generous: a replica that watches its parent should be gone within a second or two."""


def test_restart_mid_lab_leaves_no_labkit_process(jupyterlab: Any, browser: Any,
                                                   wait_for: Callable[..., None]) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    notebook = Notebook(context.new_page(), OPEN_TIMEOUT_MS)
    started = []
    try:
        notebook.open(jupyterlab.notebook_url(LAB, workspace="restart-05"))
        # The page shows its kernel idle while the kernel still starts: wait for the server's session.
        wait_for(lambda: LAB in jupyterlab.sessions(), OPEN_TIMEOUT_MS / 1000, f"JupyterLab to list {LAB}'s session")
        kernel_pid = jupyterlab.kernel_pid(jupyterlab.session(LAB)[1])
        assert kernel_pid, f"no kernel process found for {LAB}"
        notebook.run_all()
        wait_for(lambda: len(labkit_descendants(kernel_pid)) >= REPLICAS, START_TIMEOUT_S,
                 f"{LAB}'s live part to start {REPLICAS} labkit processes")
        started = labkit_descendants(kernel_pid)
        notebook.restart_kernel()
        left = wait_gone(started, GONE_TIMEOUT_S)
        listing = "\n  ".join(f"pid {p.pid}: {p.command}" for p in left)
        assert not left, (f"{len(left)} of {len(started)} labkit processes still ran {GONE_TIMEOUT_S:g} s "
                          f"after Kernel > Restart Kernel (now stopped):\n  {listing}")
    finally:
        stop(started)  # this test's own leftovers, if any: not left to later tests
        context.close()
        jupyterlab.shutdown_kernels()
