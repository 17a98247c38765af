"""The core Kubernetes kinds (apps/v1 Deployment, v1 Service, v1 ServiceAccount, autoscaling/v2
HorizontalPodAutoscaler): models and local controllers.

Importing this package registers the kinds with labkit.manifests and their controllers with
labkit.cluster; labkit.components lists it so that happens on first use.
"""

from labkit.core import deployment, hpa_controller, service, serviceaccount  # noqa: F401  (registration side effects)
from labkit.core.images import register_image
from labkit.core.models import Deployment, Service, ServiceAccount

__all__ = ["Deployment", "Service", "ServiceAccount", "register_image"]
