"""Registers Knative Serving with labkit: the Service kind, its controller.

`labkit.components` names this module, so the first manifest load imports it.
"""

from __future__ import annotations

from labkit.core.controller import register_controller
from labkit.manifests import register_kind
from labkit.serving.models import API_VERSION, KnativeService
from labkit.serving.service import KnativeServiceController

register_kind(API_VERSION, "Service", KnativeService)
register_controller(API_VERSION, "Service", KnativeServiceController)
