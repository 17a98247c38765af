"""Registers the eventing kinds, their controllers (the event-display image is
a row of labkit.core.images.IMAGES).

Listed in labkit.components, so loading any manifest imports it.
"""

from __future__ import annotations

from labkit.cluster import register_extension
from labkit.core.controller import register_controller
from labkit.eventing import models
from labkit.eventing.binding_models import ContainerSource, SinkBinding
from labkit.eventing.bindings import (
    ContainerSourceController,
    SinkBindingAdmission,
    SinkBindingController,
)
from labkit.eventing.broker_control import BrokerController, TriggerController
from labkit.eventing.channel import ChannelController, SubscriptionController
from labkit.eventing.flow_models import Parallel, Sequence
from labkit.eventing.flows import FlowController
from labkit.eventing.sources import SourceController
from labkit.manifests import register_kind

__all__: list[str] = []

for _model in (models.Broker, models.Trigger, models.Channel, models.InMemoryChannel,
               models.Subscription, models.PingSource, models.DirectorySource,
               Sequence, Parallel, SinkBinding, ContainerSource):
    register_kind(_model.model_fields["api_version"].default, _model.model_fields["kind"].default,
                  _model)

register_controller("eventing.knative.dev/v1", "Broker", BrokerController)
register_controller("eventing.knative.dev/v1", "Trigger", TriggerController)
register_controller("messaging.knative.dev/v1", "Channel", ChannelController)
register_controller("messaging.knative.dev/v1", "InMemoryChannel", ChannelController)
register_controller("messaging.knative.dev/v1", "Subscription", SubscriptionController)
register_controller("sources.knative.dev/v1", "PingSource", SourceController)
register_controller("sources.labkit.dev/v1alpha1", "DirectorySource", SourceController)
register_controller("flows.knative.dev/v1", "Sequence", FlowController)
register_controller("flows.knative.dev/v1", "Parallel", FlowController)
register_controller("sources.knative.dev/v1", "SinkBinding", SinkBindingController)
register_controller("sources.knative.dev/v1", "ContainerSource", ContainerSourceController)
# SinkBinding's mutating webhook: subjects get K_SINK as they are applied.
register_extension("sinkbinding", SinkBindingAdmission)
