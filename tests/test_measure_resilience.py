"""meshbed.measure.resilience (and faults.all_of): RES figures from answers, counters and spans.

Each figure is also put through the judge with the default profile's
thresholds, so a measured absence (no 504, no retry) is shown to come out
as ``fail``, never as ``error``.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from meshbed.chaos import faults
from meshbed.checks.model import CheckResult, Figure
from meshbed.checks.profile import load
from meshbed.load import Request
from meshbed.measure import resilience
from meshbed.observe import traces
from meshbed.observe.envoy_admin import HostStatus
from meshbed.observe.jaeger import Span
from meshbed.sample.payload import payload_bytes, payload_sha256
from meshbed.traffic import Answer


def verdict(check_id: str, *figures: Figure) -> tuple[str, str]:
    r = CheckResult(check_id, "t", "resilience", thresholds=list(load().for_check(check_id).thresholds))
    r.figures = list(figures)
    return r.judge()


def ans(rid: str, status: int = 200, latency_s: float = 0.01, body: object = None, error: str = "",
        headers: dict | None = None) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
    return Answer(rid, status, latency_s, "frontend-0", raw, headers or {}, 1000.0, error)


def served(rid: str, inst: str) -> Answer:
    return ans(rid, body={"service": "frontend", "downstream": [{"service": "backend", "instance": inst}]})


POLICY_OK = Figure("policy_apply_p99", 0.4, "s", 3)


# -- faults.all_of -------------------------------------------------------------

def _fault(log: list, name: str, fail_enter: bool = False, fail_exit: bool = False):
    @contextlib.contextmanager
    def cm():
        if fail_enter:
            raise RuntimeError(f"enter {name}")
        log.append(f"+{name}")
        try:
            yield name
        finally:
            log.append(f"-{name}")
            if fail_exit:
                raise RuntimeError(f"exit {name}")
    return cm()


def test_all_of_enters_together_and_undoes_in_reverse():
    log: list = []
    with faults.all_of(_fault(log, "a"), _fault(log, "b")) as names:
        assert names == ["a", "b"] and log == ["+a", "+b"]
    assert log == ["+a", "+b", "-b", "-a"]


def test_all_of_undoes_what_entered_when_one_fails_to_enter():
    log: list = []
    with pytest.raises(RuntimeError, match="enter c"):
        with faults.all_of(_fault(log, "a"), _fault(log, "b"), _fault(log, "c", fail_enter=True)):
            pytest.fail("the body must not run")
    assert log == ["+a", "+b", "-b", "-a"]


def test_all_of_undoes_every_fault_even_when_one_fails_to_undo():
    log: list = []
    with pytest.raises(RuntimeError, match="exit b"):
        with faults.all_of(_fault(log, "a"), _fault(log, "b", fail_exit=True), _fault(log, "c")):
            pass
    assert log == ["+a", "+b", "+c", "-c", "-b", "-a"]


def test_all_of_undoes_every_fault_when_the_body_raises():
    log: list = []
    with pytest.raises(KeyError):
        with faults.all_of(_fault(log, "a"), _fault(log, "b")):
            raise KeyError("body")
    assert log == ["+a", "+b", "-b", "-a"]


def test_fault_log_intervals_close_open_windows_at_now():
    log = faults.FaultLog()
    with log.window("rolling-restart", "backend-0"):
        pass
    log.windows.append(faults.FaultWindow("rolling-restart", "backend-1", start=log.windows[0].end + 1))
    iv = log.intervals(now=5e9, name="rolling-restart")
    assert iv[0][0] <= iv[0][1] and iv[1][1] == 5e9
    assert log.intervals(now=5e9, name="other") == []


# -- RES-1 ---------------------------------------------------------------------

def host(addr: str, rq_total: int, rq_error: int = 0) -> HostStatus:
    return HostStatus(addr, "", "HEALTHY", False, rq_total, rq_error, rq_total - rq_error, 1, 0, 0)


VICTIM = "127.0.0.1:30001"


def _res1(answers, retries: int, victim_before=(100, 0), victim_after=(800, 300)):
    before = {"frontend-0": {"cluster.backend.upstream_rq_retry": 5, "cluster.backend.upstream_rq_total": 100},
              "frontend-1": {"cluster.backend.upstream_rq_retry": 0}}
    after = {"frontend-0": {"cluster.backend.upstream_rq_retry": 5 + retries,
                            "cluster.backend.upstream_rq_total": 1100},
             "frontend-1": {"cluster.backend.upstream_rq_retry": 0, "cluster.local_app.upstream_rq_total": 7}}
    hosts_before = {"frontend-0": {"backend": [host(VICTIM, *victim_before), host("127.0.0.1:30002", 50)]},
                    "frontend-1": {"backend": [host(VICTIM, 0)]}}
    hosts_after = {"frontend-0": {"backend": [host(VICTIM, *victim_after), host("127.0.0.1:30002", 900)]},
                   "frontend-1": {"backend": [host(VICTIM, 0)]}}
    return resilience.retried(answers, resilience.EnvoyState(before, hosts_before),
                              resilience.EnvoyState(after, hosts_after), VICTIM)


def test_res1_retries_hide_the_reset_endpoint():
    answers = [served(str(i), "backend-1" if i % 2 else "backend-2") for i in range(2000)]
    m = _res1(answers, retries=300)
    assert (m.requests, m.ok, m.retries, m.envoys) == (2000, 2000, 300, 2)
    assert (m.faulted_attempts, m.faulted_errors) == (700, 300) and m.exercised
    assert m.counters == {"cluster.backend.upstream_rq_retry": 300, "cluster.backend.upstream_rq_total": 1000}
    assert m.served_by == {"backend-1": 1000, "backend-2": 1000}
    assert verdict("RES-1", Figure("client_success", m.client_success_pct, "%", m.requests, min_n=2000),
                   POLICY_OK) == ("pass", "")


def test_res1_zero_retries_is_a_measured_fail():
    """No Envoy retried: the reset endpoint's failures reach the clients, and that is the figure."""
    answers = [served(str(i), "backend-2") for i in range(1340)] + \
        [ans(f"f{i}", 502, body={"downstream": [{"status": 503, "error": "upstream connect error"}]})
         for i in range(660)]
    m = _res1(answers, retries=0)
    assert m.retries == 0 and m.exercised and m.client_success_pct == pytest.approx(67.0)
    assert len(m.failures) == 10 and m.failures[0]["status"] == 502
    v, why = verdict("RES-1", Figure("client_success", m.client_success_pct, "%", m.requests, min_n=2000),
                     POLICY_OK)
    assert v == "fail" and why.startswith("client_success = 67 %")


def test_res1_a_fault_nobody_met_is_not_exercised():
    m = _res1([served(str(i), "backend-2") for i in range(2000)], retries=0, victim_after=(100, 0))
    assert m.faulted_attempts == 0 and m.retries == 0 and not m.exercised


def test_res1_retries_count_on_the_clusters_that_hold_the_faulted_endpoint():
    """Whatever the control plane names the cluster; retries elsewhere (e.g. another service) do not count."""
    counters = ({"f": {"cluster.outbound|80||backend.x.upstream_rq_retry": 1, "cluster.other.upstream_rq_retry": 0}},
                {"f": {"cluster.outbound|80||backend.x.upstream_rq_retry": 41, "cluster.other.upstream_rq_retry": 9}})
    hosts = ({"f": {"outbound|80||backend.x": [host(VICTIM, 10)], "other": [host("127.0.0.1:1", 0)]}},
             {"f": {"outbound|80||backend.x": [host(VICTIM, 50, 40)], "other": [host("127.0.0.1:1", 9)]}})
    m = resilience.retried([served("a", "backend-2")], resilience.EnvoyState(counters[0], hosts[0]),
                           resilience.EnvoyState(counters[1], hosts[1]), VICTIM)
    assert (m.retries, m.faulted_attempts, m.faulted_errors) == (40, 40, 40)


def test_counter_delta_sums_envoys():
    d = resilience.counter_delta({"a": {"x": 1}, "b": {"x": 2}}, {"a": {"x": 4}, "b": {"x": 2, "y": 3}})
    assert d == {"x": 3, "y": 3}


# -- RES-2 ---------------------------------------------------------------------

BOUND = resilience.client_bound_s(1500)


def test_res2_504s_at_the_timeout_pass():
    answers = [ans(str(i), 504, latency_s=0.5 + i / 1000.0) for i in range(30)]
    m = resilience.timeouts(answers, 500, BOUND)
    assert m.answered_504_pct == 100.0 and m.hung == 0
    assert m.overshoot_max_ms == pytest.approx(29.0)
    v = verdict("RES-2", Figure("answered_504", m.answered_504_pct, "%", m.requests, min_n=30),
                Figure("timeout_overshoot_max", m.overshoot_max_ms, "ms", m.requests, min_n=30), POLICY_OK)
    assert v == ("pass", "")


def test_res2_no_504_at_all_is_a_fail_with_every_overshoot_measured():
    """The route timeout was never enforced: every request waited out the 1500 ms latency."""
    answers = [ans(str(i), 200, latency_s=1.52) for i in range(30)]
    m = resilience.timeouts(answers, 500, BOUND)
    assert m.answered_504 == 0 and m.answered_504_pct == 0.0
    assert m.overshoot_max_ms == pytest.approx(1020.0) and m.overshoot_504_ms == []
    v, why = verdict("RES-2", Figure("answered_504", m.answered_504_pct, "%", m.requests, min_n=30),
                     Figure("timeout_overshoot_max", m.overshoot_max_ms, "ms", m.requests, min_n=30),
                     Figure("policy_apply_p99", 6.0, "s", 1))
    assert v == "fail"
    assert "timeout_overshoot_max = 1020 ms" in why and "answered_504 = 0 %" in why


def test_res2_hung_requests_overshoot_by_the_client_bound():
    answers = [ans("h", 0, latency_s=BOUND, error="TimeoutError: timed out"), ans("ok", 504, latency_s=0.51),
               ans("reset", 0, latency_s=0.02, error="ConnectionResetError: reset")]
    m = resilience.timeouts(answers, 500, BOUND)
    assert m.hung == 1 and m.by_status == {0: 2, 504: 1}
    assert m.overshoot_max_ms == pytest.approx(BOUND * 1000 - 500)
    assert m.summary()["overshoot_504_ms"]["n"] == 1
    v, _ = verdict("RES-2", Figure("answered_504", m.answered_504_pct, "%", m.requests, min_n=3),
                   Figure("timeout_overshoot_max", m.overshoot_max_ms, "ms", m.requests, min_n=3), POLICY_OK)
    assert v == "fail"


def test_res2_hung_even_without_a_timeout_message():
    assert resilience.hung(ans("x", 0, latency_s=BOUND + 0.01, error="OSError"), BOUND)
    assert not resilience.hung(ans("x", 504, latency_s=BOUND + 1), BOUND)
    assert resilience.overshoot_ms(ans("x", 0, latency_s=1.0, error="timed out"), 500, BOUND) == BOUND * 1000 - 500


# -- RES-3 ---------------------------------------------------------------------

def overflow(rid: str, latency_s: float = 0.05) -> Answer:
    return ans(rid, 502, latency_s, body={"downstream": [{"service": "backend", "status": 503,
                                                          "error": "upstream connect error or disconnect/reset "
                                                                   "before headers. reset reason: overflow"}]})


def ok_trace(rid: str, caller: str, start_ms: int, end_ms: int) -> list[Span]:
    ms = 1_000_000
    return [Span(rid, "o", "c", "frontend-sidecar", "op", traces.CLIENT, {"node_id": caller}),
            Span(rid, "i", "o", "backend-sidecar", "op", traces.SERVER, {"node_id": "backend-0"}),
            Span(rid, "s", "i", "backend", "op", traces.SERVER, {}, False, start_ms * ms, end_ms * ms)]


def overflow_trace(rid: str, envoy_ms: float, caller_ms: float) -> list[Span]:
    ms = 1_000_000
    return [Span(rid, "c", "b", "frontend", "op", traces.CLIENT, {"http.status_code": "503"}, True, 0,
                 int(caller_ms * ms)),
            Span(rid, "o", "c", "frontend-sidecar", "op", traces.CLIENT, {"response_flags": "UO"}, True, 0,
                 int(envoy_ms * ms))]


CALLERS = ["frontend-0", "frontend-1"]


def test_max_overlap():
    assert resilience.max_overlap([]) == 0
    assert resilience.max_overlap([(0, 10), (5, 15), (10, 20)]) == 2  # [start, end): 10 closes before 10 opens
    assert resilience.max_overlap([(0, 10), (1, 9), (2, 8)]) == 3


def test_res3_breaker_holds_per_envoy_and_overflows_fast():
    answers = [ans(f"ok{i}") for i in range(8)] + [overflow(f"ov{i}") for i in range(4)]
    spans = {f"ok{i}": ok_trace(f"ok{i}", CALLERS[i % 2], i * 10, i * 10 + 35) for i in range(8)}
    spans.update({f"ov{i}": overflow_trace(f"ov{i}", 0.4 + i / 10, 3 + i) for i in range(4)})
    m = resilience.breaker(answers, spans, 4, CALLERS, ["frontend"], "backend")
    assert (m.ok, m.overflow, m.other, m.attributed) == (8, 4, [], 8)
    assert m.peak_per_envoy == {"frontend-0": 2, "frontend-1": 2} and m.peak_all == 4
    assert m.concurrency_excess == 0 and m.peak == 2 and m.overflow_share_pct == pytest.approx(100 / 3)
    assert m.envoy_ms.p99 == pytest.approx(0.7) and m.caller_ms.n == 4 and m.client_ms.p99 == pytest.approx(50.0)
    v = verdict("RES-3", Figure("overflow_503_p99", m.envoy_ms.p99, "ms", m.envoy_ms.n, min_n=m.overflow),
                Figure("concurrency_excess", m.concurrency_excess, "requests", m.attributed, min_n=m.ok,
                       bad_count=True),
                Figure("other_failures", len(m.other), "requests", len(answers), bad_count=True), POLICY_OK)
    assert v == ("pass", "")


def test_res3_breaker_ignored_fails_on_concurrency_even_without_overflow():
    answers = [ans(f"ok{i}") for i in range(12)]
    spans = {f"ok{i}": ok_trace(f"ok{i}", "frontend-0", 0, 100) for i in range(12)}  # 12 at once, one Envoy
    m = resilience.breaker(answers, spans, 4, CALLERS, ["frontend"], "backend")
    assert m.overflow == 0 and m.concurrency_excess == 8 and m.envoy_ms.n == 0
    assert m.overflow_spans_needed == 1
    v, why = verdict("RES-3",
                     Figure("overflow_503_p99", m.envoy_ms.p99, "ms", m.envoy_ms.n, min_n=m.overflow_spans_needed),
                     Figure("concurrency_excess", m.concurrency_excess, "requests", m.attributed, min_n=m.ok,
                            bad_count=True), POLICY_OK)
    assert v == "fail" and why.startswith("concurrency_excess = 8 requests")


def test_res3_other_failures_are_kept_apart_from_overflow():
    answers = [ans("a"), overflow("b"), ans("c", 504, body={"downstream": [{"status": 504, "error": "timeout"}]}),
               ans("d", 0, body=b"", error="reset")]
    m = resilience.breaker(answers, {}, 4, CALLERS, ["frontend"], "backend")
    assert m.overflow == 1 and m.other_failures == 2 and [o["status"] for o in m.other] == [504, 0]
    assert resilience.downstream_error(answers[2]) == (504, "timeout")
    assert resilience.downstream_error(answers[3]) == (0, "")


# -- RES-4 ---------------------------------------------------------------------

def req(ts: float, status: int = 200) -> Request:
    return Request(ts, f"r{ts}", status, 5.0, ("frontend-0", "backend-0"))


def test_res4_error_rate_over_the_run_and_during_restarts():
    requests = [req(100 + i * 0.025, 503 if i in (400, 401) else 200) for i in range(1200)]
    m = resilience.rolling_restart(requests, [(109.0, 111.0), (120.0, 121.0)])
    assert m.n == 1200 and m.error_rate_pct == pytest.approx(100 * 2 / 1200)
    assert m.during_n == 80 + 40 and m.during_pct == pytest.approx(100 * 2 / 120)
    assert [f["status"] for f in m.failures] == [503, 503]
    v, why = verdict("RES-4", Figure("error_rate", m.error_rate_pct, "%", m.n,
                                     min_n=resilience.expected_requests(40, 25)))
    assert v == "fail" and "error_rate" in why


def test_res4_load_lasts_until_the_restarts_are_over():
    assert resilience.load_hold_s(started_at=100.0, duration_s=25.0, now=110.0) == 15.0
    assert resilience.load_hold_s(started_at=100.0, duration_s=25.0, now=160.0) == 2.0  # restarts ran long
    assert resilience.load_bound_s(25.0) > 25.0 and resilience.expected_requests(40, 25) == 800
    empty = resilience.rolling_restart([], [])
    assert empty.error_rate_pct is None and empty.n == 0


# -- RES-5 ---------------------------------------------------------------------

SIZE = 4096


def test_res5_bodies_checked_byte_for_byte():
    body = payload_bytes(SIZE)
    good_raw = ans("a", body=body, headers={"x-meshbed-sha256": payload_sha256(SIZE)})
    short = ans("b", body=body[:-1], headers={"x-meshbed-sha256": payload_sha256(SIZE)})
    flipped = ans("c", body=b"X" + body[1:], headers={"x-meshbed-sha256": payload_sha256(SIZE)})
    good_json = ans("d", body={"downstream": [{"payload": body.decode()}]})
    bad_json = ans("e", body={"downstream": [{"payload": body.decode()[:-3]}]})
    none = ans("f", body={"downstream": []})
    failed = ans("g", 503)
    m = resilience.intact_bodies([good_raw, short, flipped, good_json, bad_json, none, failed], SIZE)
    assert (m.intact, m.requests) == (2, 7)
    assert [b["why"] for b in m.broken] == [f"{SIZE - 1} of {SIZE} bytes", "sha256 mismatch",
                                            f"payload {SIZE - 3} of {SIZE} bytes or corrupted",
                                            "no payload: IndexError", "HTTP 503"]
    v, why = verdict("RES-5", Figure("intact_bodies", m.pct, "%", m.requests, min_n=7))
    assert v == "fail" and why.startswith("intact_bodies")
    assert resilience.intact_bodies([], SIZE).pct is None
