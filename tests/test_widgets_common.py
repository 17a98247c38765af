"""What every dashboard shares (labkit.widgets.common), checked on each of them."""

from __future__ import annotations

import base64
import re

import ipywidgets as widgets
import pytest

from labkit.widgets.autoscaling import autoscaling_dashboard
from labkit.widgets.common import (
    COLUMN_MARGIN_PX,
    COLUMN_WIDTH_PX,
    MIN_TRACK_PX,
    OUTPUT_WIDTH_PX,
    READOUT_PX,
    Dashboard,
    description_width_px,
    html_to_text,
    label_width_px,
    new_figure,
)
from labkit.widgets.dataflow import dataflow_dashboard
from labkit.widgets.eventing import delivery_dashboard
from labkit.widgets.mesh import mesh_dashboard
from labkit.widgets.serverless import serverless_dashboard

SMALL_RUNS = [
    (autoscaling_dashboard, {"duration": 400.0}),
    (dataflow_dashboard, {"duration": 600.0}),
    (delivery_dashboard, {"events": 3000}),
    (mesh_dashboard, {"duration": 10.0}),
    (serverless_dashboard, {"max_requests": 20_000}),
]


@pytest.mark.parametrize(("factory", "kwargs"), SMALL_RUNS, ids=[f.__name__ for f, _ in SMALL_RUNS])
def test_sliders_do_not_rerun_while_dragging(headless_dashboard, factory, kwargs):
    dash = headless_dashboard(factory, **kwargs)
    sliders = [c for c in dash.controls.values() if hasattr(c, "continuous_update")]
    assert sliders and all(not c.continuous_update for c in sliders)



# --- laptop width: what can be checked without a browser (tests/browser/ measures the rest) ---

SLIDERS = (widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider, widgets.SelectionSlider)


def _readouts(control: widgets.Widget) -> list[str]:
    """The texts a slider's readout can show at its ends and at its value."""
    if isinstance(control, widgets.SelectionSlider):
        return [str(label) for label in control.options]
    if isinstance(control, widgets.FloatLogSlider):
        values = [control.base ** control.min, control.base ** control.max, control.value]
    else:
        values = [control.min, control.max, control.value]
    return [format(value, control.readout_format) for value in values]


def _columns(dash):
    controls_box = dash.widget.children[0]
    return list(controls_box.children)


@pytest.mark.parametrize(("factory", "kwargs"), SMALL_RUNS, ids=[f.__name__ for f, _ in SMALL_RUNS])
def test_two_columns_and_the_figure_fit_a_laptops_output(headless_dashboard, factory, kwargs):
    dash = headless_dashboard(factory, **kwargs)
    assert 2 * (COLUMN_WIDTH_PX + COLUMN_MARGIN_PX) <= OUTPUT_WIDTH_PX
    for column in _columns(dash):
        assert column.layout.width == f"{COLUMN_WIDTH_PX}px"
    width_px = dash.figure.get_figwidth() * dash.figure.dpi
    assert width_px <= OUTPUT_WIDTH_PX  # shown at natural size, not shrunk
    assert dash.image.layout.width == f"{width_px:.0f}px" and dash.image.layout.max_width == "100%"


@pytest.mark.parametrize(("factory", "kwargs"), SMALL_RUNS, ids=[f.__name__ for f, _ in SMALL_RUNS])
def test_labels_readouts_and_choices_are_not_cut(headless_dashboard, factory, kwargs):
    dash = headless_dashboard(factory, **kwargs)
    for name, control in dash.controls.items():
        if isinstance(control, widgets.Checkbox):
            continue
        label = float(control.style.description_width.removesuffix("px"))
        assert label >= label_width_px(control.description) + 8, f"{name}: label {control.description!r} is cut"
        room = COLUMN_WIDTH_PX - label
        if isinstance(control, SLIDERS):
            assert room - READOUT_PX - 8 >= MIN_TRACK_PX, f"{name}: slider track too short"
            for text in _readouts(control):
                assert label_width_px(text) <= READOUT_PX - 4, f"{name}: readout {text!r} is cut"
        if isinstance(control, widgets.Dropdown):
            for text in control._options_labels:
                assert label_width_px(text) + 30 <= room, f"{name}: choice {text!r} is cut"  # 30: the arrow


def test_description_width_fits_the_longest_label():
    assert description_width_px(["a", "http1MaxPendingRequests (0=∞)"]) >= label_width_px("http1MaxPendingRequests (0=∞)")
    assert label_width_px("WWWW") > label_width_px("iiii")  # measured, not counted


def test_every_control_is_placed_once():
    class Tiny(Dashboard):
        def compute(self, settings):
            return settings["n"]

        def summary_html(self):
            return self.table([("n", str(self.result))])

        def draw(self):
            return new_figure(2.0)

    with pytest.raises(ValueError, match=r"missing \['m'\].*placed twice \['n'\]"):
        Tiny({"n": widgets.IntSlider(), "m": widgets.IntSlider()}, sections={"a": ["n"], "b": ["n"]})
    with pytest.raises(ValueError, match=r"folded titles that are not sections \['c'\]"):
        Tiny({"n": widgets.IntSlider()}, sections={"a": ["n"]}, folded=["c"])
    tiny = Tiny({"n": widgets.IntSlider(value=3)}, sections={"a": ["n"]}, folded=["a"])
    assert isinstance(_columns(tiny)[0], widgets.Accordion) and tiny.result == 3


# --- before running: a readable fallback next to the widget view ---------------------------

@pytest.mark.parametrize(("factory", "kwargs"), SMALL_RUNS, ids=[f.__name__ for f, _ in SMALL_RUNS])
def test_fallback_says_what_it_shows_and_to_run_the_cell(headless_dashboard, factory, kwargs):
    dash = headless_dashboard(factory, **kwargs)
    bundle = dash._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    text = data["text/plain"]
    assert text.startswith(f"{dash.title}: {dash.about}") and dash.about
    assert "Run this cell to make the dashboard live" in text
    assert "HBox(" not in text and "VBox(" not in text
    first_row = html_to_text(dash.summary.value).splitlines()[0]
    assert first_row in text and ": " in first_row  # the summary's numbers, as text
    # the picture as it was run, in the HTML fallback, is the PNG the Image widget shows
    picture = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", data["text/html"])
    assert picture and base64.b64decode(picture[1]) == dash.png == dash.image.value
    assert dash.png.startswith(b"\x89PNG\r\n\x1a\n")
    # display(dash.widget), as lab 06 does, carries the same fallback
    widget_data = dash.widget._repr_mimebundle_()
    widget_data = widget_data[0] if isinstance(widget_data, tuple) else widget_data
    assert widget_data["text/plain"] == text


@pytest.mark.parametrize(("factory", "kwargs"), SMALL_RUNS, ids=[f.__name__ for f, _ in SMALL_RUNS])
def test_fallback_text_is_deterministic_and_follows_the_settings(headless_dashboard, factory, kwargs):
    one, two = headless_dashboard(factory, **kwargs), headless_dashboard(factory, **kwargs)
    assert one.fallback()["text/plain"] == two.fallback()["text/plain"]
    name, control = next((n, c) for n, c in one.controls.items() if isinstance(c, (widgets.IntSlider, widgets.FloatSlider)))
    control.value = control.max if control.value != control.max else control.min
    assert f"{name}={control.value:.4g}" in one.fallback()["text/plain"]
    assert one.fallback()["text/plain"] != two.fallback()["text/plain"]
