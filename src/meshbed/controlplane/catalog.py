"""Pure parsing of Consul answers into the control plane's view of the mesh.

Kept free of I/O so the health rules (passing/warning/critical) and the
policy fallback rules (bad JSON keeps the last good policy) are unit-testable.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from ..policy import KV_MESH_KEY, KV_SERVICES_PREFIX, MeshPolicy, ServicePolicy

log = logging.getLogger("meshbed.controlplane.catalog")

HEALTHY = "HEALTHY"
DEGRADED = "DEGRADED"
UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True)
class Instance:
    """One registered instance of a service, as the control plane routes to it."""

    id: str
    service: str
    address: str
    port: int
    instance: str
    version: str = ""
    zone: str = ""
    priority: int = 0
    health: str = HEALTHY

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MeshState:
    """Everything the control plane believes about Consul right now."""

    services: dict[str, tuple[Instance, ...]] = field(default_factory=dict)
    policies: dict[str, ServicePolicy] = field(default_factory=dict)
    mesh: MeshPolicy = field(default_factory=MeshPolicy)

    def policy(self, service: str) -> ServicePolicy:
        return self.policies.get(service) or ServicePolicy()

    def to_json(self) -> dict[str, Any]:
        return {
            "services": {s: [i.to_json() for i in insts] for s, insts in sorted(self.services.items())},
            "policies": {s: p.to_json() for s, p in sorted(self.policies.items())},
            "mesh": self.mesh.to_json(),
        }


def check_health(checks: Iterable[Mapping[str, Any]]) -> str:
    """Worst check wins: any critical (maintenance adds one) is UNHEALTHY, a warning DEGRADED."""
    statuses = {str(c.get("Status", "")).lower() for c in checks or ()}
    if "critical" in statuses or (statuses - {"passing", "warning"}):
        return UNHEALTHY
    if "warning" in statuses:
        return DEGRADED
    return HEALTHY


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def parse_health_entries(service: str, entries: Iterable[Mapping[str, Any]]) -> tuple[Instance, ...]:
    """Turn /v1/health/service/<name> entries into sorted instances (unhealthy kept)."""
    out: list[Instance] = []
    for e in entries or ():
        svc = e.get("Service") or {}
        node = e.get("Node") or {}
        meta = svc.get("Meta") or {}
        sid = str(svc.get("ID") or svc.get("Service") or "")
        address = str(svc.get("Address") or node.get("Address") or "")
        port = _int(svc.get("Port"))
        if not address or port <= 0:
            log.warning("consul: skipping %s instance %r without address/port", service, sid)
            continue
        out.append(
            Instance(
                id=sid,
                service=service,
                address=address,
                port=port,
                instance=str(meta.get("instance") or sid),
                version=str(meta.get("version") or ""),
                zone=str(meta.get("zone") or ""),
                priority=_int(meta.get("priority"), 0),
                health=check_health(e.get("Checks") or ()),
            )
        )
    out.sort(key=lambda i: (i.zone, i.priority, i.instance, i.id))
    return tuple(out)


def _decode_value(raw: Any) -> str | None:
    if raw is None:
        return None
    return base64.b64decode(raw).decode("utf-8")


def parse_kv_entries(
    entries: Iterable[Mapping[str, Any]] | None,
    previous: Mapping[str, ServicePolicy],
    previous_mesh: MeshPolicy,
) -> tuple[dict[str, ServicePolicy], MeshPolicy]:
    """Turn a recursive KV read of ``meshbed/`` into policies.

    ``None`` (a 404) means no keys: defaults. A key whose JSON is bad keeps the
    previous good policy for that service, so a typo never drops a route.
    """
    policies: dict[str, ServicePolicy] = {}
    mesh = MeshPolicy()
    for e in entries or ():
        key = str(e.get("Key", ""))
        try:
            text = _decode_value(e.get("Value"))
        except (ValueError, UnicodeDecodeError) as exc:
            text = None
            log.error("consul kv %s: undecodable value: %s", key, exc)
        if key.startswith(KV_SERVICES_PREFIX):
            svc = key[len(KV_SERVICES_PREFIX):].strip("/")
            if not svc:
                continue
            try:
                if text is None or not text.strip():
                    raise ConfigError("empty value")
                policies[svc] = ServicePolicy.from_json(json.loads(text), where=key)
            except (ConfigError, ValueError) as exc:
                log.error("consul kv %s: bad service policy, keeping previous: %s", key, exc)
                if svc in previous:
                    policies[svc] = previous[svc]
        elif key == KV_MESH_KEY:
            try:
                if text is None or not text.strip():
                    raise ConfigError("empty value")
                d = json.loads(text)
                if not isinstance(d, dict):
                    raise ConfigError("must be a mapping")
                mesh = MeshPolicy.from_json(d)
            except (ConfigError, ValueError) as exc:
                log.error("consul kv %s: bad mesh policy, keeping previous: %s", key, exc)
                mesh = previous_mesh
    return policies, mesh
