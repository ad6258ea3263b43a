"""Envoy (ingress or sidecar): bootstrap rendered from envoy/bootstrap.yaml.j2."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2

from .. import httpc
from ..errors import ComponentError
from ..nodemeta import NodeMeta
from ..observe import envoy_admin
from ..runtime.base import ComponentSpec, Handle


def templates_dir() -> Path:
    """envoy/ of a source checkout, else the copy shipped inside the wheel."""
    here = Path(__file__).resolve()
    checkout = here.parents[3] / "envoy"
    if (checkout / "bootstrap.yaml.j2").is_file():
        return checkout
    shipped = Path(str(resources.files("meshbed") / "_templates" / "envoy"))
    if (shipped / "bootstrap.yaml.j2").is_file():
        return shipped
    raise ComponentError("Envoy templates not found (envoy/bootstrap.yaml.j2)", hint="reinstall meshbed")


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_bootstrap(meta: NodeMeta, *, admin_host: str, admin_port: int, xds: tuple[str, int],
                     otlp: tuple[str, int], trace_flush_ms: int = 1000) -> str:
    return _env().get_template("bootstrap.yaml.j2").render(
        node_id=meta.instance, node_cluster=meta.service, node_meta=meta.to_struct(),
        admin_host=admin_host, admin_port=admin_port, xds_host=xds[0], xds_port=xds[1],
        otlp_host=otlp[0], otlp_port=otlp[1], trace_flush_ms=trace_flush_ms,
    )


def _ready(h: Handle) -> object:
    # /ready alone can turn LIVE after the initial fetch timeout with no
    # config; also require that CDS and LDS were accepted (an xDS ACK)
    if httpc.get(h.url("admin", "/ready"), timeout=2).status != 200:
        return False
    s = envoy_admin.stats(h.url("admin"), r"^(cluster_manager\.cds|listener_manager\.lds)\.update_success$")
    return s.get("cluster_manager.cds.update_success", 0) >= 1 and s.get("listener_manager.lds.update_success", 0) >= 1


def spec(binary: Path, meta: NodeMeta, *, admin_port: int, xds: tuple[str, int], otlp: tuple[str, int],
         log_level: str = "warning", concurrency: int = 1, host: str = "127.0.0.1") -> ComponentSpec:
    name = "envoy-ingress" if meta.role == "ingress" else f"envoy-{meta.instance}"
    bootstrap = render_bootstrap(meta, admin_host=host, admin_port=admin_port, xds=xds, otlp=otlp)
    ports = {"admin": admin_port}
    if meta.inbound_port:
        ports["inbound"] = meta.inbound_port
    if meta.outbound_port:
        ports["outbound"] = meta.outbound_port
    argv = [str(binary), "-c", "bootstrap.yaml", "--base-id", str(admin_port), "--concurrency", str(concurrency),
            "--log-level", log_level, "--drain-time-s", "1", "--drain-strategy", "immediate"]
    return ComponentSpec(
        name=name, kind="envoy", argv=argv, ports=ports, host=host, pod=meta.instance, files={"bootstrap.yaml": bootstrap}, ready=_ready,
        ready_what=f"{name} /ready and its first CDS+LDS ACK",
        ready_hint="see the envoy and controlplane logs in the run directory", stop_timeout=3.0,
    )

