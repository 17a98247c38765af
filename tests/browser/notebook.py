"""Drive one notebook in JupyterLab as a student does: open it, Restart Kernel and Run All, read
what it shows. Selectors are JupyterLab 4.6 / ipywidgets 8.1 DOM (pyproject's lower bounds),
not a public API: a major upgrade may need them changed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

PANEL = ".jp-NotebookPanel"
CELLS = f"{PANEL} .jp-Notebook .jp-Cell"
# A widget's default text/plain is its repr: what a student sees before the cell runs unless
# the dashboard gives a readable fallback (issue 11: "HBox(children=(VBox(children=(Dropdown(...").
WIDGET_REPR = re.compile(r"\b\w+\((children|value|description|options)=")
MENU_ATTEMPTS = 3
OUTPUTS_SHOWN_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Output:
    cell: int
    mime: str
    text: str

    @property
    def is_widget_repr(self) -> bool:
        return bool(WIDGET_REPR.search(self.text))


class Notebook:
    """One notebook open in its own workspace of a JupyterLab page."""

    def __init__(self, page: Page, timeout_ms: float) -> None:
        self.page = page
        self.timeout_ms = timeout_ms

    def open(self, url: str) -> None:
        self.page.goto(url)
        # Exactly one notebook: a second panel would mean a restored workspace (see server.py).
        expect(self.page.locator(PANEL)).to_have_count(1, timeout=self.timeout_ms)
        self.page.locator(CELLS).first.wait_for(timeout=self.timeout_ms)
        self.wait_idle()

    def wait_idle(self) -> None:
        """The kernel is connected (its name shows) and idle."""
        self.page.wait_for_function(
            """(panel) => {
                const p = document.querySelector(panel);
                const name = p && p.querySelector('.jp-Toolbar-kernelName');
                const status = p && p.querySelector('.jp-Notebook-ExecutionIndicator');
                return name && !/No Kernel/.test(name.textContent)
                    && status && status.dataset.status === 'idle';
            }""", arg=PANEL, timeout=self.timeout_ms, polling=100)

    def menu(self, top: str, item: str, done: str) -> None:
        """Click menu `top` > `item`, then wait for `done` (a selector) to appear.

        A Lumino menu item fires on mouseup only if hovering already made it active; on a busy
        page the hover can be missed and the click does nothing (about 1 in 10 here), so hover,
        wait for the active mark, click, and retry the whole gesture if `done` never shows.
        """
        for attempt in range(1, MENU_ATTEMPTS + 1):
            self.page.keyboard.press("Escape")  # close whatever menu a failed attempt left open
            self.page.locator(".lm-MenuBar-item", has_text=re.compile(f"^{re.escape(top)}$")).click()
            entry = self.page.locator(".lm-Menu .lm-Menu-item",
                                      has=self.page.locator(".lm-Menu-itemLabel",
                                                            has_text=re.compile(f"^{re.escape(item)}$")))
            entry.hover()
            try:
                expect(entry).to_have_class(re.compile(r"lm-mod-active"), timeout=5000)
                entry.click()
                self.page.locator(done).first.wait_for(timeout=10000)
                return
            except (AssertionError, PlaywrightTimeout):
                if attempt == MENU_ATTEMPTS:
                    raise

    def _watch_prompts(self) -> None:
        """Note in the page when any cell becomes queued/running ([*]:), so a run that finishes
        between two polls is still seen to have started."""
        self.page.evaluate(
            """(cells) => {
                window.__labkitRunStarted = false;
                const seen = () => Array.from(document.querySelectorAll(cells + ' .jp-InputPrompt'))
                    .some(p => p.textContent.includes('[*]'));
                const observer = new MutationObserver(() => {
                    if (seen()) { window.__labkitRunStarted = true; observer.disconnect(); }
                });
                observer.observe(document.querySelector('.jp-NotebookPanel'),
                                 {subtree: true, childList: true, characterData: true});
            }""", CELLS)

    def start_restart_and_run_all(self) -> None:
        """Kernel > Restart Kernel and Run All Cells, returning once a cell is queued."""
        self._watch_prompts()
        self.menu("Kernel", "Restart Kernel and Run All Cells…", ".jp-Dialog")
        self.page.locator(".jp-Dialog button.jp-mod-accept").click()
        self.page.wait_for_function("() => window.__labkitRunStarted === true", timeout=self.timeout_ms,
                                    polling=100)

    def run_all(self) -> None:
        """Run > Run All Cells, returning once the first cell is queued (not when all are done)."""
        self._watch_prompts()
        self.page.locator(CELLS).first.click()
        self.menu("Run", "Run All Cells", ".jp-InputPrompt:has-text('[*]')")

    def wait_run_done(self, run_timeout_ms: float) -> None:
        """No cell queued or running and the kernel idle (a failed cell aborts the rest)."""
        self.page.wait_for_function(
            """(cells) => {
                const busy = Array.from(document.querySelectorAll(cells + ' .jp-InputPrompt'))
                    .some(p => p.textContent.includes('[*]'));
                const status = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
                return !busy && status && status.dataset.status === 'idle';
            }""", arg=CELLS, timeout=run_timeout_ms, polling=250)

    def restart_kernel(self) -> None:
        self.menu("Kernel", "Restart Kernel…", ".jp-Dialog")
        self.page.locator(".jp-Dialog button.jp-mod-accept").click()
        expect(self.page.locator(".jp-Dialog")).to_have_count(0, timeout=self.timeout_ms)
        self.wait_idle()

    def wait_outputs_shown(self, cells: list[int]) -> None:
        """Wait until each of `cells` (indexes of the cells saved with outputs) shows one.

        JupyterLab renders saved outputs asynchronously (a widget view first waits for the widget
        manager, then falls back to another mime type), so an output read right after the kernel
        connects can still be missing on a loaded machine. A cell that never shows one is left
        for the caller's checks to report."""
        try:
            self.page.wait_for_function(
                """([cells, wanted]) => {
                    const all = document.querySelectorAll(cells);
                    return wanted.every(i => all[i] && Array.from(all[i].querySelectorAll(
                        '.jp-Cell-outputArea .jp-OutputArea-output')).some(o => o.textContent.trim()
                        || o.querySelector('img, svg, canvas')));
                }""", arg=[CELLS, cells], timeout=OUTPUTS_SHOWN_TIMEOUT_MS, polling=250)
        except PlaywrightTimeout:
            pass

    def outputs(self) -> list[Output]:
        """Every output of every cell (textContent: offscreen cells are content-visibility:auto,
        and innerText would be empty for them)."""
        found = self.page.evaluate(
            """(cells) => Array.from(document.querySelectorAll(cells)).flatMap((cell, i) =>
                Array.from(cell.querySelectorAll(':scope .jp-Cell-outputArea .jp-OutputArea-output'))
                    .filter(o => !o.parentElement.closest('.widget-output'))
                    .map(o => [i, o.getAttribute('data-mime-type') || '', o.textContent]))""", CELLS)
        return [Output(cell, mime, text) for cell, mime, text in found]

    def error_outputs(self) -> list[Output]:
        """Tracebacks shown anywhere in the notebook, dashboards' Output widgets included.
        JupyterLab renders an error output as stderr text holding the traceback."""
        found = self.page.evaluate(
            """(cells) => Array.from(document.querySelectorAll(cells)).flatMap((cell, i) =>
                Array.from(cell.querySelectorAll(
                    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
                .map(o => [i, o.textContent]))""", CELLS)
        return [Output(cell, "application/vnd.jupyter.stderr", text) for cell, text in found
                if "Traceback" in text or re.search(r"^\w+(Error|Exception)\b", text, re.M)]
