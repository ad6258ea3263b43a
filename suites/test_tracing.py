"""TRACE: trace completeness (CONFORMANCE.md). Ground truth: Jaeger's query API v3.

Requests are sent with meshbed.traffic.drive, which keeps every answer: the
sample app echoes the trace id of its request in the body, so each request's
trace is fetched by id (Jaeger v3 cannot search by x-request-id) and compared
with the span tree its route must produce (meshbed.observe.traces). Spans
reach Jaeger late (Envoy flushes every 1 s, the apps every 200 ms): traces are
polled until all are complete or the span count stops growing, with a deadline.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from meshbed import wait
from meshbed.observe import traces
from meshbed.observe.jaeger import Span
from meshbed.observe.trace_collect import Collected, collect
from meshbed.stats import rate_pct
from meshbed.traffic import Batch, drive

pytestmark = [pytest.mark.tracing, pytest.mark.integration]


# -- helpers -------------------------------------------------------------------

def _calls(mesh) -> dict[str, tuple[str, ...]]:
    return {name: tuple(s.calls) for name, s in mesh.topology.services.items()}


def _expected(mesh, path: str = "/"):
    """Edges of the route ``path`` takes (the longest matching ingress prefix)."""
    routes = sorted(mesh.topology.ingress, key=lambda r: len(r.prefix), reverse=True)
    entry = next(r.service for r in routes if path.startswith(r.prefix))
    return traces.expected_edges(_calls(mesh), entry)


def _paced(rps: float) -> Callable[[int], dict[str, str]]:
    """A drive() header hook that holds request i until its slot: a steady open-loop rate."""
    t0 = time.monotonic() + 0.05

    def hook(i: int) -> dict[str, str]:
        delay = t0 + i / rps - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for state
        return {}
    return hook


def _examples(col: Collected, k: int = 10) -> list[dict[str, Any]]:
    return [r.to_json() for r in col.list if not r.complete][:k]


# -- checks --------------------------------------------------------------------

@pytest.mark.check("TRACE-1")
def test_trace1_complete_traces_under_steady_load(mesh, check):
    """Every request of a steady load has exactly one complete trace."""
    n = int(check.param("requests", 1000))
    rps = float(check.param("rps", 50))
    expected = _expected(mesh)
    t0 = time.time()
    batch = drive(mesh.ingress_url, n, concurrency=8, headers=_paced(rps), timeout=10)
    sent_s = time.time() - t0
    col = collect(mesh, batch.answers, expected)
    pct = traces.completeness_pct(col.list)
    check.figure("completeness", pct, "%", len(col.list), "jaeger /api/v3/traces", min_n=n)
    check.figure("achieved_rps", batch.n / sent_s if sent_s > 0 else None, "rps", batch.n, "traffic.drive")
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status(), "sent_s": round(sent_s, 2),
                               "target_rps": rps, "untraceable": col.untraceable})
    check.evidence("expected_spans", sorted(f"{k[0]}/{k[1]}" for k in traces.expected_keys(expected).elements()))
    check.evidence("jaeger_poll", {"polls": col.polls, "wait_s": round(col.wait_s, 2), "timed_out": col.timed_out})
    check.evidence("defects", traces.problem_counts(col.list))
    check.evidence("incomplete_examples", _examples(col))
    check.judge()


def _tag_problems(spans: list[Span], calls: dict[str, tuple[str, ...]], entry: str) -> list[str]:
    """Tags every span must carry, and that they name the right cluster and instance.

    Envoy spans: upstream_cluster (ingress -> the entry service, outbound -> the called
    service, inbound -> local_app) and node_id; a service server span: meshbed.instance,
    equal to the node_id of the sidecar inbound span that is its parent.
    """
    out = traces.untagged(spans, calls)
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_id, []).append(s)
    for s in spans:
        up = s.attributes.get("upstream_cluster")
        if s.service == traces.INGRESS:
            want = {entry}
        elif s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.SERVER:
            want = {"local_app"}
        elif s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.CLIENT:
            want = set(calls.get(s.service[: -len(traces.SIDECAR_SUFFIX)], ()))
        else:
            want = None
        if want is not None and up not in want:
            out.append(f"{s.service}/{s.kind} {s.span_id}: upstream_cluster {up!r}, expected one of {sorted(want)}")
        if s.kind == traces.SERVER and s.service in calls:
            parent = by_id.get(s.parent_id)
            if parent is not None and parent.attributes.get("node_id") != s.attributes.get("meshbed.instance"):
                out.append(f"{s.service} {s.span_id}: instance {s.attributes.get('meshbed.instance')!r} under "
                           f"sidecar of {parent.attributes.get('node_id')!r}")
    return out


@pytest.mark.quick
@pytest.mark.check("TRACE-2")
def test_trace2_propagation_through_app_hops(mesh, check):
    """Service spans are children of their sidecar's inbound span; cluster and instance are tagged."""
    n = int(check.param("requests", 50))
    calls = _calls(mesh)
    entry = mesh.topology.ingress[0].service
    expected = _expected(mesh)
    batch = drive(mesh.ingress_url, n, concurrency=4, timeout=10)
    col = collect(mesh, batch.answers, expected)
    parented = total = 0
    tagged_spans = all_spans = 0
    problems: list[str] = []
    for rid, spans in col.spans.items():
        ok, tot = traces.service_parented(spans, calls)
        parented, total = parented + ok, total + tot
        bad = _tag_problems(spans, calls, entry)
        bad_ids = {p.split(" ")[1].rstrip(":") for p in bad}
        relevant = [s for s in spans if s.service == traces.INGRESS or s.service.endswith(traces.SIDECAR_SUFFIX)
                    or (s.service in calls and s.kind == traces.SERVER)]
        all_spans += len(relevant)
        tagged_spans += sum(1 for s in relevant if s.span_id not in bad_ids)
        problems += bad
    # every request must contribute its service spans: missing traces count against both figures
    want_service_spans = n * sum(1 for (k, _), c in expected.items() if k[0] in calls and k[1] == traces.SERVER)
    want_tagged = n * sum(1 for (k, _), c in expected.items() if k[0] == traces.INGRESS
                          or k[0].endswith(traces.SIDECAR_SUFFIX) or (k[0] in calls and k[1] == traces.SERVER))
    check.figure("service_parented", rate_pct(parented, max(total, want_service_spans)), "%",
                 total, "jaeger /api/v3/traces", min_n=want_service_spans)
    check.figure("tagged", rate_pct(tagged_spans, max(all_spans, want_tagged)), "%", all_spans,
                 "jaeger /api/v3/traces", min_n=want_tagged)
    check.figure("completeness", traces.completeness_pct(col.list), "%", len(col.list), "jaeger /api/v3/traces")
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status()})
    check.evidence("spans", {"service_server": total, "parented": parented, "checked_for_tags": all_spans,
                             "tagged": tagged_spans})
    check.evidence("tag_problems", problems[:20])
    check.evidence("incomplete_examples", _examples(col))
    check.judge()


# -- TRACE-3: data-path faults --------------------------------------------------

def _failed_hop(spans: list[Span], hop) -> list[Span]:
    return [s for s in spans if traces.key(s) == hop]


@pytest.mark.quick
@pytest.mark.check("TRACE-3")
def test_trace3_data_path_faults_mark_failed_hops(mesh, check, toxi, fault_log):
    """reset_peer, then latency above the route timeout, each on the link into one backend.

    reset_peer sits on the request direction, so a reset request never reaches
    the backend: its tree ends at the caller sidecar's outbound span. The
    latency toxic delays the answer past the route timeout (the backend still
    serves it): its tree is whole. Either way the failed hop -- the caller
    sidecar's outbound span -- must be error-marked with a response flag.
    """
    from meshbed import policy_control
    from meshbed.chaos import faults
    import dataclasses as _dc

    n = int(check.param("requests", 60))
    timeout_ms = int(check.param("route_timeout_ms", 300))
    latency_ms = int(check.param("latency_ms", 1000))
    svc = "backend"
    links = mesh.links.get("upstream", {})
    victims = sorted(i for i in mesh.instances_of(svc) if i in links)
    if len(victims) < 2:
        pytest.skip("needs upstream links through Toxiproxy (chaos.links: upstream) and >= 2 backends")
    callers = [c for c in mesh.topology.callers_of(svc) if c != "ingress"]
    hop = (traces.sidecar(callers[0]), traces.CLIENT)
    full = _expected(mesh)
    cut = traces.without_descendants(full, hop)
    phases: dict[str, Batch] = {}
    with faults.reset_peer(toxi, links[victims[0]], timeout_ms=0, stream="upstream", log=fault_log):
        phases["reset_peer"] = drive(mesh.ingress_url, n // 2, concurrency=2, timeout=10)
    pol = _dc.replace(policy_control.baseline(mesh, svc), timeout_ms=timeout_ms)
    with policy_control.applied(mesh, svc, pol) as applied:
        with faults.latency(toxi, links[victims[1]], latency_ms, log=fault_log):
            phases["latency"] = drive(mesh.ingress_url, n - n // 2, concurrency=2, timeout=10)
    want: dict[str, Any] = {}
    for name, b in phases.items():
        for a in b.answers:
            want[a.request_id] = cut if (name == "reset_peer" and a.status != 200) else full
    answers = [a for b in phases.values() for a in b.answers]
    col = collect(mesh, answers, lambda a: want[a.request_id])
    failed = {name: [a for a in b.answers if a.status != 200] for name, b in phases.items()}
    marked: dict[str, int] = {}
    flags: dict[str, dict[str, int]] = {}
    unmarked: list[dict[str, Any]] = []
    for name, fs in failed.items():
        marked[name] = 0
        flags[name] = {}
        for a in fs:
            hs = _failed_hop(col.spans.get(a.request_id, []), hop)
            f = str(hs[0].attributes.get("response_flags", "")) if hs else ""
            if hs and hs[0].error and f not in ("", "-"):
                marked[name] += 1
                flags[name][f] = flags[name].get(f, 0) + 1
            else:
                unmarked.append({"phase": name, "request_id": a.request_id, "hop_spans": len(hs),
                                 "error": bool(hs and hs[0].error), "response_flags": f})
    n_failed = sum(len(v) for v in failed.values())
    check.figure("error_marked", rate_pct(sum(marked.values()), n_failed), "%", n_failed, "jaeger /api/v3/traces",
                 min_n=2)
    check.figure("completeness", traces.completeness_pct(col.list), "%", len(col.list), "jaeger /api/v3/traces",
                 min_n=n)
    check.evidence("phases", {name: {"by_status": b.by_status(), "failed": len(failed[name]),
                                     "error_marked": marked[name], "response_flags": flags[name]}
                              for name, b in phases.items()})
    check.evidence("faults", {"reset_peer": {"instance": victims[0], "stream": "upstream"},
                              "latency": {"instance": victims[1], "latency_ms": latency_ms,
                                          "route_timeout_ms": timeout_ms, "policy": applied.to_json()}})
    check.evidence("unmarked", unmarked[:10])
    check.evidence("defects", traces.problem_counts(col.list))
    check.evidence("incomplete_examples", _examples(col))
    if any(not v for v in failed.values()):
        pytest.fail(f"a fault never failed a request: {({k: len(v) for k, v in failed.items()})}")
    check.judge()


# -- TRACE-4: the export link faulted, then healed ---------------------------

@pytest.mark.check("TRACE-4")
def test_trace4_export_link_down_then_healed(mesh, check, toxi, fault_log):
    """Cut the Envoy/app -> Jaeger links (OTLP gRPC and HTTP) for fault_s under traffic, then heal.

    span_loss is measured for requests sent while the links were down (reported,
    no threshold); every request sent after healing must have a complete trace.
    """
    import contextlib
    from meshbed.chaos import faults

    n = int(check.param("requests", 200))
    fault_s = float(check.param("fault_s", 5))
    rps = float(check.param("rps", 20))
    links = mesh.links.get("tracing", {})
    if not links:
        pytest.skip("the topology does not route tracing links through Toxiproxy (chaos.links: tracing)")
    expected = _expected(mesh)
    per_trace = sum(expected.values())
    with contextlib.ExitStack() as stack:
        for proxy in sorted(links.values()):
            stack.enter_context(faults.link_down(toxi, proxy, log=fault_log))
        down_at = time.time()
        during = drive(mesh.ingress_url, max(1, int(fault_s * rps)), concurrency=4, headers=_paced(rps), timeout=10)
    healed_at = time.time()
    after = drive(mesh.ingress_url, n, concurrency=4, headers=_paced(rps * 2), timeout=10)
    col_after = collect(mesh, after.answers, expected)
    col_during = collect(mesh, during.answers, expected, settle=6.0)
    got = sum(min(r.spans, per_trace) for r in col_during.list)
    want = per_trace * len(col_during.list)
    lost_keys: dict[str, int] = {}
    for r in col_during.list:
        for m in r.missing:
            k = m.split("<-")[0]
            lost_keys[k] = lost_keys.get(k, 0) + 1
    check.figure("completeness_after_heal", traces.completeness_pct(col_after.list), "%", len(col_after.list),
                 "jaeger /api/v3/traces", min_n=n)
    check.figure("span_loss_during_fault", 100.0 - rate_pct(got, want), "%", want, "jaeger /api/v3/traces")
    check.figure("completeness_during_fault", traces.completeness_pct(col_during.list), "%",
                 len(col_during.list), "jaeger /api/v3/traces")
    check.evidence("during_fault", {"requests": during.n, "by_status": during.by_status(),
                                    "window_s": round(healed_at - down_at, 2), "spans_expected": want,
                                    "spans_received": got, "missing_by_span": lost_keys,
                                    "traces_without_spans": sum(1 for r in col_during.list if r.spans == 0),
                                    "jaeger_wait_s": round(col_during.wait_s, 2)})
    check.evidence("after_heal", {"requests": after.n, "by_status": after.by_status(),
                                  "jaeger_wait_s": round(col_after.wait_s, 2),
                                  "defects": traces.problem_counts(col_after.list)})
    check.evidence("incomplete_after_heal", _examples(col_after))
    check.judge()


# -- TRACE-5: sampling ---------------------------------------------------------
# Local helper until policy_control covers the mesh-wide policy: KV write of
# meshbed/mesh, then wait until the edge Envoy's listener shows the rate.

def _edge_sampling(mesh) -> list[float]:
    """random_sampling of every HCM on the ingress Envoy's dynamic listeners."""
    from meshbed.observe import envoy_admin
    dump = envoy_admin.config_dump(mesh.ingress.url("admin"), "dynamic_listeners", include_eds=False)
    out = []
    for cfg in dump.get("configs", []):
        lis = (cfg.get("active_state") or {}).get("listener", {})
        for fc in lis.get("filter_chains", []):
            for f in fc.get("filters", []):
                tr = f.get("typed_config", {}).get("tracing")
                if tr is not None:
                    out.append(float(tr.get("random_sampling", {}).get("value", 100.0)))
    return out


def set_sampling(mesh, pct: float, deadline: float = 15.0) -> float:
    """Put MeshPolicy.sampling_percent in Consul KV; seconds until the ingress shows it."""
    from meshbed.policy import KV_MESH_KEY
    import dataclasses as _dc
    t0 = time.monotonic()
    mesh.consul_client().kv_put(KV_MESH_KEY, _dc.replace(mesh.topology.mesh, sampling_percent=pct).to_json())

    def shows() -> bool:
        got = _edge_sampling(mesh)
        if not got or any(abs(v - pct) > 1e-9 for v in got):
            raise wait.NotYet(f"ingress random_sampling {got}")
        return True

    wait.until(shows, deadline, interval=0.05, what=f"the ingress to sample {pct} %",
               hint="does the control plane set the ingress HCM random_sampling from meshbed/mesh?")
    return time.monotonic() - t0


@pytest.mark.check("TRACE-5")
def test_trace5_sampling_decided_once_at_the_edge(mesh, check):
    """At 10 % sampling: ~10 % of requests have a trace, and every sampled trace is complete."""
    n = int(check.param("requests", 3000))
    pct = float(check.param("sampling_percent", 10))
    expected = _expected(mesh)
    try:
        applied_s = set_sampling(mesh, pct)
        t0 = time.time()
        batch = drive(mesh.ingress_url, n, concurrency=8, timeout=10)
        sent_s = time.time() - t0
    finally:
        restore_s = set_sampling(mesh, mesh.topology.mesh.sampling_percent)
    col = collect(mesh, batch.answers, expected, settle=5.0, deadline=90.0)
    reports = col.list
    sampled = [r for r in reports if r.spans > 0]
    partial = [r for r in sampled if not r.complete]
    observed = rate_pct(len(sampled), len(reports))
    check.figure("sampling_dev", abs(observed - pct), "pp", len(reports), "jaeger /api/v3/traces", min_n=n)
    check.figure("partial_traces", len(partial), "traces", len(sampled), "jaeger /api/v3/traces", min_n=1)
    check.figure("sampled_pct", observed, "%", len(reports), "jaeger /api/v3/traces")
    check.evidence("traffic", {"requests": batch.n, "by_status": batch.by_status(), "sent_s": round(sent_s, 2),
                               "untraceable": col.untraceable})
    check.evidence("policy", {"sampling_percent": pct, "applied_s": round(applied_s, 3),
                              "restored_to": mesh.topology.mesh.sampling_percent, "restore_s": round(restore_s, 3)})
    check.evidence("jaeger_poll", {"polls": col.polls, "wait_s": round(col.wait_s, 2), "timed_out": col.timed_out})
    check.evidence("partial_defects", traces.problem_counts(partial))
    check.evidence("partial_examples", [r.to_json() for r in partial[:10]])
    check.judge()
