"""TRACE figures: completeness, propagation and tags, error-marked hops, span loss, edge sampling.

Pure functions over what a TRACE check recorded -- the answers of
:func:`meshbed.traffic.drive`, the spans fetched from Jaeger and the
:class:`~meshbed.observe.traces.TraceReport` of each request -- to the
figures the check judges. Every percentage carries its counts; a request
whose trace never arrived counts against the figure, never out of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..observe import traces
from ..observe.jaeger import Span
from ..traffic import Answer

Edges = Counter  # traces.Edge -> count: the span tree a request must produce


def calls_of(topology: Any) -> dict[str, tuple[str, ...]]:
    """Which services each service calls (the topology's ``calls``)."""
    return {name: tuple(s.calls) for name, s in topology.services.items()}


def callers(topology: Any, service: str) -> list[str]:
    """The services (not the ingress) that call ``service``."""
    return [c for c in topology.callers_of(service) if c != "ingress"]


def entry_service(topology: Any, path: str = "/") -> str:
    """The service the ingress routes ``path`` to (the longest matching prefix)."""
    routes = sorted(topology.ingress, key=lambda r: len(r.prefix), reverse=True)
    return next(r.service for r in routes if path.startswith(r.prefix))


def route_edges(topology: Any, path: str = "/") -> Edges:
    """The span tree one request to ``path`` must produce."""
    return traces.expected_edges(calls_of(topology), entry_service(topology, path))


def achieved_rps(answers: Sequence[Answer]) -> float | None:
    """Requests per second from the first request sent to the last answer."""
    if not answers:
        return None
    start = min(a.sent_at for a in answers)
    return rate(len(answers), max(a.sent_at + a.latency_s for a in answers) - start)


def pct(part: int, whole: int) -> float | None:
    """``part`` of ``whole`` in %; None (not measured) when there is nothing to count."""
    return None if whole <= 0 else 100.0 * part / whole


def rate(n: int, seconds: float) -> float | None:
    return None if seconds <= 0 else n / seconds


def examples(reports: Sequence[traces.TraceReport], k: int = 10) -> list[dict[str, Any]]:
    """The first ``k`` incomplete traces, for evidence."""
    return [r.to_json() for r in reports if not r.complete][:k]


# -- TRACE-1 / TRACE-4: completeness ------------------------------------------

@dataclass(frozen=True)
class Completeness:
    complete: int
    traces: int  # one per request (a request without a trace id counts, with no spans)
    defects: dict[str, int] = field(default_factory=dict)

    @property
    def pct(self) -> float | None:
        return pct(self.complete, self.traces)


def completeness(reports: Sequence[traces.TraceReport]) -> Completeness:
    return Completeness(sum(1 for r in reports if r.complete), len(reports), traces.problem_counts(reports))


# -- TRACE-2: propagation through application hops ----------------------------

def expected_service_spans(expected: Edges, calls: Mapping[str, Sequence[str]]) -> int:
    """Service server spans one request's trace must have."""
    return sum(c for (k, _), c in expected.items() if k[0] in calls and k[1] == traces.SERVER)


def _tag_checked(s: Span, calls: Mapping[str, Sequence[str]]) -> bool:
    """Spans whose tags TRACE-2 checks: every Envoy span, and every service's server span."""
    return s.service == traces.INGRESS or s.service.endswith(traces.SIDECAR_SUFFIX) or \
        (s.service in calls and s.kind == traces.SERVER)


def expected_tagged_spans(expected: Edges, calls: Mapping[str, Sequence[str]]) -> int:
    """Spans of one request's trace whose tags are checked."""
    return sum(c for (k, _), c in expected.items()
               if k[0] == traces.INGRESS or k[0].endswith(traces.SIDECAR_SUFFIX)
               or (k[0] in calls and k[1] == traces.SERVER))


def span_tag_problems(s: Span, by_id: Mapping[str, Span], calls: Mapping[str, Sequence[str]],
                      entry: str) -> list[str]:
    """What is wrong with one span's tags: missing ones, a wrong upstream cluster, a wrong instance.

    Envoy spans carry ``upstream_cluster`` (ingress -> the entry service, outbound -> a called
    service, inbound -> ``local_app``) and ``node_id``; a service's server span carries
    ``meshbed.instance``, equal to the ``node_id`` of the sidecar inbound span that is its parent.
    """
    out = traces.untagged([s], calls)
    up = s.attributes.get("upstream_cluster")
    want: set[str] | None = None
    if s.service == traces.INGRESS:
        want = {entry}
    elif s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.SERVER:
        want = {"local_app"}
    elif s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.CLIENT:
        want = set(calls.get(s.service[: -len(traces.SIDECAR_SUFFIX)], ()))
    if want is not None and up not in want:
        out.append(f"{s.service}/{s.kind} {s.span_id}: upstream_cluster {up!r}, expected one of {sorted(want)}")
    if s.kind == traces.SERVER and s.service in calls:
        parent = by_id.get(s.parent_id)
        if parent is not None and parent.attributes.get("node_id") != s.attributes.get("meshbed.instance"):
            out.append(f"{s.service} {s.span_id}: instance {s.attributes.get('meshbed.instance')!r} under "
                       f"sidecar of {parent.attributes.get('node_id')!r}")
    return out


@dataclass(frozen=True)
class Propagation:
    parented: int  # service server spans whose parent is their own sidecar's inbound span
    service_spans: int  # service server spans found
    want_service_spans: int  # ... that every request's trace must contribute
    tagged: int  # checked spans with every tag right
    checked: int  # spans whose tags were checked
    want_tagged: int
    problems: list[str] = field(default_factory=list)

    @property
    def parented_pct(self) -> float | None:
        """Missing traces count against the figure: the denominator is at least what was expected."""
        return pct(self.parented, max(self.service_spans, self.want_service_spans))

    @property
    def tagged_pct(self) -> float | None:
        return pct(self.tagged, max(self.checked, self.want_tagged))


def propagation(spans_by_request: Mapping[str, Sequence[Span]], requests: int, expected: Edges,
                calls: Mapping[str, Sequence[str]], entry: str) -> Propagation:
    """TRACE-2 over ``requests`` requests (their fetched spans by request id; missing ones count)."""
    parented = service_spans = tagged = checked = 0
    problems: list[str] = []
    for spans in spans_by_request.values():
        ok, tot = traces.service_parented(spans, calls)
        parented, service_spans = parented + ok, service_spans + tot
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            if not _tag_checked(s, calls):
                continue
            bad = span_tag_problems(s, by_id, calls, entry)
            checked += 1
            tagged += not bad
            problems += bad
    return Propagation(parented, service_spans, requests * expected_service_spans(expected, calls), tagged,
                       checked, requests * expected_tagged_spans(expected, calls), problems)


# -- TRACE-3: failed hops are error-marked ------------------------------------

def hop_spans(spans: Sequence[Span], hop: traces.Key) -> list[Span]:
    return [s for s in spans if traces.key(s) == hop]


def failed(a: Answer) -> bool:
    return a.status != 200


@dataclass
class PhaseMarking:
    crossed: int = 0  # requests that crossed the faulted hop: failed, or served by the faulted instance
    failed: int = 0  # ... of which the client saw fail
    marked: int = 0  # ... whose hop span is error-marked with an Envoy response flag
    flags: dict[str, int] = field(default_factory=dict)


@dataclass
class ErrorMarking:
    phases: dict[str, PhaseMarking]
    unmarked: list[dict[str, Any]] = field(default_factory=list)

    @property
    def crossed(self) -> int:
        return sum(p.crossed for p in self.phases.values())

    @property
    def marked(self) -> int:
        return sum(p.marked for p in self.phases.values())

    @property
    def pct(self) -> float | None:
        return pct(self.marked, self.crossed)

    @property
    def fewest_crossed(self) -> int:
        """The phase that exercised its fault least: a phase no request crossed proves nothing."""
        return min((p.crossed for p in self.phases.values()), default=0)


def downstream_instances(a: Answer) -> list[str]:
    """The instances that served the app's downstream calls of this answer (from its JSON body)."""
    try:
        doc = a.json()
    except ValueError:
        return []
    downs = doc.get("downstream", []) if isinstance(doc, dict) else []
    return [str(d["instance"]) for d in downs if isinstance(d, dict) and d.get("instance")]


def error_marking(phases: Mapping[str, Sequence[Answer]], spans_by_request: Mapping[str, Sequence[Span]],
                  hop: traces.Key, faulted: Mapping[str, str]) -> ErrorMarking:
    """TRACE-3: per phase, the requests that crossed the faulted hop and how their hop span is marked.

    A request crossed the fault when the client saw it fail, or when the faulted instance
    (``faulted[phase]``) served it anyway -- e.g. a route timeout that was never enforced: that
    hop counts as unmarked, not as "nothing to judge". ``hop`` is the calling sidecar's
    outbound span, which must be error-marked with an Envoy response flag.
    """
    out = ErrorMarking({})
    for name, answers in phases.items():
        pm = out.phases.setdefault(name, PhaseMarking())
        for a in answers:
            if not failed(a) and faulted.get(name) not in downstream_instances(a):
                continue
            hs = hop_spans(spans_by_request.get(a.request_id, []), hop)
            pm.crossed += 1
            pm.failed += failed(a)
            flag = str(hs[0].attributes.get("response_flags", "")) if hs else ""
            if hs and hs[0].error and flag not in ("", "-"):
                pm.marked += 1
                pm.flags[flag] = pm.flags.get(flag, 0) + 1
            else:
                out.unmarked.append({"phase": name, "request_id": a.request_id, "status": a.status,
                                     "hop_spans": len(hs), "error": bool(hs and hs[0].error),
                                     "response_flags": flag})
    return out


def expected_per_request(phases: Mapping[str, Sequence[Answer]], full: Edges, cut_phases: Mapping[str, Edges]
                         ) -> dict[str, Edges]:
    """Each request's expected tree: ``cut_phases[phase]`` for a failed request of such a phase, else ``full``."""
    return {a.request_id: cut_phases[name] if name in cut_phases and failed(a) else full
            for name, answers in phases.items() for a in answers}


# -- TRACE-4: span loss while the export link is down -------------------------

@dataclass(frozen=True)
class SpanLoss:
    received: int  # spans that arrived, at most the expected count per trace
    expected: int
    missing_by_span: dict[str, int]
    traces_without_spans: int

    @property
    def loss_pct(self) -> float | None:
        return None if self.expected <= 0 else 100.0 - 100.0 * self.received / self.expected


def span_loss(reports: Sequence[traces.TraceReport], expected: Edges) -> SpanLoss:
    """Spans that never reached Jaeger, out of every span the requests' trees must have."""
    per_trace = sum(expected.values())
    missing: Counter[str] = Counter()
    for r in reports:
        for m in r.missing:
            missing[m.split("<-")[0]] += 1
    return SpanLoss(sum(min(r.spans, per_trace) for r in reports), per_trace * len(reports), dict(missing),
                    sum(1 for r in reports if r.spans == 0))


# -- TRACE-5: sampling decided once, at the edge -------------------------------

@dataclass(frozen=True)
class Sampling:
    target_pct: float
    requests: int
    sampled: int  # requests with any span in Jaeger
    partial: int  # sampled requests whose trace is not complete
    partial_defects: dict[str, int] = field(default_factory=dict)
    partial_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sampled_pct(self) -> float | None:
        return pct(self.sampled, self.requests)

    @property
    def dev_pp(self) -> float | None:
        s = self.sampled_pct
        return None if s is None else abs(s - self.target_pct)


def sampling(reports: Sequence[traces.TraceReport], target_pct: float) -> Sampling:
    sampled = [r for r in reports if r.spans > 0]
    partial = [r for r in sampled if not r.complete]
    return Sampling(target_pct, len(reports), len(sampled), len(partial), traces.problem_counts(partial),
                    [r.to_json() for r in partial[:10]])
