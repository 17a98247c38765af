"""How the mesh-demo app is deployed: its manifest, with variations.

`labkit/mesh-demo` runs `python -m labkit.apps.mesh_demo` (a row of `labkit.core.images.IMAGES`;
kept apart from the app so the app's process imports nothing of labkit's machinery).

`demo_manifest()` reads data/manifests/mesh-demo.yaml and returns its documents as dicts, with
the changes a lab makes: without the namespace's `istio-injection` label (no sidecars), some
objects only, extra env vars for some Deployments (a flaky `FAIL_PERCENT`). Without sidecars
the frontend finds the backend through the Service variables the kubelet sets
(`BACKEND_SERVICE_HOST`/`_PORT`), which is why the manifest lists the Services first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MANIFEST", "demo_manifest"]

MANIFEST = Path(__file__).resolve().parents[2] / "data" / "manifests" / "mesh-demo.yaml"

def demo_manifest(*, sidecars: bool = True, names: Iterable[str] | None = None,
                  env: Mapping[str, Mapping[str, str]] | None = None,
                  path: Path = MANIFEST) -> list[dict[str, Any]]:
    """The demo's documents. `sidecars=False` drops the Namespace that asks for injection;
    `names` keeps only the objects with those names, and the ServiceAccounts their pods run as
    (Kubernetes refuses the pods otherwise; the Namespace stays with sidecars);
    `env` adds env vars per Deployment name, e.g. `{"backend-v2": {"FAIL_PERCENT": "50"}}`."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    wanted = None if names is None else set(names)
    extra = dict(env or {})
    unknown = sorted(set(extra) - {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"})
    if unknown:
        raise ValueError(f"env: no Deployment named {unknown} in {path.name}")
    accounts = {d["spec"]["template"]["spec"].get("serviceAccountName") for d in docs
                if d["kind"] == "Deployment" and (wanted is None or d["metadata"]["name"] in wanted)}
    out = []
    for doc in docs:
        if doc["kind"] == "Namespace":
            if sidecars:
                out.append(copy.deepcopy(doc))
            continue
        needed = doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] in accounts
        if wanted is not None and doc["metadata"]["name"] not in wanted and not needed:
            continue
        doc = copy.deepcopy(doc)
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] in extra:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["env"] = [e for e in container.get("env", []) if e["name"] not in extra[doc["metadata"]["name"]]]
            container["env"] += [{"name": k, "value": str(v)} for k, v in extra[doc["metadata"]["name"]].items()]
        out.append(doc)
    return out
