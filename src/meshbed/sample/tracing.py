"""OpenTelemetry setup and trace-context propagation (W3C traceparent, B3 or both) for one instance.

Each instance gets its own TracerProvider (never the global one) so that
several instances can live in one process, as the tests do.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, MutableMapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import b3
from .config import SampleConfig

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()


def make_exporter(endpoint: str) -> SpanExporter:
    """The official protobuf exporter when it imports, else the JSON fallback.

    MESHBED_OTLP_ENCODING=json|protobuf forces a choice.
    """
    encoding = os.environ.get("MESHBED_OTLP_ENCODING", "").lower()
    if encoding != "json":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(endpoint=endpoint, timeout=5)
        except ImportError as exc:
            if encoding == "protobuf":
                raise
            log.info("protobuf OTLP exporter unavailable (%s); using OTLP/JSON", exc)
    from .otlp_json import OtlpJsonSpanExporter

    return OtlpJsonSpanExporter(endpoint)


def make_provider(config: SampleConfig, exporter: SpanExporter | None = None) -> TracerProvider:
    """Provider honouring the caller's sampled flag, exporting in 200 ms batches."""
    attrs: dict[str, str] = {
        "service.name": config.service,
        "service.instance.id": config.instance,
        "meshbed.version": config.version,
    }
    if config.run_id:
        attrs["meshbed.run"] = config.run_id
    provider = TracerProvider(
        resource=Resource.create(attrs),
        sampler=ParentBased(ALWAYS_ON),
        shutdown_on_exit=False,
    )
    if exporter is None and config.otlp:
        exporter = make_exporter(config.otlp)
    if exporter is not None:
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=4096,
                schedule_delay_millis=200,
                max_export_batch_size=512,
                export_timeout_millis=5000,
            )
        )
    return provider


def propagators() -> list[TextMapPropagator]:
    """The formats this app propagates (``b3.propagation()``), the mesh's own first.

    Read per call, like the format itself: ``w3c`` -> traceparent, ``b3`` -> B3,
    ``both`` -> the mesh's format, then the other (an app that also forwards the
    other format must still continue the trace its sidecar's Envoy rewrote).
    """
    w3c: TextMapPropagator = _PROPAGATOR
    b3p: TextMapPropagator = b3.B3Propagator(single=b3.single())
    mine = b3.propagation()
    if mine == "both":
        return [b3p, w3c] if b3.mesh_format() == "b3" else [w3c, b3p]
    return [b3p] if mine == "b3" else [w3c]


def extract(headers: Mapping[str, str]) -> Context:
    """Parent context from the incoming headers of the format(s) this app propagates (empty if absent)."""
    for p in propagators():
        ctx = p.extract(headers)
        if trace.get_current_span(ctx).get_span_context().is_valid:
            return ctx
    return Context()


def inject(span: Span, headers: MutableMapping[str, str]) -> None:
    """Write ``span``'s context into outgoing headers in every format this app propagates."""
    ctx = trace.set_span_in_context(span)
    for p in propagators():
        p.inject(headers, context=ctx)


def trace_id_hex(span: Span) -> str:
    """The 32-hex trace id, exposed in answers so tests can follow a trace."""
    return format(span.get_span_context().trace_id, "032x")
