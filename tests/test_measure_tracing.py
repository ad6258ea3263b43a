"""meshbed.measure.tracing: TRACE figures from answers and spans, judged against the default profile.

Inputs are built in the shapes a real run records: the sample app's JSON answer
(trace id, downstream instances) and Envoy/app spans with the tags Envoy sets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshbed.checks.model import CheckResult, Figure
from meshbed.checks.profile import load
from meshbed.measure import tracing
from meshbed.observe import traces
from meshbed.observe.jaeger import Span
from meshbed.topology import load as load_topology
from meshbed.traffic import Answer

ROOT = Path(__file__).resolve().parents[1]
CALLS = {"frontend": ("backend",), "backend": ()}
EXPECTED = traces.expected_edges(CALLS, "frontend")
HOP = ("frontend-sidecar", traces.CLIENT)


def verdict(check_id: str, *figures: Figure) -> tuple[str, str]:
    """What the default profile makes of these figures (the judge the suites call)."""
    r = CheckResult(check_id, "t", "tracing", thresholds=list(load().for_check(check_id).thresholds))
    r.figures = list(figures)
    return r.judge()


def answer(rid: str, status: int = 200, served_by: str = "backend-1", latency_s: float = 0.01,
           sent_at: float = 1000.0) -> Answer:
    downs = [{"service": "backend", "instance": served_by}] if status == 200 else \
        [{"service": "backend", "status": 504, "error": "upstream request timeout"}]
    body = json.dumps({"service": "frontend", "instance": "frontend-0", "trace_id": "t" + rid,
                       "downstream": downs}).encode()
    return Answer(rid, status, latency_s, "frontend-0", body, {}, sent_at)


def trace(rid: str, *, flags: str = "-", error: bool = False, cut: bool = False, backend_tags: dict | None = None,
          drop: tuple[str, ...] = ()) -> list[Span]:
    """The seven spans of ingress -> frontend -> backend, with Envoy's tags, as Jaeger returns them."""
    tid = "t" + rid

    def envoy(sid, parent, svc, kind, node, cluster, **kw):
        return Span(tid, sid, parent, svc, "op", kind,
                    {"node_id": node, "upstream_cluster": cluster, "response_flags": kw.get("flags", "-"),
                     "http.status_code": "200", traces.REQUEST_ID_TAG: rid}, kw.get("error", False))

    def app(sid, parent, svc, kind, inst):
        attrs = {"meshbed.instance": inst, traces.REQUEST_ID_TAG: rid} if kind == traces.SERVER else {}
        return Span(tid, sid, parent, svc, "op", kind, attrs)

    spans = [envoy("a", "", "ingress", 3, "ingress", "frontend"),
             envoy("b", "a", "frontend-sidecar", 2, "frontend-0", "local_app"),
             app("c", "b", "frontend", 2, "frontend-0"),
             app("d", "c", "frontend", 3, ""),
             envoy("e", "d", "frontend-sidecar", 3, "frontend-0", "backend", flags=flags, error=error)]
    if not cut:
        spans += [envoy("f", "e", "backend-sidecar", 2, "backend-1", "local_app"),
                  Span(tid, "g", "f", "backend", "op", 2,
                       backend_tags if backend_tags is not None
                       else {"meshbed.instance": "backend-1", traces.REQUEST_ID_TAG: rid})]
    return [s for s in spans if s.span_id not in drop]


def report(rid: str, spans: list[Span], expected=EXPECTED) -> traces.TraceReport:
    return traces.analyze(spans, "t" + rid, expected, rid)


# -- routes --------------------------------------------------------------------

def test_route_edges_of_the_basic_topology():
    topo = load_topology(ROOT / "examples" / "basic.yaml")
    assert tracing.entry_service(topo) == "frontend"
    assert tracing.callers(topo, "backend") == ["frontend"]
    assert tracing.callers(topo, "frontend") == []  # the ingress is not a service
    assert tracing.route_edges(topo) == EXPECTED


def test_achieved_rps_spans_first_send_to_last_answer():
    a = [answer(str(i), sent_at=100.0 + i * 0.5, latency_s=0.5) for i in range(10)]
    assert tracing.achieved_rps(a) == pytest.approx(10 / 5.0)
    assert tracing.achieved_rps([]) is None


# -- TRACE-1 -------------------------------------------------------------------

def test_trace1_completeness_counts_every_request():
    reports = [report(str(i), trace(str(i))) for i in range(999)] + [report("x", trace("x", drop=("g",)))]
    m = tracing.completeness(reports)
    assert (m.complete, m.traces) == (999, 1000) and m.pct == pytest.approx(99.9)
    assert m.defects == {"missing backend/2<-backend-sidecar/2": 1}
    assert verdict("TRACE-1", Figure("completeness", m.pct, "%", m.traces, min_n=1000))[0] == "pass"


def test_trace1_a_request_without_a_trace_fails_not_errors():
    lost = traces.TraceReport(trace_id="", request_id="lost")  # the answer named no trace id
    m = tracing.completeness([report(str(i), trace(str(i))) for i in range(99)] + [lost])
    assert m.pct == 99.0
    v, why = verdict("TRACE-1", Figure("completeness", m.pct, "%", m.traces, min_n=100))
    assert v == "fail" and "completeness" in why
    assert tracing.completeness([]).pct is None  # nothing sent: not measured


# -- TRACE-2 -------------------------------------------------------------------

def _propagation(spans_by_request, requests):
    return tracing.propagation(spans_by_request, requests, EXPECTED, CALLS, "frontend")


def test_trace2_good_traces_are_fully_parented_and_tagged():
    m = _propagation({str(i): trace(str(i)) for i in range(50)}, 50)
    assert (m.parented, m.service_spans, m.want_service_spans) == (100, 100, 100)
    assert (m.tagged, m.checked, m.want_tagged) == (300, 300, 300)  # 4 Envoy spans + 2 service spans per trace
    assert m.parented_pct == 100.0 and m.tagged_pct == 100.0 and m.problems == []
    v = verdict("TRACE-2", Figure("service_parented", m.parented_pct, "%", m.service_spans, min_n=m.want_service_spans),
                Figure("tagged", m.tagged_pct, "%", m.checked, min_n=m.want_tagged))
    assert v == ("pass", "")


def test_trace2_missing_traces_count_against_both_figures():
    m = _propagation({str(i): trace(str(i)) for i in range(49)}, 50)
    assert m.parented_pct == pytest.approx(98.0) and m.tagged_pct == pytest.approx(98.0)
    v, why = verdict("TRACE-2",
                     Figure("service_parented", m.parented_pct, "%", m.service_spans, min_n=m.want_service_spans),
                     Figure("tagged", m.tagged_pct, "%", m.checked, min_n=m.want_tagged))
    # under-sampled, yet judged: fewer spans than expected is what the figure measures
    assert v == "error" and "only 98 samples" in why


def test_trace2_wrong_cluster_wrong_instance_and_missing_tag_name_the_span():
    spans = trace("1", backend_tags={"meshbed.instance": "backend-2", traces.REQUEST_ID_TAG: "1"})
    spans[0] = Span(spans[0].trace_id, "a", "", "ingress", "op", 3,
                    {**spans[0].attributes, "upstream_cluster": "backend"})
    spans[2] = Span(spans[2].trace_id, "c", "b", "frontend", "op", 2, {traces.REQUEST_ID_TAG: "1"})
    m = _propagation({"1": spans}, 1)
    assert m.checked == 6 and m.tagged == 3
    assert any("ingress/3 a: upstream_cluster 'backend'" in p for p in m.problems)
    assert any("backend g: instance 'backend-2' under sidecar of 'backend-1'" in p for p in m.problems)
    assert any("frontend/2 c: no meshbed.instance" in p for p in m.problems)


def test_trace2_a_service_span_under_the_wrong_parent_is_not_parented():
    spans = trace("1")
    spans[6] = Span(spans[6].trace_id, "g", "e", "backend", "op", 2, spans[6].attributes)  # skips its sidecar
    m = _propagation({"1": spans}, 1)
    assert (m.parented, m.service_spans) == (1, 2)


# -- TRACE-3 -------------------------------------------------------------------

def _phases(n_ok: int, failed: list[Answer], served_by_victim: list[Answer] = ()) -> dict[str, list[Answer]]:
    ok = [answer(f"ok{i}", served_by="backend-2") for i in range(n_ok)]
    return {"latency": ok + failed + list(served_by_victim)}


def test_trace3_failed_hops_marked_with_a_flag():
    failed = [answer(f"f{i}", status=502) for i in range(5)]
    spans = {a.request_id: trace(a.request_id, flags="UT", error=True) for a in failed}
    m = tracing.error_marking(_phases(10, failed), spans, HOP, {"latency": "backend-1"})
    assert (m.crossed, m.marked, m.pct) == (5, 5, 100.0)
    assert m.phases["latency"].flags == {"UT": 5} and m.unmarked == []


def test_trace3_an_unmarked_hop_or_a_lost_trace_fails():
    failed = [answer(f"f{i}", status=502) for i in range(4)]
    spans = {"f0": trace("f0", flags="UT", error=True), "f1": trace("f1", flags="-", error=True),
             "f2": trace("f2", flags="UT", error=False)}  # f3: no trace at all
    m = tracing.error_marking(_phases(0, failed), spans, HOP, {"latency": "backend-1"})
    assert (m.crossed, m.marked) == (4, 1)
    assert [u["request_id"] for u in m.unmarked] == ["f1", "f2", "f3"]
    assert m.unmarked[2]["hop_spans"] == 0
    v, why = verdict("TRACE-3", Figure("error_marked", m.pct, "%", m.crossed, min_n=2),
                     Figure("completeness", 100.0, "%", 60, min_n=60), Figure("policy_apply_p99", 0.2, "s", 3))
    assert v == "fail" and why.startswith("error_marked = 25 %")


def test_trace3_a_timeout_never_enforced_is_a_fail_not_nothing_to_judge():
    """The victim served the request after the full latency: the hop should have timed out."""
    late = [answer(f"l{i}", served_by="backend-1", latency_s=1.0) for i in range(6)]
    spans = {a.request_id: trace(a.request_id) for a in late}
    m = tracing.error_marking(_phases(12, [], late), spans, HOP, {"latency": "backend-1"})
    assert (m.crossed, m.marked, m.fewest_crossed) == (6, 0, 6) and m.pct == 0.0
    v, _ = verdict("TRACE-3", Figure("error_marked", m.pct, "%", m.crossed, min_n=2),
                   Figure("completeness", 100.0, "%", 60, min_n=60), Figure("policy_apply_p99", 6.0, "s", 3))
    assert v == "fail"


def test_trace3_a_phase_no_request_crossed_is_visible():
    m = tracing.error_marking({"reset_peer": [answer("a", served_by="backend-2")],
                               "latency": [answer("b", status=502)]},
                              {"b": trace("b", flags="UT", error=True)}, HOP,
                              {"reset_peer": "backend-0", "latency": "backend-1"})
    assert m.fewest_crossed == 0 and m.crossed == 1


def test_trace3_expected_trees_cut_only_failed_requests_of_cut_phases():
    cut = traces.without_descendants(EXPECTED, HOP)
    phases = {"reset_peer": [answer("r1", status=502), answer("r2")], "latency": [answer("l1", status=502)]}
    want = tracing.expected_per_request(phases, EXPECTED, {"reset_peer": cut})
    assert want == {"r1": cut, "r2": EXPECTED, "l1": EXPECTED}
    assert report("r1", trace("r1", cut=True, flags="UF", error=True), cut).complete


# -- TRACE-4 -------------------------------------------------------------------

def test_trace4_span_loss_counts_what_never_arrived():
    reports = [report("1", trace("1")), report("2", trace("2", drop=("a", "b", "e"))),
               traces.TraceReport(trace_id="t3", request_id="3")]
    loss = tracing.span_loss(reports, EXPECTED)
    assert (loss.received, loss.expected, loss.traces_without_spans) == (7 + 4, 21, 1)
    assert loss.loss_pct == pytest.approx(100.0 * 10 / 21)
    assert loss.missing_by_span["ingress/3"] == 1
    assert tracing.span_loss([], EXPECTED).loss_pct is None


# -- TRACE-5 -------------------------------------------------------------------

def _sampled(n: int, sampled: int, partial: int = 0) -> list[traces.TraceReport]:
    out = []
    for i in range(n):
        rid = str(i)
        spans = trace(rid, drop=("g",)) if i < partial else trace(rid) if i < sampled else []
        out.append(report(rid, spans))
    return out


def test_trace5_sampling_on_target_with_complete_traces_passes():
    m = tracing.sampling(_sampled(3000, 300), 10.0)
    assert (m.sampled, m.partial, m.sampled_pct, m.dev_pp) == (300, 0, 10.0, 0.0)
    v = verdict("TRACE-5", Figure("sampling_dev", m.dev_pp, "pp", m.requests, min_n=3000),
                Figure("partial_traces", m.partial, "traces", m.sampled, min_n=1, bad_count=True),
                Figure("policy_apply_p99", 0.3, "s", 1))
    assert v == ("pass", "")


def test_trace5_a_policy_that_never_showed_fails_on_the_rate():
    m = tracing.sampling(_sampled(3000, 3000, partial=2), 10.0)  # still sampling everything
    assert m.dev_pp == 90.0 and m.partial == 2 and len(m.partial_examples) == 2
    v, why = verdict("TRACE-5", Figure("sampling_dev", m.dev_pp, "pp", m.requests, min_n=3000),
                     Figure("partial_traces", m.partial, "traces", m.sampled, min_n=1, bad_count=True),
                     Figure("policy_apply_p99", 6.0, "s", 1))
    assert v == "fail" and "sampling_dev" in why and "partial_traces" in why and "policy_apply_p99" in why


def test_trace5_nothing_sampled_is_a_measured_deviation():
    m = tracing.sampling(_sampled(3000, 0), 10.0)
    assert m.sampled_pct == 0.0 and m.dev_pp == 10.0 and m.partial == 0
    v, why = verdict("TRACE-5", Figure("sampling_dev", m.dev_pp, "pp", m.requests, min_n=3000),
                     Figure("partial_traces", m.partial, "traces", m.sampled, min_n=1, bad_count=True),
                     Figure("policy_apply_p99", 0.3, "s", 1))
    assert v == "fail" and why.startswith("sampling_dev")
