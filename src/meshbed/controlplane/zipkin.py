"""Envoy's Zipkin tracer (``tracing: b3``): B3 headers, spans to Jaeger's zipkin receiver.

A node asks for it through its metadata: ``trace_cluster`` names the static
bootstrap cluster that reaches the collector, ``jaeger_otlp`` for the
OpenTelemetry tracer (the default), :data:`ZIPKIN_CLUSTER` for this one. So
one control plane serves both formats and needs no flag of its own.

Zipkin names a span's service after the node's *cluster* (Zipkin v2
``localEndpoint.serviceName``; the tracer has no service-name field), so a b3
node's bootstrap cluster is its ``trace_service`` (``web-sidecar``), the name
its OpenTelemetry spans carry: TRACE-1..5 read the same service names on both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..nodemeta import NodeMeta

ZIPKIN_CLUSTER = "jaeger_zipkin"  # envoy/zipkin_cluster.yaml.j2
COLLECTOR_ENDPOINT = "/api/v2/spans"


def is_zipkin(meta: NodeMeta) -> bool:
    return meta.trace_cluster == ZIPKIN_CLUSTER


def zipkin_node(meta: NodeMeta) -> tuple[NodeMeta, str]:
    """(the node's metadata asking for the Zipkin tracer, the bootstrap node cluster naming its spans' service)."""
    return dataclasses.replace(meta, trace_cluster=ZIPKIN_CLUSTER), meta.trace_service or meta.service


def tracing_provider(meta: NodeMeta) -> Any:
    """``envoy.tracers.zipkin``: 128-bit trace ids (as W3C's), its own span per hop (no shared span context)."""
    from google.protobuf import any_pb2
    from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2

    cfg = zipkin_pb2.ZipkinConfig(
        collector_cluster=meta.trace_cluster,
        collector_endpoint=COLLECTOR_ENDPOINT,
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
        trace_id_128bit=True,
    )
    cfg.shared_span_context.value = False
    packed = any_pb2.Any()
    packed.Pack(cfg)
    return http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=packed)
