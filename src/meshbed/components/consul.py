"""Consul dev agent: in-memory, every port chosen by the run."""

from __future__ import annotations

from pathlib import Path

from .. import httpc
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle


def _has_leader(h: Handle) -> object:
    r = httpc.get(h.url("http", "/v1/status/leader"), timeout=2)
    return r.status == 200 and r.json() not in ("", None)


def spec(binary: Path, ports: PortAllocator, run_id: str, host: str = "127.0.0.1") -> ComponentSpec:
    p = {name: ports.take() for name in ("http", "serf_lan", "serf_wan", "server")}
    # in a container 0.0.0.0 is refused as a cluster bind address: use the container's own IP
    bind = '{{ GetInterfaceIP "eth0" }}' if host == "0.0.0.0" else host
    argv = [
        str(binary), "agent", "-dev", "-bind", bind, "-client", host, "-node", f"meshbed-{run_id}",
        "-http-port", str(p["http"]), "-dns-port", "-1", "-grpc-port", "-1",
        "-serf-lan-port", str(p["serf_lan"]), "-serf-wan-port", str(p["serf_wan"]),
        "-server-port", str(p["server"]), "-hcl", "ports { grpc_tls = -1 }", "-log-level", "warn",
    ]
    return ComponentSpec(
        name="consul", kind="consul", argv=argv, ports=p, host=host, pod="consul", ready=_has_leader,
        ready_what="Consul to elect a leader (GET /v1/status/leader)",
        ready_hint="see the consul log in the run directory",
    )
