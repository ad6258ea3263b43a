"""Jaeger's query API v3, as spans: the ground truth for trace completeness."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import httpc


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    service: str
    name: str
    kind: int  # OTLP SpanKind: 2 server, 3 client
    attributes: dict[str, Any] = field(default_factory=dict)
    error: bool = False
    start_ns: int = 0
    end_ns: int = 0


def _value(v: dict[str, Any]) -> Any:
    for k in ("stringValue", "intValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    return v


def parse_otlp(doc: dict[str, Any]) -> list[Span]:
    """Spans out of an OTLP-JSON document (what /api/v3/traces returns under 'result')."""
    out = []
    for rs in doc.get("resourceSpans", []):
        res = {a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
        svc = str(res.get("service.name", "?"))
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                attrs = {a["key"]: _value(a["value"]) for a in sp.get("attributes", [])}
                status = sp.get("status", {}) or {}
                err = status.get("code") in (2, "STATUS_CODE_ERROR") or str(attrs.get("error", "")).lower() == "true"
                out.append(Span(
                    trace_id=sp.get("traceId", ""), span_id=sp.get("spanId", ""),
                    parent_id=sp.get("parentSpanId", "") or "", service=svc, name=sp.get("name", ""),
                    kind=int(sp.get("kind", 0)) if str(sp.get("kind", 0)).isdigit() else 0,
                    attributes=attrs, error=err,
                    start_ns=int(sp.get("startTimeUnixNano", 0)), end_ns=int(sp.get("endTimeUnixNano", 0)),
                ))
    return out


class JaegerClient:
    def __init__(self, query_url: str, timeout: float = 5.0) -> None:
        self.base = query_url.rstrip("/")
        self.timeout = timeout

    def services(self) -> list[str]:
        return list(httpc.get_json(self.base + "/api/v3/services", self.timeout).get("services", []))

    def trace(self, trace_id: str) -> list[Span]:
        """All spans of one trace; [] when Jaeger does not have it (yet)."""
        r = httpc.get(f"{self.base}/api/v3/traces/{trace_id}", self.timeout)
        if r.status == 404:
            return []
        if r.status != 200:
            raise httpc.StatusError(f"jaeger GET trace {trace_id}: HTTP {r.status}: {r.text[:200]}",
                                    method="GET", url=f"{self.base}/api/v3/traces/{trace_id}", status=r.status)
        return parse_otlp(r.json().get("result", {}))
