"""meshbed.observe.traces: expected span trees and completeness rules, on hand-made spans."""

from __future__ import annotations

from collections import Counter

import pytest

from meshbed.observe import traces
from meshbed.observe.jaeger import Span

CALLS = {"frontend": ("backend",), "backend": ()}
TID = "t" * 32
RID = "rid-1"


def sp(sid, parent, service, kind, tid=TID, **attrs):
    attrs.setdefault(traces.REQUEST_ID_TAG, RID)
    return Span(tid, sid, parent, service, "op", kind, attrs)


def good_trace():
    return [
        sp("a", "", "ingress", 3),
        sp("b", "a", "frontend-sidecar", 2),
        sp("c", "b", "frontend", 2),
        sp("d", "c", "frontend", 3),
        sp("e", "d", "frontend-sidecar", 3),
        sp("f", "e", "backend-sidecar", 2),
        sp("g", "f", "backend", 2),
    ]


def test_expected_edges_for_the_basic_route_are_the_seven_spans():
    e = traces.expected_edges(CALLS, "frontend")
    assert sum(e.values()) == 7
    assert traces.expected_keys(e) == Counter({("ingress", 3): 1, ("frontend-sidecar", 2): 1, ("frontend", 2): 1,
                                               ("frontend", 3): 1, ("frontend-sidecar", 3): 1,
                                               ("backend-sidecar", 2): 1, ("backend", 2): 1})
    assert e[(("backend-sidecar", 2), ("frontend-sidecar", 3))] == 1
    assert e[(("ingress", 3), None)] == 1


def test_expected_edges_fan_out_and_no_sidecars():
    e = traces.expected_edges({"a": ("b", "c")}, "a")
    assert sum(e.values()) == 1 + 2 + 2 * 2 + 2 * 2
    assert e[(("a", 3), ("a", 2))] == 2
    e2 = traces.expected_edges(CALLS, "frontend", sidecars=False)
    assert e2 == Counter({(("ingress", 3), None): 1, (("frontend", 2), ("ingress", 3)): 1,
                          (("frontend", 3), ("frontend", 2)): 1, (("backend", 2), ("frontend", 3)): 1})


def test_cycle_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        traces.expected_edges({"a": ("b",), "b": ("a",)}, "a")


def test_complete_trace():
    r = traces.analyze(good_trace(), TID, traces.expected_edges(CALLS, "frontend"), RID)
    assert r.complete and not r.partial and r.problems() == ""
    assert traces.completeness_pct([r]) == 100.0


def test_missing_span_makes_the_child_an_orphan():
    spans = [s for s in good_trace() if s.span_id != "e"]
    r = traces.analyze(spans, TID, traces.expected_edges(CALLS, "frontend"), RID)
    assert not r.complete and r.partial
    assert r.orphans == 1 and [o.span_id for o in traces.orphans(spans)] == ["f"]
    assert "frontend-sidecar/3<-frontend/3" in r.missing
    assert "backend-sidecar/2<-<unresolved>/0" in r.extra
    assert traces.problem_counts([r])["orphans"] == 1


def test_wrong_parent_extra_span_second_trace_id_and_foreign_request():
    exp = traces.expected_edges(CALLS, "frontend")
    base = good_trace()
    wrong_parent = base[:6] + [sp("g", "b", "backend", 2)]
    assert not traces.analyze(wrong_parent, TID, exp, RID).complete
    extra = base + [sp("h", "c", "frontend", 3)]
    assert traces.analyze(extra, TID, exp, RID).extra == ["frontend/3<-frontend/2"]
    other = base[:6] + [sp("g", "f", "backend", 2, tid="u" * 32)]
    assert traces.analyze(other, TID, exp, RID).trace_ids == [TID, "u" * 32]
    foreign = base[:6] + [sp("g", "f", "backend", 2, **{traces.REQUEST_ID_TAG: "rid-2"})]
    r = traces.analyze(foreign, TID, exp, RID)
    assert not r.complete and r.foreign_request_ids == ["rid-2"]
    two_roots = base + [sp("z", "", "ingress", 3)]
    assert traces.analyze(two_roots, TID, exp, RID).roots == 2


def test_empty_trace_is_neither_complete_nor_partial():
    r = traces.analyze([], TID, traces.expected_edges(CALLS, "frontend"))
    assert not r.complete and not r.partial and r.problems() == "no spans"
    assert traces.problem_counts([r]) == {"no spans": 1}
    assert traces.completeness_pct([]) != traces.completeness_pct([])  # nan


def test_service_parented_and_tags():
    spans = good_trace()
    assert traces.service_parented(spans, CALLS) == (2, 2)
    bad = spans[:6] + [sp("g", "e", "backend", 2)]
    assert traces.service_parented(bad, CALLS) == (1, 2)
    lacks = traces.untagged(spans, CALLS)
    assert any(x.startswith("ingress/3 a: no upstream_cluster,node_id") for x in lacks)
    tagged = [Span(s.trace_id, s.span_id, s.parent_id, s.service, s.name, s.kind,
                   {**s.attributes, "upstream_cluster": "x", "node_id": "n", "response_flags": "-",
                    "http.status_code": "200", "meshbed.instance": "i"}) for s in spans]
    assert traces.untagged(tagged, CALLS) == []


def test_without_descendants_truncates_below_the_failed_hop():
    e = traces.expected_edges(CALLS, "frontend")
    t = traces.without_descendants(e, ("frontend-sidecar", 3))
    assert sum(t.values()) == 5
    assert (("frontend-sidecar", 3), ("frontend", 3)) in t
    assert traces.analyze(good_trace()[:5], TID, t, RID).complete
    assert traces.without_descendants(e, ("backend", 2)) == e
