"""Discovery figures: convergence times, late requests, unexpected endpoint sets, error rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..observe.discovery_helpers import Endpoints, healthy_of


def capped(times: Mapping[str, float | None], deadline: float) -> list[float]:
    """Per-Envoy convergence times, an Envoy that never converged counted as the deadline."""
    return [deadline if v is None else float(v) for v in times.values()]


def error_rate(requests: Iterable[Any]) -> tuple[float | None, int]:
    """(% of requests whose status is not 200, n); None when there were none."""
    rs = list(requests)
    if not rs:
        return None, 0
    return 100.0 * sum(1 for r in rs if r.status != 200) / len(rs), len(rs)


@dataclass
class LateRequests:
    late: int  # requests started after the grace that the removed instance still served
    thinnest_window: int  # fewest requests in one round's window (0 if an instance served nothing before)
    checked: int
    samples: list[dict[str, Any]]


def late_requests(rounds: Sequence[Mapping[str, Any]], requests: Sequence[Any]) -> LateRequests:
    """DISC-2: per round, requests started in [late_from, late_until) served by the removed instance.

    A round whose instance served nothing in the second before its change proves nothing: then the
    thinnest window is 0, so a zero count cannot pass (but late requests still count as measured).
    """
    late, checked, thinnest, samples, valid = 0, 0, None, [], True
    for r in rounds:
        window = [q for q in requests if r["late_from"] <= q.ts < r["late_until"]]
        before = sum(1 for q in requests if r["t0"] - 1.0 <= q.ts < r["t0"] and r["instance"] in q.instances)
        bad = [q for q in window if r["instance"] in q.instances]
        valid = valid and before > 0
        checked += len(window)
        late += len(bad)
        thinnest = len(window) if thinnest is None else min(thinnest, len(window))
        samples += [{"ts": q.ts, "request_id": q.request_id, "instances": list(q.instances)} for q in bad[:20]]
    return LateRequests(late, (thinnest or 0) if valid and rounds else 0, checked, samples)


def shrunk(baseline: Mapping[str, Endpoints], state: Mapping[str, Endpoints], allowed_gone: set[str]) -> bool:
    """True when some service's healthy set lacks an address it had, other than ``allowed_gone``."""
    for svc, eps in baseline.items():
        missing = healthy_of(eps) - healthy_of(state.get(svc, frozenset()))
        if missing - allowed_gone:
            return True
    return False


def partial_states(baseline: Mapping[str, Endpoints], states: Iterable[Any], allowed_gone: set[str],
                   limit: int = 5) -> list[dict[str, Any]]:
    """DISC-6: the polled endpoint sets that dropped a healthy address they should have kept."""
    bad = [s for s in states if shrunk(baseline, s.endpoints, allowed_gone)]
    return [{"ts": s.ts, **{svc: sorted(f"{a} {h}" for a, h in eps) for svc, eps in s.endpoints.items()}}
            for s in bad[:limit]] + ([{"more": len(bad) - limit}] if len(bad) > limit else [])


def count_partial(baseline: Mapping[str, Endpoints], states: Iterable[Any], allowed_gone: set[str]) -> int:
    return sum(1 for s in states if shrunk(baseline, s.endpoints, allowed_gone))


def unexpected(baseline: Mapping[str, Endpoints], seen: Iterable[Mapping[str, Endpoints] | None],
               removed: str) -> list[Mapping[str, Endpoints]]:
    """DISC-5: states other than the last-known set, or that set minus the instance removed on purpose."""
    allowed = {frozenset(baseline.items()),
               frozenset({s: frozenset(e for e in eps if e[0] != removed) for s, eps in baseline.items()}.items())}
    return [s for s in seen if s is not None and frozenset(s.items()) not in allowed]


def slowest_per_envoy(*per_envoy: Mapping[str, float | None], deadline: float) -> dict[str, float]:
    """DISC-7: each Envoy's slowest of several measured times (never: the deadline)."""
    out: dict[str, float] = {}
    for times in per_envoy:
        for n, v in times.items():
            out[n] = max(out.get(n, 0.0), deadline if v is None else float(v))
    return out


def protocol_figures(times: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, int]]:
    """DISC-8: p99 per xDS protocol ({"sotw": [...], "delta": [...]}) and the gap between them (s, n)."""
    from ..stats import summarize
    s = {k: summarize(v) for k, v in times.items()}
    out = {f"{k}_convergence_p99": (v.p99, v.n) for k, v in s.items()}
    if len(s) == 2:
        a, b = s.values()
        out["protocol_gap_p99"] = (abs(a.p99 - b.p99), min(a.n, b.n))
    return out
