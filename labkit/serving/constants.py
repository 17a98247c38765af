"""Knative Serving's fixed numbers, in one place for the live components and the simulator.

These are constants in Knative's code, not settings of a ConfigMap (the settings live in
`labkit.serving.autoscaler_config`). Where labkit lets a caller change one (the activator's
queue depth, for a lab that shows overload), the value here is the default.

Followed: knative/serving at commit 98e5ef90aa7033797aa0a61ef97f3ff7e49a3944, per
/work/shared/reference/knative-kpa.md sections 1 and 6.
"""

from __future__ import annotations

__all__ = [
    "ACTIVATOR_QUEUE_DEPTH",
    "HPA_SYNC_SECONDS",
    "QUEUE_PROXY_QUEUE_FACTOR",
    "SCRAPE_SECONDS",
    "TICK_SECONDS",
    "USER_CONTAINER",
]

ACTIVATOR_QUEUE_DEPTH = 10_000
"""Requests the activator buffers per revision before it answers 503 (``breakerQueueDepth`` in
``pkg/activator/net/throttler.go``, formerly ``cmd/activator/main.go``)."""

QUEUE_PROXY_QUEUE_FACTOR = 10
"""The queue-proxy queues this many times ``containerConcurrency`` requests before it answers
503, to give the autoscaler time to react (``buildBreaker`` in ``pkg/queue/sharedmain/main.go``)."""

SCRAPE_SECONDS = 1.0
"""The autoscaler scrapes every pod's queue-proxy (and the activator reports) once a second
(``pkg/autoscaler/metrics/collector.go``, ``stats_scraper.go``)."""

TICK_SECONDS = 2.0
"""The decider runs every 2 s (``tickInterval`` in ``pkg/autoscaler/scaling/multiscaler.go``;
hard-coded: a ``tick-interval`` ConfigMap key is ignored)."""

HPA_SYNC_SECONDS = 15.0
"""Kubernetes' HorizontalPodAutoscaler sync period (kube-controller-manager
``--horizontal-pod-autoscaler-sync-period``), used for the ``hpa.autoscaling.knative.dev`` class."""

USER_CONTAINER = "user-container"
"""The name Knative gives a revision's unnamed container (config-defaults
``container-name-template``; ``pkg/apis/serving/v1/revision_defaults.go``)."""
