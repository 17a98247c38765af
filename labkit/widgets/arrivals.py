"""Lab 00's dashboard: one minute of requests arriving at random, at the rate you pick.

The smallest labkit dashboard, meant to be read: a control, a model run per change (`compute`),
a summary and a figure. Every lab's dashboard is built the same way on
:class:`labkit.widgets.common.Dashboard`.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit.sim import Poisson
from labkit.widgets.common import Dashboard, new_figure, slider

__all__ = ["ArrivalsDashboard", "arrivals_dashboard"]

HORIZON_SECONDS = 60.0


class ArrivalsDashboard(Dashboard):
    """Rate -> the arrival times of one seeded minute (``result``, an array of seconds)."""

    title = "Lab 00: one minute of requests"
    about = "requests arriving at random (a Poisson process) during one minute, at the rate you pick."

    def __init__(self, *, seed: int = 0, rate: float = 0.5) -> None:
        self.seed = seed
        controls = {"rate": slider(widgets.FloatSlider, "requests per second", rate, min=0.1, max=5.0, step=0.1)}
        super().__init__(controls, sections={"": ["rate"]})

    def compute(self, settings: dict[str, Any]) -> np.ndarray:
        return Poisson(settings["rate"]).arrival_times(seed=self.seed, horizon=HORIZON_SECONDS)

    def summary_html(self) -> str:
        gaps = np.diff(self.result)
        return self.table([
            ("requests in the minute", f"{len(self.result)}"),
            ("longest gap between two", f"{gaps.max():.1f} s" if gaps.size else "-"),
        ])

    def draw(self) -> Figure:
        figure = new_figure(1.6, bottom=0.32, top=0.82)
        ax = figure.subplots()
        ax.eventplot(self.result)
        ax.set(xlim=(0, HORIZON_SECONDS), xlabel="seconds", yticks=[],
               title=f"{len(self.result)} requests in one minute at {self.controls['rate'].value:g} req/s")
        return figure


def arrivals_dashboard(*, seed: int = 0, rate: float = 0.5) -> ArrivalsDashboard:
    """The dashboard with its first run done."""
    return ArrivalsDashboard(seed=seed, rate=rate)
