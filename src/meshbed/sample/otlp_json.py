"""A minimal OTLP/HTTP span exporter using the JSON encoding.

Why it exists: in this venv ``xds-protos`` ships an old copy of the
``opentelemetry.proto`` modules that shadows ``opentelemetry-proto``, so the
official protobuf exporter fails to import. OTLP/HTTP JSON needs no generated
code and is accepted by the OpenTelemetry collector and Jaeger alike.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)


def _any_value(value: Any) -> dict[str, Any]:
    """OTLP AnyValue: bool before int, because bool is an int in Python."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attrs or {}).items()]


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """One span as OTLP JSON; ids are hex per the OTLP JSON mapping, not base64."""
    ctx = span.context
    out: dict[str, Any] = {
        "traceId": format(ctx.trace_id, "032x"),
        "spanId": format(ctx.span_id, "016x"),
        "name": span.name,
        "kind": span.kind.value + 1,  # SDK SpanKind is OTLP's enum minus one
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.status.description:
        out["status"]["message"] = span.status.description
    if ctx.trace_state:
        out["traceState"] = ctx.trace_state.to_header()
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)}
            for e in span.events
        ]
    return out


def encode_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Group spans by resource, then by instrumentation scope, as OTLP requires."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        res_key = id(span.resource)
        entry = by_resource.setdefault(res_key, (span.resource, {}))
        scope = span.instrumentation_scope
        scope_key = (scope.name if scope else "", (scope.version or "") if scope else "")
        entry[1].setdefault(scope_key, []).append(encode_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes if resource else {})},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": encoded}
                    for (name, version), encoded in scopes.items()
                ],
            }
            for resource, scopes in by_resource.values()
        ]
    }


class OtlpJsonSpanExporter(SpanExporter):
    """Posts batches as application/json; runs on the batch processor's thread."""

    def __init__(self, endpoint: str, timeout: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = json.dumps(encode_request(spans), separators=(",", ":")).encode()
        req = urllib.request.Request(
            self.endpoint, data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self._warned = False
            return SpanExportResult.SUCCESS
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if not self._warned:  # once per outage: the collector may come later
                log.warning("OTLP export to %s failed: %s", self.endpoint, exc)
                self._warned = True
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
