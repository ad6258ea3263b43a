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
        tid = _trace_id(a)
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


def _tag_problems(spans: list[Span], calls: dict[str, tuple[str, ...]], entry: str) -> list[str]:
    """Tags every span must carry, and that they name the right cluster and instance.

    Envoy spans: upstream_cluster (ingress -> the entry service, outbound -> the called
    service, inbound -> local_app) and node_id; a service server span: meshbed.instance,
    equal to the node_id of the sidecar inbound span that is its parent.
    """
    out = traces.untagged(spans, calls)
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_id, []).append(s)
    for s in spans:
        up = s.attributes.get("upstream_cluster")
        if s.service == traces.INGRESS:
            want = {entry}
        elif s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.SERVER:
            want = {"local_app"}
        elif s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.CLIENT:
            want = set(calls.get(s.service[: -len(traces.SIDECAR_SUFFIX)], ()))
        else:
            want = None
        if want is not None and up not in want:
            out.append(f"{s.service}/{s.kind} {s.span_id}: upstream_cluster {up!r}, expected one of {sorted(want)}")
        if s.kind == traces.SERVER and s.service in calls:
            parent = by_id.get(s.parent_id)
            if parent is not None and parent.attributes.get("node_id") != s.attributes.get("meshbed.instance"):
                out.append(f"{s.service} {s.span_id}: instance {s.attributes.get('meshbed.instance')!r} under "
                           f"sidecar of {parent.attributes.get('node_id')!r}")
    return out


@pytest.mark.quick
@pytest.mark.check("TRACE-2")
def test_trace2_propagation_through_app_hops(mesh, check):
    """Service spans are children of their sidecar's inbound span; cluster and instance are tagged."""
    n = int(check.param("requests", 50))
    calls = _calls(mesh)
    entry = mesh.topology.ingress[0].service
    expected = _expected(mesh)
    batch = drive(mesh.ingress_url, n, concurrency=4, timeout=10)
    col = collect(mesh, batch.answers, expected)
    parented = total = 0
    tagged_spans = all_spans = 0
    problems: list[str] = []
    for rid, spans in col.spans.items():
        ok, tot = traces.service_parented(spans, calls)
        parented, total = parented + ok, total + tot
        bad = _tag_problems(spans, calls, entry)
        bad_ids = {p.split(" ")[1].rstrip(":") for p in bad}
        relevant = [s for s in spans if s.service == traces.INGRESS or s.service.endswith(traces.SIDECAR_SUFFIX)
                    or (s.service in calls and s.kind == traces.SERVER)]
        all_spans += len(relevant)
        tagged_spans += sum(1 for s in relevant if s.span_id not in bad_ids)
        problems += bad
    # every request must contribute its service spans: missing traces count against both figures
    want_service_spans = n * sum(1 for (k, _), c in expected.items() if k[0] in calls and k[1] == traces.SERVER)
    want_tagged = n * sum(1 for (k, _), c in expected.items() if k[0] == traces.INGRESS
                          or k[0].endswith(traces.SIDECAR_SUFFIX) or (k[0] in calls and k[1] == traces.SERVER))
    check.figure("service_parented", rate_pct(parented, max(total, want_service_spans)), "%",
                 total, "jaeger /api/v3/traces", min_n=want_service_spans)
    check.figure("tagged", rate_pct(tagged_spans, max(all_spans, want_tagged)), "%", all_spans,
                 "jaeger /api/v3/traces", min_n=want_tagged)
    check.figure("completeness", traces.completeness_pct(col.list), "%", len(col.list), "jaeger /api/v3/traces")
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status()})
    check.evidence("spans", {"service_server": total, "parented": parented, "checked_for_tags": all_spans,
                             "tagged": tagged_spans})
    check.evidence("tag_problems", problems[:20])
    check.evidence("incomplete_examples", _examples(col))
    check.judge()
