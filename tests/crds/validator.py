"""Check manifests against the official CRD schemas in this folder, offline.

labkit's own code (see SOURCES.md). It does what the API server does with a custom resource's
`spec.versions[].schema.openAPIV3Schema` under strict field validation (kubectl's default since
1.25), as far as a JSON Schema validator can: unknown fields are errors unless the schema
preserves them (`x-kubernetes-preserve-unknown-fields`), `x-kubernetes-int-or-string` takes
either, `nullable` admits null, defaults are applied before `required` is checked. CEL rules
(`x-kubernetes-validations`) and admission webhooks are not evaluated. `metadata` is checked
loosely (a name), as the API server checks ObjectMeta itself, not through the CRD.
Kubernetes' built-in kinds (core/v1, apps/v1...) have no CRD: `check` returns None for them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser: 3 MB of CRDs in ~1 s
HERE = Path(__file__).resolve().parent
BUILT_IN_GROUPS = ("", "apps", "batch", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
                   "autoscaling")


def _convert(node: Any) -> Any:
    """One OpenAPI v3 (structural) schema node as Draft-7 JSON Schema."""
    if not isinstance(node, dict):
        return node
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {k: _convert(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = _convert(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            out[key] = [_convert(n) for n in node[key]]
    if node.get("type") == "object" and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # the API server prunes (strict: rejects) the rest
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in defaults as the API server does before validating (so `required` sees them)."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and isinstance(sub, dict) and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _defaults(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_defaults(schema["items"], item) for item in value]
    return value


_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object",
                                            "additionalProperties": {"type": "string"}}}}


@cache
def schemas(folder: Path = HERE) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the OpenAPI schema of every served version of every CRD here."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.rglob("*.yaml")):
        for crd in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_LOADER):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    schema = version["schema"]["openAPIV3Schema"]
                    found[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return found


@cache
def _validator(api_version: str, kind: str) -> Draft7Validator:
    schema = _convert(schemas()[(api_version, kind)])
    # The API server reads apiVersion, kind and metadata itself, whether the CRD lists them or not.
    schema.setdefault("properties", {}).update(
        apiVersion={"type": "string"}, kind={"type": "string"}, metadata=_METADATA)
    return Draft7Validator(schema)


NO_OFFICIAL_SCHEMA_HERE = {
    ("flows.knative.dev/v1", "Sequence"), ("flows.knative.dev/v1", "Parallel"),
    ("sources.knative.dev/v1", "ContainerSource"),
}
"""Kinds labkit runs whose official CRDs are not among the copies here (SOURCES.md: they come
from ../shared/crds, which lacks these): checked by labkit's own models only."""


def check(document: dict[str, Any]) -> list[str] | None:
    """Problems (`field.path: message`) of one object; None for a built-in Kubernetes kind or
    one in NO_OFFICIAL_SCHEMA_HERE."""
    api_version, kind = str(document.get("apiVersion", "")), str(document.get("kind", ""))
    group = api_version.rpartition("/")[0]
    if group in BUILT_IN_GROUPS or (api_version, kind) in NO_OFFICIAL_SCHEMA_HERE:
        return None
    if (api_version, kind) not in schemas():
        return [f"apiVersion {api_version} kind {kind}: no CRD here defines it"]
    value = _defaults(schemas()[(api_version, kind)], copy.deepcopy(document))
    return sorted(f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
                  for error in _validator(api_version, kind).iter_errors(value))


def check_all(documents: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """`Kind/name` -> its problems, for each object a CRD defines that has any."""
    report = {}
    for doc in documents:
        problems = check(doc)
        if problems:
            report[f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"] = problems
    return report
