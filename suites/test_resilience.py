"""RES: resilience under faults (CONFORMANCE.md). Ground truth: what clients get back.

Each check: setup (fixtures), apply (a policy through meshbed.policy_control,
judged as policy_apply_*, and faults from meshbed.chaos.faults; both undone on
exit), measure (client answers, Envoy counters, spans, the Locust request
log), judge (meshbed.measure.resilience: pure functions to figures).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from meshbed import httpc, policy_control, wait
from meshbed.chaos import faults
from meshbed.errors import ConfigError, MeshbedError
from meshbed.measure import resilience, tracing
from meshbed.observe import convergence, envoy_admin, traces
from meshbed.observe.trace_collect import collect
from meshbed.policy import CircuitBreaker, Retries
from meshbed.readiness import wait_ready
from meshbed.roles import Edge, Upstream
from meshbed.traffic import drive

pytestmark = [pytest.mark.resilience, pytest.mark.integration]

CLIENT = "client (traffic.drive)"
# caller Envoys' counters RES-1 reads, on whatever cluster the control plane routes the service to
RETRY_COUNTERS = r"^cluster\..+\.(upstream_rq_retry|upstream_rq_retry_success|upstream_cx_destroy_remote|upstream_rq_total)$"
SLICER = {"average_size": 1024, "size_variation": 512, "delay_us": 50}
needs = pytest.mark.needs_topology  # what each check needs from the topology (meshbed.roles)


# -- setup ---------------------------------------------------------------------

def _proxies(mesh, service: str) -> dict[str, str]:
    """Toxiproxy proxy in front of each instance's sidecar, by instance."""
    links = mesh.links.get("upstream", {})
    out = {i: links[i] for i in mesh.instances_of(service) if i in links}
    if not out:
        pytest.skip("the topology does not route upstream links through Toxiproxy (chaos.links: upstream)")
    return out


def _caller_envoys(mesh, service: str) -> list[str]:
    return sorted(i for c in tracing.callers(mesh.topology, service) for i in mesh.instances_of(c))


def _with(mesh, service: str, **change: Any):
    """The service's baseline policy with ``change`` applied."""
    return dataclasses.replace(policy_control.baseline(mesh, service), **change)


def _app_stats(mesh, inst: str) -> dict:
    return httpc.get_json(mesh.apps[inst].url("http", "/meshbed/stats"), 5)


def _envoy_state(mesh, envoys: list[str]) -> resilience.EnvoyState:
    """Counters and per-host stats of each Envoy, for a before/after delta."""
    urls = {e: mesh.envoys[e].url("admin") for e in envoys}
    return resilience.EnvoyState({e: envoy_admin.stats(u, RETRY_COUNTERS) for e, u in urls.items()},
                                 {e: envoy_admin.clusters(u) for e, u in urls.items()})


# -- checks --------------------------------------------------------------------

@pytest.mark.check("RES-1")
@needs(Upstream(min_instances=2, links=("upstream",)))
def test_res1_reset_peer_on_one_endpoint_with_retries(mesh, check, toxi, fault_log, target):
    """reset_peer on the link into 1 of an upstream's endpoints; the retry policy hides it from clients."""
    p, svc = check.p, target.service
    proxies = _proxies(mesh, svc)
    victim = sorted(proxies)[0]
    callers = _caller_envoys(mesh, svc)
    pol = _with(mesh, svc, retries=Retries(retry_on="connect-failure,reset,5xx", num_retries=2))
    with policy_control.applied(mesh, svc, pol, check):
        before = _envoy_state(mesh, callers)
        with faults.reset_peer(toxi, proxies[victim], timeout_ms=0, log=fault_log):
            batch = drive(mesh.ingress_url, p.requests, concurrency=4, timeout=10)
        after = _envoy_state(mesh, callers)
    m = resilience.retried(batch.answers, before, after, mesh.advertised[victim])
    check.figure("client_success", m.client_success_pct, "%", m.requests, CLIENT, min_n=p.requests)
    check.figure("retries", m.retries, "retries", m.envoys, "caller envoys' cluster stats")
    check.figure("faulted_attempts", m.faulted_attempts, "requests", m.envoys, "caller envoys' /clusters host stats")
    check.evidence("fault", {"victim": victim, "proxy": proxies[victim], "toxic": "reset_peer timeout=0",
                             "address": mesh.advertised[victim], "faulted_errors": m.faulted_errors})
    check.evidence("answers", {"by_status": batch.by_status(), "served_by": m.served_by, "failures": m.failures})
    check.evidence("envoy_counters_delta", m.counters)
    if not m.exercised:
        raise MeshbedError(f"the reset_peer fault on {victim} was never met: no Envoy sent to it, retried or failed",
                           hint="see evidence 'envoy_counters_delta' and 'answers'")
    check.judge()


@pytest.mark.quick
@pytest.mark.check("RES-2")
@needs(Edge(links=("upstream",)))
def test_res2_latency_above_route_timeout(mesh, check, toxi, fault_log, target):
    """A latency toxic above the route timeout: every answer a 504 at timeout (+ <= 100 ms), none hangs.

    The timeout is set on the route the client sees directly (ingress -> entry service), and
    the latency toxic sits on every link into the entry service's sidecars, so the answer the
    client gets *is* the timed-out hop's 504. No 504 is measured as 0 %, and each request's
    overshoot is its own latency past the timeout (the client's bound for one that hung).
    """
    p = check.p
    if p.latency_ms <= p.route_timeout_ms:
        raise ConfigError(f"RES-2 params: latency_ms {p.latency_ms} must exceed route_timeout_ms {p.route_timeout_ms}")
    svc = target.service
    toxics = [faults.latency(toxi, x, p.latency_ms, log=fault_log) for x in _proxies(mesh, svc).values()]
    bound_s = resilience.client_bound_s(p.latency_ms)
    with policy_control.applied(mesh, svc, _with(mesh, svc, timeout_ms=p.route_timeout_ms), check), \
            faults.all_of(*toxics):
        batch = drive(mesh.ingress_url, p.requests, concurrency=4, timeout=bound_s)
    m = resilience.timeouts(batch.answers, p.route_timeout_ms, bound_s)
    check.figure("answered_504", m.answered_504_pct, "%", m.requests, CLIENT, min_n=p.requests)
    check.figure("timeout_overshoot_max", m.overshoot_max_ms, "ms", m.requests, CLIENT, min_n=p.requests)
    check.figure("hung", m.hung, "requests", m.requests, CLIENT, bad_count=True)
    check.evidence("answers", {**m.summary(), "client_timeout_s": bound_s,
                               "samples": [resilience.answer_sample(a, 60) for a in batch.answers]})
    check.judge()


@pytest.mark.quick
@pytest.mark.check("RES-3")
@needs(Upstream())
def test_res3_circuit_breaker_under_overload(mesh, check, target):
    """Circuit breaker on an upstream's cluster (max_requests = max_pending = max_connections = N) under overload.

    Each caller Envoy enforces its own limit: from the upstream's server spans (one host clock),
    the most upstream requests in flight at once through one caller sidecar must not exceed N.
    overflow_503_p99 is the overflowing sidecar's own span (response flag UO); the calling app's
    span and the end client's latency are extra figures (on 2 shared cores they mostly measure
    Python event-loop queueing).
    """
    p, svc = check.p, target.service
    backends = mesh.instances_of(svc)
    limit = p.max_requests
    cb = CircuitBreaker(max_connections=limit, max_pending_requests=limit, max_requests=limit, max_retries=3)
    with policy_control.applied(mesh, svc, _with(mesh, svc, circuit_breaker=cb), check):
        for i in backends:
            mesh.control(i, "/meshbed/stats/reset")
        batch = drive(mesh.ingress_url, p.requests, concurrency=p.concurrency,
                      path=f"/?delay_ms={p.delay_ms}&only={svc}", timeout=10)
        max_in_flight = {i: _app_stats(mesh, i)["max_in_flight"] for i in backends}
    col = _overload_traces(mesh, batch.answers, svc)
    m = resilience.breaker(batch.answers, col.spans, limit, _caller_envoys(mesh, svc),
                           tracing.callers(mesh.topology, svc), svc)
    check.figure("overflow_503_p99", m.envoy_ms.p99, "ms", m.envoy_ms.n,
                 "overflowing sidecar's span (jaeger, response flag UO)", min_n=m.overflow_spans_needed)
    check.figure("overflow_503_caller_p99", m.caller_ms.p99, "ms", m.caller_ms.n, "calling app's client span (jaeger)")
    check.figure("overflow_client_p99", m.client_ms.p99, "ms", m.client_ms.n, "end client, via the ingress")
    check.figure("concurrency_excess", m.concurrency_excess, "requests", m.attributed,
                 f"{svc} server spans in jaeger, per caller sidecar", min_n=m.ok, bad_count=True)
    check.figure("upstream_concurrency_peak_per_envoy", m.peak, "requests", m.attributed, f"{svc} server spans")
    check.figure("overflow_share", m.overflow_share_pct, "%", m.requests, CLIENT)
    check.figure("other_failures", m.other_failures, "requests", m.requests, CLIENT, bad_count=True)
    check.evidence("answers", {"by_status": batch.by_status(), "ok": m.ok, "overflow": m.overflow,
                               "other_failures": m.other[:10], "ok_latency_ms": m.ok_ms.to_json()})
    check.evidence("concurrency", {"limit_per_envoy": limit, "peak_per_envoy": m.peak_per_envoy,
                                   "peak_all_envoys": m.peak_all, "backend_max_in_flight": max_in_flight,
                                   "spans_attributed": m.attributed, "jaeger_wait_s": round(col.wait_s, 2)})
    check.evidence("overflow_latency_ms", {"caller_client_span": m.caller_ms.to_json(),
                                           "envoy_span": m.envoy_ms.to_json(), "end_client": m.client_ms.to_json()})
    check.judge()


def _overload_traces(mesh, answers: list, svc: str):
    """Traces of the ok and overflowed answers (an overflowed one ends at the caller sidecar's span)."""
    full = tracing.route_edges(mesh.topology)
    cut = traces.without_descendants(full, (traces.sidecar(tracing.callers(mesh.topology, svc)[0]), traces.CLIENT))
    traced = [a for a in answers if a.status == 200 or resilience.is_overflow(a)]
    return collect(mesh, traced, lambda a: cut if resilience.is_overflow(a) else full)


@pytest.mark.check("RES-4")
@needs(Upstream(min_instances=2))
def test_res4_rolling_restart_under_load(mesh, check, load, fault_log, target):
    """Restart every instance of an upstream (app and sidecar), one at a time, under Locust load.

    The load runs at least duration_s and until every restart is over, plus a margin: a
    slow control plane cannot outrun the measurement window.
    """
    p, svc = check.p, target.service
    with load(rps=p.rps, duration_s=resilience.load_bound_s(p.duration_s)) as run:
        run.wait_started()
        steps = [_restart_one(mesh, inst, fault_log) for inst in sorted(mesh.instances_of(svc))]
        time.sleep(resilience.load_hold_s(run.started_at, p.duration_s, time.time()))  # pacing the load
        run.finish()
    res = run.result()
    m = resilience.rolling_restart(res.requests, fault_log.intervals(time.time()))
    check.figure("error_rate", m.error_rate_pct, "%", m.n, "locust request log",
                 min_n=resilience.expected_requests(p.rps, p.duration_s))
    check.figure("error_rate_during_restarts", m.during_pct, "%", m.during_n, "locust request log")
    check.evidence("restarts", steps)
    check.evidence("load", res.summary())
    check.chart("load", "load_history", res.history())
    check.evidence("failures", m.failures)
    check.judge()


def _restart_one(mesh, inst: str, fault_log, deadline_s: float = 15.0) -> dict[str, Any]:
    """Deregister, wait until no subscriber lists it and it has drained, restart sidecar then app,
    wait until every subscriber lists it healthy again. Per Envoy: seconds to leave / come back
    (None: not by the deadline -- the error rate then measures what that costs)."""
    svc, addr = mesh.instances[inst].service, mesh.advertised[inst]
    subs = {n: h.url("admin") for n, h in mesh.subscribers(svc).items()}
    with fault_log.window("rolling-restart", inst):
        t0 = time.time()
        mesh.control(inst, "/meshbed/deregister")
        gone = convergence.converge_times(subs, convergence.lacks_host(svc, addr), t0, deadline_s)
        wait.until(lambda: _app_stats(mesh, inst)["in_flight"] == 0, deadline=10, interval=0.02,
                   what=f"{inst} to drain its in-flight requests")
        for h in (mesh.sidecars[inst], mesh.apps[inst]):
            h.restart()
            wait_ready(h, mesh.settings.ready_timeout)
        back = convergence.converge_times(subs, convergence.has_host(svc, addr), t0, deadline_s * 2)
    return {"instance": inst, "gone_s": gone, "back_s": back}


@pytest.mark.quick
@pytest.mark.check("RES-5")
@needs(Upstream(from_edge=True, links=("upstream",)))
def test_res5_bandwidth_and_slicer_on_large_responses(mesh, check, toxi, fault_log, target):
    """Bandwidth and slicer toxics on every link into the sidecars; every large body arrives whole.

    Half the requests fetch /bytes/N from the entry service (the body crosses the ingress ->
    edge link, checked against x-meshbed-sha256), half fetch ?size=N&only=<upstream> (the payload
    of the edge's first upstream crosses the edge -> upstream link, inside the edge's JSON).
    """
    p, svc = check.p, target.service
    proxies = sorted({**_proxies(mesh, target.edge), **_proxies(mesh, svc)}.values())
    toxics = [f for x in proxies for f in (faults.bandwidth(toxi, x, p.bandwidth_kb_s, log=fault_log),
                                           faults.slicer(toxi, x, **SLICER, log=fault_log))]
    paths = (f"/bytes/{p.size_bytes}", f"/?size={p.size_bytes}&only={svc}")
    with faults.all_of(*toxics):
        batch = drive(mesh.ingress_url, p.requests, concurrency=4, path=lambda i: paths[i % 2], timeout=30)
    m = resilience.intact_bodies(batch.answers, p.size_bytes)
    check.figure("intact_bodies", m.pct, "%", m.requests, "client (traffic.drive), sha256 / byte compare",
                 min_n=p.requests)
    check.evidence("answers", {"by_status": batch.by_status(), "size_bytes": p.size_bytes,
                               "latency_ms": m.latency_ms.to_json(), "broken": m.broken[:10]})
    check.evidence("toxics", {"proxies": proxies, "bandwidth_kb_s": p.bandwidth_kb_s, "slicer": SLICER})
    check.judge()
