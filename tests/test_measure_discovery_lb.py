"""Discovery and LB figures, offline, on constructed samples: every case the judge must see."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from meshbed.checks.model import CheckResult, Figure, Threshold
from meshbed.measure import discovery as d
from meshbed.measure import lb
from meshbed.traffic import Answer, Batch


@dataclass
class Req:
    ts: float
    status: int = 200
    instances: tuple[str, ...] = ()
    request_id: str = ""
    latency_ms: float = 1.0


@dataclass
class Sample:
    ts: float
    endpoints: dict


def test_capped_counts_never_as_the_deadline():
    assert d.capped({"a": 0.1, "b": None}, 10.0) == [0.1, 10.0]


def test_error_rate_of_nothing_is_unmeasured_not_zero():
    assert d.error_rate([]) == (None, 0)
    assert d.error_rate([Req(1, 200), Req(2, 503)]) == (50.0, 2)


def test_late_requests_counted_and_thin_windows_flagged():
    rounds = [{"instance": "b0", "t0": 10.0, "late_from": 12.0, "late_until": 14.0}]
    reqs = [Req(9.5, instances=("f0", "b0"))] + [Req(12.0 + i / 10, instances=("f0", "b0" if i < 3 else "b1"))
                                                for i in range(20)]
    lr = d.late_requests(rounds, reqs)
    assert (lr.late, lr.thinnest_window, lr.checked) == (3, 20, 20)
    # the instance served nothing before its change: the window proves nothing (n = 0)
    lr = d.late_requests(rounds, reqs[1:])
    assert lr.thinnest_window == 0 and lr.late == 3
    # DISC-2 judged: late requests in a thin window still fail (a count of bad events)
    r = CheckResult("DISC-2", "t", "g", figures=[Figure("late_requests", lr.late, "requests", lr.thinnest_window,
                                                        min_n=10, bad_count=True)],
                    thresholds=[Threshold.parse("late_requests", "<= 0 requests")])
    assert r.judge()[0] == "fail"


def test_partial_push_is_a_lost_healthy_address_other_than_the_removed_one():
    base = {"backend": frozenset({("a", "HEALTHY"), ("b", "HEALTHY"), ("c", "HEALTHY")})}
    removed_on_purpose = Sample(1, {"backend": frozenset({("a", "HEALTHY"), ("b", "HEALTHY")})})
    empty = Sample(2, {"backend": frozenset()})
    assert d.count_partial(base, [removed_on_purpose], {"c"}) == 0
    assert d.count_partial(base, [removed_on_purpose, empty], {"c"}) == 1
    assert d.partial_states(base, [empty], {"c"})[0]["backend"] == []


def test_unexpected_states_allow_only_last_known_or_minus_the_removed():
    base = {"backend": frozenset({("a", "HEALTHY"), ("b", "HEALTHY")})}
    ok = [base, {"backend": frozenset({("a", "HEALTHY")})}, None]
    assert d.unexpected(base, ok, "b") == []
    assert d.unexpected(base, [{"backend": frozenset()}], "b") == [{"backend": frozenset()}]


def test_slowest_per_envoy_takes_the_worst_and_caps_absences():
    assert d.slowest_per_envoy({"a": 1.0, "b": None}, {"a": 2.0}, deadline=20.0) == {"a": 2.0, "b": 20.0}


def test_spread_and_disagreement():
    s = lb.spread_stats({"a": 1000, "b": 1000, "c": 1000}, {k: 1 / 3 for k in "abc"})
    assert s["max_dev_pp"] < 1e-9 and s["chi2_p"] > 0.99
    s = lb.spread_stats({"a": 2000, "b": 500, "c": 500}, {k: 1 / 3 for k in "abc"})
    assert s["max_dev_pp"] > 30 and s["chi2_p"] < 0.01
    assert abs(lb.disagreement_pct({"a": 50, "b": 50}, {"a": 40, "b": 60}) - 10.0) < 1e-9


def test_weights_by_version_and_slow_share():
    assert lb.by_version({"b0": 5, "b1": 4, "b2": 1}, {"b0": "v1", "b1": "v1", "b2": "v2"}, ["v1", "v2"]) == \
        {"v1": 9, "v2": 1}
    assert abs(lb.slow_share_ratio({"a": 45, "b": 45, "c": 10}, "c") - 0.3) < 1e-9


def test_key_affinity_and_keys_moved():
    per = {"k1": {"a": 3}, "k2": {"b": 2, "c": 1}}
    pct, n = lb.affinity_pct(per)
    assert n == 6 and abs(pct - 100 * 5 / 6) < 1e-9
    km = lb.keys_moved({"k1": "a", "k2": "c", "k3": "b"}, {"k1": "a", "k2": "b", "k3": "a"}, "c", 3)
    assert (km.compared, km.moved, km.moved_not_from_removed) == (3, 2, 1) and abs(km.norm - 2.0) < 1e-9


def test_ejections_judged_per_envoy_and_absence_is_zero():
    ej = lb.ejections({"f0": 1, "f1": 0}, {"f0": 3, "f1": 40}, threshold=3, in_flight_allowance=0)
    assert ej.pct == 50.0 and ej.n == 2 and ej.per_envoy["f1"]["in_time"] is False
    none = lb.ejections({"f0": 0, "f1": 0}, {"f0": 600, "f1": 600}, 3, 0)
    assert none.pct == 0.0 and none.n == 2  # measured: nobody ejected, a fail not an error
    late = lb.ejections({"f0": 1}, {"f0": 9}, 3, 2)  # 9 > 1 x (3 + 2): ejected too late
    assert late.pct == 0.0


def test_protocol_figures_gap_and_absence():
    f = d.protocol_figures({"sotw": [0.05, 0.06], "delta": [10.0, 10.0]})  # delta never converged: the deadline
    assert f["delta_convergence_p99"] == (10.0, 2) and abs(f["protocol_gap_p99"][0] - 9.94) < 1e-9


# -- the four-step shape: what the suites now hand to the measure modules ------

def _poller(changes: dict, polls: dict | None = None):
    """An EndpointPoller's recorded timeline, built by hand (no threads, no Envoys)."""
    from meshbed.observe.discovery_helpers import EndpointPoller, Sample as S
    p = EndpointPoller({n: "" for n in changes}, {n: ("backend",) for n in changes})
    p.changes = {n: [S(ts, eps) for ts, eps in ch] for n, ch in changes.items()}
    p.poll_ts = polls or {n: [ts for ts, _ in ch] for n, ch in changes.items()}
    return p


def _eps(*addrs: str) -> dict:
    return {"backend": frozenset((a, "HEALTHY") for a in addrs)}


def test_convergence_rounds_cap_absences_and_chart_acks():
    c = d.Convergence(10.0)
    assert c.add({"f0": 0.1, "f1": None}, acks=[0.05]) == [0.1, 10.0]
    c.add({"f0": 0.2, "f1": 0.3})
    assert c.per_envoy == {"f0": [0.1, 0.2], "f1": [10.0, 0.3]}
    assert c.summary.n == 4 and c.summary.p99 == 10.0  # the Envoy that never converged is judged
    chart = c.chart()
    assert chart["per_envoy"] is c.per_envoy and chart["cp_eds_ack_s"]["n"] == 1
    assert d.Convergence(1.0).chart()["cp_eds_ack_s"] is None  # another control plane: no push log


def test_slowest_and_the_watcher_that_never_got_config():
    assert d.slowest({"a": 0.2, "b": None}, 5.0) == 5.0
    assert d.slowest({}, 5.0) is None  # nothing measured: not a value
    assert d.capped_or_never({}, 10.0) == [10.0]
    assert d.capped_or_never({"w": 0.1}, 10.0) == [0.1]


def test_push_log_first_event_per_node_after_t0():
    evs = [{"node": "f0", "ts": 9.0}, {"node": "f0", "ts": 10.5}, {"node": "f1", "ts": 11.25},
           {"node": "f0", "ts": 12.0}]
    assert d.first_per_node(evs, 10.0) == {"f0": 0.5, "f1": 1.25}


def test_window_errors_count_only_requests_started_inside():
    reqs = [Req(1.0, 503), Req(2.0, 200), Req(2.5, 503, ("b0",)), Req(3.0, 503), Req(9.0, 200)]
    e = d.window_errors(reqs, [(2.0, 3.0), (8.0, 10.0)], keys=("ts", "status", "instances"))
    assert (e.n, round(e.pct, 3)) == (3, 33.333) and e.failed == [{"ts": 2.5, "status": 503, "instances": ["b0"]}]
    assert d.window_errors(reqs, [(20.0, 30.0)]).pct is None  # nothing in the window: unmeasured
    assert d.min_requests(40, 4, 4) == 320 and d.min_requests(60.0, 3.0) == 90


def test_late_window_starts_after_the_slowest_envoy_plus_grace():
    assert d.late_window(100.0, [0.2, 1.5, 0.1], 2.0) == (102.5, 104.5)
    assert d.deregister_load_s(3, 10.0, 2.0) == 3 * 24.0 + 6


def test_churn_storm_settle_nacks_and_errors():
    before = {"f0": {"cluster_manager.cds.update_rejected": 1}, "f1": {}}
    after = {"f0": {"cluster_manager.cds.update_rejected": 3}, "f1": {"cluster.backend.update_rejected": 1}}
    m = d.churn_storm({"f0": 0.3, "f1": None}, 15.0, before, after, [Req(5.0, 503, ("b1",))], (4.0, 6.0))
    assert (m.settle_s, m.envoys, m.nacks, m.nack_total) == (15.0, 2, {"f0": 2, "f1": 1}, 3)
    assert m.errors.pct == 100.0 and m.errors.failed[0]["instances"] == ["b1"]


def _withdrawal(kind: str, poller_nodes=("f0", "f1"), conv=None) -> "d.Withdrawal":
    return d.Withdrawal(kind, "backend-2", "c", {n: _eps("a", "b", "c") for n in poller_nodes},
                        t_start=10.0, t_change=10.5, t_end=14.0, t_conv=14.5, t_watch=15.0,
                        convergence_s=conv if conv is not None else {"f0": 0.1, "f1": None},
                        push_log={"cp_events": []})


def test_link_faults_flag_lost_config_and_who_converged_during_the_fault():
    poller = _poller({"f0": [(1.0, _eps("a", "b", "c")), (11.0, _eps("a", "b"))],  # minus the removed: fine
                      "f1": [(1.0, _eps("a", "b", "c")), (12.0, {"backend": frozenset()}), (14.2, _eps("a", "b"))]})
    reqs = [Req(11.0, 503), Req(12.0, 200), Req(14.1, 503)]  # the last one after the fault's end
    m = d.link_faults([_withdrawal("reset_peer")], poller, reqs, "backend", 20.0)
    assert m.lost == {"f1"} and m.checked == 2
    assert (m.post, m.post_max) == ([0.1, 20.0], 20.0)  # f1 never converged: the deadline
    assert (m.errors.n, m.errors.pct) == (2, 50.0)
    r = m.rounds[0]
    assert r["converged_during_fault"] == {"f0": True, "f1": True}  # f1's empty set lacks it too
    assert r["unexpected_states"]["f1"] == [{"backend": []}] and "cp_events" in r
    r = CheckResult("DISC-5", "t", "g", figures=[Figure("config_lost", len(m.lost), "envoys", m.checked, min_n=2)],
                    thresholds=[Threshold.parse("config_lost", "<= 0 envoys")])
    assert r.judge()[0] == "fail"


def test_consul_outages_count_partial_pushes_per_poll():
    poller = _poller({"f0": [(1.0, _eps("a", "b", "c")), (10.2, _eps("a", "b"))],
                      "f1": [(1.0, _eps("a", "b", "c")), (10.3, _eps("c"))]},  # lost a and b: partial
                     polls={"f0": [10.0 + i / 10 for i in range(50)], "f1": [10.0 + i / 10 for i in range(40)]})
    m = d.consul_outages([_withdrawal("timeout", conv={"f0": 0.4, "f1": 0.2})], poller, [Req(12.0)], 15.0)
    assert (m.partial, m.polls) == (1, 90) and list(m.examples) == ["timeout:f1"]
    assert m.convergence_max == 0.4 and (m.errors.pct, m.errors.n) == (0.0, 1)
    assert m.rounds[0]["partial_envoys"] == ["f1"] and m.rounds[0]["outage"] == "timeout"


def test_reconverged_takes_each_envoys_slowest_from_the_restart():
    m = d.reconverged({"f0": 0.5, "i": None}, {"backend": {"f0": 1.2}, "frontend": {"i": 0.3}}, 20.0,
                      [Req(1.0), Req(2.0, 503)], (0.0, 3.0))
    assert m.per_envoy == {"f0": 1.2, "i": 20.0} and m.slowest == 20.0 and m.errors.pct == 50.0
    assert d.other_protocol("GRPC") == "DELTA_GRPC" and d.other_protocol("DELTA_GRPC") == "GRPC"


# -- LB ------------------------------------------------------------------------

def _host(t: int, e: int = 0) -> dict:
    return {"rq_total": t, "rq_error": e}


def test_counts_from_both_sources_between_two_readings():
    before = {"f0": {"backend": {"b0": _host(10), "b1": _host(5)}}}
    now = {"f0": {"backend": {"b0": _host(20, 1), "b1": _host(15)}, "backend~v2": {"b2": _host(4)}},
           "f1": {"backend": {"b0": _host(3)}}}
    c = lb.counted(before, now, {"b0": 100, "b1": 0, "b2": 7}, {"b0": 113, "b1": 10, "b2": 11}, ["b0", "b1", "b2"])
    assert c.envoy == {"b0": 13, "b1": 10, "b2": 4} and c.app == {"b0": 13, "b1": 10, "b2": 4} and c.agree
    assert c.raw["f0"]["backend"]["b0"] == {"rq_total": 10, "rq_error": 1}
    assert c.by_cluster() == {"backend": 23, "backend~v2": 4}
    assert c.sent_to("backend", "b0", ["f0", "f1", "f2"]) == {"f0": 10, "f1": 3, "f2": 0}
    assert c.served == 27 and c.disagreement_pct == 0.0


def test_spread_is_judged_on_the_worse_source_and_by_version():
    c = lb.Counts({"b0": 500, "b1": 500}, {"b0": 600, "b1": 400}, {})
    s = lb.spread(c, lb.even(["b0", "b1"]))
    assert abs(s.max_dev_pp - 10.0) < 1e-9 and s.chi2_p == s.instances["chi2_p"] < 0.01 and s.served == 1000
    v = lb.spread(lb.Counts({"b0": 45, "b1": 45, "b2": 10}, {"b0": 45, "b1": 45, "b2": 10}, {}),
                  lb.weighted({"v1": 90, "v2": 10}), group={"b0": "v1", "b1": "v1", "b2": "v2"})
    assert v.envoy["counts"] == {"v1": 90, "v2": 10} and v.max_dev_pp < 1e-9


def test_slow_share_worse_source_and_failover_shares():
    c = lb.Counts({"a": 45, "b": 45, "c": 10}, {"a": 40, "b": 40, "c": 20}, {})
    m = lb.slow_share(c, "c")
    assert abs(m.envoy - 0.3) < 1e-9 and abs(m.worst - 0.6) < 1e-9
    batch = Batch([_answer(200)] * 9 + [_answer(503)])
    f = lb.failover(lb.Counts({"p": 1, "s1": 49, "s2": 50}, {"p": 0, "s1": 50, "s2": 50}, {}), ["s1", "s2"], batch)
    assert (f.secondary_envoy_pct, f.secondary_app_pct, f.secondary_pct) == (99.0, 100.0, 99.0)
    assert (f.error_pct, f.requests, f.served) == (10.0, 10, 100) and lb.success_pct(batch) == 90.0


def _answer(status: int, body: dict | None = None, sent: float = 0.0, error: str = "") -> Answer:
    return Answer("r", status, 0.01, "f0", json.dumps(body or {}).encode(), {}, sent, error)


def test_per_key_tallies_backends_by_the_echoed_key():
    ans = [_answer(200, {"path": "/lb4/user-1", "downstream": [{"instance": "b0"}]}),
           _answer(200, {"path": "/lb4/user-1", "downstream": [{"instance": "b0"}]}),
           _answer(200, {"path": "/lb4/user-2", "downstream": [{"instance": "b1"}]}),
           _answer(503, {"path": "/lb4/user-2", "downstream": [{"instance": "b2"}]}),  # failed: left out
           _answer(200, {"path": "/lb4/user-3", "downstream": []})]  # no backend named: left out
    assert lb.per_key(ans) == {"user-1": {"b0": 2}, "user-2": {"b1": 1}}


def test_consistent_hash_and_the_worst_algorithm():
    before = {"k1": {"a": 3}, "k2": {"b": 2, "c": 1}, "k3": {"c": 3}}
    after = {"k1": {"a": 1}, "k2": {"b": 1}, "k3": {"a": 1}}
    m = lb.consistent_hash(before, after, "c", ["a", "b", "c"])
    j = m.to_json()
    assert (j["keys_compared"], j["keys_moved"], j["keys_on_removed_endpoint"]) == (3, 1, 1)
    assert j["split_keys"] == {"k2": {"b": 2, "c": 1}} and j["keys_per_endpoint_before"] == {"a": 1, "b": 1, "c": 1}
    sticky = lb.consistent_hash({"k": {"a": 3}}, {"k": {"a": 1}}, "c", ["a", "b", "c"])
    assert lb.least_affine({"RING_HASH": m, "MAGLEV": sticky}) is m
    assert lb.most_moved({"RING_HASH": m, "MAGLEV": sticky}) is m


def test_outlier_ejections_allow_in_flight_and_absence_fails():
    before = {"f0": {lb.EJECTIONS: 0, "ejections_active": 0}, "f1": {lb.EJECTIONS: 2}}
    after = {"f0": {lb.EJECTIONS: 1, "ejections_active": 1}, "f1": {lb.EJECTIONS: 2}}
    m = lb.outlier_ejections(before, after, {"f0": 5, "f1": 30}, threshold=3, max_in_flight=3,
                             ejected_at_end={"f0": ["b2"]})
    assert m.in_flight_allowance == 2 and m.n == 2 and m.pct == 50.0  # f0: 5 <= 1 x (3 + 2); f1 never ejected
    assert m.per_envoy["f0"]["outlier_stats_delta"] == {lb.EJECTIONS: 1, "ejections_active": 1}
    assert m.per_envoy["f0"]["failed_outlier_check_at_end"] == ["b2"] and m.per_envoy["f1"]["in_time"] is False
    r = CheckResult("LB-6", "t", "g", figures=[Figure("ejecting_envoys", m.pct, "%", m.n, min_n=2)],
                    thresholds=[Threshold.parse("ejecting_envoys", ">= 100 %")])
    assert r.judge()[0] == "fail"


def test_outcome_summarizes_a_batch():
    b = Batch([_answer(200, sent=1.0), _answer(0, sent=1.5, error="Timeout: timed out")])
    o = lb.outcome(b)
    assert o["by_status"] == {"200": 1, "0": 1} and o["errors"] == ["Timeout: timed out"] and o["duration_s"] == 0.51


# -- scenario: one fault on several links ---------------------------------------

class FakeToxiproxy:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_toxic(self, proxy, name, type_, attributes, stream="downstream", toxicity=1.0):
        self.calls.append(("add", proxy, type_, stream, dict(attributes)))

    def remove_toxic(self, proxy, name):
        self.calls.append(("remove", proxy))

    def set_enabled(self, proxy, enabled):
        self.calls.append(("enabled", proxy, enabled))


def test_link_faults_on_every_proxy_both_ways_and_undone():
    from meshbed import scenario
    from meshbed.chaos.faults import FaultLog
    tp, log = FakeToxiproxy(), FaultLog()
    with scenario.link_faults(tp, ["p1", "p2"], "timeout", log, timeout_ms=5000):
        assert [c[1:4] for c in tp.calls] == [("p1", "timeout", "downstream"), ("p1", "timeout", "upstream"),
                                              ("p2", "timeout", "downstream"), ("p2", "timeout", "upstream")]
        assert tp.calls[0][4] == {"timeout": 5000}
    assert [c for c in tp.calls if c[0] == "remove"] == [("remove", "p2")] * 2 + [("remove", "p1")] * 2
    tp.calls.clear()
    with scenario.link_faults(tp, ["p1", "p2"], "down", log):
        assert tp.calls == [("enabled", "p1", False), ("enabled", "p2", False)]
    assert tp.calls[2:] == [("enabled", "p2", True), ("enabled", "p1", True)]
    with scenario.link_faults(tp, ["p1"], "latency", log, latency_ms=500):
        assert tp.calls[-1][4]["latency"] == 500
    with pytest.raises(ValueError, match="unknown link fault"):
        scenario.link_faults(tp, ["p1"], "blackhole", log)
    assert len(log.windows) == 4 + 2 + 2
