"""TRACE: trace completeness (CONFORMANCE.md). Ground truth: Jaeger's query API v3.

Each check: setup (fixtures), apply (a fault or a policy, undone on exit),
measure (requests through meshbed.traffic.drive, their traces fetched from
Jaeger by the trace id the sample app echoes), judge (meshbed.measure.tracing:
pure functions from answers and spans to figures). Spans reach Jaeger late
(Envoy flushes every 1 s, the apps every 200 ms): meshbed.observe.trace_collect
polls until every trace is complete or the span count stops growing.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import pytest

from meshbed import policy_control
from meshbed.chaos import faults
from meshbed.errors import MeshbedError
from meshbed.measure import trace_hops, tracing
from meshbed.observe import traces
from meshbed.observe.trace_collect import Collected, collect
from meshbed.roles import Edge, Upstream
from meshbed.traffic import drive

pytestmark = [pytest.mark.tracing, pytest.mark.integration]

JAEGER = "jaeger /api/v3/traces"
needs = pytest.mark.needs_topology  # what each check needs from the topology (meshbed.roles)


# -- setup ---------------------------------------------------------------------

@pytest.fixture
def expected(mesh) -> Any:
    """The span tree a request to / must produce."""
    return tracing.route_edges(mesh.topology)


def _links(mesh, kind: str, need: int = 1) -> dict[str, str]:
    links = mesh.links.get(kind, {})
    if len(links) < need:
        pytest.skip(f"needs >= {need} {kind} links through Toxiproxy (topology chaos.links: {kind})")
    return links


def _paced(rps: float) -> Callable[[int], dict[str, str]]:
    """A drive() header hook that holds request i until its slot: a steady open-loop rate."""
    t0 = time.monotonic() + 0.05

    def hook(i: int) -> dict[str, str]:
        delay = t0 + i / rps - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for state
        return {}
    return hook


def _jaeger_evidence(col: Collected) -> dict[str, Any]:
    return {"polls": col.polls, "wait_s": round(col.wait_s, 2), "timed_out": col.timed_out,
            "untraceable": col.untraceable}


# -- checks --------------------------------------------------------------------

@pytest.mark.check("TRACE-1")
@needs(Edge())
def test_trace1_complete_traces_under_steady_load(mesh, check, expected):
    """Every request of a steady load has exactly one complete trace."""
    p = check.p
    batch = drive(mesh.ingress_url, p.requests, concurrency=8, headers=_paced(p.rps), timeout=10)
    col = collect(mesh, batch.answers, expected)
    m = tracing.completeness(col.list)
    check.figure("completeness", m.pct, "%", m.traces, JAEGER, min_n=p.requests)
    check.figure("achieved_rps", tracing.achieved_rps(batch.answers), "rps", batch.n, "traffic.drive")
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status(), "target_rps": p.rps})
    check.evidence("expected_spans", sorted(f"{k[0]}/{k[1]}" for k in traces.expected_keys(expected).elements()))
    check.evidence("jaeger_poll", _jaeger_evidence(col))
    check.evidence("defects", m.defects)
    check.chart("traces", "incomplete_examples", tracing.examples(col.list))
    check.judge()


@pytest.mark.quick
@pytest.mark.check("TRACE-2")
@needs(Edge())
def test_trace2_propagation_through_app_hops(mesh, check, expected):
    """Service spans are children of their sidecar's inbound span; cluster and instance are tagged."""
    p = check.p
    batch = drive(mesh.ingress_url, p.requests, concurrency=4, timeout=10)
    col = collect(mesh, batch.answers, expected)
    m = tracing.propagation(col.spans, p.requests, expected, tracing.calls_of(mesh.topology),
                            tracing.entry_service(mesh.topology))
    c = tracing.completeness(col.list)
    check.figure("service_parented", m.parented_pct, "%", m.service_spans, JAEGER, min_n=m.want_service_spans)
    check.figure("tagged", m.tagged_pct, "%", m.checked, JAEGER, min_n=m.want_tagged)
    check.figure("completeness", c.pct, "%", c.traces, JAEGER)
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status()})
    check.evidence("spans", {"service_server": m.service_spans, "parented": m.parented, "checked_for_tags": m.checked,
                             "tagged": m.tagged})
    check.evidence("tag_problems", m.problems[:20])
    check.chart("traces", "incomplete_examples", tracing.examples(col.list))
    check.judge()


@pytest.mark.quick
@pytest.mark.check("TRACE-3")
@needs(Upstream(min_instances=2, from_edge=True, links=("upstream",)))
def test_trace3_data_path_faults_mark_failed_hops(mesh, check, toxi, fault_log, expected, target):
    """reset_peer, then latency above the route timeout, each on the link into one instance of the
    edge's first upstream (the answer body names the instance that served it).

    reset_peer sits on the request direction, so a reset request never reaches the upstream:
    its tree ends at the caller sidecar's outbound span (the hop). The latency toxic delays
    the answer past the route timeout: its tree is whole. Either way the hop span of every
    request that crossed the fault must be error-marked with a response flag.
    """
    p, svc = check.p, target.service
    links = _links(mesh, "upstream")
    victims = sorted(i for i in mesh.instances_of(svc) if i in links)[:2]
    if len(victims) < 2:
        pytest.skip(f"needs >= 2 instances of {svc} behind upstream links through Toxiproxy")
    hop = (traces.sidecar(target.caller), traces.CLIENT)
    faulted = {"reset_peer": victims[0], "latency": victims[1]}
    pol = dataclasses.replace(policy_control.baseline(mesh, svc), timeout_ms=p.route_timeout_ms)
    phases = {}
    with faults.reset_peer(toxi, links[victims[0]], timeout_ms=0, stream="upstream", log=fault_log):
        phases["reset_peer"] = drive(mesh.ingress_url, p.requests // 2, concurrency=2, timeout=10).answers
    with policy_control.applied(mesh, svc, pol, check), \
            faults.latency(toxi, links[victims[1]], p.latency_ms, log=fault_log):
        phases["latency"] = drive(mesh.ingress_url, p.requests - p.requests // 2, concurrency=2, timeout=10).answers
    want = tracing.expected_per_request(phases, expected, {"reset_peer": traces.without_descendants(expected, hop)})
    col = collect(mesh, [a for b in phases.values() for a in b], lambda a: want[a.request_id])
    m = tracing.error_marking(phases, col.spans, hop, faulted)
    c = tracing.completeness(col.list)
    check.figure("error_marked", m.pct, "%", m.crossed, JAEGER, min_n=2)
    check.figure("completeness", c.pct, "%", c.traces, JAEGER, min_n=p.requests)
    check.evidence("phases", {k: dataclasses.asdict(v) for k, v in m.phases.items()})
    check.evidence("faults", {"reset_peer": {"instance": victims[0], "stream": "upstream"},
                              "latency": {"instance": victims[1], "latency_ms": p.latency_ms,
                                          "route_timeout_ms": p.route_timeout_ms}})
    check.evidence("unmarked", m.unmarked[:10])
    check.evidence("defects", c.defects)
    check.chart("traces", "incomplete_examples", tracing.examples(col.list))
    if m.fewest_crossed == 0:
        raise MeshbedError(f"a fault was never met by any request: {dict((k, v.crossed) for k, v in m.phases.items())}",
                           hint="no request was sent to the faulted instance; see evidence 'phases'")
    check.judge()


@pytest.mark.check("TRACE-4")
@needs(Edge(links=("tracing",)))
def test_trace4_export_link_down_then_healed(mesh, check, toxi, fault_log, expected):
    """Cut the Envoy/app -> Jaeger links (OTLP gRPC and HTTP) for fault_s under traffic, then heal.

    span_loss is measured for requests sent while the links were down (reported, no
    threshold); every request sent after healing must have a complete trace.
    """
    p = check.p
    links = _links(mesh, "tracing")
    with faults.all_of(*(faults.link_down(toxi, x, log=fault_log) for x in sorted(links.values()))):
        during = drive(mesh.ingress_url, max(1, int(p.fault_s * p.rps)), concurrency=4, headers=_paced(p.rps),
                       timeout=10)
    after = drive(mesh.ingress_url, p.requests, concurrency=4, headers=_paced(p.rps * 2), timeout=10)
    col_after = collect(mesh, after.answers, expected)
    col_during = collect(mesh, during.answers, expected, settle=6.0)
    healed, cut = tracing.completeness(col_after.list), tracing.completeness(col_during.list)
    loss = tracing.span_loss(col_during.list, expected)
    check.figure("completeness_after_heal", healed.pct, "%", healed.traces, JAEGER, min_n=p.requests)
    check.figure("span_loss_during_fault", loss.loss_pct, "%", loss.expected, JAEGER)
    check.figure("completeness_during_fault", cut.pct, "%", cut.traces, JAEGER)
    check.evidence("during_fault", {"requests": during.n, "by_status": during.by_status(),
                                    **dataclasses.asdict(loss), "jaeger": _jaeger_evidence(col_during)})
    check.evidence("after_heal", {"requests": after.n, "by_status": after.by_status(),
                                  "jaeger": _jaeger_evidence(col_after), "defects": healed.defects})
    check.chart("traces", "incomplete_after_heal", tracing.examples(col_after.list))
    check.judge()


@pytest.mark.check("TRACE-5")
@needs(Edge())
def test_trace5_sampling_decided_once_at_the_edge(mesh, check, expected):
    """At 10 % sampling: ~10 % of requests have a trace, and every sampled trace is complete."""
    p = check.p
    pol = dataclasses.replace(mesh.topology.mesh, sampling_percent=p.sampling_percent)
    with policy_control.mesh_applied(mesh, pol, check):
        batch = drive(mesh.ingress_url, p.requests, concurrency=8, timeout=10)
    col = collect(mesh, batch.answers, expected, settle=5.0, deadline=90.0)
    m = tracing.sampling(col.list, p.sampling_percent)
    check.figure("sampling_dev", m.dev_pp, "pp", m.requests, JAEGER, min_n=p.requests)
    check.figure("partial_traces", m.partial, "traces", m.sampled, JAEGER, min_n=1, bad_count=True)
    check.figure("sampled_pct", m.sampled_pct, "%", m.requests, JAEGER)
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status()})
    check.evidence("jaeger_poll", _jaeger_evidence(col))
    check.evidence("partial_defects", m.partial_defects)
    check.chart("traces", "partial_examples", m.partial_examples)
    check.judge()


@pytest.mark.quick
@pytest.mark.check("TRACE-6")
@needs(Edge())
def test_trace6_mixed_propagation_hop(mesh, check):
    """Requests down every ingress route cross every hop; a hop whose app propagates a format its
    Envoys do not speak (the mesh B3, the app only traceparent) splits the trace there.

    The split is named caller -> callee from two signals that span loss cannot fake: an app's
    trace id differing from its caller app's (the answers nest them), and a span whose parent is
    present but is not the one the mesh's span tree puts there, or a root where it needs a parent.
    """
    p, topo = check.p, mesh.topology
    paths = trace_hops.route_paths(topo)
    order = sorted(paths.values())
    entry = trace_hops.entry_of(topo)
    batch = drive(mesh.ingress_url, p.requests * len(order), concurrency=4,
                  path=lambda i: order[i % len(order)], timeout=10)
    col = collect(mesh, batch.answers, trace_hops.expected_of(topo))
    c = tracing.completeness(col.list)
    bodies = [(a.request_id, trace_hops.body_of(a), col.spans.get(a.request_id, [])) for a in batch.answers]
    h = trace_hops.splits(bodies, tracing.calls_of(topo), entry)
    check.figure("complete", c.pct, "%", c.traces, JAEGER, min_n=batch.n)
    check.figure("broken_hops", len(h.broken), "hops", h.traces, "answers' trace ids + " + JAEGER, min_n=batch.n,
                 bad_count=True)
    check.evidence("broken_hops", h.to_json())
    check.evidence("hops_checked", {trace_hops.hop_name(x): n for x, n in h.crossed.items()})
    check.evidence("not_driven", trace_hops.not_driven(topo, paths))
    check.evidence("traffic", {"requests": batch.n, "paths": order, "by_status": batch.by_status()})
    check.evidence("jaeger_poll", _jaeger_evidence(col))
    check.evidence("defects", c.defects)
    check.chart("traces", "incomplete_examples", tracing.examples(col.list))
    if h.broken:
        check.target(*dict.fromkeys(x for hop in h.broken for x in hop if x != "ingress"))
    check.judge()
