"""What a failed check carries: Envoy state at the moment of failure and log tails."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import httpc

if TYPE_CHECKING:
    from .mesh import Mesh

MAX_DUMP_CHARS = 60_000


def capture(mesh: "Mesh", envoys: list[str] | None = None, log_lines: int = 30) -> dict[str, Any]:
    """config_dump and clusters of some Envoys (default: ingress + one per service), and log tails."""
    names = envoys or _representative(mesh)
    out: dict[str, Any] = {"envoys": {}, "logs": {}}
    for n in names:
        h = mesh.envoys.get(n)
        if h is None:
            continue
        entry: dict[str, Any] = {}
        for key, path in (("clusters", "/clusters"), ("config_dump", "/config_dump?include_eds")):
            try:
                text = httpc.get(h.url("admin", path), timeout=3).text
            except OSError as exc:
                text = f"<unreachable: {exc}>"
            entry[key] = text if len(text) <= MAX_DUMP_CHARS else text[:MAX_DUMP_CHARS] + "\n...<truncated>"
        out["envoys"][n] = entry
    for h in mesh.all_handles():
        if h.kind in ("controlplane", "consul", "toxiproxy") or h.name in {f"envoy-{n}" for n in names}:
            out["logs"][h.name] = h.log_tail(log_lines)
    if mesh.cp_debug_url:  # only meshbed's own control plane has a push log
        try:
            out["controlplane_pushes_tail"] = json.loads(
                httpc.get(mesh.cp_debug_url + "/debug/pushes", timeout=3).text)[-40:]
        except (OSError, ValueError, TypeError):
            pass
    return out


def _representative(mesh: "Mesh") -> list[str]:
    names = ["ingress"] if mesh.ingress else []
    seen: set[str] = set()
    for inst, spec in mesh.instances.items():
        if spec.service not in seen and inst in mesh.sidecars:
            seen.add(spec.service)
            names.append(inst)
    return names
