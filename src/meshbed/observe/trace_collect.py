"""Fetching the traces of answered requests from Jaeger until they are complete or stop growing.

Shared by the TRACE and RES suites: spans arrive with a delay (Envoy flushes
every second, apps batch every 200 ms), so completeness is judged only once
every trace is complete or nothing new arrived for ``settle`` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import wait
from ..errors import WaitTimeout
from ..traffic import Answer
from . import traces
from .jaeger import JaegerClient, Span


def trace_id_of(a: Answer) -> str:
    try:
        doc = a.json()
    except ValueError:
        return ""
    return str(doc.get("trace_id") or "") if isinstance(doc, dict) else ""


@dataclass
class Collected:
    reports: dict[str, traces.TraceReport]  # by request id
    spans: dict[str, list[Span]] = field(default_factory=dict)  # by request id (the last fetch)
    untraceable: int = 0  # answers without a trace id (no body, not JSON)
    polls: int = 0
    wait_s: float = 0.0
    timed_out: bool = False

    @property
    def list(self) -> list[traces.TraceReport]:
        return list(self.reports.values())


def collect(mesh, answers: list[Answer], expected, *, deadline: float = 45.0, settle: float = 4.0) -> Collected:
    """Fetch each answer's trace until every one is complete, or nothing new arrived for ``settle`` s.

    ``expected`` is the edge multiset every trace must have, or a function of the answer
    giving it (a request that failed at a hop has a shorter tree). A request whose answer
    names no trace id gets a report with no spans (incomplete).
    """
    want = expected if callable(expected) else (lambda a: expected)
    jaeger = JaegerClient(mesh.jaeger.url("query_http"))
    todo: dict[str, tuple[str, Any]] = {}
    reports: dict[str, traces.TraceReport] = {}
    untraceable = 0
    for a in answers:
        tid = trace_id_of(a)
        if tid:
            todo[a.request_id] = (tid, want(a))
        else:
            untraceable += 1
            reports[a.request_id] = traces.TraceReport(trace_id="", request_id=a.request_id)
    got: dict[str, list[Span]] = {}
    state = {"spans": -1, "since": time.monotonic(), "polls": 0}

    def probe() -> bool:
        state["polls"] += 1
        for rid, (tid, exp) in list(todo.items()):
            spans = jaeger.trace(tid)
            got[rid] = spans
            reports[rid] = traces.analyze(spans, tid, exp, rid)
            if reports[rid].complete:
                del todo[rid]
        if not todo:
            return True
        n = sum(len(got[r]) for r in got)
        now = time.monotonic()
        if n != state["spans"]:
            state["spans"], state["since"] = n, now
        elif now - state["since"] >= settle:
            return True  # nothing new for `settle` s: what is missing is lost
        raise wait.NotYet(f"{len(todo)} traces incomplete, {n} spans")

    t0 = time.monotonic()
    timed_out = False
    try:
        wait.until(probe, deadline=deadline, interval=0.5, what="traces to arrive in Jaeger")
    except WaitTimeout:
        timed_out = True
    return Collected(reports, got, untraceable, state["polls"], time.monotonic() - t0, timed_out)


