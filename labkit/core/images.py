"""Built-in images: container images labkit can run without a container runtime.

A Deployment container normally runs its `command`. When it names only an `image`, labkit looks
the image up here and runs the local program registered for it, so the same manifest works on a
laptop and (with a real image) on a cluster. Components add their apps with `register_image`.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

from labkit.commands import python_command

__all__ = ["register_image", "image_command", "known_images", "image_name", "container_command"]

CommandFactory = Callable[[], list[str]]

_IMAGES: dict[str, CommandFactory] = {}


def register_image(name: str, command_factory: CommandFactory) -> None:
    """Run `command_factory()` (a command line) for containers whose image is `name`."""
    _IMAGES[image_name(name)] = command_factory


def image_name(image: str) -> str:
    """The image without tag or digest: "ghcr.io/x/app:1.0" -> "ghcr.io/x/app"."""
    name = image.split("@", 1)[0]
    repo, colon, tag = name.rpartition(":")
    return repo if colon and "/" not in tag else name


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


def container_command(
    image: str,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    env: Mapping[str, str],
) -> list[str]:
    """The process to run: `command` (like ENTRYPOINT) or the built-in image's, plus `args`."""
    base = list(command) if command else image_command(image)
    if base is None:
        raise ValueError(
            f"image {image!r} is not a built-in image ({', '.join(known_images())}) "
            "and the container has no command"
        )
    return [expand(part, env) for part in [*base, *(args or [])]]


_HELLO = lambda: python_command("labkit.apps.hello")  # noqa: E731
register_image("labkit/hello", _HELLO)
# Knative's own sample answers the same way, so its manifests run unchanged.
register_image("ghcr.io/knative/helloworld-go", _HELLO)
