"""Registers Flagger's Canary and MetricTemplate kinds, their controllers and the load tester image.

`labkit.manifests.COMPONENTS` names this module, so the first manifest load imports it.
"""

from __future__ import annotations

from labkit.cluster import register_extension
from labkit.core.controller import register_controller
from labkit.core.images import register_image
from labkit.flagger.controller import CanaryController, MetricTemplateController
from labkit.flagger.models import API_VERSION, Canary, MetricTemplate
from labkit.flagger.targets import KeepFlaggerFields
from labkit.manifests import register_kind
from labkit.net import python_command

register_kind(API_VERSION, "Canary", Canary)
register_kind(API_VERSION, "MetricTemplate", MetricTemplate)
register_controller(API_VERSION, "Canary", CanaryController)
register_controller(API_VERSION, "MetricTemplate", MetricTemplateController)
register_image("labkit/flagger-loadtester", lambda: python_command("labkit.flagger.loadtester"))
register_image("ghcr.io/fluxcd/flagger-loadtester", lambda: python_command("labkit.flagger.loadtester"))
register_extension("flagger", KeepFlaggerFields)
