"""Export: what labkit runs on a laptop, as YAML a real cluster runs.

`labkit export FILE... -o DIR` and `LocalCluster.export(DIR)` write one file per object, named
so that `kubectl apply -f DIR` (which reads a folder's files in name order) creates what an
object needs before the object, plus a README.txt saying what to run and what was changed.
Every change is also a comment at the top of the object's file. The changes:

- built-in images (labkit/hello, a `python -m labkit...` command) -> the public image of the
  same program (the table `labkit.core.images.IMAGES`), or, for labkit's own programs, an image
  to build with the Dockerfile written beside them;
- local-only kinds -> their documented real equivalent (DirectorySource -> a watcher
  Deployment + SinkBinding, the ContainerSource pattern: `eventing.sources.export_directory_source`);
- `file://` and plain-path storage URIs -> `pvc://` on a claim the export creates, with the
  commands that copy the model into it (KServe's "Deploy InferenceService with a saved model on
  PVC": https://kserve.github.io/website/latest/modelserving/storage/pvc/pvc/);
- annotations under labkit.dev/ (labkit's own knobs) -> removed;
- namespaces whose objects use the mesh -> labelled `istio-injection: enabled`
  (https://istio.io/latest/docs/setup/additional-setup/sidecar-injection/);
- objects a controller made (an ownerReference to an exported object, or a controller
  reference: Flagger's `-primary` Deployment, Services, DestinationRules and VirtualService of a
  Canary) -> not written: the controller makes them again on a real cluster, and a copy applied
  beside their owner would fight it; README.txt lists them;
- what Flagger changed in a Canary's target -> as the student applied it: a Deployment it
  scaled to 0 gets back the replicas its primary copy runs, a Knative Service loses the
  primary-revision annotation and the traffic block Flagger writes (pkg/router/knative.go).

`export_objects` is pure (objects in, documents and notes out); `write_export` writes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from labkit import __version__, manifests
from labkit.core.images import BuiltinImage, builtin_image, image_name
from labkit.core.models import Deployment
from labkit.files import write_atomic
from labkit.flagger.router import PRIMARY_REVISION
from labkit.manifests import KubeObject, OwnerReference, api_group

__all__ = [
    "MESH_LABEL",
    "MODEL_CLAIM",
    "Document",
    "Export",
    "ModelUpload",
    "Skipped",
    "build_image",
    "export_objects",
    "write_export",
]

MESH_LABEL = "istio-injection"
MODEL_CLAIM = "labkit-models"
"""The PersistentVolumeClaim the export creates for models whose storageUri is local."""

# A local registry name: Knative resolves image tags to digests except for these registries
# (config-deployment `registries-skipping-tag-resolving`, default "kind.local,ko.local,dev.local":
# https://knative.dev/docs/serving/configuration/deployment/), so a built image loaded into kind
# or minikube runs without a registry.
BUILD_REGISTRY = "dev.local"

_MESH_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io")

# Apply order: what an object refers to comes first (namespaces, claims; workloads before the
# routing, triggers and canaries that name them).
_ORDER = {
    "Namespace": 0, "PersistentVolumeClaim": 1, "ServiceAccount": 1, "ConfigMap": 1, "Secret": 1,
    "Pod": 2, "Deployment": 3, "Service": 3, "MetricTemplate": 3,
    "Broker": 4, "Channel": 4, "InMemoryChannel": 4, "InferenceService": 5,
    "Trigger": 6, "Subscription": 6, "PingSource": 6, "SinkBinding": 6,
    "DestinationRule": 7, "VirtualService": 7, "Gateway": 7, "ServiceEntry": 7,
    "PeerAuthentication": 7, "AuthorizationPolicy": 7, "Canary": 8,
}


@dataclass
class Document:
    """One object to apply, with what the export changed in it."""

    body: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    folder: str = ""
    """A subfolder for documents `kubectl apply -f DIR/` must not apply (it does not recurse)."""

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        return self.body["metadata"].get("namespace")

    @property
    def filename(self) -> str:
        where = f"{self.namespace}-" if self.namespace else ""
        name = f"{_ORDER.get(self.kind, 5):02d}-{self.kind.lower()}-{where}{self.name}.yaml"
        return f"{self.folder}/{name}" if self.folder else name

    def yaml(self) -> str:
        head = "".join(f"# {line}\n" for line in
                       ["Exported by labkit for a real cluster.",
                        *(["Changed:"] + [f"- {n}" for n in self.notes] if self.notes else [])])
        return head + yaml.safe_dump(self.body, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class ModelUpload:
    """A model folder or file on this machine that must be copied into MODEL_CLAIM."""

    local: str
    namespace: str
    subpath: str

    @property
    def uri(self) -> str:
        return f"pvc://{MODEL_CLAIM}/{self.subpath}"


@dataclass(frozen=True)
class Skipped:
    """An object not written: a controller makes it on a real cluster."""

    kind: str
    name: str
    namespace: str
    why: str


@dataclass
class Export:
    documents: list[Document]
    builds: list[BuiltinImage]
    uploads: list[ModelUpload]
    skipped: list[Skipped] = field(default_factory=list)

    def readme(self, directory: str | os.PathLike[str]) -> str:
        """What to run, in order, for the export written to `directory`."""
        return _readme(self, str(directory))


def build_image(row: BuiltinImage) -> str:
    """The image name to build a labkit program into (see BUILD_REGISTRY)."""
    return f"{BUILD_REGISTRY}/{row.name}:{__version__}"


def export_objects(objects: Iterable[KubeObject]) -> Export:
    """The documents a real cluster takes for `objects`, with notes on every change."""
    out = Export([], [], [])
    objects = list(objects)
    present = {obj.key for obj in objects}
    for obj in objects:
        if why := _made_by_controller(obj, present):
            out.skipped.append(Skipped(obj.kind, obj.metadata.name, obj.metadata.namespace, why))
            continue
        for document in _real_documents(obj):
            _walk(document.body, (), document, out)
            out.documents.append(document)
    _undo_flagger_changes(out.documents, objects)
    _label_mesh_namespaces(out.documents)
    _target_public_ports(out.documents)
    _add_model_claims(out)
    out.documents.sort(key=lambda d: d.filename)
    return out


UPLOAD_FOLDER = "upload"
"""Where the model-upload pod goes: `kubectl apply -f DIR/` does not recurse into it."""
_EXPORTED_FILE = "[0-9][0-9]-*.yaml"
"""How `Document.filename` names a file: what a new export into the same folder replaces."""


def write_export(export: Export, directory: str | os.PathLike[str]) -> list[Path]:
    """Write each document, README.txt and (when something must be built) a Dockerfile.

    Each file is replaced whole, and an earlier export's files are removed only when this one
    does not write them: a reader (or a second export of the same objects at the same time, as
    when a lab runs twice at once) never finds a file missing or half-written."""
    folder = Path(directory)
    files = {folder / document.filename: document.yaml() for document in export.documents}
    if export.builds:
        files[folder / "Dockerfile"] = _DOCKERFILE
    files[folder / "README.txt"] = export.readme(directory)
    folder.mkdir(parents=True, exist_ok=True)
    # `kubectl apply -f DIR/` applies every file there: an earlier export's files must go.
    for stale in [*folder.glob(_EXPORTED_FILE), *folder.glob(f"{UPLOAD_FOLDER}/{_EXPORTED_FILE}")]:
        if stale not in files:
            stale.unlink(missing_ok=True)
    for path, text in files.items():
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, text)
    return list(files)


# -- one object -------------------------------------------------------------------------------


def _body(obj: KubeObject) -> dict[str, Any]:
    body = yaml.safe_load(manifests.export(obj))
    body.setdefault("metadata", {}).setdefault("namespace", obj.metadata.namespace)
    if obj.kind == "Namespace":
        body["metadata"].pop("namespace")
    return body


def _real_documents(obj: KubeObject) -> list[Document]:
    """The object itself, or, for a local-only kind, its documented real equivalent."""
    if obj.api_version == "sources.labkit.dev/v1alpha1" and obj.kind == "DirectorySource":
        return _directory_source(obj)
    return [Document(_body(obj))]


def _directory_source(obj: KubeObject) -> list[Document]:
    from labkit.eventing.sources import export_directory_source

    watcher = builtin_image("labkit/directory-watcher")
    assert watcher is not None  # a row of the table
    claim = f"{obj.metadata.name}-uploads"
    docs = [Document(body) for body in yaml.safe_load_all(
        export_directory_source(obj, image=build_image(watcher), claim_name=claim))]  # type: ignore[arg-type]  # a DirectorySource
    why = (f"replaces sources.labkit.dev/v1alpha1 DirectorySource/{obj.metadata.name}, which "
           "exists only in labkit: a watcher Deployment with a SinkBinding is Knative's "
           "ContainerSource pattern (https://knative.dev/docs/eventing/custom-event-source/"
           "sinkbinding/); in production a storage notification source (S3/MinIO/GCS) "
           "emits the equivalent event")
    for doc in docs:
        doc.notes.append(why)
    docs.append(Document(_claim(claim, obj.metadata.namespace, "1Gi"),
                         [f"the folder DirectorySource/{obj.metadata.name} watched "
                          f"({obj.spec.directory}); upload files into it"]))  # type: ignore[attr-defined]  # a DirectorySource
    return docs


def _claim(name: str, namespace: str, size: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}}


# -- objects controllers make or change ------------------------------------------------------

_CONTROLLERS = {"flagger.app": "Flagger", "serving.knative.dev": "Knative Serving",
                "serving.kserve.io": "KServe", "apps": "Kubernetes", "": "Kubernetes"}
"""Who makes an owner's objects on a real cluster, by the owner's API group."""


def _made_by_controller(obj: KubeObject, present: set[tuple[str, str, str, str]]) -> str:
    """Why `obj` is not written, or "" when it is: its controller reference names the object
    that makes it (Kubernetes' garbage collector reads the same field), or an owner of it is
    in this export. Either way the owner's controller makes it again on a real cluster, with
    the owner's new uid; a copy applied beside the owner conflicts with it."""

    def owner_key(ref: OwnerReference) -> tuple[str, str, str, str]:
        # owners are in the object's namespace (cluster-scoped ones aside, which labkit has none of)
        return (api_group(ref.api_version), ref.kind, obj.metadata.namespace, ref.name)

    refs = obj.metadata.owner_references
    ref = next((r for r in refs if r.controller), None) or next(
        (r for r in refs if owner_key(r) in present), None)
    if ref is None:
        return ""
    who = _CONTROLLERS.get(api_group(ref.api_version), f"the controller of {ref.kind}")
    why = f"created by {who} from {ref.kind}/{ref.name} on a real cluster"
    return why if owner_key(ref) in present else f"{why} ({ref.kind}/{ref.name} is not in this export)"


def _undo_flagger_changes(documents: list[Document], objects: list[KubeObject]) -> None:
    """A Canary's target as the student applied it, not as Flagger left it: Flagger changes it
    again on a real cluster, from what the student applies."""
    found = {(d.kind, d.namespace, d.name): d for d in documents}
    models: dict[tuple[str, str | None, str], KubeObject] = {
        (o.kind, o.metadata.namespace, o.metadata.name): o for o in objects}
    for canary in [d for d in documents if d.kind == "Canary"]:
        ref = canary.body["spec"]["targetRef"]
        target = found.get((ref["kind"], canary.namespace, ref["name"]))
        if target is None:
            continue
        if target.kind == "Deployment":
            _unscale(target, models.get(("Deployment", canary.namespace, f"{target.name}-primary")),
                     canary.name)
        elif target.kind == "Service" and target.body["apiVersion"].startswith("serving.knative.dev/"):
            _unroute(target, canary.name)


def _unscale(target: Document, primary: KubeObject | None, canary: str) -> None:
    """Flagger scales the target Deployment to 0 once it has copied it to `-primary`
    (fluxcd/flagger pkg/canary/deployment_controller.go ScaleToZero) and back up when a new
    template is applied (ScaleFromZero). Written with 0 replicas, the primary would get 1
    (Flagger gives it the target's replicas, at least 1), so the target is written with the
    replicas the primary runs: the count the student applied (or an autoscaler's since)."""
    if target.body["spec"].get("replicas") != 0:
        return
    replicas = max(1, primary.spec.replicas) if isinstance(primary, Deployment) else 1
    target.body["spec"]["replicas"] = replicas
    target.notes.append(f"spec.replicas: 0 -> {replicas}: Flagger scaled it to 0 after copying it "
                        f"to {target.name}-primary (which runs {replicas}); on a real cluster "
                        f"Canary/{canary} does the same from the replicas you apply")


def _unroute(target: Document, canary: str) -> None:
    """Flagger's Knative router writes `flagger.app/primary-revision` and a traffic block
    [latestRevision: canary %, primary revision: primary %] into the Service (pkg/router/
    knative.go SetRoutes); on a real cluster it writes them from its own revisions."""
    annotations = target.body["metadata"].get("annotations") or {}
    if PRIMARY_REVISION not in annotations:
        return
    del annotations[PRIMARY_REVISION]
    if not annotations:
        target.body["metadata"].pop("annotations", None)
    dropped = ["metadata.annotations." + PRIMARY_REVISION]
    if target.body["spec"].pop("traffic", None) is not None:
        dropped.append("spec.traffic")
    target.notes.append(f"{' and '.join(dropped)}: removed, written by Flagger for Canary/{canary} "
                        "(which writes them again on a real cluster, naming its own revisions)")


# -- fields anywhere in an object -------------------------------------------------------------


def _walk(node: Any, path: tuple[str | int, ...], doc: Document, out: Export) -> None:
    if isinstance(node, dict):
        for key in list(node):
            if key in ("containers", "initContainers") and isinstance(node[key], list):
                for i, container in enumerate(node[key]):
                    if isinstance(container, dict):
                        _container(container, (*path, key, i), doc, out)
            elif key == "storageUri" and isinstance(node[key], str):
                _storage_uri(node, (*path, key), doc, out)
            elif key == "annotations":
                _annotations(node[key], (*path, key), doc)
            _walk(node[key], (*path, key), doc, out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, (*path, i), doc, out)


def _module_of(command: list[str]) -> tuple[str, list[str]] | None:
    """`python -m module args...` (labkit's own command for a program) -> (module, args)."""
    if len(command) >= 3 and PurePosixPath(command[0]).name.startswith("python") \
            and command[1] == "-m":
        return command[2], command[3:]
    return None


def _row_for_module(module: str, args: list[str],
                    own: BuiltinImage | None) -> tuple[BuiltinImage, list[str]] | None:
    """The image a `python -m module args...` container stands for, and the arguments left for
    it. Rows may share a module (Bookinfo's reviews v1-v3, KServe's model servers): the row of
    the container's own image when it is one of them, else the row whose arguments start the
    command's (`reviews v2`), else the first. The row's arguments are its image's own."""
    from labkit.core.images import IMAGES

    rows = [row for row in IMAGES if row.module == module]
    if not rows:
        return None

    def leads(row: BuiltinImage) -> bool:
        return bool(row.args) and tuple(args[:len(row.args)]) == row.args

    row = own if own in rows else next((r for r in rows if leads(r)), rows[0])
    return row, args[len(row.args):] if leads(row) else args


def _own_program(container: dict[str, Any], command: list[str]) -> str | None:
    """What to build for a container that runs the student's own Python code from this machine:
    a script (lab 01's worker) or a FastAPI app under uvicorn (README, "Your own app"). The
    command stays as written; it names files a cluster's pods do not have."""
    if len(command) < 2 or not PurePosixPath(command[0]).name.startswith("python"):
        return None
    push = ("push it, and put its name in `image:` without the `command`"
            + (" and `workingDir`" if container.get("workingDir") else "") + " (they name files "
            "on this machine); it must listen on 0.0.0.0, not 127.0.0.1, for other pods to reach it")
    # names, not this machine's paths (often temporary folders): the note reads the same each run
    if command[1:3] == ["-m", "uvicorn"]:
        app = next((a for a in command[3:] if ":" in a and not a.startswith("-")), "main:app")
        folder = f"the folder {PurePosixPath(container['workingDir']).name}" \
            if container.get("workingDir") else "your app's folder"
        return (f"your own app ({app} under uvicorn): build an image from {folder} (a Dockerfile: "
                "FROM python:3.11-slim, COPY . /app, WORKDIR /app, RUN pip install fastapi uvicorn, "
                f"CMD uvicorn {app} --host 0.0.0.0 --port $PORT), {push}")
    script = PurePosixPath(command[1])
    if script.suffix != ".py":
        return None
    return (f"your own program {script.name}: build an image from it (a Dockerfile: "
            f"FROM python:3.11-slim, COPY {script.name} /app/, CMD [\"python\", \"/app/{script.name}\"]), "
            f"{push}")


def _container(container: dict[str, Any], path: tuple[str | int, ...], doc: Document,
               out: Export) -> None:
    where = manifests.format_path(path)
    image = str(container.get("image", ""))
    row = builtin_image(image) if image else None
    command = container.get("command")
    command = command if isinstance(command, list) else []
    started = _module_of(command)
    if started and (found := _row_for_module(started[0], started[1], row)) is not None:
        row, rest = found
        container.pop("command")
        if rest or container.get("args"):
            container["args"] = [*rest, *container.get("args", [])]
        doc.notes.append(f"{where}.command: {' '.join(command)} is labkit's way to start "
                         f"{row.name}; the image's own entrypoint runs it")
    elif row is None and (own := _own_program(container, command)):
        doc.notes.append(f"{where}.command: {own}")
        return
    elif row is None or (row.public and image_name(image) != image_name(row.name)):
        return  # a public image already
    new = row.public or build_image(row)
    container["image"] = new
    if not row.run and row.module.startswith("labkit.inference"):  # a KServe model server
        doc.notes.append(f"{where}: {new} is started by its controller, with its own arguments "
                         f"(not labkit's {container.get('args', [])}) and the model copied in "
                         "for it: on a cluster write a KServe InferenceService instead")
    if row.public:
        doc.notes.append(f"{where}.image: {image or '(none)'} -> {new}, the public image "
                         f"labkit's {row.name} stands for ({row.source})")
        declared = [p.get("containerPort") for p in container.get("ports", [])]
        if declared and row.port not in declared:
            doc.notes.append(f"{where}.ports: {new} listens on {row.port}, not "
                             f"{', '.join(map(str, declared))}: change the port")
    else:
        doc.notes.append(f"{where}.image: {image or '(none)'} -> {new}: labkit's own program "
                         f"(python -m {row.module}), no public image does the same; build it "
                         "with the Dockerfile here (README.txt step 1)")
        _port_env(container, where, doc)
        if row not in out.builds:
            out.builds.append(row)


def _port_env(container: dict[str, Any], where: str, doc: Document) -> None:
    """labkit's programs listen on $PORT: Knative sets it for a Service's container, a plain
    Deployment does not, so the declared containerPort is passed as PORT."""
    declared = [p["containerPort"] for p in container.get("ports") or () if p.get("containerPort")]
    env = container.get("env") or []
    if doc.kind != "Deployment" or not declared or any(e.get("name") == "PORT" for e in env):
        return
    container["env"] = [*env, {"name": "PORT", "value": str(declared[0])}]
    doc.notes.append(f"{where}.env: PORT={declared[0]}: labkit's programs listen on $PORT, which "
                     "Knative sets and a Deployment does not")


def _storage_uri(node: dict[str, Any], path: tuple[str | int, ...], doc: Document,
                 out: Export) -> None:
    uri = node["storageUri"]
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        return  # gs://, s3://, pvc://, https://...: a cluster downloads these itself
    local = unquote(parts.path) if parts.scheme == "file" else uri
    upload = ModelUpload(local, doc.namespace or "default",
                         f"{doc.name}/{PurePosixPath(local).name}")
    node["storageUri"] = upload.uri
    out.uploads.append(upload)
    doc.notes.append(f"{manifests.format_path(path)}: {uri} is a folder on this machine -> "
                     f"{upload.uri}: copy the model into the claim first (README.txt), or "
                     f"upload it to object storage (aws s3 cp --recursive {local} "
                     f"s3://BUCKET/{doc.name}/) and use s3://BUCKET/{doc.name}/{PurePosixPath(local).name}"
                     " with a service account holding the credentials")


def _annotations(annotations: Any, path: tuple[str | int, ...], doc: Document) -> None:
    if not isinstance(annotations, dict):
        return
    for key in [k for k in annotations if str(k).startswith("labkit.dev/")]:
        del annotations[key]
        doc.notes.append(f"{manifests.format_path(path)}.{key}: removed, a labkit-only setting "
                         "a real cluster ignores")


# -- whole export -----------------------------------------------------------------------------


def _uses_mesh(doc: Document) -> bool:
    group = str(doc.body["apiVersion"]).split("/")[0]
    flagger_on_istio = doc.kind == "Canary" and doc.body.get("spec", {}).get(
        "provider", "istio") == "istio"
    return group in _MESH_GROUPS or flagger_on_istio


def _label_mesh_namespaces(documents: list[Document]) -> None:
    """Every namespace gets a Namespace object; those whose objects use Istio (or that asked
    for sidecars locally) get `istio-injection: enabled`, which Istio's injector reads when a
    pod is created: label first, then create the workloads (or restart them)."""
    namespaces = {d.name: d for d in documents if d.kind == "Namespace"}
    mesh = {d.namespace for d in documents if d.namespace and _uses_mesh(d)}
    mesh |= {n for n, d in namespaces.items()
             if d.body["metadata"].get("labels", {}).get(MESH_LABEL) == "enabled"}
    for name in sorted({d.namespace for d in documents if d.namespace} - set(namespaces)):
        namespaces[name] = Document({"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": name}},
                                    [f"added: the objects here live in namespace {name}"])
        documents.append(namespaces[name])
    for name in sorted(mesh):
        labels = namespaces[name].body["metadata"].setdefault("labels", {})
        if labels.get(MESH_LABEL) != "enabled":
            labels[MESH_LABEL] = "enabled"
            namespaces[name].notes.append(
                f"metadata.labels.{MESH_LABEL}: enabled, so Istio injects a sidecar into every "
                "pod created here (objects in this namespace use the mesh)")


_Listening = list[tuple[str | None, str, dict[str, str], int]]
"""(namespace, Deployment name, pod labels, port) of each Deployment now running a public image."""


def _target_public_ports(documents: list[Document]) -> None:
    """A Service in front of pods now running a public image sends to the port that image
    listens on (event_display: 8080), not to the one labkit's app took from $PORT; so do the
    Services Flagger makes for a Canary (its spec.service.targetPort)."""
    listening: _Listening = []
    for doc in documents:
        if doc.kind != "Deployment":
            continue
        template = doc.body["spec"]["template"]
        for container in template["spec"].get("containers", []):
            row = builtin_image(str(container.get("image", "")))
            if row is not None and row.public and image_name(container["image"]) == image_name(row.public):
                listening.append((doc.namespace, doc.name, template["metadata"].get("labels") or {},
                                  row.port))
    for doc in documents:
        if doc.kind == "Service" and doc.body.get("apiVersion") == "v1":
            _service_target_port(doc, listening)
        elif doc.kind == "Canary":
            _canary_target_port(doc, listening)


def _service_target_port(doc: Document, listening: _Listening) -> None:
    selector = doc.body["spec"].get("selector") or {}
    ports = {port for namespace, _, labels, port in listening if namespace == doc.namespace and selector
             and all(labels.get(k) == v for k, v in selector.items())}
    if len(ports) != 1:
        return
    [port] = ports
    for i, service_port in enumerate(doc.body["spec"].get("ports", [])):
        target = service_port.get("targetPort", service_port.get("port"))
        if isinstance(target, int) and target != port:
            service_port["targetPort"] = port
            doc.notes.append(f"spec.ports[{i}].targetPort: {target} -> {port}, where the public "
                             "image its pods run listens")


def _canary_target_port(doc: Document, listening: _Listening) -> None:
    ref = doc.body["spec"].get("targetRef", {})
    service = doc.body["spec"].get("service")
    if ref.get("kind") != "Deployment" or not service:
        return
    ports = {port for namespace, name, _, port in listening
             if (namespace, name) == (doc.namespace, ref.get("name"))}
    target = service.get("targetPort", service.get("port"))
    if len(ports) != 1 or not isinstance(target, int) or target in ports:
        return
    [service["targetPort"]] = ports
    doc.notes.append(f"spec.service.targetPort: {target} -> {service['targetPort']}, where the "
                     "public image its target's pods run listens (Flagger's Services send there)")


def _add_model_claims(out: Export) -> None:
    for namespace in sorted({u.namespace for u in out.uploads}):
        out.documents.append(Document(
            _claim(MODEL_CLAIM, namespace, "1Gi"),
            ["added: holds the models whose storageUri was a folder on this machine"]))
        out.documents.append(Document(_model_store_pod(namespace), [
            "added: a pod that mounts the claim so `kubectl cp` can copy models into it; "
            "delete it once the models are copied"], folder=UPLOAD_FOLDER))


def _model_store_pod(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "model-store", "namespace": namespace},
            "spec": {"containers": [{"name": "model-store", "image": "busybox:1.36",
                                     "command": ["sleep", "infinity"],
                                     "volumeMounts": [{"name": "models", "mountPath": "/pv"}]}],
                     "volumes": [{"name": "models", "persistentVolumeClaim": {
                         "claimName": MODEL_CLAIM}}]}}


_DOCKERFILE = """\
# labkit's own programs, one image each: build from the labkit checkout (the folder that holds
# pyproject.toml), for example
#   docker build -f DIR/Dockerfile --build-arg MODULE=labkit.apps.mesh_demo -t IMAGE .
# README.txt lists the MODULE and IMAGE of each program this export needs.
FROM python:3.11-slim
COPY . /src
RUN pip install --no-cache-dir /src
ARG MODULE
ENV LABKIT_MODULE=${MODULE}
# labkit's servers listen on 127.0.0.1 on a laptop; in a pod other pods must reach them.
ENV LABKIT_BIND_ADDRESS=0.0.0.0
ENTRYPOINT ["sh", "-c", "exec python -m \\"$LABKIT_MODULE\\" \\"$@\\"", "--"]
"""


def _readme(export: Export, folder: str) -> str:
    step = iter(range(1, 100))
    lines = [f"labkit {__version__} export: YAML for a real Kubernetes cluster with Knative "
             "Serving and Eventing, Istio, KServe and Flagger installed",
             "(tools/real-cluster.sh installs them on kind or minikube at pinned versions).", ""]
    if export.builds:
        lines += [f"{next(step)}. Build labkit's own programs (no public image does the same) "
                  "from the labkit checkout and load them into the cluster:"]
        for row in export.builds:
            image = build_image(row)
            lines += [f"     docker build -f DIR/Dockerfile --build-arg MODULE={row.module} "
                      f"-t {image} .",
                      f"     kind load docker-image {image}    # minikube: minikube image load "
                      f"{image}"]
        lines += ["   They listen on $PORT (8080 by default).", ""]
    if export.uploads:
        lines += [f"{next(step)}. Copy the models into the claim {MODEL_CLAIM} (KServe, "
                  "https://kserve.github.io/website/latest/modelserving/storage/pvc/pvc/):"]
        for namespace in sorted({u.namespace for u in export.uploads}):
            files = [d.filename for d in export.documents if d.namespace == namespace
                     and d.name in (MODEL_CLAIM, "model-store")] + \
                    [d.filename for d in export.documents if d.kind == "Namespace"
                     and d.name == namespace]
            lines += ["     kubectl apply " + " ".join(f"-f DIR/{f}" for f in sorted(files)),
                      f"     kubectl wait -n {namespace} --for=condition=Ready pod/model-store"]
            for upload in (u for u in export.uploads if u.namespace == namespace):
                lines += [f"     kubectl exec -n {namespace} model-store -- mkdir -p "
                          f"/pv/{PurePosixPath(upload.subpath).parent}",
                          f"     kubectl cp {upload.local} {namespace}/model-store:/pv/"
                          f"{upload.subpath}    # storageUri {upload.uri}"]
            lines += [f"     kubectl delete -n {namespace} pod/model-store", ""]
    lines += [f"{next(step)}. Apply everything (kubectl reads a folder's files in name order, "
              "namespaces and claims first; it does not read the subfolder upload/):",
              "     kubectl apply -f DIR/", "",
              "   The files, in order:"]
    lines += [f"     {d.filename}" for d in export.documents if not d.folder]
    if export.skipped:
        lines += ["", "   Not written (a controller makes them on a real cluster; do not apply "
                  "copies of them):"]
        lines += [f"     {s.kind}/{s.name} in {s.namespace}: {s.why}" for s in export.skipped]
    lines += ["", f"{next(step)}. Pods created before their namespace got the "
              f"{MESH_LABEL} label have no sidecar: restart them",
              "     kubectl rollout restart deployment -n NAMESPACE", "",
              "What the export changed (also at the top of each file):"]
    for d in export.documents:
        lines += [f"  {d.filename}:"] + [f"    - {n}" for n in d.notes] if d.notes else []
    return "\n".join(lines).replace("DIR/", folder.rstrip("/") + "/") + "\n"
