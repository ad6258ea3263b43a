"""TRACE-6 figures: where a request's trace splits, named as the caller -> callee hop.

A *hop* is one call through the mesh: ``ingress -> entry`` (the edge to the
service a route goes to) or ``caller -> callee`` (a service to one it calls).
When an app propagates a trace format its Envoys do not speak (the mesh
speaks B3, the app only traceparent), the trace splits at that app's hops.
Two signals say where, both independent of span loss, so a slow exporter
cannot pass for a propagation bug:

1. **trace id changed**: every app echoes its trace id in its answer, and a
   caller's answer nests its callees' (the sample app's ``downstream``); a
   callee whose trace id differs from its caller app's did not continue the
   caller's trace.
2. **wrong parent**: in the trace fetched from Jaeger, a span of a hop whose
   parent is present but is not the span the mesh's span tree puts there
   (the callee app's server span right under the caller app's client span,
   skipping both Envoys: the app read a header its Envoys passed through
   untouched), or a root where the tree has a parent (the app, or an
   Envoy, found no header it reads and started a new trace).

A span whose parent id names a span that never arrived is loss, not a split:
it makes the trace incomplete (``complete``) and names no hop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from ..observe import traces
from ..observe.jaeger import Span

Hop = tuple[str, str]  # (caller service or "ingress", callee service)
ID_CHANGED, ROOT, WRONG_PARENT = "trace id changed", "root span", "wrong parent"


def hop_name(h: Hop) -> str:
    return f"{h[0]} -> {h[1]}"


def tree_hops(calls: Mapping[str, Sequence[str]], entry: str, ingress: str = traces.INGRESS) -> list[Hop]:
    """Every hop one request to ``entry`` crosses (each once), in call order."""
    out: list[Hop] = [(ingress, entry)]
    todo = [entry]
    while todo:
        svc = todo.pop(0)
        for down in calls.get(svc, ()):
            if (svc, down) not in out:
                out.append((svc, down))
                todo.append(down)
    return out


def topology_hops(calls: Mapping[str, Sequence[str]], entries: Sequence[str],
                  ingress: str = traces.INGRESS) -> list[Hop]:
    """Every hop of the topology: the ingress to each route's service, and each service to each it calls."""
    return [(ingress, e) for e in dict.fromkeys(entries)] + [(s, d) for s, ds in calls.items() for d in ds]


def answer_hops(doc: Any, caller: str = traces.INGRESS, caller_tid: str = "") -> Iterator[tuple[Hop, str, str]]:
    """(hop, caller app's trace id, callee app's trace id) for every hop an answer body reports.

    The sample app's answer is ``{service, trace_id, downstream: [answers...]}``; a failed
    downstream call is ``{service, error, status}`` with no trace id (its hop yields "" for it).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("service"), str):
        return
    tid = str(doc.get("trace_id") or "")
    yield (caller, doc["service"]), caller_tid, tid
    for d in doc.get("downstream") or ():
        if isinstance(d, dict):
            yield from answer_hops(d, doc["service"], tid)


def _callee_of_outbound(s: Span, calls: Mapping[str, Sequence[str]], caller: str) -> list[str]:
    up = str(s.attributes.get("upstream_cluster", ""))
    return [up] if up in calls.get(caller, ()) else list(calls.get(caller, ()))


def span_splits(spans: Sequence[Span], calls: Mapping[str, Sequence[str]],
                callers: Mapping[str, Sequence[str]], ingress: str = traces.INGRESS
                ) -> list[tuple[Hop, str, str]]:
    """(hop, signal, span) for each span of one trace whose parent breaks the mesh's span tree.

    ``callers`` maps each service to its callers in this request's tree (the ingress for
    the entry); it names the hop of a root span, whose parent cannot. Checked spans: a
    service's server span (parent: its sidecar's inbound span), a sidecar's inbound span
    (parent: the caller's outbound span, or the ingress's), a sidecar's outbound span
    (parent: its app's client span). Unresolved parents (loss) are skipped.
    """
    by_id = {s.span_id: s for s in spans}
    sidecar_of = {traces.sidecar(svc): svc for svc in calls}
    out: list[tuple[Hop, str, str]] = []
    for s in spans:
        svc, kind = traces.key(s)
        parent = by_id.get(s.parent_id) if s.parent_id else None
        if s.parent_id and parent is None:
            continue  # loss: the parent never arrived
        pkey = traces.key(parent) if parent is not None else None
        if svc in calls and kind == traces.SERVER:  # the app's server span
            want: set[traces.Key] = {(traces.sidecar(svc), traces.SERVER)}
            callee = svc
        elif svc in sidecar_of and kind == traces.SERVER:  # a sidecar's inbound span
            callee = sidecar_of[svc]
            want = {(ingress, traces.CLIENT) if c == ingress else (traces.sidecar(c), traces.CLIENT)
                    for c in callers.get(callee, ())}
        elif svc in sidecar_of and kind == traces.CLIENT:  # a sidecar's outbound span
            caller = sidecar_of[svc]
            if pkey == (caller, traces.CLIENT):
                continue
            signal = ROOT if parent is None else WRONG_PARENT
            out += [((caller, c), signal, s.span_id) for c in _callee_of_outbound(s, calls, caller)]
            continue
        else:
            continue
        if pkey in want:
            continue
        if pkey is None:
            out += [((c, callee), ROOT, s.span_id) for c in callers.get(callee, ())]
            continue
        name = pkey[0]
        named = sidecar_of.get(name, name)  # the parent's service: an app, a sidecar's, or the ingress
        hops = [(named, callee)] if named in callers.get(callee, ()) else \
            [(c, callee) for c in callers.get(callee, ())]
        out += [(h, WRONG_PARENT, s.span_id) for h in hops]
    return out


def tree_callers(calls: Mapping[str, Sequence[str]], entry: str, ingress: str = traces.INGRESS) -> dict[str, list[str]]:
    """Each service's callers in one request's tree to ``entry`` (the ingress for the entry itself)."""
    out: dict[str, list[str]] = {}
    for caller, callee in tree_hops(calls, entry, ingress):
        out.setdefault(callee, []).append(caller)
    return out


@dataclass
class HopSplits:
    """Per hop: in how many traces it split, by which signal, with examples."""

    traces: int = 0  # requests judged
    split: Counter = field(default_factory=Counter)  # hop -> traces in which it split
    signals: dict[Hop, Counter] = field(default_factory=dict)  # hop -> signal -> traces
    examples: dict[Hop, list[dict[str, str]]] = field(default_factory=dict)
    crossed: Counter = field(default_factory=Counter)  # hop -> requests whose tree crosses it

    @property
    def broken(self) -> list[Hop]:
        """The hops that split, most often first, then in call order."""
        order = {h: i for i, h in enumerate(self.crossed)}
        return sorted(self.split, key=lambda h: (-self.split[h], order.get(h, len(order)), h))

    def to_json(self, k: int = 3) -> list[dict[str, Any]]:
        """The ``broken_hops`` evidence: one row per split hop, most often split first."""
        return [{"hop": hop_name(h), "caller": h[0], "callee": h[1], "split_traces": self.split[h],
                 "of": self.crossed[h] or self.traces, "signals": dict(self.signals.get(h, {})),
                 "examples": self.examples.get(h, [])[:k]} for h in self.broken]


def splits(requests: Sequence[tuple[str, Any, Sequence[Span]]], calls: Mapping[str, Sequence[str]],
           entry_of: Any) -> HopSplits:
    """TRACE-6 over ``(request id, answer body, spans of its trace)`` per request.

    ``entry_of(body)`` is the service the ingress routed the request to (None: no answer to
    judge: the request counts, names no hop). Each hop counts once per trace however
    many signals name it.
    """
    out = HopSplits()
    for rid, body, spans in requests:
        out.traces += 1
        entry = entry_of(body)
        if entry is None:
            continue
        for h in tree_hops(calls, entry):
            out.crossed[h] += 1
        found: dict[Hop, set[str]] = {}
        tid = str(body.get("trace_id") or "") if isinstance(body, dict) else ""
        for h, caller_tid, callee_tid in answer_hops(body):
            if caller_tid and callee_tid and caller_tid != callee_tid:
                found.setdefault(h, set()).add(ID_CHANGED)
        for h, signal, _span in span_splits(spans, calls, tree_callers(calls, entry)):
            found.setdefault(h, set()).add(signal)
        for h, sigs in found.items():
            out.split[h] += 1
            sc = out.signals.setdefault(h, Counter())
            for sig in sigs:
                sc[sig] += 1
            ex = out.examples.setdefault(h, [])
            if len(ex) < 5:
                ex.append({"request_id": rid, "trace_id": tid, "signals": ", ".join(sorted(sigs))})
    return out


def route_paths(topology: Any) -> dict[str, str]:
    """One path per service the ingress routes to (its first route's prefix): driving them all
    crosses every hop reachable from the edge."""
    from .tracing import entry_service
    out: dict[str, str] = {}
    for r in topology.ingress:
        if r.service not in out and entry_service(topology, r.prefix) == r.service:
            out[r.service] = r.prefix
    return out


def not_driven(topology: Any, paths: Mapping[str, str]) -> list[str]:
    """Hops of the topology that no driven route crosses (a service no route reaches): not judged."""
    from .tracing import calls_of
    calls = calls_of(topology)
    driven = {h for e in paths for h in tree_hops(calls, e)}
    entries = [r.service for r in topology.ingress]
    return [hop_name(h) for h in topology_hops(calls, entries) if h not in driven]


def body_of(a: Any) -> Any:
    """The JSON answer of one request (None when it has none)."""
    try:
        return a.json()
    except ValueError:
        return None


def entry_of(topology: Any) -> Any:
    """``body -> the service the ingress routed it to`` (by the path the entry app saw; None: no answer)."""
    from .tracing import entry_service

    def entry(body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("path"), str):
            return None
        try:
            return entry_service(topology, body["path"])
        except StopIteration:
            return None
    return entry


def expected_of(topology: Any) -> Any:
    """``answer -> the span tree its request must produce`` (the route its entry app says it took)."""
    from .tracing import calls_of
    calls, entry = calls_of(topology), entry_of(topology)

    def expected(a: Any) -> Counter:
        svc = entry(body_of(a)) or next(iter(route_paths(topology)))
        return traces.expected_edges(calls, svc)
    return expected
