"""meshbed.measure.trace_hops (TRACE-6): which hop a trace split at, judged by the default profile.

Spans and answers in the shapes a real run records, for ingress -> web -> api -> db on a B3 mesh:
every app propagating B3; api propagating only traceparent; the Envoys configured for W3C while
the apps speak B3 (the `wrong-tracer` mutant); and plain span loss, which must name no hop.
"""

from __future__ import annotations

from meshbed.checks.model import CheckResult, Figure
from meshbed.checks.profile import load
from meshbed.measure import trace_hops
from meshbed.observe import traces
from meshbed.observe.jaeger import Span
from meshbed.topology import parse

CALLS = {"web": ("api",), "api": ("db",), "db": ()}
TOPO = parse({"services": {"web": {"calls": ["api"]}, "api": {"calls": ["db"]}, "db": {}},
              "ingress": {"routes": [{"prefix": "/", "service": "web"}]}})


def sp(tid: str, sid: str, parent: str, svc: str, kind: int, up: str = "") -> Span:
    return Span(tid, sid, parent, svc, "op", kind, {"upstream_cluster": up} if up else {})


def healthy(tid: str = "T") -> list[Span]:
    return [sp(tid, "i", "", "ingress", 3, "web"), sp(tid, "w2s", "i", "web-sidecar", 2),
            sp(tid, "w2", "w2s", "web", 2), sp(tid, "w3", "w2", "web", 3),
            sp(tid, "w3s", "w3", "web-sidecar", 3, "api"), sp(tid, "a2s", "w3s", "api-sidecar", 2),
            sp(tid, "a2", "a2s", "api", 2), sp(tid, "a3", "a2", "api", 3),
            sp(tid, "a3s", "a3", "api-sidecar", 3, "db"), sp(tid, "d2s", "a3s", "db-sidecar", 2),
            sp(tid, "d2", "d2s", "db", 2)]


def body(web: str = "T", api: str = "T", db: str = "T") -> dict:
    return {"service": "web", "path": "/", "trace_id": web, "downstream": [
        {"service": "api", "trace_id": api, "downstream": [{"service": "db", "trace_id": db, "downstream": []}]}]}


def judge(h: trace_hops.HopSplits, complete_pct: float, n: int) -> tuple[str, str]:
    r = CheckResult("TRACE-6", "t", "tracing", thresholds=list(load().for_check("TRACE-6").thresholds))
    r.figures = [Figure("complete", complete_pct, "%", n, min_n=n),
                 Figure("broken_hops", len(h.broken), "hops", h.traces, min_n=n, bad_count=True)]
    return r.judge()


def run(*reqs: tuple[dict, list[Span]]) -> trace_hops.HopSplits:
    return trace_hops.splits([(f"r{i}", b, s) for i, (b, s) in enumerate(reqs)], CALLS, trace_hops.entry_of(TOPO))


def test_hops_of_a_tree_and_of_the_topology():
    assert trace_hops.tree_hops(CALLS, "web") == [("ingress", "web"), ("web", "api"), ("api", "db")]
    assert trace_hops.route_paths(TOPO) == {"web": "/"}
    assert trace_hops.not_driven(TOPO, {"web": "/"}) == []
    assert trace_hops.not_driven(TOPO, {"api": "/api"}) == ["ingress -> web", "web -> api"]
    assert list(trace_hops.answer_hops(body("A", "B", "B"))) == [
        (("ingress", "web"), "", "A"), (("web", "api"), "A", "B"), (("api", "db"), "B", "B")]


def test_a_healthy_mesh_names_no_hop_and_passes():
    h = run(*[(body(), healthy())] * 3)
    assert h.broken == [] and h.traces == 3 and h.crossed[("web", "api")] == 3
    assert judge(h, 100.0, 3)[0] == "pass"


def test_an_app_that_propagates_only_traceparent_splits_both_of_its_hops():
    # api starts its own trace (no traceparent arrives); api's sidecar starts another for db
    spans = [s for s in healthy() if s.service not in ("api", "db", "api-sidecar", "db-sidecar")] + \
        [sp("T", "a2s", "w3s", "api-sidecar", 2)]
    h = run((body("T", "A", "S"), spans))
    assert h.broken == [("web", "api"), ("api", "db")]
    rows = {r["hop"]: r for r in h.to_json()}
    assert rows["web -> api"]["signals"] == {trace_hops.ID_CHANGED: 1}
    assert rows["web -> api"]["examples"][0]["request_id"] == "r0"
    v, why = judge(h, 0.0, 1)
    assert v == "fail" and "broken_hops" in why


def test_envoys_on_w3c_while_the_apps_speak_b3_split_at_the_app_hops():
    # the wrong-tracer mutant: web's app starts a trace (root); api continues web's B3 headers that both
    # Envoys passed through, so its server span hangs under web's client span, skipping both sidecars
    spans = [sp("W", "w2", "", "web", 2), sp("W", "w3", "w2", "web", 3), sp("W", "a2", "w3", "api", 2),
             sp("W", "a3", "a2", "api", 3), sp("W", "d2", "a3", "db", 2)]
    h = run((body("W", "W", "W"), spans))
    assert set(h.broken) == {("ingress", "web"), ("web", "api"), ("api", "db")}
    assert dict(h.signals[("ingress", "web")]) == {trace_hops.ROOT: 1}
    assert dict(h.signals[("web", "api")]) == {trace_hops.WRONG_PARENT: 1}


def test_an_outbound_envoy_that_starts_a_trace_names_its_upstream():
    spans = healthy()
    spans[4] = sp("T", "w3s", "", "web-sidecar", 3, "api")
    assert run((body(), spans)).broken == [("web", "api")]


def test_lost_spans_make_a_trace_incomplete_but_name_no_hop():
    lost = [s for s in healthy() if s.span_id not in ("a2s", "w3s")]  # api/2's and a2s's parents never arrived
    h = run((body(), lost), (body(), []), ({"error": "no body"}, []))
    assert h.broken == [] and h.traces == 3
    rep = traces.analyze(lost, "T", traces.expected_edges(CALLS, "web"))
    assert not rep.complete
    assert judge(h, 0.0, 3)[0] == "fail"  # by `complete`, not by a hop
