"""A node's complete resource set, versioned per type by content hash.

Content-hash versions mean an unchanged type keeps its version across
rebuilds and CP restarts, so nothing is resent that Envoy already has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from ..nodemeta import NodeMeta
from . import resources
from .catalog import MeshState

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

# the order responses go out on a change: clusters before their endpoints,
# listeners before their routes
TYPE_ORDER = (CDS, EDS, LDS, RDS)
SHORT = {CDS: "CDS", EDS: "EDS", LDS: "LDS", RDS: "RDS"}
# types where an empty subscription means "everything"
WILDCARD_TYPES = frozenset({CDS, LDS})


def content_version(items: Mapping[str, Message]) -> str:
    """Short stable hash of a set of named resources."""
    h = hashlib.sha256()
    for name in sorted(items):
        h.update(name.encode())
        h.update(b"\0")
        h.update(items[name].SerializeToString(deterministic=True))
        h.update(b"\1")
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Snapshot:
    """Per type URL: resources by name and their version."""

    resources: Mapping[str, Mapping[str, Message]]
    versions: Mapping[str, str]

    def get(self, type_url: str) -> Mapping[str, Message]:
        return self.resources.get(type_url, {})

    def version(self, type_url: str) -> str:
        return self.versions.get(type_url, "")

    def to_json(self) -> dict[str, Any]:
        return {
            SHORT[t]: {
                "version": self.version(t),
                "resources": {n: MessageToDict(m) for n, m in sorted(self.get(t).items())},
            }
            for t in TYPE_ORDER
        }


def make_snapshot(typed: Mapping[str, list[Any]]) -> Snapshot:
    """Index resources by their ``name``/``cluster_name`` and hash each type."""
    res: dict[str, dict[str, Message]] = {}
    for t in TYPE_ORDER:
        items = typed.get(t, [])
        res[t] = {(m.cluster_name if t == EDS else m.name): m for m in items}
    return Snapshot(resources=res, versions={t: content_version(res[t]) for t in TYPE_ORDER})


def type_keys(meta: NodeMeta) -> dict[str, Any]:
    """What each type's resources depend on, beyond the mesh state: nodes with equal keys share them.

    Endpoints depend only on the services a node calls; clusters also on its local app;
    routes on its role, service and call targets; listeners on everything about the node.
    """
    services = tuple(resources.node_services(meta))
    return {
        EDS: services,
        CDS: (meta.role, meta.app_address, services),
        RDS: (meta.role, meta.service, bool(meta.inbound_port), bool(meta.outbound_port), meta.upstreams,
              meta.routes),
        LDS: meta,
    }


def build_snapshot(meta: NodeMeta, state: MeshState, memo: dict[tuple[str, Any], Any] | None = None) -> Snapshot:
    """Everything one node should have, given what Consul says now.

    ``memo`` (cleared on every mesh change) lets nodes that subscribe to the same things share
    the resources built for the first of them: per-node work only where the config differs.
    """
    build = {
        CDS: lambda: resources.clusters(meta, state.policies),
        EDS: lambda: resources.endpoints(meta, state.services, state.policies),
        LDS: lambda: resources.listeners(meta, state.mesh),
        RDS: lambda: resources.routes(meta, state.policies),
    }
    if memo is None:
        return make_snapshot({t: f() for t, f in build.items()})
    typed = {}
    for t, key in type_keys(meta).items():
        k = (t, key)
        if k not in memo:
            memo[k] = build[t]()
        typed[t] = memo[k]
    return make_snapshot(typed)
