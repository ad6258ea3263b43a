"""An Envoy in front of Consul for the control plane, able to make Consul answer 503.

Toxiproxy cuts, resets and stalls TCP; an HTTP error answer needs an HTTP
proxy, and Envoy's fault filter is the real one. The abort rate is a runtime
key set through the gate's admin API, so nothing restarts to fault it.
"""

from __future__ import annotations

from pathlib import Path

from .. import httpc
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle
from .envoy import _env

ABORT_KEY = "fault.http.abort.abort_percent"


def _ready(h: Handle) -> object:
    return httpc.get(h.url("admin", "/ready"), timeout=2).status == 200


def spec(binary: Path, ports: PortAllocator, upstream: str, host: str = "127.0.0.1") -> ComponentSpec:
    """The gate listens on ``http`` and forwards to ``upstream`` (host:port: Consul, or its Toxiproxy hop)."""
    p = {"http": ports.take(), "admin": ports.take()}
    up_host, _, up_port = upstream.rpartition(":")
    config = _env().get_template("consul_gate.yaml.j2").render(
        admin_host=host, admin_port=p["admin"], listen_host=host, listen_port=p["http"],
        upstream_host=up_host, upstream_port=int(up_port))
    argv = [str(binary), "-c", "gate.yaml", "--base-id", str(p["admin"]), "--concurrency", "1",
            "--log-level", "warning"]
    return ComponentSpec(
        name="consul-gate", kind="envoy", argv=argv, ports=p, host=host, pod="consul-gate",
        files={"gate.yaml": config}, ready=_ready, ready_what="the Consul gate Envoy's /ready",
        ready_hint="see the consul-gate log in the run directory", stop_timeout=3.0,
    )


def set_abort_percent(gate: Handle, percent: int) -> None:
    """Make ``percent`` % of the control plane's new Consul requests answer 503 (0: none)."""
    r = httpc.request("POST", gate.url("admin", f"/runtime_modify?{ABORT_KEY}={int(percent)}"), timeout=5)
    if r.status != 200:
        from ..errors import ComponentError
        raise ComponentError(f"consul gate: runtime_modify answered HTTP {r.status}: {r.text[:200]}")
