"""What every labkit dashboard shares: sliders that run on release, and controls -> run -> draw.

A dashboard is thin: a dict of controls, one model run per change, a summary and a figure.
`Dashboard` holds that loop so each topic's dashboard only says how to turn its settings into
a result (`compute`) and how to show it (`summary_html`, `draw`). Notebooks and tests use the
same attributes: ``controls``, ``result``, ``figure``, ``runs``, ``error``, ``widget``.

Two things a student meets in JupyterLab shape this module (issue 11):

- Laptop width. At 1366 px with the file browser open a cell's output is about 1000 px wide
  (measured: 998 px in JupyterLab 4.6). Controls sit in titled columns of `COLUMN_WIDTH_PX` that
  wrap (two side by side there, three at 1920 px); each column's label width comes from its
  longest label, measured in DejaVu Sans, so no label is cut; figures are `FIGURE_WIDTH_IN` wide
  and shown at their natural size, below the controls.
- Before running. JupyterLab does not render a saved widget in a notebook that is not trusted
  (a fresh checkout) and shows another type of the output instead: `_repr_mimebundle_` puts a
  readable text and, in HTML, the figure as it was run, next to the widget view.

The figure goes to an `Image` widget as one PNG rendered here with Agg: IPython's inline display
of a Figure draws it twice (``bbox_inches="tight"``) plus a layout pass, which was most of the
0.4-0.8 s a control change took.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = ["COLUMN_WIDTH_PX", "FIGURE_DPI", "FIGURE_WIDTH_IN", "LABEL_WIDTH", "OUTPUT_WIDTH_PX", "Dashboard",
           "DashboardBox", "description_width_px", "html_to_text", "label_width_px", "new_figure", "render_png",
           "slider"]

LABEL_WIDTH = "150px"
"""Label width of a control made with `slider` before a Dashboard lays it out (kept for callers)."""

OUTPUT_WIDTH_PX = 934
"""What a cell's output gets in JupyterLab 4.6 at 1366 px with the file browser open (measured:
998 px for the output area, 64 of them for the prompt)."""
COLUMN_WIDTH_PX = 450
"""One column of controls; two columns and their margins fit in OUTPUT_WIDTH_PX."""
COLUMN_MARGIN_PX = 14
ACCORDION_PADDING_PX = 30
"""What an Accordion panel's padding and border take from its content's width (measured: a
444-px control had 418 px inside a 450-px folded column in JupyterLab 4.6)."""
FONT_PX = 13
"""ipywidgets' --jp-widgets-font-size (JupyterLab's --jp-ui-font-size1)."""
LABEL_PADDING_PX = 14
"""A label's own right padding and margin in ipywidgets 8's CSS, with a little room to spare."""
READOUT_PX = 64
"""A slider readout's max-width (--jp-widgets-inline-width-short): longer readouts are cut."""
MIN_TRACK_PX = 120
"""The narrowest slider track still easy to drag."""
FIGURE_DPI = 100
FIGURE_RC: dict[RcKeyType, Any] = {"axes.titley": 1.0}
"""A fixed title height: matplotlib's automatic one (titley None) lays out every y axis's tick labels
once more per titled axes on each draw, which was a third of a dashboard's redraw time."""
FIGURE_WIDTH_IN = 9.2
"""920 px at FIGURE_DPI: fits OUTPUT_WIDTH_PX, so a figure is shown at its natural size."""


def slider(kind: type, description: str, value: Any, **kwargs: Any) -> widgets.Widget:
    """A labelled control that only reports when released: each change runs a simulation,
    so dragging must not start one per pixel."""
    return kind(value=value, description=description, continuous_update=False,
                style={"description_width": LABEL_WIDTH}, layout=widgets.Layout(width="420px"), **kwargs)


@functools.lru_cache(maxsize=1024)
def label_width_px(text: str) -> float:
    """Width of `text` in pixels at ipywidgets' font size, in DejaVu Sans: the default sans of
    Linux desktops and wider than Helvetica, Arial or Segoe UI, so a width that fits it fits those."""
    font = FontProperties(family="DejaVu Sans", size=FONT_PX)  # at 72 dpi, points are pixels
    width, _, _ = TextToPath().get_text_width_height_descent(text, font, ismath=False)
    return width


def description_width_px(labels: Sequence[str]) -> int:
    """The description_width that shows the longest of `labels` whole."""
    return int(max((label_width_px(label) for label in labels), default=0) + LABEL_PADDING_PX + 0.999)


def new_figure(height_in: float, **subplots_adjust: float) -> Figure:
    """A figure as wide as a laptop's output area, with a fixed layout (a layout engine would
    cost a second pass on every redraw); `subplots_adjust` sets the margins."""
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(**{"left": 0.07, "right": 0.98, "bottom": 0.16, "top": 0.9, "wspace": 0.3,
                              **subplots_adjust})
    return figure


def render_png(figure: Figure) -> bytes:
    """The figure as PNG, drawn once (fast compression: the bytes only cross the loopback)."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    size = canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    out = io.BytesIO()
    image.save(out, format="png", compress_level=1)
    return out.getvalue()


def html_to_text(markup: str) -> str:
    """A summary's HTML as plain text: table rows as `label: value` lines, tags dropped."""
    text = re.sub(r"</t[dh]>\s*<t[dh][^>]*>", ": ", markup)
    text = re.sub(r"</tr>|<br\s*/?>|</p>|</pre>|</div>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class DashboardBox(widgets.VBox):
    """The displayed dashboard: a VBox whose display data also carries a readable fallback, so
    `display(dash.widget)` reads as well as `dash` where the widget cannot be rendered."""

    def __init__(self, children: Sequence[widgets.Widget], fallback: Callable[[], dict[str, str]], **kwargs: Any):
        super().__init__(children, **kwargs)
        self._fallback = fallback

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):  # (data, metadata)
            data, metadata = data
            return {**data, **self._fallback()}, metadata
        return {**(data or {}), **self._fallback()}


class Dashboard:
    """Controls -> `compute` -> summary table and figure; subclasses fill in those three.

    ``result`` is whatever `compute` returned for the latest valid settings; ``error`` says
    why the latest settings could not run (shown in the dashboard, since an exception raised
    in a widget callback only reaches a log), else None. ``image`` shows the figure, ``png``
    is its latest rendering. See /work/notes/dashboard-api.md for `sections` and `folded`.
    """

    title = "labkit dashboard"
    """Its name in the fallback text, e.g. "Lab 04: the mesh dashboard"."""
    about = ""
    """One sentence for the fallback text: what the dashboard shows."""

    def __init__(self, controls: dict[str, widgets.Widget], settings: Mapping[str, Any] | None = None, *,
                 sections: Mapping[str, Sequence[str]] | None = None, folded: Sequence[str] = ()) -> None:
        self.controls = controls
        self.summary = widgets.HTML(layout=widgets.Layout(margin="0 0 0 8px"))
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.result: Any = None
        self.figure: Figure | None = None
        self.png = b""
        self.runs = 0
        self.error: str | None = None
        self._holding = False
        # Without sections the controls keep the sizes their dashboard gave them (as before sections).
        columns = self._columns(sections, folded) if sections else [widgets.VBox(list(controls.values()))]
        wrap = widgets.Layout(display="flex", flex_flow="row wrap", align_items="flex-start", width="100%")
        self.widget = DashboardBox([widgets.Box(columns, layout=wrap),
                                    widgets.Box([self.image, self.summary], layout=wrap)], self.fallback)
        for control in controls.values():
            control.observe(self._changed, names="value")
        self.set(**(settings or {}))

    def _columns(self, sections: Mapping[str, Sequence[str]], folded: Sequence[str]) -> list[widgets.Widget]:
        """One column per section, its labels as wide as its longest; folded ones in an Accordion."""
        placed = [name for names in sections.values() for name in names]
        missing = [name for name in self.controls if name not in placed]
        unknown = sorted(set(placed) - set(self.controls))
        twice = sorted({name for name in placed if placed.count(name) > 1})
        not_sections = sorted(set(folded) - set(sections))
        if missing or unknown or twice or not_sections:
            raise ValueError(f"sections: controls missing {missing}, unknown {unknown}, placed twice {twice}; "
                             f"folded titles that are not sections {not_sections}")
        columns: list[widgets.Widget] = []
        for title, names in sections.items():
            controls = [self.controls[name] for name in names]
            width = description_width_px([c.description for c in controls if not isinstance(c, widgets.Checkbox)])
            # ipywidgets gives each control a 2-px margin on both sides: a 100% control would
            # overflow its column by those margins and be cut at the right edge; an Accordion's
            # panel pads its content too.
            room = COLUMN_WIDTH_PX - 6 - (ACCORDION_PADDING_PX if title in folded else 0)
            for control in controls:
                if hasattr(control.style, "description_width"):
                    control.style.description_width = f"{width}px"
                control.layout.width = f"{room}px"
            layout = widgets.Layout(width=f"{COLUMN_WIDTH_PX}px", margin=f"0 {COLUMN_MARGIN_PX}px 8px 0")
            if title in folded:
                columns.append(widgets.Accordion([widgets.VBox(controls)], titles=(title,), layout=layout))
            else:
                heading = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
                columns.append(widgets.VBox(heading + controls, layout=layout))
        return columns

    def settings(self) -> dict[str, Any]:
        """The current control values by name."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Set several controls at once and run once (moving each would run each time)."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise KeyError(f"unknown control(s) {unknown}; the controls are {sorted(self.controls)}")
        self._holding = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._holding = False
        self.update()

    def _changed(self, change: Mapping[str, Any]) -> None:
        if not self._holding:
            self.update()

    def update(self) -> None:
        """Run the model for the current settings and redraw (or show why it cannot run)."""
        try:
            result = self.compute(self.settings())
        except (OSError, ValueError, TypeError) as exc:
            self.error = str(exc)
            self.summary.value = f"<b style='color:#b00'>{html.escape(self.error)}</b>"
            return
        self.error = None
        self.result = result
        self.runs += 1
        self.summary.value = self.summary_html()
        with matplotlib.rc_context(FIGURE_RC):
            self.figure = self.draw()
        self.png = render_png(self.figure) if self.figure is not None else b""
        self.image.value = self.png
        self.image.layout.width = f"{self.figure.get_figwidth() * self.figure.dpi:.0f}px" if self.figure else "0px"

    def compute(self, settings: dict[str, Any]) -> Any:
        raise NotImplementedError

    def summary_html(self) -> str:
        raise NotImplementedError

    def summary_text(self) -> str:
        """The summary as plain text, for the fallback."""
        return html_to_text(self.summary.value)

    def draw(self) -> Figure:
        raise NotImplementedError

    @staticmethod
    def table(rows: list[tuple[str, str]]) -> str:
        """Rows of (label, value) as a small HTML table."""
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'><b>{html.escape(v)}</b></td></tr>"
                        for k, v in rows)
        return f"<table>{cells}</table>"

    def fallback(self) -> dict[str, str]:
        """What a notebook shows where the live widget cannot be drawn: text/plain (deterministic for
        a seed: nbval compares it) and text/html with the figure as it was run."""
        about = f"{self.title}: {self.about}".rstrip(": ")
        settings = ", ".join(f"{name}={_format(value)}" for name, value in self.settings().items())
        live = "Run this cell to make the dashboard live (its controls work only with a running kernel)."
        text = f"{about}\n{live}\nSettings: {settings}\n{self.summary_text()}"
        picture = (f"<img alt='the dashboard figure as it was run' style='max-width:100%' "
                   f"src='data:image/png;base64,{base64.b64encode(self.png).decode()}'>") if self.png else ""
        markup = (f"<div><p><b>{html.escape(self.title)}</b>: {html.escape(self.about)}<br><i>{html.escape(live)}"
                  f"</i></p><p>Settings: {html.escape(settings)}</p>{picture}{self.summary.value}</div>")
        return {"text/plain": text, "text/html": markup}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
