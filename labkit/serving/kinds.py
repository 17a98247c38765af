"""Registers Knative Serving with labkit: the Service kind, its controller, the httpbin image.

`labkit.manifests.COMPONENTS` names this module, so the first manifest load imports it.
"""

from __future__ import annotations

from labkit.core.controller import register_controller
from labkit.core.images import register_image
from labkit.manifests import register_kind
from labkit.net import python_command
from labkit.serving.models import API_VERSION, KnativeService
from labkit.serving.service import KnativeServiceController

register_kind(API_VERSION, "Service", KnativeService)
register_controller(API_VERSION, "Service", KnativeServiceController)
register_image("labkit/httpbin", lambda: python_command("labkit.apps.httpbin"))
