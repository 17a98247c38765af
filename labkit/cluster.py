"""LocalCluster: the laptop's Kubernetes API server and controllers.

`apply()` validates every document first (one bad document and nothing starts), then hands each
object to the controller registered for its kind, which makes it real: processes, listeners,
proxies. If one fails half-way, everything that apply() call did is undone, so the cluster is
left as it was. Components plug in with `register_controller()`; the core knows none of them.

`controller(kind, name)` is the one way to the live side of an object (a Knative Service's
revisions, a broker's process, a channel's event log); each component's typed helper
(`labkit.serving.service.knative_service`, ...) is a one-line call of it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

from labkit import manifests
from labkit.core.controller import (
    ConfigWarning,
    Controller,
    ControllerFactory,
    ObjectStatus,
    Resource,
    controller_factory,
    register_controller,
)
from labkit.core.loop import BackgroundLoop
from labkit.core.podlogs import tail_lines
from labkit.core.pods import Pod, PodRegistry
from labkit.manifests import KindKey, KubeObject, ManifestError, Source, api_group
from labkit.suggest import did_you_mean

__all__ = [
    "ApplyError",
    "ClusterExtension",
    "Controller",
    "ControllerFactory",
    "LocalCluster",
    "ManifestError",
    "NotFoundError",
    "ObjectStatus",
    "Resource",
    "StatusTable",
    "register_controller",
    "register_extension",
]


T = TypeVar("T")


class ApplyError(RuntimeError):
    """A valid object could not be made real; the apply() call was rolled back."""


class NotFoundError(LookupError):
    """No such object in the cluster."""

    def __str__(self) -> str:  # KeyError-style repr quoting would hide the message
        return str(self.args[0])


class StatusTable(list[ObjectStatus]):
    """Rows of status(); prints as an aligned table in a terminal or notebook."""

    def __str__(self) -> str:
        rows = [("KIND", "NAME", "READY", "URL", "MESSAGE")]
        for s in self:
            name = s.name if s.namespace == "default" else f"{s.namespace}/{s.name}"
            rows.append((s.kind, name, "yes" if s.ready else "no", s.url or "-", s.message))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
        )

    __repr__ = __str__


class ClusterExtension(Protocol):
    """Per-cluster machinery that spans objects (the mesh control plane): it may change an
    object as it is admitted (like a mutating admission webhook), hears after every apply()
    and delete() that objects changed, and is closed before the objects are deleted."""

    def admit(self, obj: KubeObject) -> KubeObject: ...

    def changed(self) -> None: ...

    def close(self) -> None: ...


_EXTENSIONS: dict[str, Callable[[LocalCluster], ClusterExtension]] = {}


def register_extension(name: str, factory: Callable[[LocalCluster], ClusterExtension]) -> None:
    """Every LocalCluster gets `factory(cluster)` as its extension `name` (see `extension()`)."""
    _EXTENSIONS[name] = factory


@dataclass
class _Entry:
    obj: KubeObject
    controller: Controller


CORE_API_VERSIONS = ("v1", "apps/v1")

SHORT_NAMES: dict[str, tuple[str, str]] = {
    # short name -> (API group, kind), from the shortNames of the official CRDs and kubectl's own
    "svc": ("", "Service"),
    "deploy": ("apps", "Deployment"),
    "ns": ("", "Namespace"),
    "ksvc": ("serving.knative.dev", "Service"),
    "kservice": ("serving.knative.dev", "Service"),
    "rev": ("serving.knative.dev", "Revision"),
    "rt": ("serving.knative.dev", "Route"),
    "config": ("serving.knative.dev", "Configuration"),
    "cfg": ("serving.knative.dev", "Configuration"),
    "imc": ("messaging.knative.dev", "InMemoryChannel"),
    "ch": ("messaging.knative.dev", "Channel"),
    "sub": ("messaging.knative.dev", "Subscription"),
    "vs": ("networking.istio.io", "VirtualService"),
    "dr": ("networking.istio.io", "DestinationRule"),
    "pa": ("security.istio.io", "PeerAuthentication"),
    "ap": ("security.istio.io", "AuthorizationPolicy"),
    "isvc": ("serving.kserve.io", "InferenceService"),
}


def _group(api_version: str) -> str:
    """The API group of an apiVersion: "" for the core group ("v1")."""
    return api_version.rpartition("/")[0]
"""A bare kind name resolves to these first, as kubectl resolves `service` to core v1."""


class LocalCluster:
    """Runs manifests on this machine. Use as a context manager so close() always runs.

    >>> with LocalCluster() as cluster:                       # doctest: +SKIP
    ...     cluster.apply("data/manifests/hello.yaml")
    ...     cluster.url("Service", "hello")
    """

    def __init__(
        self,
        *,
        start_timeout: float = 30.0,
        restart_backoff: tuple[float, float] | None = (10.0, 300.0),
        monitor_interval: float = 0.2,
    ) -> None:
        """`start_timeout`: seconds a replica may take to answer first. `restart_backoff`:
        (first, maximum) back-off in seconds for restarting exited pods, as the kubelet's
        CrashLoopBackOff; None leaves them down, to watch a failure without self-healing.
        `monitor_interval`: how often controllers reconcile."""
        manifests.supported_kinds()  # import the components so their controllers register
        self.start_timeout = start_timeout
        self.restart_backoff = restart_backoff
        self.pods = PodRegistry()
        self.loop = BackgroundLoop()
        self._objects: dict[tuple[str, str, str, str], _Entry] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._stop_monitor = threading.Event()
        self._monitor = threading.Thread(
            target=self._monitor_loop, args=(monitor_interval,), name="labkit-monitor", daemon=True
        )
        self._monitor.start()
        self._extensions = {name: factory(self) for name, factory in _EXTENSIONS.items()}

    def extension(self, name: str) -> Any:
        """The cluster's extension `name` (e.g. "mesh", the control plane)."""
        if name not in self._extensions:
            raise NotFoundError(f"no cluster extension {name!r} (have: {', '.join(self._extensions) or 'none'})")
        return self._extensions[name]

    def _notify_changed(self) -> None:
        for extension in self._extensions.values():
            extension.changed()

    @property
    def lock(self) -> threading.RLock:
        """Held while objects change; controllers take it when their own threads change state."""
        return self._lock

    # -- applying ---------------------------------------------------------------------------

    def apply(
        self,
        source: Source | Iterable[Source],
        *,
        on_ready: Callable[[Resource], None] | None = None,
    ) -> list[Resource]:
        """Create or update every object in `source` (paths, YAML text, dicts or models).

        All documents are validated before anything starts (ManifestError lists every
        problem). Objects are applied in document order; `on_ready` is called as each becomes
        ready. If one fails, the objects this call created are deleted and those it changed are
        restored, then ApplyError is raised.
        """
        objects = [obj.model_copy(deep=True) for obj in manifests.load(source)]
        for obj in objects:
            if controller_factory(obj.api_version, obj.kind) is None:
                raise ApplyError(
                    f"{obj.kind}/{obj.metadata.name}: no controller for "
                    f"{obj.api_version} {obj.kind} is registered"
                )
        results: list[Resource] = []
        with self._lock:
            self._check_open()
            undo: list[tuple[tuple[str, str, str, str], KubeObject | None]] = []
            current: KubeObject | None = None
            try:
                for obj in objects:
                    current = obj
                    for extension in self._extensions.values():
                        obj = extension.admit(obj)
                    previous = self._apply_one(obj)
                    if previous is not obj:
                        undo.append((obj.key, previous))
                    resource = self._resource(self._objects[obj.key])
                    results.append(resource)
                    if on_ready is not None:
                        on_ready(resource)
            except BaseException as exc:
                problems = self._undo(undo)
                if not isinstance(exc, Exception):
                    raise  # KeyboardInterrupt and friends: undone, now let them through
                assert current is not None
                note = "; rolled back this apply()" + (
                    f" (rollback problems: {'; '.join(problems)})" if problems else ""
                )
                raise ApplyError(f"{current.kind}/{current.metadata.name}: {exc}{note}") from exc
            finally:
                self._notify_changed()
            # Judged once everything is applied, as `istioctl analyze` judges a set of files.
            for resource in results:
                entry = self._objects.get(resource.object.key)
                for warning in entry.controller.status().warnings if entry else ():
                    warnings.warn(warning, ConfigWarning, stacklevel=2)
        return results

    def _apply_one(self, obj: KubeObject) -> KubeObject | None:
        """Apply one object; return what to restore on rollback (obj itself: nothing to do)."""
        entry = self._objects.get(obj.key)
        if entry is None:
            factory = controller_factory(obj.api_version, obj.kind)
            assert factory is not None  # checked before anything started
            controller = factory(self, obj)
            controller.apply(obj)
            self._objects[obj.key] = _Entry(obj, controller)
            return None
        if entry.obj == obj:
            return obj
        previous = entry.obj
        entry.controller.apply(obj)
        entry.obj = obj
        return previous

    def _undo(self, undo: list[tuple[tuple[str, str, str, str], KubeObject | None]]) -> list[str]:
        problems = []
        for key, previous in reversed(undo):
            entry = self._objects.get(key)
            if entry is None:
                continue
            try:
                if previous is None:
                    del self._objects[key]
                    entry.controller.delete()
                else:
                    entry.controller.apply(previous)
                    entry.obj = previous
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest; report all
                problems.append(f"{key[1]}/{key[3]}: {exc}")
        return problems

    # -- reading ----------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str = "default") -> Resource:
        """The applied object and its live status. `kind` is "Deployment", "Service", or
        "apiVersion/Kind" (e.g. "serving.knative.dev/v1/Service") when a name is shared."""
        with self._lock:
            return self._resource(self._entry(kind, name, namespace))

    def url(self, kind: str, name: str, namespace: str = "default") -> str:
        """Where to send requests for an object (e.g. a Service's local address)."""
        status = self.get(kind, name, namespace).status
        if status.url is None:
            urls = ", ".join(status.urls) or "none yet"
            raise NotFoundError(
                f"{status.kind}/{name} has no URL of its own (its pods: {urls}); "
                "expose it with a Service"
            )
        return status.url

    def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        """Delete an object and stop everything its controller started. The objects it owns
        (whose `metadata.ownerReferences` name it: a Canary's primary Deployment, Services and
        routing) go after it, as Kubernetes' garbage collector deletes dependents once their
        owner is gone (`kubectl delete`'s default, background cascading)."""
        with self._lock:
            doomed = self._with_dependents(self._entry(kind, name, namespace))
            try:
                for entry in doomed:
                    del self._objects[entry.obj.key]
                    entry.controller.delete()
            finally:
                self._notify_changed()

    def _with_dependents(self, owner: _Entry) -> list[_Entry]:
        """`owner`, then every applied object owned by it or by one of its dependents."""
        found = [owner]
        keys = {owner.obj.key}
        for dependent_of in found:  # grows while it is walked: dependents of dependents
            for entry in self._objects.values():
                namespace = entry.obj.metadata.namespace
                if entry.obj.key not in keys and any(
                        (api_group(ref.api_version), ref.kind, namespace, ref.name) == dependent_of.obj.key
                        for ref in entry.obj.metadata.owner_references):
                    found.append(entry)
                    keys.add(entry.obj.key)
        return found

    def status(self) -> StatusTable:
        """One row per object in apply order: kind, name, ready, url, message."""
        with self._lock:
            return StatusTable(entry.controller.status() for entry in self._objects.values())

    def objects(self) -> list[KubeObject]:
        """The applied objects in apply order (e.g. to export() them)."""
        with self._lock:
            return [entry.obj.model_copy(deep=True) for entry in self._objects.values()]

    def export(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write every applied object as YAML for a real cluster into `directory` (one file per
        object, a README.txt saying what to apply in which order and what was changed); see
        `labkit.export`. Returns the files written."""
        from labkit.export import export_objects, write_export

        return write_export(export_objects(self.objects()), directory)

    @overload
    def controller(self, kind: str, name: str, namespace: str = "default", *,
                   group: str | None = None) -> Controller: ...

    @overload
    def controller(self, kind: str, name: str, namespace: str = "default", *,
                   group: str | None = None, of: type[T]) -> T: ...

    def controller(self, kind: str, name: str, namespace: str = "default", *,
                   group: str | None = None, of: type[Any] | None = None) -> Any:
        """The live controller of an object: one applied, or one that an applied object made
        (a Sequence's channels, an InferenceService's Knative Services), as `kubectl get` lists
        owned objects too. `kind` is read as `get()` reads it ("Service", "ksvc",
        "serving.knative.dev/v1/Service"), or give the API `group` beside a bare kind
        (`controller("Service", "hello", group="serving.knative.dev")`). `of`: the controller
        class expected, so the result is typed as it; TypeError if another class runs it."""
        if group is not None:
            if "/" in kind:
                raise ValueError(f"kind {kind!r} already names its API group; drop group={group!r}")
            kind = f"{group}/{kind}"
        with self._lock:
            found = self._entry(kind, name, namespace, owned=True).controller
        if of is not None and not isinstance(found, of):
            raise TypeError(f"{kind} {name!r} is run by {type(found).__name__}, not {of.__name__}")
        return found

    def logs(self, kind: str, name: str, namespace: str = "default", *, previous: bool = False,
             tail: int | None = None) -> str:
        """What a workload's pod wrote to stdout and stderr, like `kubectl logs KIND/NAME`
        (one pod; `previous`: the container before its last restart or crash; `tail`: the last
        lines only). At most the last 64 KiB of each container's output is kept."""
        entry = self._entry(kind, name, namespace)
        read = getattr(entry.controller, "logs", None)
        if read is None:
            raise ValueError(f"{entry.obj.kind}/{name} has no pods to show the logs of")
        return tail_lines(read(previous), tail)

    def pods_of(self, selector: Mapping[str, str], namespace: str = "default") -> list[Pod]:
        """Ready pods whose labels match `selector`."""
        return self.pods.select(namespace, selector)

    def _resource(self, entry: _Entry) -> Resource:
        # A copy: changing it and applying it again must be seen as a change.
        return Resource(entry.obj.model_copy(deep=True), entry.controller.status())

    def _entry(self, kind: str, name: str, namespace: str, *, owned: bool = False) -> _Entry:
        """The entry of one object; `owned`: also those applied objects made (see controller())."""
        candidates = self._resolve_kind(kind)
        objects = self._with_owned() if owned else self._objects
        kinds_wanted = {(manifests.api_group(a), k) for a, k in candidates}
        keys = dict.fromkeys((group, k, namespace, name) for group, k in kinds_wanted)
        entries = [objects[key] for key in keys if key in objects]
        if len(entries) > 1:  # e.g. a core Service and a Knative Service share a name
            entries = [e for e in entries if e.obj.api_version in CORE_API_VERSIONS] or entries
        if len(entries) == 1:
            return entries[0]
        kinds = sorted({k for _, k in candidates})
        if entries:
            choices = ", ".join(f"{e.obj.api_version}/{e.obj.kind}" for e in entries)
            raise NotFoundError(f"{kind!r} named {name!r} is ambiguous: say one of {choices}")
        hint = did_you_mean(name, (k[3] for k in objects if k[:2] in kinds_wanted and k[2] == namespace))
        present = ", ".join(f"{k[1]}/{k[3]}" for k in objects) or "nothing applied"
        raise NotFoundError(
            f"no {'/'.join(kinds)} named {name!r} in namespace {namespace!r}"
            f"{'; ' + hint if hint else ''} (present: {present})"
        )

    def _with_owned(self) -> dict[tuple[str, str, str, str], _Entry]:
        """The applied objects, then those their controllers made (core.controller.Owner)."""
        found: dict[tuple[str, str, str, str], _Entry] = {}
        pending = list(self._objects.values())
        while pending:
            entry = pending.pop(0)
            if entry.obj.key in found:  # seen (a Channel's controller also runs its backing channel)
                continue
            found[entry.obj.key] = entry
            owned = getattr(entry.controller, "owned", None)
            pending += [_Entry(obj, controller) for obj, controller in (owned() if owned else ())]
        return found

    @staticmethod
    def _resolve_kind(kind: str) -> list[KindKey]:
        """Every registered (apiVersion, kind) that `kind` can mean, as kubectl reads it: a kind
        name in any case ("service"), with its group or apiVersion ("serving.knative.dev/v1/Service",
        "serving.knative.dev/Service"), or a CRD short name ("ksvc", "vs", "isvc")."""
        known = manifests.supported_kinds()
        api_part, slash, kind_name = kind.rpartition("/")
        group_hint: str | None = api_part if slash else None
        if group_hint is None and kind.lower() in SHORT_NAMES:
            group_hint, kind_name = SHORT_NAMES[kind.lower()]
        found = [
            (a, k)
            for a, k in known
            if k.lower() == kind_name.lower()
            and (group_hint is None or group_hint in (a, _group(a)))
        ]
        if not found:
            listing = ", ".join(f"{a}/{k}" for a, k in known)
            hint = did_you_mean(kind_name, [*(k for _, k in known), *SHORT_NAMES])
            raise NotFoundError(f"unknown kind {kind!r}; {hint + ' ' if hint else ''}supported: {listing}")
        return found

    # -- lifecycle --------------------------------------------------------------------------

    def _monitor_loop(self, interval: float) -> None:
        """Give controllers a periodic chance to notice change (a pod exiting)."""
        while not self._stop_monitor.wait(interval):
            with self._lock:
                entries = list(self._objects.values())
                for entry in entries:
                    reconcile = getattr(entry.controller, "reconcile", None)
                    if reconcile is not None:
                        reconcile()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this LocalCluster is closed; create a new one")

    def close(self) -> None:
        """Delete every object (newest first), stop the monitor and the event loop. Idempotent."""
        self._stop_monitor.set()
        if self._monitor is not threading.current_thread():
            self._monitor.join(timeout=10.0)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for extension in self._extensions.values():
                extension.close()
            for key in reversed(list(self._objects)):
                entry = self._objects.pop(key)
                entry.controller.delete()
        self.loop.close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._objects)} object(s)"
        return f"<LocalCluster {state}>"
