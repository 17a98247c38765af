"""Manifests: Kubernetes YAML in and out, with errors a student can act on.

Each (apiVersion, kind) maps to a pydantic model of the subset labkit runs faithfully. Components
add their kinds with `register_kind()`; this module knows none of them. Every problem in every
document is collected and reported as

    FILE:LINE: Kind/name: field.path: message

with line numbers taken from the YAML nodes, and close-match suggestions for misspelt fields and
kinds. Nothing is accepted unless everything is valid, so a caller can apply all or nothing.
"""

from __future__ import annotations

import importlib
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, PrivateAttr, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from labkit.suggest import did_you_mean

__all__ = [
    "COMPONENTS_MODULE",
    "CONTAINER_IGNORED",
    "DEPLOYMENT_IGNORED",
    "POD_IGNORED",
    "FieldPath",
    "IntOrString",
    "KindKey",
    "KubeModel",
    "KubeObject",
    "ManifestError",
    "ManifestIssue",
    "ObjectMeta",
    "OwnerReference",
    "api_group",
    "export",
    "format_path",
    "load",
    "load_file",
    "load_text",
    "model_for",
    "register_kind",
    "supported_kinds",
]

KindKey = tuple[str, str]
"""(apiVersion, kind), e.g. ("apps/v1", "Deployment")."""

FieldPath = tuple[str | int, ...]

COMPONENTS_MODULE = "labkit.components"
"""The module listing every component, imported before the first load so that each registers
its kinds (and controllers). Named, not imported, so this module knows no component."""


# ---------------------------------------------------------------------------------------------
# Models


class KubeModel(BaseModel):
    """Base of every manifest part: camelCase names as in Kubernetes, unknown fields and type
    coercion refused (the API server refuses `replicas: "2"` too)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,  # Python code may say container_port=...; YAML may not.
    )

    ignored_fields: ClassVar[Mapping[str, str]] = {}
    """Real fields labkit accepts but does not act on, each with why that is harmless here.
    `load()` drops them with a warning; every other unknown field stays an error."""


# Kubernetes fields that only matter to a scheduler, a container runtime or an image registry:
# on one laptop without containers they change nothing a lab measures, so copied manifests keep
# them (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/).
_NO_SCHEDULER = "labkit runs every pod on this machine (there is no scheduler)"
_NO_RUNTIME = "labkit runs a process as your user, not a container"
CONTAINER_IGNORED: Mapping[str, str] = {
    "resources": "labkit does not reserve or limit CPU and memory",
    "imagePullPolicy": "labkit pulls no image: the image names a built-in app",
    "securityContext": _NO_RUNTIME,
    "terminationMessagePath": _NO_RUNTIME,
    "terminationMessagePolicy": _NO_RUNTIME,
}
POD_IGNORED: Mapping[str, str] = {
    "nodeSelector": _NO_SCHEDULER,
    "affinity": _NO_SCHEDULER,
    "tolerations": _NO_SCHEDULER,
    "topologySpreadConstraints": _NO_SCHEDULER,
    "priorityClassName": _NO_SCHEDULER,
    "securityContext": _NO_RUNTIME,
    "imagePullSecrets": "labkit pulls no image: the image names a built-in app",
}
DEPLOYMENT_IGNORED: Mapping[str, str] = {
    "revisionHistoryLimit": "labkit keeps no old ReplicaSets to roll back to",
    "progressDeadlineSeconds": "it only sets the Progressing condition; labkit fails a rollout "
                               "whose pods do not start in time",
}


def _int_or_string(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError("int_or_string_type", "expected an integer or a string")
    return value


IntOrString = Annotated[int | str, PlainValidator(_int_or_string)]
"""Kubernetes' IntOrString (a port number or a port name)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def dns_label_problem(value: str, *, rfc1035: bool = False) -> str | None:
    """Why `value` is not a DNS-1123 (or 1035: must start with a letter) label, or None."""
    pattern = _DNS_1035_LABEL if rfc1035 else _DNS_LABEL
    if len(value) > 63 or not pattern.match(value):
        first = "a lowercase letter" if rfc1035 else "a lowercase letter or digit"
        return (
            f"{value!r} is not a valid name: use at most 63 lowercase letters, digits and '-', "
            f"starting with {first} and ending with a letter or digit"
        )
    return None


def dns_subdomain_problem(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return (
            f"{value!r} is not a valid name: use lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (at most 253 characters)"
        )
    return None


def label_problems(labels: Mapping[str, str], path: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    """Kubernetes' label key/value syntax, so a manifest labkit accepts a cluster accepts."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (
            (prefix and dns_subdomain_problem(prefix))
            or len(name) > 63
            or not _LABEL_NAME.match(name)
        ):
            yield (
                path + (key,),
                (
                    f"invalid label key {key!r}: an optional DNS prefix and '/', then at most 63 "
                    "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
                ),
            )
        if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            yield (
                path + (key,),
                (
                    f"invalid label value {value!r}: at most 63 letters, digits, '-', '_' or '.', "
                    "starting and ending with a letter or digit"
                ),
            )


class OwnerReference(KubeModel):
    """metadata.ownerReferences[]: the object that made this one (Kubernetes' garbage collector
    deletes it with its owner; `controller: true` marks the one managing controller)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(KubeModel):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)


def api_group(api_version: str) -> str:
    """The group of an apiVersion: "networking.istio.io/v1" -> "networking.istio.io", "v1" -> ""."""
    return api_version.rpartition("/")[0]


class KubeObject(KubeModel):
    """A top-level object. Subclasses fix api_version/kind with Literal defaults, add `spec`,
    and extend `problems()` with the cross-field rules the API server enforces."""

    api_version: str
    kind: str
    metadata: ObjectMeta

    name_rule: ClassVar[str] = "subdomain"
    """How the API server checks metadata.name: "subdomain", "label" or "label1035"."""

    _ignored: dict[FieldPath, Any] = PrivateAttr(default_factory=dict)
    """The fields `load()` dropped as ignorable (field path -> value as written): labkit does
    not act on them, but a real cluster does, so `export()` writes them back."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(API group, kind, namespace, name): identity in a cluster. The version is not part
        of it: the API server serves one object at every version of its group, so a
        `networking.istio.io/v1alpha3` VirtualService replaces the `v1` one of the same name
        (the Istio guides mix both)."""
        return (api_group(self.api_version), self.kind, self.metadata.namespace,
                self.metadata.name)

    def problems(self) -> Iterator[tuple[FieldPath, str]]:
        """(field path, message) for every rule beyond types; empty when valid."""
        name = self.metadata.name
        if self.name_rule == "subdomain":
            problem = dns_subdomain_problem(name)
        else:
            problem = dns_label_problem(name, rfc1035=self.name_rule == "label1035")
        if problem:
            yield ("metadata", "name"), problem
        if problem := dns_label_problem(self.metadata.namespace):
            yield ("metadata", "namespace"), problem
        yield from label_problems(self.metadata.labels, ("metadata", "labels"))
        controllers = [r for r in self.metadata.owner_references if r.controller]
        if len(controllers) > 1:  # apimachinery ValidateOwnerReferences
            yield ("metadata", "ownerReferences"), (
                "Only one reference can have Controller set to true. Found \"true\" in references for "
                + " and ".join(f"{r.kind}/{r.name}" for r in controllers))


# ---------------------------------------------------------------------------------------------
# Registry

_KINDS: dict[KindKey, type[KubeObject]] = {}


def register_kind(api_version: str, kind: str, model: type[KubeObject]) -> None:
    """Make `load()` accept documents of (api_version, kind), validated by `model`."""
    if not (isinstance(model, type) and issubclass(model, KubeObject)):
        raise TypeError(f"model for {api_version} {kind} must subclass KubeObject, got {model!r}")
    _KINDS[(api_version, kind)] = model


def _load_components() -> None:
    importlib.import_module(COMPONENTS_MODULE)  # a no-op once imported


def supported_kinds() -> list[KindKey]:
    _load_components()
    return sorted(_KINDS)


def model_for(api_version: str, kind: str) -> type[KubeObject]:
    _load_components()
    try:
        return _KINDS[(api_version, kind)]
    except KeyError:
        raise KeyError(_unknown_kind_message(api_version, kind)) from None


def _unknown_kind_message(api_version: object, kind: object) -> str:
    known = sorted(_KINDS)
    listing = ", ".join(f"{a} {k}" for a, k in known)
    versions = [a for a, k in known if k == kind]
    if versions:
        return (
            f"unknown apiVersion {api_version!r} for kind {kind}; "
            f"use {' or '.join(repr(v) for v in versions)}"
        )
    hint = did_you_mean(kind, {k for _, k in known})
    hint = f"{hint} " if hint else ""
    same_version = [k for a, k in known if a == api_version]
    if same_version:  # the apiVersion is right: name its kinds, not all of them
        return f"unknown kind {kind!r} (apiVersion {api_version!r}); {hint}{api_version} has: {', '.join(same_version)}"
    return f"unknown kind {kind!r} (apiVersion {api_version!r}); {hint}supported: {listing}"


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class ManifestIssue:
    """One problem, located as precisely as the input allows."""

    file: str
    line: int | None
    message: str
    kind: str | None = None
    name: str | None = None
    path: str = ""
    severity: str = "error"
    """"error" (nothing is applied) or "warning" (a field labkit ignores; see ignored_fields)."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.kind:
            parts.append(f"{self.kind}/{self.name}" if self.name else self.kind)
        if self.path:
            parts.append(self.path)
        if self.severity == "warning":
            parts.append("warning")
        parts.append(self.message)
        return ": ".join(parts)


class ManifestError(ValueError):
    """All problems found in a set of manifests; str() is one line per problem."""

    def __init__(self, errors: list[ManifestIssue]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def format_path(path: Iterable[str | int]) -> str:
    """("spec", "containers", 0, "image") -> "spec.containers[0].image"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# ---------------------------------------------------------------------------------------------
# Reading YAML with positions


@dataclass
class _Document:
    """One parsed document and where each of its fields was written."""

    file: str
    data: Any
    line: int | None = None
    lines: dict[FieldPath, int] = field(default_factory=dict)
    scalars: dict[FieldPath, str] = field(default_factory=dict)
    duplicates: list[tuple[FieldPath, int]] = field(default_factory=list)
    issues: list[ManifestIssue] = field(default_factory=list)
    warnings: list[ManifestIssue] = field(default_factory=list)

    def line_of(self, path: FieldPath) -> int | None:
        """The line of `path`, or of its nearest ancestor written in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return self.line


def _index_node(node: yaml.Node, path: FieldPath, doc: _Document) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                # PyYAML keeps the last silently; the API server's decoder refuses duplicates.
                doc.duplicates.append((path + (key,), line))
            else:
                seen[key] = line
                doc.lines[path + (key,)] = line
            _index_node(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_node(item, path + (i,), doc)
    elif isinstance(node, yaml.ScalarNode):
        doc.scalars[path] = node.value


def _read_yaml(text: str, file: str) -> Iterator[_Document | ManifestIssue]:
    """The documents of a YAML stream; a syntax error ends the stream as an issue, and a
    stream without any object is one too (kubectl says "no objects passed to apply")."""
    loader = yaml.SafeLoader(text)
    empty = True
    try:
        while loader.check_node():
            node = loader.get_node()
            assert node is not None  # check_node() said a document follows
            doc = _Document(file, loader.construct_document(node), node.start_mark.line + 1)
            _index_node(node, (), doc)
            empty = empty and doc.data is None
            yield doc
        if empty:
            yield ManifestIssue(file, None, "no Kubernetes objects found (the YAML is empty)")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(p for p in (exc.context, exc.problem) if p)
        if "'\\t'" in what:  # YAML forbids tabs in indentation; editors and web pages add them
            what += " (YAML indents with spaces only: replace the tab with spaces)"
        yield ManifestIssue(file, mark.line + 1 if mark else None, f"YAML syntax error: {what}")
    except yaml.YAMLError as exc:
        yield ManifestIssue(file, None, f"YAML error: {exc}")
    finally:
        loader.dispose()


# ---------------------------------------------------------------------------------------------
# Validation


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_or_string_type": "an integer or a string",
}


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional so the real list/dict/model type shows."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _field_names_at(model: type[BaseModel], loc: FieldPath) -> list[str]:
    """The YAML field names allowed at `loc` inside `model` (for did-you-mean)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (list, dict):
            tp = typing.get_args(tp)[-1]
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            match = [f for n, f in tp.model_fields.items() if (f.alias or n) == part]
            if not match:
                return []
            tp = match[0].annotation
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _owner_below(model: type[BaseModel], loc: FieldPath, name: str) -> str | None:
    """The field at `loc` whose own fields (or its list items' fields) include `name`."""
    for child in _field_names_at(model, loc):
        if name in _field_names_at(model, loc + (child,)) + _field_names_at(model, loc + (child, 0)):
            return child
    return None


def _type_hint(expected: str, value: Any, raw: str | None) -> str:
    """Nudges for YAML's typing traps: 8080 is a number, "2" a string, yes a boolean."""
    if expected == "a string" and isinstance(value, (bool, int, float)) and raw is not None:
        return f' (YAML reads {raw} as {_describe(value).split()[0]}; quote it: "{raw}")'
    if (expected in ("an integer", "a number") and isinstance(value, str)
            and re.fullmatch(r"-?\d+(\.\d+)?", value.strip())):
        return " (remove the quotes)"
    return ""


def _message(model: type[KubeObject], err: Mapping[str, Any], raw: str | None) -> str:
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _field_names_at(model, loc[:-1])
        if hint := did_you_mean(loc[-1], allowed):
            return f"unknown field {loc[-1]!r}; {hint}"
        listing = ", ".join(allowed) if allowed else "none"
        if owner := _owner_below(model, loc[:-1], str(loc[-1])):
            # Copied YAML often loses an indentation level: name where the field does belong.
            return f"unknown field {loc[-1]!r} here: it belongs under {owner!r} (allowed here: {listing})"
        return f"unknown field {loc[-1]!r} (allowed here: {listing})"
    if kind == "missing":
        return "required field is missing"
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        return f"expected {expected}, got {_describe(value)}{_type_hint(expected, value, raw)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {_describe(value)}"
    bounds = {
        "greater_than_equal": ("ge", ">="),
        "greater_than": ("gt", ">"),
        "less_than_equal": ("le", "<="),
        "less_than": ("lt", "<"),
    }
    if kind in bounds:
        key, op = bounds[kind]
        return f"must be {op} {ctx.get(key)}, got {_describe(value)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return f"{err['msg']}, got {_describe(value)}"


def _drop_ignored(tp: Any, data: Any, path: FieldPath, found: list[tuple[FieldPath, str, Any]]) -> Any:
    """`data` without the fields its models list in `ignored_fields`; each one dropped is added
    to `found` as (field path, why it is harmless, its value). Walks the data beside its model type."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is list and isinstance(data, list):
        item = typing.get_args(tp)[0]
        return [_drop_ignored(item, value, path + (i,), found) for i, value in enumerate(data)]
    if origin is dict and isinstance(data, Mapping):
        item = typing.get_args(tp)[-1]
        return {key: _drop_ignored(item, value, path + (key,), found) for key, value in data.items()}
    if not (isinstance(tp, type) and issubclass(tp, KubeModel) and isinstance(data, Mapping)):
        return data
    fields = {(f.alias or n): f.annotation for n, f in tp.model_fields.items()}
    kept = {}
    for key, value in data.items():
        if key in fields:
            kept[key] = _drop_ignored(fields[key], value, path + (key,), found)
        elif key in tp.ignored_fields:
            found.append((path + (key,), tp.ignored_fields[key], value))
        else:
            kept[key] = value  # unknown: validation reports it
    return kept


def _validate(doc: _Document) -> KubeObject | None:
    """Validate one document; its problems are appended to doc.issues."""
    data = doc.data
    if not isinstance(data, Mapping):
        doc.issues.append(
            ManifestIssue(
                doc.file,
                doc.line,
                "a manifest document must be a mapping with apiVersion and kind, "
                f"got {_describe(data)}",
            )
        )
        return None
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    name = name if isinstance(name, str) else None
    kind, api_version = data.get("kind"), data.get("apiVersion")
    label = kind if isinstance(kind, str) else None

    def issue(path: FieldPath, message: str, line: int | None = None) -> None:
        doc.issues.append(
            ManifestIssue(
                doc.file, line or doc.line_of(path), message, label, name, format_path(path)
            )
        )

    for path, line in doc.duplicates:
        issue(path, f"duplicate key (first at line {doc.lines[path]})", line)
    for required in ("apiVersion", "kind"):
        if required not in data:
            issue((required,), "required field is missing")
    if "apiVersion" not in data or "kind" not in data:
        return None
    model = _KINDS.get((api_version, kind)) if isinstance(api_version, str) and isinstance(kind, str) else None
    if model is None:
        where = "apiVersion" if any(k == kind for _, k in _KINDS) else "kind"
        issue((where,), _unknown_kind_message(api_version, kind))
        return None
    ignored: list[tuple[FieldPath, str, Any]] = []
    data = _drop_ignored(model, data, (), ignored)
    for path, why, _ in ignored:
        doc.warnings.append(
            ManifestIssue(doc.file, doc.line_of(path), f"ignored: {why}", label, name,
                          format_path(path), severity="warning")
        )
    try:
        obj = model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            issue(loc, _message(model, err, doc.scalars.get(loc)))
        return None
    # Cross-field rules need a typed object, so they show once the type errors are fixed
    # (the API server, too, decodes before it validates).
    for path, message in obj.problems():
        issue(path, message)
    obj._ignored = {path: value for path, _, value in ignored}
    return None if doc.issues else obj


# ---------------------------------------------------------------------------------------------
# Public loading API

Source = Union[str, "os.PathLike[str]", Mapping[str, Any], KubeObject]


def _entries(source: Source | Iterable[Source]) -> Iterator[_Document | KubeObject | ManifestIssue]:
    """Any accepted input, in input order, as parsed documents, ready models and read errors."""
    items = [source] if isinstance(source, (str, os.PathLike, Mapping, KubeObject)) else list(source)
    for number, item in enumerate(items, 1):
        if isinstance(item, KubeObject):
            yield item
        elif isinstance(item, Mapping):
            yield _Document(f"<object {number}>", item)
        elif isinstance(item, str) and _looks_like_yaml(item):
            yield from _read_yaml(item, "<string>")
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                yield ManifestIssue(str(path), None, f"cannot read file: {exc.strerror or exc}")
                continue
            yield from _read_yaml(text, str(path))
        else:
            yield ManifestIssue(
                f"<input {number}>",
                None,
                f"expected a file path, YAML text, a mapping or a model, got {type(item).__name__}",
            )


class _YamlText(str):
    """A string known to be YAML text rather than a path."""


def _looks_like_yaml(text: str) -> bool:
    """A path is one line; YAML text has a newline or is a flow mapping."""
    return isinstance(text, _YamlText) or "\n" in text or text.lstrip().startswith("{")


def load(
    source: Source | Iterable[Source], warnings: list[ManifestIssue] | None = None
) -> list[KubeObject]:
    """Validate manifests from paths, YAML text, mappings or models (or a list of them).

    Returns the objects in document order, or raises ManifestError listing every problem in
    every document; so either all of them are usable or none is. Fields labkit accepts but
    ignores (a model's `ignored_fields`, e.g. `resources`) are dropped; pass a list as
    `warnings` to collect one warning per dropped field (filled even when loading fails).
    """
    _load_components()
    issues: list[ManifestIssue] = []
    objects: list[tuple[KubeObject, str, int | None]] = []
    for entry in _entries(source):
        if isinstance(entry, ManifestIssue):
            issues.append(entry)
        elif isinstance(entry, KubeObject):
            # Built or changed in Python: pydantic does not re-validate assignments, so check
            # it as if it were written out, but keep the caller's object (and its unset fields).
            where = f"<model {entry.kind}/{entry.metadata.name}>"
            check = _Document(where, entry.model_dump(by_alias=True))
            _validate(check)
            issues += check.issues
            if not check.issues:
                objects.append((entry, where, None))
        elif entry.data is not None:  # None: an empty document, e.g. a trailing '---'
            obj = _validate(entry)
            issues += sorted(entry.issues, key=lambda i: i.line or 0)
            if warnings is not None:
                warnings += entry.warnings
            if obj is not None:
                objects.append((obj, entry.file, entry.line_of(("metadata", "name"))))
    first_seen: dict[tuple[str, str, str, str], str] = {}
    for obj, file, line in objects:
        if obj.key in first_seen:
            issues.append(
                ManifestIssue(
                    file,
                    line,
                    f"defined twice (first at {first_seen[obj.key]})",
                    obj.kind,
                    obj.metadata.name,
                    "metadata.name",
                )
            )
        first_seen.setdefault(obj.key, f"{file}:{line}" if line else file)
    if issues:
        raise ManifestError(issues)
    return [obj for obj, _, _ in objects]


def load_file(path: str | os.PathLike[str]) -> list[KubeObject]:
    """Load one YAML file (any number of documents)."""
    return load(Path(path))


def load_text(text: str) -> list[KubeObject]:
    """Load YAML given as a string, even a single line that could pass for a path."""
    return load(_YamlText(text))


def _put(body: dict[str, Any], path: FieldPath, value: Any) -> None:
    """Set `value` at `path` in `body` if the path's parents are all there."""
    node: Any = body
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.setdefault(str(path[-1]), value)


def export(objects: KubeObject | Iterable[KubeObject]) -> str:
    """Objects as multi-document YAML a Kubernetes API server accepts.

    Only fields that were set are written (defaults stay implicit, as in a hand-written
    manifest), so load(export(x)) == x. Fields `load()` ignored are written back where they
    were (a real cluster acts on them), unless the object has changed so that their place is gone.
    """
    items = [objects] if isinstance(objects, KubeObject) else list(objects)
    docs = []
    for obj in items:
        body = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for path, value in obj._ignored.items():
            _put(body, path, value)
        body.pop("apiVersion", None)
        body.pop("kind", None)
        data = {"apiVersion": obj.api_version, "kind": obj.kind, **body}
        docs.append(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return "---\n".join(docs)
