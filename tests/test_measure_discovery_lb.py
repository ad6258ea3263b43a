"""Discovery and LB figures, offline, on constructed samples: every case the judge must see."""

from __future__ import annotations

from dataclasses import dataclass

from meshbed.checks.model import CheckResult, Figure, Threshold
from meshbed.measure import discovery as d
from meshbed.measure import lb


@dataclass
class Req:
    ts: float
    status: int = 200
    instances: tuple[str, ...] = ()
    request_id: str = ""


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
