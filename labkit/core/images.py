"""Built-in images: container images labkit can run without a container runtime.

A Deployment container normally runs its `command`. When it names only an `image`, labkit looks
the image up here and runs the local program registered for it, so the same manifest works on a
laptop and on a cluster. `IMAGES` is the one table between labkit's built-in images and the
public images of the projects' own samples, read both ways: running (a public image, or labkit's
own name, runs the built-in program) and export (`labkit export` writes the canonical public
image in place of labkit's name, or says what to build when there is none). Components may add
other images with `register_image`. A container whose `command` starts the image's own program
by name, as some guides write it (`./podinfo --port=9898`), runs the built-in app too, when
`PROGRAMS` says its arguments change nothing for that app.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from labkit.commands import python_command

__all__ = [
    "IMAGES",
    "PROGRAMS",
    "BuiltinImage",
    "Program",
    "builtin_image",
    "container_command",
    "image_command",
    "image_name",
    "image_program",
    "known_images",
    "program_problem",
    "register_image",
]

CommandFactory = Callable[[], list[str]]


@dataclass(frozen=True)
class BuiltinImage:
    """One row: labkit's image `name` runs `python -m module`; `public` is what export writes
    (None: no public image behaves the same, build it from labkit); `aliases` are other public
    images that also run it; `port` is the port the public image listens on; `source` says
    where the public image is documented. `run=False`: export only, the image is never run bare
    (its controller starts the program with the arguments it needs). `args` follow the module
    where one program plays several images (Bookinfo's reviews v1, v2, v3)."""

    name: str
    module: str
    public: str | None
    aliases: tuple[str, ...] = ()
    port: int = 8080
    source: str = ""
    run: bool = True
    args: tuple[str, ...] = ()

    @property
    def command(self) -> list[str]:
        return python_command(self.module, *self.args)


IMAGES: tuple[BuiltinImage, ...] = (
    BuiltinImage(
        "labkit/hello", "labkit.apps.hello", "ghcr.io/knative/helloworld-go:latest",
        aliases=("gcr.io/knative-samples/helloworld-go",),
        source="https://knative.dev/docs/getting-started/first-service/"),
    BuiltinImage(
        "labkit/httpbin", "labkit.apps.httpbin", "docker.io/mccutchen/go-httpbin:v2.15.0",
        aliases=("docker.io/kennethreitz/httpbin", "docker.io/kong/httpbin"),
        source="istio/istio samples/httpbin/httpbin.yaml (older releases: kennethreitz/httpbin)"),
    BuiltinImage(
        "labkit/event-display", "labkit.apps.event_display",
        "gcr.io/knative-releases/knative.dev/eventing/cmd/event_display",
        source="https://knative.dev/docs/eventing/getting-started/"),
    BuiltinImage(
        "labkit/appender", "labkit.apps.appender",
        "gcr.io/knative-releases/knative.dev/eventing/cmd/appender",
        source="https://knative.dev/docs/eventing/flows/sequence/"),
    BuiltinImage(
        "labkit/heartbeats", "labkit.apps.heartbeats",
        "gcr.io/knative-releases/knative.dev/eventing/cmd/heartbeats",
        aliases=("gcr.io/knative-nightly/knative.dev/eventing/cmd/heartbeats",),
        source="https://knative.dev/docs/eventing/custom-event-source/containersource/"),
    BuiltinImage(
        "labkit/filter", "labkit.apps.expressions", None,
        source="knative/docs code-samples/eventing/parallel (villardl/filter-nodejs runs "
               "JavaScript; this runs a Python FILTER)"),
    BuiltinImage(
        "labkit/transformer", "labkit.apps.expressions", None,
        source="knative/docs code-samples/eventing/parallel (villardl/transformer-nodejs runs "
               "JavaScript; this runs a Python TRANSFORMER)"),
    BuiltinImage(
        "labkit/podinfo", "labkit.apps.podinfo", "ghcr.io/stefanprodan/podinfo:6.5.4",
        aliases=("docker.io/stefanprodan/podinfo",), port=9898,
        source="https://docs.flagger.app/tutorials/istio-progressive-delivery"),
    BuiltinImage(
        "labkit/autoscale", "labkit.apps.autoscale", "ghcr.io/knative/autoscale-go:latest",
        aliases=("gcr.io/knative-samples/autoscale-go",),
        source="https://knative.dev/docs/serving/autoscaling/autoscale-go/"),
    BuiltinImage(
        "labkit/flagger-loadtester", "labkit.flagger.loadtester",
        "ghcr.io/fluxcd/flagger-loadtester:0.34.0",
        source="fluxcd/flagger kustomize/tester/deployment.yaml"),
    # Istio's Bookinfo (istio/istio samples/bookinfo/platform/kube/bookinfo.yaml, images built
    # from samples/bookinfo/src/ by docker-bake.hcl): each service listens on 9080.
    *(BuiltinImage(
        f"labkit/bookinfo-{service}", f"labkit.apps.bookinfo.{module}",
        f"docker.io/istio/examples-bookinfo-{service}:1.20.1", port=9080, args=args,
        source="istio/istio samples/bookinfo/platform/kube/bookinfo.yaml")
      for service, module, args in (
          ("productpage-v1", "productpage", ()), ("details-v1", "details", ()),
          ("reviews-v1", "reviews", ("v1",)), ("reviews-v2", "reviews", ("v2",)),
          ("reviews-v3", "reviews", ("v3",)), ("ratings-v1", "ratings", ()))),
    # The model servers of KServe's ClusterServingRuntimes (kserve/kserve config/runtimes/):
    # the InferenceService controller starts them with their arguments.
    BuiltinImage(
        "labkit/kserve-sklearnserver", "labkit.inference.server", "docker.io/kserve/sklearnserver",
        source="kserve/kserve config/runtimes/kserve-sklearnserver.yaml", run=False),
    BuiltinImage(
        "labkit/kserve-xgbserver", "labkit.inference.server", "docker.io/kserve/xgbserver",
        source="kserve/kserve config/runtimes/kserve-xgbserver.yaml", run=False),
    BuiltinImage(
        "labkit/kserve-lgbserver", "labkit.inference.server", "docker.io/kserve/lgbserver",
        source="kserve/kserve config/runtimes/kserve-lgbserver.yaml", run=False),
    # labkit's own programs: no public image answers the same way; export says how to build one.
    BuiltinImage("labkit/mesh-demo", "labkit.apps.mesh_demo", None),
    BuiltinImage("labkit/model-monitor", "labkit.apps.model_monitor", None),
    BuiltinImage("labkit/feature-transformer", "labkit.inference.transformer", None),
    BuiltinImage("labkit/digits-function", "labkit.apps.function", None),
    BuiltinImage("labkit/directory-watcher", "labkit.eventing.sources", None, run=False),
)

_IMAGES: dict[str, CommandFactory] = {}


def register_image(name: str, command_factory: CommandFactory) -> None:
    """Run `command_factory()` (a command line) for containers whose image is `name`."""
    _IMAGES[image_name(name)] = command_factory


def image_name(image: str) -> str:
    """The image without tag, digest or Docker Hub prefix: "ghcr.io/x/app:1.0" -> "ghcr.io/x/app",
    "docker.io/kennethreitz/httpbin" -> "kennethreitz/httpbin" (the same image to a container
    runtime, which reads a name without a registry as Docker Hub's)."""
    name = image.split("@", 1)[0]
    repo, colon, tag = name.rpartition(":")
    name = repo if colon and "/" not in tag else name
    for prefix in ("docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.removeprefix("library/")


_ROWS: dict[str, BuiltinImage] = {
    image_name(alias): row for row in IMAGES
    for alias in (row.name, *([row.public] if row.public else []), *row.aliases)}


def builtin_image(image: str) -> BuiltinImage | None:
    """The table's row for an image named by labkit's name, its public image or an alias."""
    return _ROWS.get(image_name(image))


def image_command(image: str) -> list[str] | None:
    """The local command for a built-in image, or None if labkit does not know it."""
    factory = _IMAGES.get(image_name(image))
    return list(factory()) if factory else None


def known_images() -> list[str]:
    return sorted(_IMAGES)


_VAR_REF = re.compile(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args: $(VAR) from the container env (unknown
    references stay as written), and $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        return env.get(match.group(2), match.group(0))

    return _VAR_REF.sub(replace, text)


@dataclass(frozen=True)
class Program:
    """An image's own program, started by name in a container's `command` the way a guide
    writes it (`command: [./podinfo, --port=9898, ...]`). labkit runs the image's built-in app
    in its place. `same` lists the arguments (regular expressions, whole-argument matches),
    each with why, under which the built-in app behaves as the program would; any other
    argument is an error, because labkit could not honour it."""

    images: tuple[str, ...]
    names: tuple[str, ...]
    same: tuple[tuple[str, str], ...]
    source: str


_PORT = "labkit serves the containerPort at the built-in app's own port"
_UNREAD = "no labkit component reads this port"
PROGRAMS: tuple[Program, ...] = (
    Program(("ghcr.io/stefanprodan/podinfo", "docker.io/stefanprodan/podinfo"),
            ("./podinfo", "podinfo"), (
                (r"--port=[0-9]+", _PORT),
                (r"--port-metrics=[0-9]+", _UNREAD + " (Flagger's metrics come from the sidecar)"),
                (r"--grpc-port=[0-9]+", _UNREAD + " (the built-in podinfo serves HTTP only)"),
                (r"--grpc-service-name=\S+", "the built-in podinfo serves no gRPC"),
                (r"--level=(debug|info|warn|error)", "the built-in podinfo writes no log"),
                (r"--random-delay=false", "podinfo's default: no random delay"),
                (r"--random-error=false", "podinfo's default: no random errors")),
            "fluxcd/flagger kustomize/podinfo/deployment.yaml; podinfo's flags: "
            "stefanprodan/podinfo cmd/podinfo/main.go"),
    Program(("ghcr.io/fluxcd/flagger-loadtester",), ("./loadtester", "loadtester"), (
                (r"-port=[0-9]+", _PORT),
                (r"-log-level=(debug|info|warning|error)", "the built-in tester writes no log"),
                (r"-timeout=1h", "Flagger's default limit on one command; labkit's hey commands "
                                 "end by their own -z or -n")),
            "fluxcd/flagger kustomize/tester/deployment.yaml, cmd/loadtester/main.go"),
    Program(("docker.io/kennethreitz/httpbin",), ("gunicorn",), (
                (r"-b|--bind", "followed by the address"),
                (r"(0\.0\.0\.0)?:[0-9]+", _PORT),
                (r"httpbin:app", "the app the image's own CMD serves"),
                (r"-k|gevent", "gunicorn's worker class: the built-in httpbin is asynchronous"),
                (r"--access-logfile|-", "an access log to stdout: the sidecar's access log shows "
                                        "each request")),
            "the image's CMD [gunicorn, -b, 0.0.0.0:80, httpbin:app, -k, gevent]; Istio's "
            "mirroring task (--access-logfile -)"),
)
"""The programs whose command runs a built-in app instead, by image."""


def image_program(image: str, command: Sequence[str] | None) -> Program | None:
    """The table's program when `command` starts the image's own program by name."""
    if not command:
        return None
    name = image_name(image)
    return next((p for p in PROGRAMS if command[0] in p.names
                 and name in {image_name(i) for i in p.images}), None)


def program_problem(image: str, command: Sequence[str] | None,
                    args: Sequence[str] | None) -> str | None:
    """Why the built-in app cannot stand in for the image's program started by `command` and
    `args` (the first argument it does not accept), or None."""
    program = image_program(image, command)
    if program is None or command is None:
        return None
    for arg in [*command[1:], *(args or [])]:
        if not any(re.fullmatch(pattern, arg) for pattern, _ in program.same):
            accepted = ", ".join(pattern for pattern, _ in program.same)
            return (f"{command[0]} is {image}'s own program, which labkit runs as its built-in "
                    f"app; that app cannot honour the argument {arg!r} (it accepts only "
                    f"arguments that change nothing for it: {accepted})")
    return None


def container_command(
    image: str,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    env: Mapping[str, str],
) -> list[str]:
    """The process to run: `command` (like ENTRYPOINT) or the built-in image's, plus `args`.
    A command naming the image's own program (`PROGRAMS`) runs the built-in app instead."""
    if image_program(image, command) is not None:
        if problem := program_problem(image, command, args):
            raise ValueError(problem)
        command, args = None, None
    base = list(command) if command else image_command(image)
    if base is None:
        raise ValueError(
            f"image {image!r} is not a built-in image ({', '.join(known_images())}) "
            "and the container has no command"
        )
    return [expand(part, env) for part in [*base, *(args or [])]]


def _command_of(row: BuiltinImage) -> CommandFactory:
    return lambda: row.command


def _register_table() -> None:
    """Each runnable row runs under labkit's name, its public image and its aliases."""
    for row in IMAGES:
        if row.run:
            for name in (row.name, *([row.public] if row.public else []), *row.aliases):
                register_image(name, _command_of(row))


_register_table()
