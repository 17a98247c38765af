"""Browser tests: every lab in a real JupyterLab, driven in Debian's headless Chromium.

One JupyterLab server and one browser for the whole session; each lab runs once (a module
fixture per lab) and the tests judge what that run recorded. Needs the Python `playwright`
package (the test extra) and a Chromium binary: `make test` installs Debian's `chromium` when
run as root on Debian; elsewhere set LABKIT_CHROMIUM to a Chromium or the tests skip, saying
why. Playwright's own browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the driver modules beside this file

REPO = Path(__file__).resolve().parents[2]
LABS = REPO / "labs"
SHOTS = REPO / ".browser-shots"
REPORT = SHOTS / "report.json"
# Recipe: ../shared/reference/jupyter-browser.md. --no-sandbox: Chromium refuses its sandbox as
# root. No --disable-features here: Playwright passes its own and a second one would replace it.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-sync", "--disable-background-networking", "--disable-component-update",
                 "--disable-quic"]


AT_ONCE = 3
"""Labs whose Run All runs at the same time: their kernels mostly wait on live processes and
timers, so three share 2 cores well."""


def saved_run_seconds(notebook: Path) -> float:
    """How long the lab's cells took when it was last executed: nbconvert and JupyterLab save
    each cell's start and end in its metadata."""
    total = 0.0
    for cell in json.loads(notebook.read_text())["cells"]:
        times = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in times and "shell.execute_reply" in times:
            began, ended = (datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                            for k in ("iopub.execute_input", "shell.execute_reply"))
            total += (ended - began).total_seconds()
    return total


def lab_groups() -> list[list[str]]:
    """The labs in groups of AT_ONCE that run together, longest first, so the long Run Alls
    wait for each other and not for a short one each."""
    labs = sorted(LABS.glob("*.ipynb"), key=lambda path: (-saved_run_seconds(path), path.name))
    names = [path.name for path in labs]
    return [names[i:i + AT_ONCE] for i in range(0, len(names), AT_ONCE)]


def lab_notebooks() -> list[str]:
    """Every lab, in the order they run (group by group)."""
    return [notebook for group in lab_groups() for notebook in group]


def chromium_path() -> str | None:
    return os.environ.get("LABKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    missing = []
    for module in ("playwright", "psutil"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        pytest.skip(f"browser tests skipped: Python package(s) {missing} not installed "
                    "(pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        pytest.skip("browser tests skipped: no Chromium found (`apt-get install chromium` on Debian, "
                    "which `make test` does as root; or set LABKIT_CHROMIUM=/path/to/chromium)")
    return path


@pytest.fixture(scope="session")
def jupyterlab(chromium: str) -> Iterator[Any]:
    from server import JupyterLab

    lab = JupyterLab(LABS)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    """The screenshots folder (gitignored), emptied of an earlier run's pictures."""
    SHOTS.mkdir(exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    return SHOTS


_runs: dict[str, Any] = {}
_drivers: dict[str, Any] = {}


@pytest.fixture(scope="module", params=lab_notebooks())
def lab_run(request: pytest.FixtureRequest, jupyterlab: Any, browser: Any, shots: Path) -> Any:
    """The lab, run once in the browser as a student runs it; the record of what happened.

    Labs run in groups (`lab_groups`) from Restart Kernel and Run All to the end of the run:
    their kernels are separate processes, and on 2 cores this saves most of the shorter labs'
    time. The dashboards are driven once every run of the group has ended, one lab at a time,
    so that the response times measured are not slowed by another lab's run.
    """
    from lab_run import LabDriver

    [group] = [g for g in lab_groups() if request.param in g]
    selected = {item.callspec.params.get("lab_run") for item in request.session.items
                if hasattr(item, "callspec")}
    together = [notebook for notebook in group if notebook in selected]
    for notebook in together:
        if notebook not in _drivers and notebook not in _runs:
            _drivers[notebook] = LabDriver(jupyterlab, browser, notebook, shots)
            _drivers[notebook].start()
    for notebook in together:
        if notebook in _drivers:
            _drivers[notebook].wait_run()
    run = _drivers.pop(request.param).finish()
    _runs[run.lab] = run
    _write_report()
    return run


def _write_report() -> None:
    from dataclasses import asdict

    REPORT.write_text(json.dumps({lab: asdict(run) for lab, run in sorted(_runs.items())}, indent=1))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """A short table of what each lab's run took and how fast its dashboards answered."""
    if not _runs:
        return
    write = terminalreporter.write_line
    write("")
    write(f"browser runs at 1366x768 (details and screenshots: {SHOTS.relative_to(REPO)}/); response = "
          "from a control's input to the dashboard's last change")
    write(f"{'lab':32} {'run all':>8} {'total':>7} {'dash':>4} {'moved':>7} {'median':>7} {'max':>7}")
    for lab, run in sorted(_runs.items()):
        times = sorted(m.response_s for m in run.moves if m.response_s is not None)
        median = f"{times[len(times) // 2]:.2f}s" if times else "-"
        worst = f"{times[-1]:.2f}s" if times else "-"
        changed = sum(m.changed for m in run.moves)
        write(f"{lab:32} {run.seconds.get('run_all', 0):7.1f}s {run.seconds.get('total', 0):6.1f}s "
              f"{len(run.dashboards):4} {changed:>3}/{len(run.moves):<3} {median:>7} {worst:>7}")
