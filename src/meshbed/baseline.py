"""Return a running mesh to its baseline, so tests do not leak into each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ComponentError

if TYPE_CHECKING:
    from .mesh import Mesh


def reset(mesh: "Mesh") -> None:
    """Resume paused components, remove every toxic, re-enable every proxy, drop scaled-up instances."""
    for inst in list(mesh.extra):
        mesh.remove_instance(inst)
    for h in mesh.all_handles():
        h.resume()
    mesh.toxiproxy_client().reset()
    dead = [h.name for h in mesh.all_handles() if not h.alive()]
    if dead:
        raise ComponentError(f"components died and were not restarted by the test: {', '.join(dead)}",
                             hint="a test that kills a component must restart it")
