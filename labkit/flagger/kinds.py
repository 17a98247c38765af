"""Registers Flagger's Canary and MetricTemplate kinds, their controllers.

`labkit.components` names this module, so the first manifest load imports it.
"""

from __future__ import annotations

from labkit.cluster import register_extension
from labkit.core.controller import register_controller
from labkit.flagger.controller import CanaryController, MetricTemplateController
from labkit.flagger.models import API_VERSION, Canary, MetricTemplate
from labkit.flagger.targets import KeepFlaggerFields
from labkit.manifests import register_kind

register_kind(API_VERSION, "Canary", Canary)
register_kind(API_VERSION, "MetricTemplate", MetricTemplate)
register_controller(API_VERSION, "Canary", CanaryController)
register_controller(API_VERSION, "MetricTemplate", MetricTemplateController)
register_extension("flagger", KeepFlaggerFields)
