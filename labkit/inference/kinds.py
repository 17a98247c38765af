"""Registers KServe's InferenceService kind, its controller and the ready-made images: the
feature transformer and the model monitor (labkit.quality).

`labkit.manifests.COMPONENTS` names this module, so the first manifest load imports it.
"""

from __future__ import annotations

from labkit.core.controller import register_controller
from labkit.core.images import register_image
from labkit.inference.isvc import InferenceServiceController
from labkit.inference.models import API_VERSION, KIND, InferenceService
from labkit.manifests import register_kind
from labkit.net import python_command

register_kind(API_VERSION, KIND, InferenceService)
register_controller(API_VERSION, KIND, InferenceServiceController)
register_image("labkit/feature-transformer", lambda: python_command("labkit.inference.transformer"))
register_image("labkit/model-monitor", lambda: python_command("labkit.apps.model_monitor"))
