"""The workload Flagger's tutorials roll out, podinfo, as a Deployment; and a version that fails.

Flagger's Istio tutorial (https://docs.flagger.app/tutorials/istio-progressive-delivery) makes
a Canary for a Deployment `podinfo` serving on port 9898 and triggers rollouts by changing its
pod template. labkit runs its httpbin image in podinfo's place (a `/get`, and a `VERSION`
variable that changes the template); the tests and the live Flagger benchmark share this one
builder so they roll out the same thing.

The failing version answers 500 to every path but `/`, its readiness probe's path, so its pod
becomes ready (the rollout starts) and then fails the request-success-rate check.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["FAILING_APP", "failing_command", "podinfo_deployment"]

FAILING_APP = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        code = 200 if self.path == '/' else 500\n"
    "        self.send_response(code); self.send_header('Content-Length', '0'); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n"
)
"""A Python program: 200 on `/` (readiness), 500 elsewhere, on `$PORT`."""


def failing_command() -> list[str]:
    """A container `command` that runs FAILING_APP with this interpreter."""
    return [sys.executable, "-c", FAILING_APP]


def podinfo_deployment(version: str, *, failing: bool = False,
                       namespace: str = "default") -> dict[str, Any]:
    """The `podinfo` Deployment (one replica, label app=podinfo) at `version`; `failing` runs
    FAILING_APP in the container instead of httpbin."""
    container: dict[str, Any] = {"name": "podinfo", "image": "labkit/httpbin",
                                 "env": [{"name": "VERSION", "value": version}]}
    if failing:
        container["command"] = failing_command()
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": namespace},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}},
                                  "spec": {"containers": [container]}}}}
