"""What an Envoy tells the control plane about itself, in its node metadata.

The runtime writes this into each bootstrap under ``node.metadata.meshbed``;
the reference control plane reads it to know which listeners and clusters a
node needs. Consul says *where* services are; the node says *what it is*.
A third-party control plane may ignore it and use its own means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from .errors import ConfigError

Role = Literal["sidecar", "ingress"]


@dataclass(frozen=True)
class Route:
    """An ingress route: requests whose path starts with ``prefix`` go to ``service``."""

    prefix: str
    service: str


@dataclass(frozen=True)
class NodeMeta:
    role: Role
    service: str
    instance: str
    listen_address: str = "127.0.0.1"
    # sidecar: inbound listener port, fronting the local app
    inbound_port: int = 0
    # address of the local app, host:port (sidecar only)
    app_address: str = ""
    # sidecar: outbound listener the app calls its upstreams through;
    # ingress: the public listener
    outbound_port: int = 0
    upstreams: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()
    # name of the static bootstrap cluster that reaches the OTLP collector
    trace_cluster: str = "jaeger_otlp"
    # service.name Envoy puts on its spans
    trace_service: str = ""
    access_log_path: str = ""

    def to_struct(self) -> dict[str, Any]:
        d = asdict(self)
        d["upstreams"] = list(self.upstreams)
        d["routes"] = [asdict(r) for r in self.routes]
        return d

    @classmethod
    def from_struct(cls, d: dict[str, Any]) -> "NodeMeta":
        try:
            routes = tuple(Route(str(r["prefix"]), str(r["service"])) for r in d.get("routes", []) or [])
            return cls(
                role=d["role"],
                service=str(d["service"]),
                instance=str(d["instance"]),
                listen_address=str(d.get("listen_address", "127.0.0.1")),
                inbound_port=int(d.get("inbound_port", 0) or 0),
                app_address=str(d.get("app_address", "")),
                outbound_port=int(d.get("outbound_port", 0) or 0),
                upstreams=tuple(str(u) for u in d.get("upstreams", []) or []),
                routes=routes,
                trace_cluster=str(d.get("trace_cluster", "jaeger_otlp")),
                trace_service=str(d.get("trace_service", "")),
                access_log_path=str(d.get("access_log_path", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad meshbed node metadata: {exc!r}") from exc


META_KEY = "meshbed"
