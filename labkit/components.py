"""Every component that plugs into labkit, in one list. Importing this module registers each
one's kinds (`manifests.register_kind`), controllers (`core.controller.register_controller`),
cluster extensions (`cluster.register_extension`) and built-in images.

`labkit.manifests` imports it on the first load, by its name (`manifests.COMPONENTS_MODULE`):
that one deferred import is what keeps `manifests` and `cluster` free of any component, and
keeps code that only validates manifests (`sim/`, `grading/`) from reaching a controller in the
import graph (docs/ARCHITECTURE.md, "Which way imports run"). A new component is added here.
"""

from __future__ import annotations

# isort: off
# Import order is registration order, and the order of extensions is the order in which they
# admit an object: SinkBinding's K_SINK, then the mesh's injection, then Flagger's fields.
from labkit import core
from labkit.eventing import kinds as eventing
from labkit.serving import kinds as serving
from labkit.mesh import kinds as mesh
from labkit.inference import kinds as inference
from labkit.flagger import kinds as flagger
# isort: on

__all__ = ["COMPONENTS"]

COMPONENTS = (core, eventing, serving, mesh, inference, flagger)
"""The registering modules, in registration order."""
