"""Jaeger v2 all-in-one with in-memory storage, on the run's own ports."""

from __future__ import annotations

from pathlib import Path

from .. import httpc
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [{receivers}]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: "{host}:{health}"
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: "{host}:{query_http}"
    grpc:
      endpoint: "{host}:{query_grpc}"
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{host}:{otlp_grpc}"
      http:
        endpoint: "{host}:{otlp_http}"
{zipkin_receiver}processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"""


def _ready(h: Handle) -> object:
    return httpc.get(h.url("query_http", "/api/v3/services"), timeout=2).status == 200


# tracing b3: Envoys report Zipkin v2 JSON spans to Jaeger's zipkin receiver (POST /api/v2/spans)
ZIPKIN_RECEIVER = """\
  zipkin:
    endpoint: "{host}:{zipkin}"
"""


def spec(binary: Path, ports: PortAllocator, host: str = "127.0.0.1", zipkin: bool = False) -> ComponentSpec:
    p = {n: ports.take() for n in ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health")}
    if zipkin:
        p["zipkin"] = ports.take()
    extra = {"receivers": "otlp, zipkin" if zipkin else "otlp",
             "zipkin_receiver": ZIPKIN_RECEIVER.format(host=host, zipkin=p["zipkin"]) if zipkin else ""}
    return ComponentSpec(
        name="jaeger", kind="jaeger", argv=[str(binary), "--config", "file:jaeger.yaml"], ports=p, host=host, pod="jaeger",
        files={"jaeger.yaml": CONFIG.format(host=host, **p, **extra)}, ready=_ready,
        ready_what="Jaeger's query API (GET /api/v3/services)",
        ready_hint="see the jaeger log in the run directory",
        # in-memory storage: nothing to flush, and it lingers 5 s on SIGTERM
        stop_timeout=1.0,
    )
