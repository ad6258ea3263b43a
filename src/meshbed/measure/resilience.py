"""RES figures: retries hiding a faulty endpoint, route timeouts, circuit breakers, rolling restarts, intact bodies.

Pure functions over what a RES check recorded -- client answers
(:class:`meshbed.traffic.Answer`), Locust request logs, Envoy counters and
per-host stats read before and after, spans from Jaeger -- to the figures the
check judges. A measured absence is a value: no 504 at all is 0 % answered
504 with every request's real overshoot of the timeout, and a request that
never came back overshoots by the client's own bound.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..observe import traces
from ..observe.envoy_admin import HostStatus
from ..observe.jaeger import Span
from ..sample.payload import payload_bytes, payload_sha256
from ..stats import Summary, summarize
from ..traffic import Answer
from .discovery import error_rate
from .tracing import downstream_instances, pct

Counters = Mapping[str, Mapping[str, int]]  # envoy -> counter name -> value
Hosts = Mapping[str, Mapping[str, Sequence[HostStatus]]]  # envoy -> cluster -> hosts (admin /clusters)


def answer_sample(a: Answer, body: int = 200) -> dict[str, Any]:
    """One answer, short, for evidence."""
    return {"status": a.status, "ms": round(a.latency_s * 1000.0, 1),
            "body": a.body[:body].decode("utf-8", "replace"), "error": a.error}


# -- RES-1: retries hide a resetting endpoint ---------------------------------

def counter_delta(before: Counters, after: Counters) -> dict[str, int]:
    """Each counter's increase, summed over the Envoys."""
    out: dict[str, int] = {}
    for envoy, stats in after.items():
        for k, v in stats.items():
            out[k] = out.get(k, 0) + v - before.get(envoy, {}).get(k, 0)
    return out


def host_delta(before: Hosts, after: Hosts, address: str) -> tuple[int, int]:
    """(requests, errors) the Envoys sent to the host at ``address`` in between, over every cluster."""
    def totals(hosts: Hosts) -> tuple[int, int]:
        hs = [h for cl in hosts.values() for xs in cl.values() for h in xs if h.address == address]
        return sum(h.rq_total for h in hs), sum(h.rq_error for h in hs)
    (t0, e0), (t1, e1) = totals(before), totals(after)
    return t1 - t0, e1 - e0


def served_by(answers: Iterable[Answer]) -> dict[str, int]:
    """Which downstream instance served each successful answer (from the app's JSON)."""
    out: dict[str, int] = {}
    for a in answers:
        for inst in downstream_instances(a) if a.status == 200 else []:
            out[inst] = out.get(inst, 0) + 1
    return out


@dataclass(frozen=True)
class Retried:
    requests: int
    ok: int
    retries: int  # upstream_rq_retry over every caller Envoy during the fault
    envoys: int  # caller Envoys whose counters were read
    faulted_attempts: int  # requests the caller Envoys sent to the faulted endpoint
    faulted_errors: int
    counters: dict[str, int] = field(default_factory=dict)
    served_by: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def client_success_pct(self) -> float | None:
        return pct(self.ok, self.requests)

    @property
    def exercised(self) -> bool:
        """The fault was met: an Envoy sent to the faulted endpoint, retried, or a client saw a failure.

        Only when none of these happened does a 100 % success prove nothing (the fault never ran).
        """
        return self.faulted_attempts > 0 or self.retries > 0 or self.ok < self.requests


def clusters_with(hosts: Hosts, address: str) -> set[str]:
    """The clusters (whatever the control plane named them) that list a host at ``address``."""
    return {c for cl in hosts.values() for c, xs in cl.items() if any(h.address == address for h in xs)}


@dataclass(frozen=True)
class EnvoyState:
    """What RES-1 reads from the caller Envoys, once before and once after the fault."""

    counters: Counters  # envoy -> cluster.<name>.* counter -> value
    hosts: Hosts  # envoy -> cluster -> hosts with their request stats


def retried(answers: Sequence[Answer], before: EnvoyState, after: EnvoyState, faulted_address: str) -> Retried:
    """RES-1 from client answers and the caller Envoys' state before and after the fault.

    Retries count on the clusters that hold the faulted endpoint, whatever the control plane named them.
    """
    names = clusters_with(before.hosts, faulted_address) | clusters_with(after.hosts, faulted_address)
    delta = {k: v for k, v in counter_delta(before.counters, after.counters).items()
             if any(k.startswith(f"cluster.{c}.") for c in names)}
    attempts, errors = host_delta(before.hosts, after.hosts, faulted_address)
    return Retried(len(answers), sum(1 for a in answers if a.status == 200),
                   sum(v for k, v in delta.items() if k.endswith(".upstream_rq_retry")), len(after.counters),
                   attempts, errors, delta, served_by(answers),
                   [answer_sample(a) for a in answers if a.status != 200][:10])


# -- RES-2: the route timeout answers 504, nothing hangs ----------------------

def hung(a: Answer, client_timeout_s: float) -> bool:
    """No HTTP answer within the client's own bound."""
    return a.status == 0 and ("timed out" in a.error.lower() or a.latency_s >= client_timeout_s)


def overshoot_ms(a: Answer, timeout_ms: float, client_timeout_s: float) -> float:
    """How far past the route timeout this request's answer came (a hung one: the client's bound)."""
    ms = a.latency_s * 1000.0
    if hung(a, client_timeout_s):
        ms = max(ms, client_timeout_s * 1000.0)
    return ms - timeout_ms


@dataclass(frozen=True)
class TimedOut:
    requests: int
    answered_504: int
    hung: int
    overshoot_ms: list[float]  # one per request, whatever its answer
    overshoot_504_ms: list[float]  # the 504s' own
    latency_ms: list[float]
    by_status: dict[int, int]

    @property
    def answered_504_pct(self) -> float | None:
        return pct(self.answered_504, self.requests)

    @property
    def overshoot_max_ms(self) -> float | None:
        return max(self.overshoot_ms) if self.overshoot_ms else None

    def summary(self) -> dict[str, Any]:
        return {"by_status": self.by_status, "latency_ms": summarize(self.latency_ms).to_json(),
                "overshoot_ms": summarize(self.overshoot_ms).to_json(),
                "overshoot_504_ms": summarize(self.overshoot_504_ms).to_json()}


def client_bound_s(latency_ms: float, slack_ms: float = 2000.0) -> float:
    """RES-2's client-side bound, well above the latency toxic: an answer not back by then has hung."""
    return (latency_ms + slack_ms) / 1000.0


def timeouts(answers: Sequence[Answer], timeout_ms: float, client_timeout_s: float) -> TimedOut:
    """RES-2: every request must come back 504 by the route timeout (+ the threshold's slack).

    The overshoot is judged over every request: a 200 that took the latency toxic's full time
    overshoots by it, and a request that never came back overshoots by the client's bound.
    """
    by_status: dict[int, int] = {}
    for a in answers:
        by_status[a.status] = by_status.get(a.status, 0) + 1
    return TimedOut(len(answers), sum(1 for a in answers if a.status == 504),
                    sum(1 for a in answers if hung(a, client_timeout_s)),
                    [overshoot_ms(a, timeout_ms, client_timeout_s) for a in answers],
                    [overshoot_ms(a, timeout_ms, client_timeout_s) for a in answers if a.status == 504],
                    [a.latency_s * 1000.0 for a in answers], by_status)


# -- RES-3: circuit breaker under overload ------------------------------------

def downstream_error(a: Answer) -> tuple[int, str]:
    """(status, error text) of the first downstream call named in an app answer; (0, '') if none."""
    try:
        doc = a.json()
    except ValueError:
        return 0, ""
    downs = doc.get("downstream") if isinstance(doc, dict) else None
    if not downs or not isinstance(downs[0], dict):
        return 0, ""
    return int(downs[0].get("status", 0) or 0), str(downs[0].get("error", ""))


def is_overflow(a: Answer) -> bool:
    """The caller's sidecar refused the call on its circuit breaker (503, reset reason: overflow)."""
    if a.status == 200:
        return False
    st, err = downstream_error(a)
    return st == 503 and "overflow" in err


def max_overlap(intervals: Sequence[tuple[int, int]]) -> int:
    """The largest number of [start, end) intervals open at one instant."""
    ev = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def _ms(s: Span) -> float:
    return (s.end_ns - s.start_ns) / 1e6


@dataclass
class Breaker:
    limit: int
    requests: int
    ok: int
    overflow: int
    other: list[dict[str, Any]]  # answers that failed other than by overflow
    peak_per_envoy: dict[str, int]  # most backend requests in flight at once through one caller Envoy
    peak_all: int
    attributed: int  # backend server spans traced back to a caller Envoy
    envoy_ms: Summary  # the overflowing sidecar's own span (response flag UO)
    caller_ms: Summary  # the calling app's client span that got the 503
    client_ms: Summary  # the end client's latency of overflowed requests
    ok_ms: Summary

    @property
    def concurrency_excess(self) -> int:
        return max(0, max(self.peak_per_envoy.values(), default=0) - self.limit)

    @property
    def peak(self) -> int | None:
        return max(self.peak_per_envoy.values(), default=None)

    @property
    def overflow_share_pct(self) -> float | None:
        return pct(self.overflow, self.requests)

    @property
    def overflow_spans_needed(self) -> int:
        """overflow_503_p99 needs the span of every overflowed request (and at least one overflow)."""
        return max(1, self.overflow)

    @property
    def other_failures(self) -> int:
        return len(self.other)


def breaker(answers: Sequence[Answer], spans_by_request: Mapping[str, Sequence[Span]], limit: int,
            caller_envoys: Sequence[str], callers: Sequence[str], service: str) -> Breaker:
    """RES-3 from client answers and the traces of the ok and overflowed requests.

    Concurrency is per caller Envoy (each enforces its own limit): a backend server span is
    attributed through its sidecar's inbound span to the caller sidecar's outbound span, whose
    ``node_id`` names the caller Envoy; the peak is the most such spans open at one instant.
    """
    over_ids = {a.request_id for a in answers if is_overflow(a)}
    per_caller: dict[str, list[tuple[int, int]]] = {e: [] for e in caller_envoys}
    envoy_ms: list[float] = []
    caller_ms: list[float] = []
    attributed = 0
    for rid, spans in spans_by_request.items():
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            if rid in over_ids:
                if s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.CLIENT \
                        and "UO" in str(s.attributes.get("response_flags", "")):
                    envoy_ms.append(_ms(s))
                if s.service in callers and s.kind == traces.CLIENT \
                        and str(s.attributes.get("http.status_code")) == "503":
                    caller_ms.append(_ms(s))
                continue
            if s.service != service or s.kind != traces.SERVER:
                continue
            inbound = by_id.get(s.parent_id)
            outbound = by_id.get(inbound.parent_id) if inbound else None
            node = outbound.attributes.get("node_id") if outbound else None
            if node in per_caller:
                per_caller[node].append((s.start_ns, s.end_ns))
                attributed += 1
    ok = [a for a in answers if a.status == 200]
    other = [a for a in answers if a.status != 200 and a.request_id not in over_ids]
    return Breaker(limit, len(answers), len(ok), len(over_ids), [answer_sample(a) for a in other],
                   {e: max_overlap(iv) for e, iv in per_caller.items()},
                   max_overlap([x for iv in per_caller.values() for x in iv]), attributed,
                   summarize(envoy_ms), summarize(caller_ms),
                   summarize([a.latency_s * 1000.0 for a in answers if a.request_id in over_ids]),
                   summarize([a.latency_s * 1000.0 for a in ok]))


# -- RES-4: rolling restart under load ----------------------------------------

@dataclass(frozen=True)
class RollingRestart:
    error_rate_pct: float | None
    n: int
    during_pct: float | None  # requests sent while an instance was being restarted
    during_n: int
    failures: list[dict[str, Any]]


def load_bound_s(duration_s: float, budget_s: float = 240.0) -> float:
    """An upper bound for a load that runs until its events are over (it is ended early, see load_hold_s)."""
    return duration_s + budget_s


def load_hold_s(started_at: float, duration_s: float, now: float, margin_s: float = 2.0) -> float:
    """How much longer to keep the load on: until ``duration_s`` since its start, and ``margin_s`` at least."""
    return max(margin_s, started_at + duration_s - now)


def expected_requests(rps: float, seconds: float, share: float = 0.8) -> int:
    """The fewest requests a load of ``rps`` for ``seconds`` must have logged to be judged (a share of all)."""
    return int(rps * seconds * share)


def rolling_restart(requests: Sequence[Any], windows: Sequence[tuple[float, float]]) -> RollingRestart:
    """RES-4 from the load's request log (``ts``, ``status``) and the restart windows (wall clock)."""
    during = [r for t0, t1 in windows for r in requests if t0 <= r.ts < t1]
    rate, n = error_rate(requests)
    rate_d, n_d = error_rate(during)
    return RollingRestart(rate, n, rate_d, n_d, [{"ts": r.ts, "request_id": r.request_id, "status": r.status}
                                                 for r in requests if r.status != 200][:20])


# -- RES-5: large bodies arrive whole -----------------------------------------

def body_intact(a: Answer, size: int) -> tuple[bool, str]:
    """Is this answer's large body complete and byte-exact? (ok, why not)

    ``/bytes/N`` answers carry the body itself (checked against ``x-meshbed-sha256`` and the
    known payload); ``?size=N&only=backend`` answers carry the backend's payload in the JSON.
    """
    if a.status != 200:
        return False, f"HTTP {a.status} {a.error}".strip()
    if "x-meshbed-sha256" in a.headers:
        if len(a.body) != size:
            return False, f"{len(a.body)} of {size} bytes"
        if hashlib.sha256(a.body).hexdigest() != a.headers["x-meshbed-sha256"] or \
                a.headers["x-meshbed-sha256"] != payload_sha256(size):
            return False, "sha256 mismatch"
        return True, ""
    try:
        payload = a.json()["downstream"][0]["payload"].encode("ascii")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return False, f"no payload: {type(exc).__name__}"
    if payload != payload_bytes(size):
        return False, f"payload {len(payload)} of {size} bytes or corrupted"
    return True, ""


@dataclass(frozen=True)
class Intact:
    requests: int
    intact: int
    broken: list[dict[str, Any]]
    latency_ms: Summary

    @property
    def pct(self) -> float | None:
        return pct(self.intact, self.requests)


def intact_bodies(answers: Sequence[Answer], size: int) -> Intact:
    verdicts = [(a, *body_intact(a, size)) for a in answers]
    return Intact(len(answers), sum(1 for _, ok, _ in verdicts if ok),
                  [{"request_id": a.request_id, "status": a.status, "why": why} for a, ok, why in verdicts if not ok],
                  summarize([a.latency_s * 1000.0 for a in answers]))
