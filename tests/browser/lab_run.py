"""One lab as a student meets it, recorded for the tests to judge: open it, read what the
dashboards show before running, Restart Kernel and Run All, move every control, look at the
layout, take screenshots, shut the kernel down. Nothing is asserted here: the tests do that,
one property each, so a run reports every broken property at once."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dashboards
from dashboards import Dashboard, Move
from notebook import Notebook, Output
from playwright.sync_api import Browser, Page, ViewportSize
from processes import LabkitProcess, labkit_descendants, stop, wait_gone
from server import JupyterLab

VIEWPORT: ViewportSize = {"width": 1366, "height": 768}
WIDE_VIEWPORT: ViewportSize = {"width": 1920, "height": 1080}
"""A common laptop screen, the smallest the dashboards must fit (issue 11)."""
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
OPEN_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 900_000
CHANGE_TIMEOUT_MS = 30_000
SHUTDOWN_TIMEOUT_S = 30.0
WIDGET_FAILURE = re.compile(r"Error displaying widget|Loading widget\.\.\.")


@dataclass(repr=False)
class LabRun:
    lab: str
    file_browser_open: bool = False
    before_run: list[Output] = field(default_factory=list)
    dashboards: list[Dashboard] = field(default_factory=list)
    errors: list[Output] = field(default_factory=list)
    widget_failures: list[Output] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    clipped: list[dict[str, Any]] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    clipped_wide: list[dict[str, Any]] = field(default_factory=list)
    plots_wide: list[dict[str, Any]] = field(default_factory=list)
    """The same checks at WIDE_VIEWPORT."""
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    leftovers: list[LabkitProcess] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    load_average: float = 0.0
    """The machine's 1-minute load when the lab started: response times depend on it."""
    screenshots: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # pytest prints the fixture with a failure: the name is enough
        return f"LabRun({self.lab!r})"

    def fallback_problems(self) -> list[str]:
        """Each dashboard, before its cell runs, must show a picture or a text that tells the
        student to run the cell, and never the widget's repr."""
        problems = []
        for d in self.dashboards:
            shown = [o for o in self.before_run if o.cell == d.cell]
            if not shown:
                problems.append(f"cell {d.cell}: shows nothing before it runs")
            elif any(o.is_widget_repr for o in shown):
                text = next(o.text for o in shown if o.is_widget_repr)
                problems.append(f"cell {d.cell}: shows the widget repr {text[:70]!r}")
            elif not any(o.mime.startswith("image/") or re.search(r"\brun", o.text, re.I) for o in shown):
                problems.append(f"cell {d.cell}: shows {shown[0].text[:70]!r}, no picture and no word of "
                                "running the cell")
        return problems


def _watch(page: Page, run: LabRun) -> None:
    def leaves_loopback(url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOOPBACK:
            run.foreign_requests.append(url)

    page.on("request", lambda request: leaves_loopback(request.url))
    page.on("websocket", lambda socket: leaves_loopback(socket.url))
    page.on("pageerror", lambda exc: run.page_errors.append(str(exc)))
    page.on("console", lambda msg: run.console_errors.append(msg.text) if msg.type == "error" else None)


def _cells_with_outputs(path: Path) -> list[int]:
    """Indexes of the cells saved with at least one output (what a student sees on opening)."""
    cells = json.loads(path.read_text())["cells"]
    return [i for i, cell in enumerate(cells) if cell.get("outputs")]


def _show_file_browser(page: Page) -> bool:
    """A student works with the file browser open; make sure it is, as the layout check needs."""
    browser = page.locator("#filebrowser")
    if not browser.is_visible():
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="filebrowser"]').click()
        browser.wait_for(state="visible")
    return browser.is_visible()


class LabDriver:
    """One lab in a browser context of its own. `start` opens it and starts Restart Kernel and
    Run All; `finish` waits for the run, then drives the dashboards and shuts the kernel down.
    Two labs can run at once between the two (their kernels are separate processes)."""

    def __init__(self, lab: JupyterLab, browser: Browser, notebook: str, shots: Path) -> None:
        self.lab, self.browser, self.notebook, self.shots = lab, browser, notebook, shots
        self.run = LabRun(notebook)
        self.started = time.monotonic()
        self.failure: BaseException | None = None

    def start(self) -> None:
        run = self.run
        run.load_average = os.getloadavg()[0]
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        _watch(self.page, run)
        dashboards.install(self.page)
        self.nb = Notebook(self.page, OPEN_TIMEOUT_MS)
        try:
            self.nb.open(self.lab.notebook_url(self.notebook, workspace=f"lab-{Path(self.notebook).stem}"))
            run.file_browser_open = _show_file_browser(self.page)
            self.nb.wait_outputs_shown(_cells_with_outputs(self.lab.root / self.notebook))
            run.before_run = self.nb.outputs()
            run.seconds["open"] = time.monotonic() - self.started
            self.run_started = time.monotonic()
            self.nb.start_restart_and_run_all()
        except BaseException as exc:  # noqa: BLE001 - raised by `finish`, in this lab's own tests
            self.failure = exc

    def wait_run(self) -> None:
        """Wait until Run All has finished (a failure is kept for `finish` to raise)."""
        if self.failure is None and "run_all" not in self.run.seconds:
            try:
                self.nb.wait_run_done(RUN_TIMEOUT_MS)
                self.run.seconds["run_all"] = time.monotonic() - self.run_started
            except BaseException as exc:  # noqa: BLE001 - as in `start`
                self.failure = exc

    def finish(self) -> LabRun:
        run, page, nb = self.run, self.page, self.nb
        stem = Path(self.notebook).stem
        try:
            self.wait_run()
            if self.failure is not None:
                raise self.failure
            run.errors = nb.error_outputs()
            run.dashboards = dashboards.find(page)
            for d in run.dashboards:
                dashboards.show(page, d)
                run.clipped += [dict(p, dashboard=d.dashboard) for p in dashboards.clipped(page, d)]
                run.plots += [dict(p, dashboard=d.dashboard) for p in dashboards.plot_sizes(page, d)]
                run.screenshots.append(self._screenshot(f"{stem}-dashboard{d.dashboard}.png"))

            mark = time.monotonic()
            run.moves = dashboards.move_all(page, run.dashboards, CHANGE_TIMEOUT_MS)
            run.seconds["controls"] = time.monotonic() - mark
            # Sections opened to reach controls (Accordion, Tab) are laid out now: look again.
            seen = {(p["dashboard"], p["kind"], p["name"]) for p in run.clipped}
            for d in run.dashboards:
                dashboards.show(page, d)
                run.clipped += [dict(p, dashboard=d.dashboard) for p in dashboards.clipped(page, d)
                                if (d.dashboard, p["kind"], p["name"]) not in seen]
            # The other screen the issue names: a 1920x1080 desktop (wider columns side by side).
            page.set_viewport_size(WIDE_VIEWPORT)
            for d in run.dashboards:
                dashboards.show(page, d)
                run.clipped_wide += [dict(p, dashboard=d.dashboard) for p in dashboards.clipped(page, d)]
                run.plots_wide += [dict(p, dashboard=d.dashboard) for p in dashboards.plot_sizes(page, d)]
            if run.dashboards:
                run.screenshots.append(self._screenshot(f"{stem}-1920.png"))
            page.set_viewport_size(VIEWPORT)
            # A callback's traceback lands in the dashboard's Output widget.
            run.errors += [e for e in nb.error_outputs() if e not in run.errors]
            run.widget_failures = [o for o in nb.outputs() if WIDGET_FAILURE.search(o.text)]
            run.screenshots.append(self._screenshot(f"{stem}.png"))
        finally:
            run.seconds["total"] = time.monotonic() - self.started
            self.context.close()
            run.leftovers = _shut_down(self.lab, self.notebook)
        return run

    def _screenshot(self, name: str) -> str:
        self.page.screenshot(path=str(self.shots / name))
        return name


def _shut_down(lab: JupyterLab, notebook: str) -> list[LabkitProcess]:
    """Shut the lab's kernel down as JupyterLab does (File > Shut Down, or closing the server);
    return the labkit processes it started that outlive it (they are then stopped)."""
    try:
        session_id, kernel_id = lab.session(notebook)
    except LookupError:
        return []
    kernel_pid = lab.kernel_pid(kernel_id)
    started = labkit_descendants(kernel_pid) if kernel_pid else []
    lab.api("DELETE", f"sessions/{session_id}")
    leftovers = wait_gone(started, SHUTDOWN_TIMEOUT_S)
    stop(leftovers)
    return leftovers
