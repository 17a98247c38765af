"""Registers KServe's InferenceService kind, and its controller (its ready-made
images, the feature transformer and the model monitor, are rows of labkit.core.images.IMAGES).

`labkit.components` names this module, so the first manifest load imports it.
"""

from __future__ import annotations

from labkit.core.controller import register_controller
from labkit.inference.isvc import InferenceServiceController
from labkit.inference.models import API_VERSION, KIND, InferenceService
from labkit.manifests import register_kind

register_kind(API_VERSION, KIND, InferenceService)
register_controller(API_VERSION, KIND, InferenceServiceController)
