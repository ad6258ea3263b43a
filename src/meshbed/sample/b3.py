"""B3 propagation for the sample service (``tracing: b3``), as Zipkin and Envoy's Zipkin tracer speak it.

Extracts the multi-header form (``x-b3-traceid``, ``x-b3-spanid``,
``x-b3-parentspanid``, ``x-b3-sampled``, ``x-b3-flags``) or the single
``b3`` header (``{traceid}-{spanid}[-{sampled}[-{parentspanid}]]``) and
injects the multi-header form (``MESHBED_SAMPLE_B3=single``: the single
header). Written here rather than taken from ``opentelemetry-propagator-b3``
to add no dependency; it implements OpenTelemetry's TextMapPropagator, so the
app uses it exactly as it uses W3C traceparent.

The format is chosen per call from ``MESHBED_SAMPLE_TRACE_FORMAT`` (set by
the mesh for ``tracing: b3``), not at import: the fork server imports this
module before any instance's environment exists.

What an app *propagates* may differ from what the mesh speaks (a service's
``propagation`` in the topology, ``MESHBED_SAMPLE_PROPAGATION``): ``w3c`` or
``b3`` only, or ``both`` (extract the mesh's format, else the other; inject
both). TRACE-6 judges a mesh where one app hop propagates another format.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Optional, Set

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (CarrierT, Getter, Setter, TextMapPropagator, default_getter,
                                               default_setter)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

ENV = "MESHBED_SAMPLE_TRACE_FORMAT"  # b3 | w3c (default): the mesh's format
PROPAGATION_ENV = "MESHBED_SAMPLE_PROPAGATION"  # w3c | b3 | both: what this app propagates (default: the mesh's)
PROPAGATIONS = ("w3c", "b3", "both")
SINGLE_ENV = "MESHBED_SAMPLE_B3"  # single: inject the one `b3` header instead of x-b3-*

TRACE_ID = "x-b3-traceid"
SPAN_ID = "x-b3-spanid"
PARENT_SPAN_ID = "x-b3-parentspanid"
SAMPLED = "x-b3-sampled"
FLAGS = "x-b3-flags"
SINGLE = "b3"

_TRACE_RE = re.compile(r"^([0-9a-f]{16}|[0-9a-f]{32})$")
_SPAN_RE = re.compile(r"^[0-9a-f]{16}$")
_SAMPLED_YES = ("1", "true", "d")


def _first(getter: Getter[CarrierT], carrier: CarrierT, key: str) -> str:
    v = getter.get(carrier, key)
    return (v[0] if v else "").strip().lower()


class B3Propagator(TextMapPropagator):
    """B3 single- and multi-header extract; multi-header (or single, if asked) inject."""

    def __init__(self, single: bool = False) -> None:
        self.single = single

    def extract(self, carrier: CarrierT, context: Optional[Context] = None,
                getter: Getter[CarrierT] = default_getter) -> Context:
        ctx = context if context is not None else Context()
        single = _first(getter, carrier, SINGLE)
        if single:
            parts = single.split("-")
            if len(parts) == 1:  # "b3: 0" / "b3: d": a sampling decision only, no context to continue
                return ctx
            trace_id, span_id = parts[0], parts[1]
            sampled = parts[2] if len(parts) > 2 else ""
            flags = "1" if sampled == "d" else ""
        else:
            trace_id, span_id = _first(getter, carrier, TRACE_ID), _first(getter, carrier, SPAN_ID)
            sampled, flags = _first(getter, carrier, SAMPLED), _first(getter, carrier, FLAGS)
        if not _TRACE_RE.match(trace_id) or not _SPAN_RE.match(span_id):
            return ctx
        tid, sid = int(trace_id, 16), int(span_id, 16)
        if tid == 0 or sid == 0:
            return ctx
        on = sampled in _SAMPLED_YES or flags == "1"
        sc = SpanContext(trace_id=tid, span_id=sid, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED if on else TraceFlags.DEFAULT))
        return trace.set_span_in_context(NonRecordingSpan(sc), ctx)

    def inject(self, carrier: CarrierT, context: Optional[Context] = None,
               setter: Setter[CarrierT] = default_setter) -> None:
        span = trace.get_current_span(context)
        sc = span.get_span_context()
        if not sc.is_valid:
            return
        trace_id, span_id = format(sc.trace_id, "032x"), format(sc.span_id, "016x")
        sampled = "1" if sc.trace_flags.sampled else "0"
        parent = getattr(span, "parent", None)  # an SDK span knows its parent; the header is optional
        parent_id = format(parent.span_id, "016x") if parent is not None and parent.is_valid else ""
        if self.single:
            setter.set(carrier, SINGLE, "-".join(p for p in (trace_id, span_id, sampled, parent_id) if p))
            return
        setter.set(carrier, TRACE_ID, trace_id)
        setter.set(carrier, SPAN_ID, span_id)
        setter.set(carrier, SAMPLED, sampled)
        if parent_id:
            setter.set(carrier, PARENT_SPAN_ID, parent_id)

    @property
    def fields(self) -> Set[str]:
        return {TRACE_ID, SPAN_ID, PARENT_SPAN_ID, SAMPLED, FLAGS, SINGLE}


def mesh_format(env: Optional[Mapping[str, str]] = None) -> str:
    """The mesh's trace format as this instance's environment says: ``b3`` or ``w3c``."""
    e = os.environ if env is None else env
    return "b3" if e.get(ENV, "").strip().lower() == "b3" else "w3c"


def propagation(env: Optional[Mapping[str, str]] = None) -> str:
    """What this app propagates: ``w3c``, ``b3`` or ``both`` (unset or unknown: the mesh's format)."""
    e = os.environ if env is None else env
    p = e.get(PROPAGATION_ENV, "").strip().lower()
    return p if p in PROPAGATIONS else mesh_format(e)


def active(env: Optional[Mapping[str, str]] = None) -> Optional[B3Propagator]:
    """The B3 propagator when this instance's environment asks for B3, else None (W3C traceparent)."""
    e = os.environ if env is None else env
    if mesh_format(e) != "b3":
        return None
    return B3Propagator(single=e.get(SINGLE_ENV, "").strip().lower() == "single")


def single(env: Optional[Mapping[str, str]] = None) -> bool:
    e = os.environ if env is None else env
    return e.get(SINGLE_ENV, "").strip().lower() == "single"
