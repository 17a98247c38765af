"""Checks for labs/00_welcome.ipynb."""

from __future__ import annotations

from labkit.grading.checks import check_close


def check_busy_instances(answer: object, *, arrival_rate: float, service_time: float) -> None:
    """Warm-up: Little's law, L = lambda * W.

    On average, ``arrival_rate * service_time`` requests are in service at once, so a
    platform that gives each request its own instance keeps that many instances busy.
    Lab 01's simulator reports the same quantity as ``avg_running_count``.
    """
    check_close(
        "busy instances", answer, arrival_rate * service_time, rel_tol=0.01,
        hint="requests arriving per second, times seconds each one stays, "
             "is how many are inside at once (Little's law). Watch the units: ms vs s.",
    )
