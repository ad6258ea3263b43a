"""Envoy (ingress or sidecar): bootstrap rendered from envoy/bootstrap.yaml.j2."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from .. import httpc
from ..nodemeta import NodeMeta
from ..observe import envoy_admin
from ..runtime.base import ComponentSpec, Handle
from .envoy_templates import templates_dir

__all__ = ["render_bootstrap", "spec", "templates_dir"]


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_bootstrap(meta: NodeMeta, *, admin_host: str, admin_port: int, xds: tuple[str, int],
                     otlp: tuple[str, int], trace_flush_ms: int = 1000, xds_api: str = "GRPC",
                     max_heap_mb: int = 0, zipkin: tuple[str, int] | None = None) -> str:
    """``xds_api``: GRPC (state of the world) or DELTA_GRPC (incremental), as ads_config.api_type.

    ``max_heap_mb`` > 0: low-memory mode (an overload manager on that heap budget, small buffers).
    """
    if zipkin is not None:  # tracing b3: see meshbed.controlplane.zipkin
        from ..controlplane.zipkin import zipkin_node
        meta, node_cluster = zipkin_node(meta)
    else:
        node_cluster = meta.service
    return _env().get_template("bootstrap.yaml.j2").render(
        node_id=meta.instance, node_cluster=node_cluster, node_meta=meta.to_struct(),
        admin_host=admin_host, admin_port=admin_port, xds_host=xds[0], xds_port=xds[1],
        otlp_host=otlp[0], otlp_port=otlp[1], trace_flush_ms=trace_flush_ms, xds_api=xds_api,
        max_heap_mb=max_heap_mb, zipkin_host=zipkin[0] if zipkin else "", zipkin_port=zipkin[1] if zipkin else 0,
    )


def _ready(h: Handle) -> object:
    # /ready alone can turn LIVE after the initial fetch timeout with no
    # config; also require that CDS and LDS were accepted (an xDS ACK)
    if httpc.get(h.url("admin", "/ready"), timeout=2).status != 200:
        return False
    s = envoy_admin.stats(h.url("admin"), r"^(cluster_manager\.cds|listener_manager\.lds)\.update_success$")
    return s.get("cluster_manager.cds.update_success", 0) >= 1 and s.get("listener_manager.lds.update_success", 0) >= 1


def spec(binary: Path, meta: NodeMeta, *, admin_port: int, xds: tuple[str, int], otlp: tuple[str, int],
         log_level: str = "warning", concurrency: int = 1, host: str = "127.0.0.1",
         xds_api: str = "GRPC", max_heap_mb: int = 0, zipkin: tuple[str, int] | None = None) -> ComponentSpec:
    name = "envoy-ingress" if meta.role == "ingress" else f"envoy-{meta.instance}"
    bootstrap = render_bootstrap(meta, admin_host=host, admin_port=admin_port, xds=xds, otlp=otlp, xds_api=xds_api,
                                 max_heap_mb=max_heap_mb, zipkin=zipkin)
    ports = {"admin": admin_port}
    if meta.inbound_port:
        ports["inbound"] = meta.inbound_port
    if meta.outbound_port:
        ports["outbound"] = meta.outbound_port
    argv = [str(binary), "-c", "bootstrap.yaml", "--base-id", str(admin_port), "--concurrency", str(concurrency),
            "--log-level", log_level, "--drain-time-s", "1", "--drain-strategy", "immediate"]
    if max_heap_mb:  # low-memory mode: no hot-restart shared memory either
        argv.append("--disable-hot-restart")
    return ComponentSpec(
        name=name, kind="envoy", argv=argv, ports=ports, host=host, pod=meta.instance, files={"bootstrap.yaml": bootstrap}, ready=_ready,
        ready_what=f"{name} /ready and its first CDS+LDS ACK",
        ready_hint="see the envoy and controlplane logs in the run directory", stop_timeout=3.0,
    )

