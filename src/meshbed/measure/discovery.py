"""DISC figures: convergence times, late requests, unexpected endpoint sets, error rates over windows.

Pure functions over what a DISC check recorded -- per-Envoy convergence times
(seconds, None for an Envoy that never converged), the Locust request log, the
endpoint sets an :class:`~meshbed.observe.discovery_helpers.EndpointPoller`
saw, xDS rejection counters and the reference control plane's push log -- to
the figures the check judges. A measured absence is a value: an Envoy that
never converged counts as the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

from ..observe.discovery_helpers import Endpoints, healthy_of, rejected_delta
from ..stats import Summary, summarize

Times = Mapping[str, "float | None"]  # Envoy -> seconds from a change until it showed (None: never)
States = Mapping[str, Endpoints]  # service -> endpoint set, as one Envoy showed it
Window = tuple[float, float]  # [start, end) wall clock


class Timeline(Protocol):
    """What an endpoint poller recorded (:class:`meshbed.observe.discovery_helpers.EndpointPoller`)."""

    def state_at(self, node: str, ts: float) -> States | None: ...

    def between(self, node: str, t0: float, t1: float) -> list[Any]: ...

    def polls_between(self, node: str, t0: float, t1: float) -> int: ...


def capped(times: Times, deadline: float) -> list[float]:
    """Per-Envoy convergence times, an Envoy that never converged counted as the deadline."""
    return [deadline if v is None else float(v) for v in times.values()]


def capped_or_never(times: Times, deadline: float) -> list[float]:
    """Like :func:`capped`; no Envoy at all (the one watched never got config) is one absence: [deadline]."""
    return capped(times, deadline) or [deadline]


def slowest(times: Times, deadline: float) -> float | None:
    """The slowest Envoy's time (never: the deadline); None when no Envoy was measured."""
    return max(capped(times, deadline), default=None)


@dataclass
class Convergence:
    """Convergence times gathered over the rounds of a check: all together and per Envoy."""

    deadline: float
    samples: list[float] = field(default_factory=list)
    per_envoy: dict[str, list[float]] = field(default_factory=dict)
    acks: list[float] = field(default_factory=list)  # the reference control plane's EDS ACKs (evidence)

    def add(self, times: Times, acks: Iterable[float] = ()) -> list[float]:
        """One round's per-Envoy times (never: the deadline); returns them capped."""
        vals = capped(times, self.deadline)
        for n, v in zip(times, vals):
            self.per_envoy.setdefault(n, []).append(v)
        self.samples += vals
        self.acks += list(acks)
        return vals

    @property
    def summary(self) -> Summary:
        return summarize(self.samples)

    def chart(self) -> dict[str, Any]:
        """The cdf chart's data: the summary, every Envoy's times, the CP's ACK times when it logs them."""
        return {"summary": self.summary.to_json(), "per_envoy": self.per_envoy,
                "cp_eds_ack_s": summarize(self.acks).to_json() if self.acks else None}


def first_per_node(events: Iterable[Mapping[str, Any]], t0: float) -> dict[str, float]:
    """Push log: per node, seconds from ``t0`` to its first event at or after ``t0``."""
    out: dict[str, float] = {}
    for e in events:
        if float(e["ts"]) >= t0:
            out.setdefault(str(e["node"]), round(float(e["ts"]) - t0, 4))
    return out


def fmt_endpoints(states: States) -> dict[str, list[str]]:
    """Endpoint sets for evidence: service -> sorted "address HEALTH"."""
    return {svc: sorted(f"{a} {h}" for a, h in eps) for svc, eps in states.items()}


# -- request logs --------------------------------------------------------------

def error_rate(requests: Iterable[Any]) -> tuple[float | None, int]:
    """(% of requests whose status is not 200, n); None when there were none."""
    rs = list(requests)
    if not rs:
        return None, 0
    return 100.0 * sum(1 for r in rs if r.status != 200) / len(rs), len(rs)


def min_requests(rps: float, seconds: float, rounds: int = 1, share: float = 0.5) -> int:
    """The fewest requests a load window must have logged to be judged (a share of those sent)."""
    return int(rps * seconds * rounds * share)


@dataclass(frozen=True)
class WindowErrors:
    """Failed requests among those started inside some windows."""

    pct: float | None  # None: no request in the windows (unmeasured)
    n: int
    failed: list[dict[str, Any]]  # the first failures, for evidence


def _fields(r: Any, keys: Sequence[str]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k in keys for v in [getattr(r, k)]}


def window_errors(requests: Iterable[Any], windows: Sequence[Window],
                  keys: Sequence[str] = ("ts", "status", "latency_ms"), limit: int = 50) -> WindowErrors:
    """Error rate of the requests started in any of ``windows``; the first ``limit`` failures by ``keys``."""
    inside = [r for r in requests if any(a <= r.ts < b for a, b in windows)]
    pct, n = error_rate(inside)
    return WindowErrors(pct, n, [_fields(r, keys) for r in inside if r.status != 200][:limit])


# -- DISC-2: late requests -----------------------------------------------------

def late_window(t0: float, convergence: Sequence[float], window_s: float, grace_s: float = 1.0) -> Window:
    """DISC-2: the window whose requests must not reach a removed instance: from the slowest
    Envoy's convergence plus a grace, ``window_s`` long."""
    late_from = t0 + max(convergence) + grace_s
    return late_from, late_from + window_s


def deregister_load_s(repeats: int, deadline: float, window_s: float) -> float:
    """DISC-2's load cap: it outlasts the slowest possible rounds (each up to two deadlines) and is
    ended once they are over."""
    return repeats * (2 * deadline + 1.0 + window_s + 1.0) + 6


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


# -- DISC-4: churn storm -------------------------------------------------------

@dataclass(frozen=True)
class ChurnStorm:
    settle_s: float | None  # slowest Envoy from the last event until it matched Consul (never: the deadline)
    envoys: int
    nacks: dict[str, int]  # per Envoy: xDS updates it rejected during the storm
    errors: WindowErrors  # from the storm's start until settled

    @property
    def nack_total(self) -> int:
        return sum(self.nacks.values())


def churn_storm(settle: Times, deadline: float, rejected_before: dict[str, dict[str, int]],
                rejected_after: dict[str, dict[str, int]], requests: Iterable[Any], window: Window) -> ChurnStorm:
    """DISC-4 from the settle times, every Envoy's update_rejected counters before/after, the request log."""
    return ChurnStorm(slowest(settle, deadline), len(settle),
                      rejected_delta(rejected_before, rejected_after),
                      window_errors(requests, [window], keys=("ts", "status", "instances")))


# -- DISC-5 / DISC-6: an instance withdrawn around a fault ---------------------

@dataclass(frozen=True)
class Withdrawal:
    """One round of DISC-5/6: a fault, an instance deregistered in or after it, its convergence."""

    kind: str  # the fault
    instance: str
    address: str
    baseline: Mapping[str, States]  # per watched Envoy, read right before the fault
    t_start: float  # fault on
    t_change: float  # the instance deregistered
    t_end: float  # fault off
    t_conv: float  # the change shown everywhere (or the deadline passed)
    t_watch: float  # watched until
    convergence_s: Times  # per subscriber of the instance's service, from t_end
    push_log: Mapping[str, Any] = field(default_factory=dict)  # evidence: the reference CP's pushes


def shrunk(baseline: States, state: States, allowed_gone: set[str]) -> bool:
    """True when some service's healthy set lacks an address it had, other than ``allowed_gone``."""
    for svc, eps in baseline.items():
        missing = healthy_of(eps) - healthy_of(state.get(svc, frozenset()))
        if missing - allowed_gone:
            return True
    return False


def partial_states(baseline: States, states: Iterable[Any], allowed_gone: set[str],
                   limit: int = 5) -> list[dict[str, Any]]:
    """DISC-6: the polled endpoint sets that dropped a healthy address they should have kept."""
    bad = [s for s in states if shrunk(baseline, s.endpoints, allowed_gone)]
    return [{"ts": s.ts, **fmt_endpoints(s.endpoints)} for s in bad[:limit]] + \
        ([{"more": len(bad) - limit}] if len(bad) > limit else [])


def count_partial(baseline: States, states: Iterable[Any], allowed_gone: set[str]) -> int:
    return sum(1 for s in states if shrunk(baseline, s.endpoints, allowed_gone))


def unexpected(baseline: States, seen: Iterable[States | None], removed: str) -> list[States]:
    """DISC-5: states other than the last-known set, or that set minus the instance removed on purpose."""
    allowed = {frozenset(baseline.items()),
               frozenset({s: frozenset(e for e in eps if e[0] != removed) for s, eps in baseline.items()}.items())}
    return [s for s in seen if s is not None and frozenset(s.items()) not in allowed]


@dataclass(frozen=True)
class LinkFaults:
    """DISC-5 over every round."""

    errors: WindowErrors  # requests started inside the fault windows
    post: list[float]  # per round and subscriber: from the fault's end until the change showed
    lost: set[str]  # Envoys that showed an unexpected endpoint set in any round
    checked: int  # Envoy-rounds watched
    rounds: list[dict[str, Any]]

    @property
    def post_max(self) -> float | None:
        return max(self.post, default=None)


def link_fault_round(w: Withdrawal, poller: Timeline, service: str) -> dict[str, Any]:
    """DISC-5, one round's evidence: every state each Envoy showed from the fault's start until the
    change converged that was not the baseline (or it minus the instance), and who converged in the fault."""
    lost = {}
    for n in w.baseline:
        seen = [poller.state_at(n, w.t_start)] + [s.endpoints for s in poller.between(n, w.t_start, w.t_conv)]
        bad = unexpected(w.baseline[n], seen, w.address)
        if bad:
            lost[n] = [fmt_endpoints(b) for b in bad[:5]]
    during = {n: any(all(e[0] != w.address for e in s.endpoints.get(service, ()))
                     for s in poller.between(n, w.t_change, w.t_end)) for n in w.convergence_s}
    return {"fault": w.kind, "instance": w.instance, "address": w.address, "t_fault": w.t_start,
            "t_change": w.t_change, "t_end": w.t_end, "post_fault_convergence_s": dict(w.convergence_s),
            "converged_during_fault": during, "unexpected_states": lost, **w.push_log}


def link_faults(rounds: Sequence[Withdrawal], poller: Timeline, requests: Iterable[Any], service: str,
                deadline: float) -> LinkFaults:
    """DISC-5 from its rounds, the endpoint timeline and the request log."""
    evidence = [link_fault_round(w, poller, service) for w in rounds]
    return LinkFaults(window_errors(requests, [(w.t_start, w.t_end) for w in rounds]),
                      [v for w in rounds for v in capped(w.convergence_s, deadline)],
                      {n for r in evidence for n in r["unexpected_states"]},
                      sum(len(w.baseline) for w in rounds), evidence)


@dataclass(frozen=True)
class ConsulOutages:
    """DISC-6 over every round."""

    partial: int  # polled endpoint sets that lost a healthy address other than the one removed
    polls: int  # polls those sets come from
    examples: dict[str, list[dict[str, Any]]]  # "<outage>:<envoy>" -> the partial sets it showed
    errors: WindowErrors  # requests started from an outage's start until its change converged
    convergence: list[float]  # per round and subscriber: from the outage's end (never: the deadline)
    rounds: list[dict[str, Any]]

    @property
    def convergence_max(self) -> float | None:
        return max(self.convergence, default=None)


def consul_outages(rounds: Sequence[Withdrawal], poller: Timeline, requests: Iterable[Any],
                   deadline: float) -> ConsulOutages:
    """DISC-6 from its rounds, the endpoint timeline (each round's start until watched) and the request log."""
    partial, polls, examples, evidence = 0, 0, {}, []
    for w in rounds:
        states = {n: poller.between(n, w.t_start, w.t_watch) for n in w.baseline}
        bad = {n: partial_states(w.baseline[n], st, {w.address}) for n, st in states.items()}
        examples.update({f"{w.kind}:{n}": v for n, v in bad.items() if v})
        partial += sum(count_partial(w.baseline[n], st, {w.address}) for n, st in states.items())
        polls += sum(poller.polls_between(n, w.t_start, w.t_watch) for n in w.baseline)
        evidence.append({"outage": w.kind, "instance": w.instance, "t_start": w.t_start, "t_end": w.t_end,
                         "t_conv": w.t_conv, "convergence_after_return_s": dict(w.convergence_s),
                         "partial_envoys": sorted(n for n in bad if bad[n])})
    return ConsulOutages(partial, polls, examples, window_errors(requests, [(w.t_start, w.t_conv) for w in rounds]),
                         [v for w in rounds for v in capped(w.convergence_s, deadline)], evidence)


# -- DISC-7 / DISC-8 -----------------------------------------------------------

def slowest_per_envoy(*per_envoy: Times, deadline: float) -> dict[str, float]:
    """DISC-7: each Envoy's slowest of several measured times (never: the deadline)."""
    out: dict[str, float] = {}
    for times in per_envoy:
        for n, v in times.items():
            out[n] = max(out.get(n, 0.0), deadline if v is None else float(v))
    return out


@dataclass(frozen=True)
class Reconverged:
    """DISC-7: every Envoy back on the restarted control plane, and the change it then made."""

    per_envoy: dict[str, float]  # slowest of reconnect and change, from the restart (never: the deadline)
    errors: WindowErrors  # from the kill until converged

    @property
    def slowest(self) -> float | None:
        return max(self.per_envoy.values(), default=None)


def reconverged(reconnect: Times, changes: Mapping[str, Times], deadline: float, requests: Iterable[Any],
                window: Window) -> Reconverged:
    return Reconverged(slowest_per_envoy(reconnect, *changes.values(), deadline=deadline),
                       window_errors(requests, [window]))


XDS_PROTOCOLS = {"GRPC": "sotw", "DELTA_GRPC": "delta"}  # Envoy's ads_config.api_type -> name


def other_protocol(api_type: str) -> str:
    """DISC-8: the xDS protocol the watcher Envoy speaks, the one the mesh does not."""
    return "DELTA_GRPC" if api_type == "GRPC" else "GRPC"


def protocol_figures(times: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, int]]:
    """DISC-8: p99 per xDS protocol ({"sotw": [...], "delta": [...]}) and the gap between them (s, n)."""
    s = {k: summarize(v) for k, v in times.items()}
    out = {f"{k}_convergence_p99": (v.p99, v.n) for k, v in s.items()}
    if len(s) == 2:
        a, b = s.values()
        out["protocol_gap_p99"] = (abs(a.p99 - b.p99), min(a.n, b.n))
    return out
