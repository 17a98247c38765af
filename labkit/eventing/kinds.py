"""Registers the eventing kinds, their controllers and the event-display image.

Listed in labkit.manifests.COMPONENTS, so loading any manifest imports it.
"""

from __future__ import annotations

from labkit.core.controller import register_controller
from labkit.core.images import register_image
from labkit.eventing import models
from labkit.eventing.broker_control import BrokerController, TriggerController
from labkit.eventing.channel import ChannelController, SubscriptionController
from labkit.eventing.sources import SourceController
from labkit.manifests import register_kind
from labkit.net import python_command

__all__: list[str] = []

for _model in (models.Broker, models.Trigger, models.Channel, models.InMemoryChannel,
               models.Subscription, models.PingSource, models.DirectorySource):
    register_kind(_model.model_fields["api_version"].default, _model.model_fields["kind"].default,
                  _model)

register_controller("eventing.knative.dev/v1", "Broker", BrokerController)
register_controller("eventing.knative.dev/v1", "Trigger", TriggerController)
register_controller("messaging.knative.dev/v1", "Channel", ChannelController)
register_controller("messaging.knative.dev/v1", "InMemoryChannel", ChannelController)
register_controller("messaging.knative.dev/v1", "Subscription", SubscriptionController)
register_controller("sources.knative.dev/v1", "PingSource", SourceController)
register_controller("sources.labkit.dev/v1alpha1", "DirectorySource", SourceController)

register_image("labkit/event-display", lambda: python_command("labkit.apps.event_display"))
# Knative's own sample image answers the same way, so its manifests run unchanged.
register_image("gcr.io/knative-releases/knative.dev/eventing/cmd/event_display",
               lambda: python_command("labkit.apps.event_display"))
