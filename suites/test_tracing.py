"""TRACE: trace completeness (CONFORMANCE.md). Ground truth: Jaeger's query API v3.

Requests are sent with meshbed.traffic.drive, which keeps every answer: the
sample app echoes the trace id of its request in the body, so each request's
trace is fetched by id (Jaeger v3 cannot search by x-request-id) and compared
with the span tree its route must produce (meshbed.observe.traces). Spans
reach Jaeger late (Envoy flushes every 1 s, the apps every 200 ms): traces are
polled until all are complete or the span count stops growing, with a deadline.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from meshbed import wait
from meshbed.errors import WaitTimeout
from meshbed.observe import traces
from meshbed.observe.jaeger import JaegerClient, Span
from meshbed.stats import rate_pct
from meshbed.traffic import Answer, Batch, drive

pytestmark = [pytest.mark.tracing, pytest.mark.integration]


# -- helpers -------------------------------------------------------------------

def _calls(mesh) -> dict[str, tuple[str, ...]]:
    return {name: tuple(s.calls) for name, s in mesh.topology.services.items()}


def _expected(mesh, path: str = "/"):
    """Edges of the route ``path`` takes (the longest matching ingress prefix)."""
    routes = sorted(mesh.topology.ingress, key=lambda r: len(r.prefix), reverse=True)
    entry = next(r.service for r in routes if path.startswith(r.prefix))
    return traces.expected_edges(_calls(mesh), entry)


def _paced(rps: float) -> Callable[[int], dict[str, str]]:
    """A drive() header hook that holds request i until its slot: a steady open-loop rate."""
    t0 = time.monotonic() + 0.05

    def hook(i: int) -> dict[str, str]:
        delay = t0 + i / rps - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for state
        return {}
    return hook


def _trace_id(a: Answer) -> str:
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

    A request whose answer names no trace id gets a report with no spans (incomplete).
    """
    jaeger = JaegerClient(mesh.jaeger.url("query_http"))
    todo: dict[str, tuple[str, str]] = {}
    reports: dict[str, traces.TraceReport] = {}
    untraceable = 0
    for a in answers:
        tid = _trace_id(a)
        if tid:
            todo[a.request_id] = (tid, a.request_id)
        else:
            untraceable += 1
            reports[a.request_id] = traces.TraceReport(trace_id="", request_id=a.request_id)
    got: dict[str, list[Span]] = {}
    state = {"spans": -1, "since": time.monotonic(), "polls": 0}

    def probe() -> bool:
        state["polls"] += 1
        for rid, (tid, _) in list(todo.items()):
            spans = jaeger.trace(tid)
            got[rid] = spans
            reports[rid] = traces.analyze(spans, tid, expected, rid)
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


def _examples(col: Collected, k: int = 10) -> list[dict[str, Any]]:
    return [r.to_json() for r in col.list if not r.complete][:k]


# -- checks --------------------------------------------------------------------

@pytest.mark.check("TRACE-1")
def test_trace1_complete_traces_under_steady_load(mesh, check):
    """Every request of a steady load has exactly one complete trace."""
    n = int(check.param("requests", 1000))
    rps = float(check.param("rps", 50))
    expected = _expected(mesh)
    t0 = time.time()
    batch = drive(mesh.ingress_url, n, concurrency=8, headers=_paced(rps), timeout=10)
    sent_s = time.time() - t0
    col = collect(mesh, batch.answers, expected)
    pct = traces.completeness_pct(col.list)
    check.figure("completeness", pct, "%", len(col.list), "jaeger /api/v3/traces", min_n=n)
    check.figure("achieved_rps", batch.n / sent_s if sent_s > 0 else None, "rps", batch.n, "traffic.drive")
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status(), "sent_s": round(sent_s, 2),
                               "target_rps": rps, "untraceable": col.untraceable})
    check.evidence("expected_spans", sorted(f"{k[0]}/{k[1]}" for k in traces.expected_keys(expected).elements()))
    check.evidence("jaeger_poll", {"polls": col.polls, "wait_s": round(col.wait_s, 2), "timed_out": col.timed_out})
    check.evidence("defects", traces.problem_counts(col.list))
    check.evidence("incomplete_examples", _examples(col))
    check.judge()
