"""What every labkit dashboard shares: sliders that run on release, and controls -> run -> draw.

A dashboard is thin: a dict of controls, one model run per change, a summary and a figure.
`Dashboard` holds that loop so each topic's dashboard only says how to turn its settings into
a result (`compute`) and how to show it (`summary_html`, `draw`). Notebooks and tests use the
same attributes: ``controls``, ``result``, ``figure``, ``runs``, ``error``, ``widget``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
from IPython.display import clear_output, display
from matplotlib.figure import Figure

__all__ = ["Dashboard", "slider"]

LABEL_WIDTH = "150px"


def slider(kind: type, description: str, value: Any, **kwargs: Any) -> widgets.Widget:
    """A labelled control that only reports when released: each change runs a simulation,
    so dragging must not start one per pixel."""
    return kind(value=value, description=description, continuous_update=False,
                style={"description_width": LABEL_WIDTH}, layout=widgets.Layout(width="420px"), **kwargs)


class Dashboard:
    """Controls -> `compute` -> summary table and figure; subclasses fill in those three.

    ``result`` is whatever `compute` returned for the latest valid settings; ``error`` says
    why the latest settings could not run (shown in the dashboard, since an exception raised
    in a widget callback only reaches a log), else None.
    """

    def __init__(self, controls: dict[str, widgets.Widget], settings: Mapping[str, Any] | None = None) -> None:
        self.controls = controls
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.result: Any = None
        self.figure: Figure | None = None
        self.runs = 0
        self.error: str | None = None
        self._holding = False
        self.widget = widgets.HBox([widgets.VBox(list(controls.values()) + [self.summary]), self.output])
        for control in controls.values():
            control.observe(self._changed, names="value")
        self.set(**(settings or {}))

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
        self.figure = self.draw()
        with self.output:
            clear_output(wait=True)
            display(self.figure)

    def compute(self, settings: dict[str, Any]) -> Any:
        raise NotImplementedError

    def summary_html(self) -> str:
        raise NotImplementedError

    def draw(self) -> Figure:
        raise NotImplementedError

    @staticmethod
    def table(rows: list[tuple[str, str]]) -> str:
        """Rows of (label, value) as a small HTML table."""
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'><b>{html.escape(v)}</b></td></tr>"
                        for k, v in rows)
        return f"<table>{cells}</table>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
