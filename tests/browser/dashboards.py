"""Move every control of every dashboard in the open notebook, as a student would, and time
how long the dashboard takes to show the result (the page side is dashboards.js)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

SCRIPT = Path(__file__).with_name("dashboards.js")
ATTEMPTS = 3
"""A step may legitimately change nothing (a rate far below the limit it sets): move further."""
RENDER_GRACE_MS = 1000
"""When the kernel's idle status reaches the page, what it sent before (outputs, widget state)
has been handled; this margin only covers a renderer still at work on a loaded machine."""
SILENT_MS = 3000
ANSWERED = "r.changed || r.settled"
SILENT = f"(!r.busySeen && r.sinceArmMs > {SILENT_MS})"
"""A gesture that changed no widget value (a greyed-out control, a slider held at its end by
rounding) sends the kernel nothing, so no answer will come: the kernel, idle after Run All,
goes busy within milliseconds of a message, and 3 s without it means none was sent."""


@dataclass
class Move:
    """One control moved: did the dashboard change, and how long it took (seconds)."""

    dashboard: int
    cell: int
    control: str
    kind: str
    changed: bool = False
    response_s: float | None = None
    first_change_s: float | None = None
    attempts: int = 0
    note: str = ""
    seconds: float = 0.0
    """Wall time of the whole try: gestures, answers, putting the control back."""


@dataclass
class Dashboard:
    dashboard: int
    cell: int
    controls: list[dict[str, str]] = field(default_factory=list)


def install(page: Page) -> None:
    """Load the page helpers before JupyterLab's own scripts, on every navigation."""
    page.add_init_script(path=str(SCRIPT))


def find(page: Page) -> list[Dashboard]:
    """Number the dashboards now rendered and return them with their controls."""
    return [Dashboard(**d) for d in page.evaluate("() => window.__labkit.mark()")]


def show(page: Page, dashboard: Dashboard) -> None:
    """Scroll the dashboard into view and wait until it is painted, as a student sees it: what
    is measured or photographed before that may be a cell JupyterLab has not drawn."""
    page.locator(f'[data-labkit-dashboard="{dashboard.dashboard}"]').scroll_into_view_if_needed()
    page.evaluate("(d) => window.__labkit.painted(d)", dashboard.dashboard)


def clipped(page: Page, dashboard: Dashboard) -> list[dict[str, Any]]:
    return page.evaluate("(d) => window.__labkit.clipped(d)", dashboard.dashboard)


def plot_sizes(page: Page, dashboard: Dashboard) -> list[dict[str, int]]:
    return page.evaluate("(d) => window.__labkit.plots(d)", dashboard.dashboard)


def _control(page: Page, control_id: str) -> Locator:
    return page.locator(f'[data-labkit-control="{control_id}"]')


def _act(page: Page, kind: str, control: Locator, attempt: int) -> str:
    """Do one student gesture on a control; say what was done."""
    if kind == "slider":
        handle = control.locator(".noUi-handle").first
        value, top = (handle.get_attribute(a) for a in ("aria-valuenow", "aria-valuemax"))
        at_max = value is not None and top is not None and float(value) >= float(top)
        key = ("ArrowLeft" if at_max else "ArrowRight") if attempt == 0 else ("PageDown" if at_max else "PageUp")
        handle.focus()
        page.keyboard.press(key)
        return f"{key} ({value} -> {handle.get_attribute('aria-valuenow')})"
    if kind in ("dropdown", "select"):
        select = control.locator("select")
        count = select.locator("option").count()
        current = select.evaluate("s => s.selectedIndex")
        index = (current + 1 + attempt) % count
        select.select_option(index=index)
        return f"option {index}"
    if kind == "checkbox":
        control.locator("input[type=checkbox]").click()
        return "click"
    if kind == "toggle-buttons":
        others = control.locator("button:not(.mod-active)")
        others.nth(attempt % others.count()).click()
        return "click another button"
    if kind == "radio":
        others = control.locator("input:not(:checked)")
        others.nth(attempt % others.count()).click()
        return "click another option"
    if kind in ("toggle-button", "button"):
        control.click()
        return "click"
    if kind == "text":
        box = control.locator("input, textarea").first
        box.focus()
        if box.get_attribute("type") == "number":
            page.keyboard.press("ArrowUp")
        else:
            page.keyboard.press("End")
            page.keyboard.type("1")
        page.keyboard.press("Enter")
        return "edit + Enter"
    raise ValueError(f"no gesture for a {kind} control")


def _wait(page: Page, condition: str, timeout_ms: float) -> bool:
    """Wait until `condition` (JavaScript over `r`, the armed reading) holds; False on timeout."""
    try:
        page.wait_for_function(f"() => {{ const r = window.__labkit.reading(); return {condition}; }}",
                               timeout=timeout_ms, polling="raf")
        return True
    except PlaywrightTimeout:
        return False


def move(page: Page, dashboard: Dashboard, control: dict[str, str], timeout_ms: float,
         attempts: range = range(ATTEMPTS)) -> Move:
    """Move `control` until the dashboard shows something else (one gesture per attempt), then
    put it back, so that every control is tried from the same settings (moves that add up can
    leave the model in a state where the next control has no effect, or is refused)."""
    started = time.monotonic()
    result = Move(dashboard.dashboard, dashboard.cell, control["label"], control["kind"])
    locator = _control(page, control["id"])
    page.evaluate("(id) => window.__labkit.reveal(id)", control["id"])
    locator.scroll_into_view_if_needed()
    original = _state(control["kind"], locator)
    gestures = []
    for attempt in attempts:
        result.attempts += 1
        page.evaluate("(d) => window.__labkit.arm(d)", dashboard.dashboard)
        gestures.append(_act(page, control["kind"], locator, attempt))
        result.note = gestures[-1]
        # Changed, or the kernel handled the change and went idle: either way it has answered.
        if not _wait(page, f"{ANSWERED} || {SILENT}", timeout_ms):
            reading = page.evaluate("() => window.__labkit.reading()")
            result.note += f"; no answer within {timeout_ms / 1000:g} s ({reading})"
            continue
        if not _wait(page, "r.changed", RENDER_GRACE_MS):
            if not page.evaluate("() => window.__labkit.reading().busySeen"):
                result.note += "; nothing sent to the kernel"
            continue  # answered, showed nothing new: move further
        # The summary may come before the plot: the response ends when the kernel is idle.
        _wait(page, "r.settled", timeout_ms)
        reading = page.evaluate("() => window.__labkit.reading()")
        result.changed = True
        result.first_change_s = reading["firstMs"] / 1000
        result.response_s = reading["lastMs"] / 1000
        break
    if control["kind"] != "button" and not _restore(page, dashboard, control["kind"], locator, original,
                                                    gestures, timeout_ms):
        result.note += f"; could not put it back to {original}"
    page.evaluate("() => window.__labkit.disarm()")
    result.seconds = time.monotonic() - started
    return result


def _state(kind: str, control: Locator) -> Any:
    """What a control is set to, in a form `_restore` can set again."""
    if kind == "slider":
        return control.locator(".widget-readout").first.text_content()
    if kind in ("dropdown", "select"):
        return control.locator("select").evaluate("s => s.selectedIndex")
    if kind == "checkbox":
        return control.locator("input[type=checkbox]").is_checked()
    if kind == "toggle-buttons":
        return control.locator("button").evaluate_all("bs => bs.findIndex(b => b.classList.contains('mod-active'))")
    if kind == "radio":
        return control.locator("input").evaluate_all("rs => rs.findIndex(r => r.checked)")
    if kind == "text":
        return control.locator("input, textarea").first.input_value()
    return control.evaluate("b => b.classList.contains('mod-active')")  # a (toggle) button


INVERSE = {"ArrowRight": "ArrowLeft", "ArrowLeft": "ArrowRight", "PageUp": "PageDown", "PageDown": "PageUp"}


def _restore(page: Page, dashboard: Dashboard, kind: str, control: Locator, state: Any,
             gestures: list[str], timeout_ms: float) -> bool:
    """Set a control back to `state`, one gesture at a time, each handled by the kernel before
    the next. True if the control shows `state` again."""
    steps: list[Callable[[], object]] = []
    if kind == "slider":
        # The steps back, then (a step clamped at an end is not undone so) the value typed in.
        handle = control.locator(".noUi-handle").first
        keys = [INVERSE[gesture.split()[0]] for gesture in reversed(gestures)]  # "ArrowRight (1 -> 2)"

        def press(key: str) -> None:
            handle.focus()
            page.keyboard.press(key)

        steps += [functools.partial(press, key) for key in keys]
        readout = control.locator(".widget-readout").first
        if readout.get_attribute("contenteditable") == "true":  # not a SelectionSlider's label
            def type_in() -> None:
                readout.click()
                page.keyboard.press("Control+A")
                page.keyboard.type(state)
                page.keyboard.press("Enter")

            steps.append(type_in)
    elif kind in ("dropdown", "select"):
        steps.append(lambda: control.locator("select").select_option(index=state))
    elif kind == "checkbox":
        steps.append(lambda: control.locator("input[type=checkbox]").click())
    elif kind == "toggle-buttons":
        steps.append(lambda: control.locator("button").nth(state).click())
    elif kind == "radio":
        steps.append(lambda: control.locator("input").nth(state).click())
    elif kind == "text":
        def fill() -> None:
            control.locator("input, textarea").first.fill(state)
            page.keyboard.press("Enter")

        steps.append(fill)
    else:
        steps.append(control.click)
    for step in steps:
        if _state(kind, control) == state:
            break
        page.evaluate("(d) => window.__labkit.arm(d)", dashboard.dashboard)
        step()
        _wait(page, f"r.settled || {SILENT}", timeout_ms)
    return _state(kind, control) == state


SWITCHES = ("checkbox", "toggle-button", "toggle-buttons", "dropdown", "radio")
"""Controls that can decide whether others matter at all (no sidecars: no retries)."""


def move_all(page: Page, dashboards: list[Dashboard], timeout_ms: float) -> list[Move]:
    """Move each control one step from the dashboard's own settings. One that changed nothing is
    tried as a student would next: with bigger steps; after switching on, one by one and keeping
    them on, the switches that did change something (no sidecars, no retries); and, if it is
    greyed out, after moving the controls that enable it."""
    moves: list[Move] = []
    for d in dashboards:
        tried = {c["id"]: (move(page, d, c, timeout_ms, range(1)) if not _disabled(page, c)
                           else Move(d.dashboard, d.cell, c["label"], c["kind"], note="disabled"))
                 for c in d.controls}

        def retry(control: dict[str, str], attempts: range, how: str) -> None:
            # B023: called only within this iteration, so the loop's d and tried are the ones meant.
            again = move(page, d, control, timeout_ms, attempts)  # noqa: B023 - this iteration's d and tried, as said above
            again.attempts += tried[control["id"]].attempts  # noqa: B023 - this iteration's d and tried, as said above
            if again.changed:
                again.note += how
            tried[control["id"]] = again  # noqa: B023 - this iteration's d and tried, as said above

        # Bigger steps first, for sliders: a setting rounded by the model (a panic window in whole
        # seconds) shows a change only after a larger move; switching first could leave the
        # dashboard in a state where nothing else matters (a Poisson workload at rate 0: an error).
        for control in [c for c in d.controls if c["kind"] == "slider" and not tried[c["id"]].changed
                        and not _disabled(page, c)]:
            retry(control, range(1, ATTEMPTS), "; moved further")
        switches = [c for c in d.controls if c["kind"] in SWITCHES and tried[c["id"]].changed]
        for switch in switches:  # grows as switched-on features make more switches matter
            # Greyed-out controls wait for the last step, which enables them first.
            still = [c for c in d.controls if not tried[c["id"]].changed and not _disabled(page, c)]
            if not still:
                break
            _switch(page, d, switch, timeout_ms)
            for control in still:
                retry(control, range(1), f"; with {switch['label']!r} switched")
                if tried[control["id"]].changed and control["kind"] in SWITCHES:
                    switches.append(control)
        for control in [c for c in d.controls if not tried[c["id"]].changed]:
            if _disabled(page, control):
                # The control that enables another is usually next to it (maxBatchSize, maxLatency).
                at = d.controls.index(control)
                nearest = sorted((c for c in d.controls if tried[c["id"]].changed),
                                 key=lambda c: abs(d.controls.index(c) - at))
                _enable(page, d, control, nearest, timeout_ms)
            if _disabled(page, control):
                tried[control["id"]].note += "; still disabled after moving every other control"
                continue
            retry(control, range(1, ATTEMPTS), "; moved further after the switches")
        moves += tried.values()
    return moves


def _disabled(page: Page, control: dict[str, str]) -> bool:
    """A control a student cannot move now (e.g. a batcher's maxLatency while maxBatchSize is 1)."""
    return _control(page, control["id"]).evaluate(
        "el => el.matches('[disabled], .mod-disabled') || !!el.querySelector('[disabled]')")


def _enable(page: Page, dashboard: Dashboard, control: dict[str, str], others: list[dict[str, str]],
            timeout_ms: float) -> None:
    """Move the other controls that mattered, one by one and keeping them moved, until `control`
    is enabled, as a student does when a control is greyed out."""
    for other in others:
        _switch(page, dashboard, other, timeout_ms)
        if not _disabled(page, control):
            return


def _switch(page: Page, dashboard: Dashboard, control: dict[str, str], timeout_ms: float) -> None:
    """Switch a control as its first move did, and leave it so."""
    page.evaluate("(id) => window.__labkit.reveal(id)", control["id"])
    page.evaluate("(d) => window.__labkit.arm(d)", dashboard.dashboard)
    _act(page, control["kind"], _control(page, control["id"]), 0)
    _wait(page, f"r.settled || {SILENT}", timeout_ms)
    page.evaluate("() => window.__labkit.disarm()")
