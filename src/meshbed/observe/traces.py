"""Trace completeness: the span tree a route must produce, and how a fetched trace differs from it.

Pure functions over :class:`meshbed.observe.jaeger.Span` lists (no I/O), so the
rules the TRACE checks judge by are unit-tested on their own.

A span is identified by its *key* ``(service, kind)`` (OTLP kinds: 2 server,
3 client); a route's expected tree is the multiset of ``(key, parent key)``
edges. Per called service ``S`` with sidecars:

    parent -> (S-sidecar, 2) inbound -> (S, 2) service
              (S, 2) -> (S, 3) client call -> (S-sidecar, 3) outbound -> next service's inbound ...

and the edge (ingress) Envoy's span ``(ingress, 3)`` is the root. A trace is
*complete* when its edges equal the expected multiset exactly (nothing
missing, nothing extra, every parent resolves, one root), every span carries
the trace id asked for, and every span tagged with a request id names the
request's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .jaeger import Span

SERVER, CLIENT = 2, 3
INGRESS = "ingress"
SIDECAR_SUFFIX = "-sidecar"
REQUEST_ID_TAG = "guid:x-request-id"
ORPHAN = ("<unresolved>", 0)  # the parent key of a span whose parent id is not in the trace

Key = tuple[str, int]
Edge = tuple[Key, "Key | None"]  # (span key, parent key; None for a root)


def key(span: Span) -> Key:
    return (span.service, span.kind)


def sidecar(service: str) -> str:
    return service + SIDECAR_SUFFIX


def expected_edges(calls: Mapping[str, Sequence[str]], entry: str, *, ingress: str = INGRESS,
                   sidecars: bool = True, max_depth: int = 32) -> Counter[Edge]:
    """The (span key, parent key) multiset one request to ``entry`` produces.

    ``calls`` maps each service to the services it calls (the topology's
    ``calls``); every call is made for every request, in the sample app.
    """
    edges: Counter[Edge] = Counter()
    root: Key = (ingress, CLIENT)
    edges[(root, None)] += 1

    def visit(service: str, parent: Key, depth: int) -> None:
        if depth > max_depth:
            raise ValueError(f"call graph deeper than {max_depth} at {service!r}: is there a cycle?")
        if sidecars:
            inbound: Key = (sidecar(service), SERVER)
            edges[(inbound, parent)] += 1
            parent = inbound
        srv: Key = (service, SERVER)
        edges[(srv, parent)] += 1
        for down in calls.get(service, ()):
            cli: Key = (service, CLIENT)
            edges[(cli, srv)] += 1
            up = cli
            if sidecars:
                outbound: Key = (sidecar(service), CLIENT)
                edges[(outbound, cli)] += 1
                up = outbound
            visit(down, up, depth + 1)

    visit(entry, root, 0)
    return edges


def without_descendants(edges: Counter[Edge], at: Key) -> Counter[Edge]:
    """The expected edges of a request that stops at span ``at`` (e.g. an Envoy answering a
    local 503 on overflow): ``at`` stays, everything below it goes."""
    gone: set[Key] = set()
    frontier = {at}
    while frontier:
        nxt = {k for (k, p) in edges if p in frontier and k not in gone}
        gone |= nxt
        frontier = nxt
    return Counter({e: n for e, n in edges.items() if e[0] not in gone})


def expected_keys(edges: Counter[Edge]) -> Counter[Key]:
    out: Counter[Key] = Counter()
    for (k, _), n in edges.items():
        out[k] += n
    return out


def orphans(spans: Iterable[Span]) -> list[Span]:
    """Spans whose parent id is set but names no span of the given set."""
    spans = list(spans)
    ids = {s.span_id for s in spans}
    return [s for s in spans if s.parent_id and s.parent_id not in ids]


def actual_edges(spans: Sequence[Span]) -> Counter[Edge]:
    by_id = {s.span_id: s for s in spans}
    out: Counter[Edge] = Counter()
    for s in spans:
        if not s.parent_id:
            out[(key(s), None)] += 1
        elif s.parent_id in by_id:
            out[(key(s), key(by_id[s.parent_id]))] += 1
        else:
            out[(key(s), ORPHAN)] += 1
    return out


@dataclass
class TraceReport:
    """How one request's trace compares with the expected tree."""

    trace_id: str
    request_id: str = ""
    spans: int = 0
    trace_ids: list[str] = field(default_factory=list)  # distinct trace ids on the fetched spans
    roots: int = 0
    orphans: int = 0
    duplicate_span_ids: int = 0
    missing: list[str] = field(default_factory=list)  # expected edges not found, as text
    extra: list[str] = field(default_factory=list)  # found edges not expected (wrong parent, orphan, stray span)
    foreign_request_ids: list[str] = field(default_factory=list)  # request ids on spans other than ours

    @property
    def complete(self) -> bool:
        return (self.spans > 0 and self.trace_ids == [self.trace_id] and self.roots == 1 and self.orphans == 0
                and self.duplicate_span_ids == 0 and not self.missing and not self.extra
                and not self.foreign_request_ids)

    @property
    def partial(self) -> bool:
        """Some spans arrived, but not a complete tree."""
        return self.spans > 0 and not self.complete

    def problems(self) -> str:
        if self.complete:
            return ""
        if self.spans == 0:
            return "no spans"
        out = []
        if self.trace_ids != [self.trace_id]:
            out.append(f"trace ids {self.trace_ids}")
        if self.roots != 1:
            out.append(f"{self.roots} roots")
        if self.orphans:
            out.append(f"{self.orphans} orphans")
        if self.duplicate_span_ids:
            out.append(f"{self.duplicate_span_ids} duplicate span ids")
        if self.missing:
            out.append("missing " + ", ".join(self.missing))
        if self.extra:
            out.append("extra " + ", ".join(self.extra))
        if self.foreign_request_ids:
            out.append(f"foreign request ids {self.foreign_request_ids[:3]}")
        return "; ".join(out)

    def to_json(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "request_id": self.request_id, "spans": self.spans,
                "complete": self.complete, "problems": self.problems()}


def _edge_text(e: Edge) -> str:
    (svc, kind), parent = e
    p = "root" if parent is None else f"{parent[0]}/{parent[1]}"
    return f"{svc}/{kind}<-{p}"


def analyze(spans: Sequence[Span], trace_id: str, expected: Counter[Edge], request_id: str = "") -> TraceReport:
    """Compare one fetched trace with the expected edges of its route."""
    got = actual_edges(spans)
    missing = expected - got
    extra = got - expected
    ids = [s.span_id for s in spans]
    foreign: list[str] = []
    if request_id:
        foreign = sorted({str(s.attributes.get(REQUEST_ID_TAG)) for s in spans
                          if s.attributes.get(REQUEST_ID_TAG) not in (None, "", request_id)})
    return TraceReport(
        trace_id=trace_id, request_id=request_id, spans=len(spans),
        trace_ids=sorted({s.trace_id for s in spans}),
        roots=sum(1 for s in spans if not s.parent_id),
        orphans=len(orphans(spans)),
        duplicate_span_ids=len(ids) - len(set(ids)),
        missing=[_edge_text(e) for e in sorted(missing.elements(), key=str)],
        extra=[_edge_text(e) for e in sorted(extra.elements(), key=str)],
        foreign_request_ids=foreign,
    )


def completeness_pct(reports: Sequence[TraceReport]) -> float:
    if not reports:
        return float("nan")
    return 100.0 * sum(1 for r in reports if r.complete) / len(reports)


def problem_counts(reports: Iterable[TraceReport]) -> dict[str, int]:
    """How often each kind of defect occurred, for evidence."""
    c: Counter[str] = Counter()
    for r in reports:
        if r.complete:
            continue
        if r.spans == 0:
            c["no spans"] += 1
            continue
        for m in r.missing:
            c["missing " + m] += 1
        for e in r.extra:
            c["extra " + e] += 1
        if r.orphans:
            c["orphans"] += 1
        if r.trace_ids != [r.trace_id]:
            c["other trace ids"] += 1
        if r.roots != 1:
            c["roots != 1"] += 1
        if r.foreign_request_ids:
            c["foreign request id"] += 1
    return dict(c.most_common())


# -- TRACE-2: propagation through application hops ---------------------------

def service_parented(spans: Sequence[Span], services: Iterable[str]) -> tuple[int, int]:
    """(service server spans whose parent is their own sidecar's inbound span, all service server spans)."""
    by_id = {s.span_id: s for s in spans}
    svcs = set(services)
    total = ok = 0
    for s in spans:
        if s.service in svcs and s.kind == SERVER:
            total += 1
            p = by_id.get(s.parent_id)
            if p is not None and key(p) == (sidecar(s.service), SERVER):
                ok += 1
    return ok, total


ENVOY_TAGS = ("upstream_cluster", "node_id", "response_flags", "http.status_code", REQUEST_ID_TAG)


def untagged(spans: Sequence[Span], services: Iterable[str], ingress: str = INGRESS) -> list[str]:
    """What is missing from each span's tags: Envoy spans need the upstream cluster and their
    instance (node_id) plus status and flags; service spans need their instance."""
    svcs = set(services)
    out = []
    for s in spans:
        if s.service == ingress or s.service.endswith(SIDECAR_SUFFIX):
            need: tuple[str, ...] = ENVOY_TAGS
        elif s.service in svcs and s.kind == SERVER:
            need = ("meshbed.instance", REQUEST_ID_TAG)
        else:
            continue
        lacks = [t for t in need if s.attributes.get(t) in (None, "")]
        if lacks:
            out.append(f"{s.service}/{s.kind} {s.span_id}: no {','.join(lacks)}")
    return out
