"""Requests to the mesh-demo app through a mesh client's sidecar, as lab 04 sends them.

A mesh client (`labkit.mesh.control.control_plane(cluster).client()`, Istio's `sleep` sample)
takes requests on its `outbound_url` with the destination service as the Host header, so every
call goes through the caller's own sidecar, where VirtualServices and DestinationRules act. The
frontend of mesh-demo answers with JSON naming each upstream call it made and what came back (see
labkit.apps.mesh_demo), which is how a lab sees which backend version served a request.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["DemoCaller"]


class DemoCaller:
    """Calls from one mesh client; `client` is what `control_plane(cluster).client()` returns."""

    def __init__(self, client: Any, timeout: float = 30.0) -> None:
        self.client = client
        self.timeout = timeout

    def call(self, host: str = "frontend:9080", path: str = "/",
             headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """One request from the client's sidecar: (status, JSON body, or {'text': body} if not JSON)."""
        request = urllib.request.Request(self.client.outbound_url + path, headers={"Host": host, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:  # a 4xx/5xx is an answer here, not a failure
            status, body = error.code, error.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"text": body.decode()}

    def backend_versions(self, n: int, headers: Mapping[str, str] | None = None) -> Counter[str | int]:
        """Which backend version answered each of `n` requests to the frontend (its status code
        when the backend call failed)."""
        answered: Counter[str | int] = Counter()
        for _ in range(n):
            _, body = self.call(headers=headers)
            upstream = body["upstreams"][0]
            answered[upstream["body"]["version"] if isinstance(upstream["body"], dict) else upstream["status"]] += 1
        return answered
