"""DISC: discovery convergence (CONFORMANCE.md). Ground truth: every subscribed Envoy's admin API."""

from __future__ import annotations

import contextlib
import functools
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshbed import wait
from meshbed.chaos import faults
from meshbed.components import consul_gate as gate_c
from meshbed.chaos.churn import Churn
from meshbed.mesh import wait_converged
from meshbed.observe import convergence
from meshbed.observe import discovery_helpers as dh
from meshbed.components.controlplane import split_protocol
from meshbed.errors import MeshbedError
from meshbed.measure.discovery import (capped, count_partial, error_rate, late_requests, partial_states,
                                       protocol_figures)
from meshbed.stats import summarize

pytestmark = [pytest.mark.discovery, pytest.mark.integration]


def _admin_urls(handles) -> dict[str, str]:
    return {n: h.url("admin") for n, h in handles.items()}


@pytest.mark.quick
@pytest.mark.check("DISC-1")
def test_disc1_register_new_instance(mesh, check):
    """A new healthy instance appears, healthy, in every subscribed Envoy."""
    repeats = check.p.repeats
    service = "backend"
    inst = mesh.add_instance(service)
    addr = mesh.advertised[inst]
    subs = _admin_urls(mesh.subscribers(service))
    samples: list[float] = []
    per_envoy: dict[str, list[float]] = {n: [] for n in subs}
    acks: list[float] = []
    for _ in range(repeats):
        mesh.control(inst, "/meshbed/deregister")
        gone = convergence.converge_times(subs, convergence.lacks_host(service, addr), time.time(), 10)
        assert all(v is not None for v in gone.values()), f"setup: {inst} never left {gone}"
        t0 = time.time()
        mesh.control(inst, "/meshbed/register")
        times = convergence.converge_times(subs, convergence.has_host(service, addr), t0, 10)
        for n, v in times.items():
            # an Envoy that never converged within the deadline counts as the deadline
            per_envoy[n].append(10.0 if v is None else v)
            samples.append(10.0 if v is None else v)
        if mesh.cp_debug_url:
            acks += list(convergence.cp_ack_times(mesh.cp_debug_url, t0, "EDS").values())
    s = summarize(samples)
    check.figure("convergence_p99", s.p99, "s", s.n, "envoy admin /clusters", min_n=repeats * len(subs))
    check.figure("convergence_p50", s.p50, "s", s.n, "envoy admin /clusters")
    check.chart("cdf", "convergence_s", {"summary": s.to_json(), "per_envoy": per_envoy,
                                     "cp_eds_ack_s": summarize(acks).to_json() if acks else None})
    check.judge()


def _subscribers_view(mesh, service: str) -> dict[str, str]:
    return _admin_urls(mesh.subscribers(service))


def _load_evidence(check, res) -> None:
    check.evidence("load_summary", res.summary())
    check.chart("load", "load_history", res.history())


@pytest.mark.check("DISC-2")
def test_disc2_deregister_under_load(mesh, check, load):
    """An instance deregistered under load leaves every subscribed Envoy, and stops getting traffic.

    Per repeat: deregister one backend instance (its own /meshbed/deregister) at t0 and time
    its removal per subscribed Envoy; then keep the load on for ``late_window_s`` more and
    count requests *started* later than t0 + (slowest Envoy's convergence) + 1 s that were
    still served by that instance (Request.instances); then re-register it and wait until it is
    back everywhere before the next repeat.
    """
    repeats = check.p.repeats
    rps = check.p.rps
    late_window_s = check.p.late_window_s
    deadline = check.p.deadline_s
    service = "backend"
    insts = mesh.instances_of(service)
    subs = _subscribers_view(mesh, service)
    # the load outlasts the slowest possible rounds (each up to two deadlines), and ends once they are over
    per_repeat_cap_s = 2 * deadline + 1.0 + late_window_s + 1.0
    samples: list[float] = []
    per_envoy: dict[str, list[float]] = {n: [] for n in subs}
    acks: list[float] = []
    rounds = []
    with load(rps=rps, duration_s=repeats * per_repeat_cap_s + 6) as run:
        run.wait_started()
        time.sleep(1.0)  # steady traffic to every instance before the first change
        for i in range(repeats):
            inst = insts[i % len(insts)]
            addr = mesh.advertised[inst]
            t0 = time.time()
            mesh.control(inst, "/meshbed/deregister")
            try:
                times = convergence.converge_times(subs, convergence.lacks_host(service, addr), t0, deadline)
                conv = [deadline if v is None else v for v in times.values()]
                for n, v in times.items():
                    per_envoy[n].append(deadline if v is None else v)
                samples += conv
                late_from = t0 + max(conv) + 1.0
                late_until = late_from + late_window_s
                # stay deregistered 1 s past the window: a slow request started inside it must not meet the re-registration
                time.sleep(max(0.0, late_until + 1.0 - time.time()))
                acks += list(convergence.cp_ack_times(mesh.cp_debug_url, t0, "EDS").values())
            finally:
                mesh.control(inst, "/meshbed/register")
            back = convergence.converge_times(subs, convergence.has_host(service, addr), time.time(), deadline)
            assert all(v is not None for v in back.values()), f"setup: {inst} never came back {back}"
            rounds.append({"instance": inst, "address": addr, "t0": t0, "convergence_s": times,
                           "late_from": late_from, "late_until": late_until})
        time.sleep(0.5)  # margin: the last window's requests are logged
        run.finish()  # every round is over: end the load here, not at a fixed time
    res = run.result()
    lr = late_requests(rounds, res.requests)
    s = summarize(samples)
    check.figure("convergence_p99", s.p99, "s", s.n, "envoy admin /clusters", min_n=repeats * len(subs))
    check.figure("convergence_p50", s.p50, "s", s.n, "envoy admin /clusters")
    check.figure("late_requests", lr.late, "requests", lr.thinnest_window,
                 "locust request log (x-meshbed instances; n = fewest requests in one window)", min_n=10,
                 bad_count=True)
    check.evidence("late_requests_checked", lr.checked)
    check.figure("error_rate", res.error_rate_pct, "%", res.n, "locust request log")
    check.chart("cdf", "convergence_s", {"summary": s.to_json(), "per_envoy": per_envoy,
                                     "cp_eds_ack_s": summarize(acks).to_json() if acks else None})
    check.evidence("rounds", rounds)
    check.evidence("late_request_samples", lr.samples)
    _load_evidence(check, res)
    check.judge()


def _consul_status_at(consul, service: str, instance: str, status: str, deadline: float = 10.0) -> float:
    """Wall-clock time of the first 10 ms poll where Consul reports ``instance`` with ``status``."""
    def probe():
        return any(i.id == instance and i.status == status for i in consul.instances(service))
    return wait.until(probe, deadline, interval=0.01, clock=time.time,
                      what=f"consul to report {instance} {status}").first_ok_at


@pytest.mark.quick
@pytest.mark.check("DISC-3")
def test_disc3_health_flip(mesh, check, consul):
    """A backend instance's health goes critical, then passing again: it leaves, then rejoins, the healthy set.

    Two ways to flip, alternating per repeat (param ``methods``):
    - ``maintenance``: Consul maintenance mode (adds a critical check); t0 = the API call.
    - ``app``: the instance fails its own HTTP health check (POST /meshbed/health); Consul's
      1 s check interval decides when it turns critical, so t0 = the first 10 ms poll of
      Consul's health API that shows the new status (the moment the change is in Consul).
    leave/rejoin = seconds from t0 until each subscribed Envoy's healthy set lacks/has it.
    """
    repeats = check.p.repeats
    methods = list(check.p.methods)
    deadline = check.p.deadline_s
    service = "backend"
    insts = mesh.instances_of(service)
    subs = _subscribers_view(mesh, service)
    leave: list[float] = []
    rejoin: list[float] = []
    rounds = []
    for i in range(repeats * len(methods)):
        method = methods[i % len(methods)]
        inst = insts[i % len(insts)]
        addr = mesh.advertised[inst]
        flipped = False
        try:
            if method == "maintenance":
                t0 = time.time()
                consul.maintenance(inst, True, reason="meshbed-DISC-3")
            else:
                mesh.control(inst, "/meshbed/health", {"healthy": False})
                t0 = _consul_status_at(consul, service, inst, "critical")
            flipped = True
            out = convergence.converge_times(subs, convergence.lacks_healthy_host(service, addr), t0, deadline)
            if method == "maintenance":
                t1 = time.time()
                consul.maintenance(inst, False)
            else:
                mesh.control(inst, "/meshbed/health", {"healthy": True})
                t1 = _consul_status_at(consul, service, inst, "passing")
            flipped = False
            back = convergence.converge_times(subs, convergence.has_host(service, addr, healthy=True), t1, deadline)
        finally:
            if flipped:  # restore on any failure in between
                consul.maintenance(inst, False)
                mesh.control(inst, "/meshbed/health", {"healthy": True})
        leave += [deadline if v is None else v for v in out.values()]
        rejoin += [deadline if v is None else v for v in back.values()]
        rounds.append({"method": method, "instance": inst, "address": addr, "t_critical": t0, "t_passing": t1,
                       "leave_s": out, "rejoin_s": back,
                       "cp_eds_ack_leave_s": convergence.cp_ack_times(mesh.cp_debug_url, t0, "EDS")})
    sl, sr = summarize(leave), summarize(rejoin)
    need = repeats * len(methods) * len(subs)
    check.figure("leave_p99", sl.p99, "s", sl.n, "envoy admin /clusters", min_n=need)
    check.figure("rejoin_p99", sr.p99, "s", sr.n, "envoy admin /clusters", min_n=need)
    check.figure("leave_p50", sl.p50, "s", sl.n, "envoy admin /clusters")
    check.figure("rejoin_p50", sr.p50, "s", sr.n, "envoy admin /clusters")
    check.evidence("convergence_s", {"leave": sl.to_json(), "rejoin": sr.to_json()})
    check.evidence("rounds", rounds)
    check.judge()


def _subscriptions(mesh) -> dict[str, tuple[str, ...]]:
    """Envoy node -> the services it subscribes to."""
    out: dict[str, list[str]] = {}
    for svc in mesh.topology.services:
        for node in mesh.subscribers(svc):
            out.setdefault(node, []).append(svc)
    return {n: tuple(s) for n, s in out.items()}


@pytest.mark.check("DISC-4")
def test_disc4_churn_storm(mesh, check, load, consul):
    """Random register/deregister at ``events_per_s`` for ``duration_s`` under load.

    Churned: every frontend and backend instance plus ``extra_backends`` scaled-up backends,
    one Churn per service (keep_at_least=1 each, so no service is ever empty), the rate split
    by instance count. settle_time = seconds from the storm's last event until the slowest
    subscribed Envoy's endpoint set equals Consul's catalog exactly (addresses and EDS health;
    Consul read right after the last event). nacks = rejected xDS updates in every Envoy's
    stats (cds/lds/rds update_rejected + cluster.*.update_rejected), before vs after; the CP's
    push-log NACKs are evidence. error_rate = Locust failures from the storm's start until settled.
    """
    rate = check.p.events_per_s
    duration = check.p.duration_s
    rps = check.p.rps
    extra = check.p.extra_backends
    include_health = check.p.include_health
    deadline = check.p.deadline_s
    for _ in range(extra):
        mesh.add_instance("backend")
    wait_converged(mesh, 30)
    subs = _subscriptions(mesh)
    admin = {n: h.url("admin") for n, h in mesh.envoys.items() if n in subs}
    everyone = {n: h.url("admin") for n, h in mesh.envoys.items()}
    pools = {s: mesh.instances_of(s) for s in ("frontend", "backend")}
    total = sum(len(v) for v in pools.values())
    churns = [Churn(mesh, insts, rate * len(insts) / total, duration, seed=i + 1, keep_at_least=1)
              for i, insts in enumerate(pools.values())]
    rejected_before = dh.rejected_updates(everyone)
    with load(rps=rps, duration_s=duration + deadline + 6) as run:
        run.wait_started()
        t_start = time.time()
        try:
            with ThreadPoolExecutor(len(churns)) as pool:
                for f in [pool.submit(c.run, include_health) for c in churns]:
                    f.result()
            events = sorted((e for c in churns for e in c.events), key=lambda e: e.ts)
            t_last = events[-1].ts
            expected = {s: dh.consul_endpoints(consul, s) for s in pools}
            settle = convergence.converge_times(admin, {n: dh.matches({s: expected[s] for s in svcs})
                                                        for n, svcs in subs.items()}, t_last, deadline)
            t_settled = time.time()
            final = {n: {s: sorted(f"{a} {h}" for a, h in eps) for s, eps in dh.envoy_endpoints(u, subs[n]).items()}
                     for n, u in admin.items()}
        finally:
            for c in churns:
                c.restore()
        run.finish()  # the settle is measured: end the load early
    res = run.result()
    wait_converged(mesh, 30)
    rejected_after = dh.rejected_updates(everyone)
    nacks = dh.rejected_delta(rejected_before, rejected_after)
    cp_nacks = dh.cp_events(mesh.cp_debug_url, t_start, event="nack")
    window = res.between(t_start, t_settled)
    fails = sum(1 for r in window if r.status != 200)
    vals = [deadline if v is None else v for v in settle.values()]
    check.figure("settle_time", max(vals), "s", len(vals), "envoy admin /clusters vs consul catalog",
                 min_n=len(subs))
    check.figure("nacks", sum(nacks.values()), "nacks", len(nacks), "envoy stats *update_rejected",
                 min_n=len(everyone))
    check.figure("error_rate", 100.0 * fails / len(window) if window else None, "%", len(window),
                 "locust request log", min_n=int(rps * duration * 0.5))
    check.figure("events", len(events), "events", len(events), "churn log")
    check.evidence("settle_s", settle)
    check.evidence("expected_from_consul", {s: sorted(f"{a} {h}" for a, h in eps) for s, eps in expected.items()})
    check.evidence("envoy_endpoints_at_settle", final)
    check.evidence("churn_events", [{"ts": e.ts, "action": e.action, "instance": e.instance} for e in events])
    check.evidence("rejected_updates", {"before": rejected_before, "after": rejected_after, "delta": nacks})
    check.evidence("cp_nack_events", cp_nacks[:50])
    check.evidence("failed_requests", [{"ts": r.ts, "status": r.status, "instances": list(r.instances)}
                                       for r in window if r.status != 200][:50])
    _load_evidence(check, res)
    check.judge()


def _cp_link_fault(kind: str, toxi, proxies: list[str], log, latency_ms: int, timeout_ms: int):
    """One fault on every Envoy<->control-plane proxy at once (both directions for toxics)."""
    stack = contextlib.ExitStack()
    for p in proxies:
        if kind == "down":
            stack.enter_context(faults.link_down(toxi, p, log=log))
            continue
        for stream in ("downstream", "upstream"):
            if kind == "reset_peer":
                stack.enter_context(faults.reset_peer(toxi, p, stream=stream, log=log))
            elif kind == "timeout":
                stack.enter_context(faults.timeout(toxi, p, timeout_ms, stream=stream, log=log))
            elif kind == "latency":
                stack.enter_context(faults.latency(toxi, p, latency_ms, stream=stream, log=log))
            else:
                raise ValueError(f"unknown fault {kind!r}")
    return stack


def _first_sent(mesh, t0: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in dh.cp_events(mesh.cp_debug_url, t0, event="sent"):
        out.setdefault(str(e["node"]), round(float(e["ts"]) - t0, 4))
    return out


@pytest.mark.check("DISC-5")
def test_disc5_control_plane_link_faults(mesh, check, load, toxi, fault_log):
    """Faults on every Envoy<->control-plane link (Toxiproxy), one kind at a time, under load.

    Per fault (reset_peer, timeout, latency, down; param ``faults``), on all control_plane proxies
    at once for ``fault_s``: ~0.5 s in, one backend instance deregisters itself (a Consul change
    during the fault). Measured:
    - config_lost: Envoys (subscribers of frontend/backend) whose endpoint set, polled every
      20 ms from fault start until the change converged, was ever anything but the last-known
      set or that set minus the deregistered instance (e.g. empty);
    - error_rate: Locust failures among requests started inside the fault windows;
    - post_fault_convergence_max: slowest Envoy, over all faults, from the fault's end until the
      deregistered instance is gone (0-ish when it already converged during the fault).
    The instance is re-registered, and seen back everywhere, before the next fault.
    """

    kinds = list(check.p.faults)
    fault_s = check.p.fault_s
    rps = check.p.rps
    latency_ms = check.p.latency_ms
    timeout_ms = check.p.timeout_ms
    deadline = check.p.deadline_s
    service = "backend"
    proxies = sorted(mesh.links["control_plane"].values())
    subs = _subscriptions(mesh)
    admin = {n: h.url("admin") for n, h in mesh.envoys.items() if n in subs}
    bsubs = _subscribers_view(mesh, service)
    insts = mesh.instances_of(service)
    rounds = []
    post: list[float] = []
    lost_nodes: set[str] = set()
    windows: list[tuple[float, float]] = []
    with load(rps=rps, duration_s=len(kinds) * (fault_s + 3) + 5) as run, \
            dh.EndpointPoller(admin, subs, interval=0.02) as poller:
        run.wait_started()
        for k, kind in enumerate(kinds):
            inst = insts[k % len(insts)]
            addr = mesh.advertised[inst]
            baseline = {n: dh.envoy_endpoints(u, subs[n]) for n, u in admin.items()}
            # the poller samples every 20 ms: let it catch up with the baseline read directly,
            # or a sample taken just before the previous round's restore looks like a lost config
            wait.until(lambda: all(poller.state_at(n, time.time()) == baseline[n] for n in admin), 5,
                       interval=0.02, what="the endpoint poller to see the baseline")
            try:
                with _cp_link_fault(kind, toxi, proxies, fault_log, latency_ms, timeout_ms):
                    t_fault = time.time()
                    time.sleep(0.5)
                    t_change = time.time()
                    mesh.control(inst, "/meshbed/deregister")
                    time.sleep(max(0.0, t_fault + fault_s - time.time()))
                t_end = time.time()
                windows.append((t_fault, t_end))
                conv = convergence.converge_times(bsubs, convergence.lacks_host(service, addr), t_end, deadline)
                t_conv = time.time()
            finally:
                mesh.control(inst, "/meshbed/register")
            back = convergence.converge_times(bsubs, convergence.has_host(service, addr), time.time(), deadline)
            assert all(v is not None for v in back.values()), f"restore: {inst} never came back {back}"
            post += [deadline if v is None else v for v in conv.values()]
            # every state each Envoy showed from the fault's start until the change had converged
            lost = {}
            for n in admin:
                allowed = {frozenset(baseline[n].items()),
                           frozenset({s: frozenset(e for e in eps if e[0] != addr)
                                      for s, eps in baseline[n].items()}.items())}
                seen = [poller.state_at(n, t_fault)] + [s.endpoints for s in poller.between(n, t_fault, t_conv)]
                bad = [s for s in seen if s is not None and frozenset(s.items()) not in allowed]
                if bad:
                    lost[n] = [{svc: sorted(f"{a} {h}" for a, h in eps) for svc, eps in b.items()} for b in bad[:5]]
            lost_nodes |= set(lost)
            converged_during = {n: any(all(e[0] != addr for e in s.endpoints.get(service, ()))
                                       for s in poller.between(n, t_change, t_end)) for n in bsubs}
            rounds.append({"fault": kind, "instance": inst, "address": addr, "t_fault": t_fault,
                           "t_change": t_change, "t_end": t_end, "post_fault_convergence_s": conv,
                           "converged_during_fault": converged_during, "unexpected_states": lost,
                           # when each Envoy got config from the CP again after the fault (reconnect backoff)
                           "cp_first_sent_after_end_s": _first_sent(mesh, t_end),
                           "cp_events": dh.cp_events(mesh.cp_debug_url, t_fault)[:40]})
        poll_log = poller.to_json()
    res = run.result()
    in_fault = [r for r in res.requests if any(a <= r.ts < b for a, b in windows)]
    fails = sum(1 for r in in_fault if r.status != 200)
    check.figure("error_rate", 100.0 * fails / len(in_fault) if in_fault else None, "%", len(in_fault),
                 "locust request log (fault windows)", min_n=int(rps * fault_s * len(kinds) * 0.5))
    check.figure("post_fault_convergence_max", max(post), "s", len(post), "envoy admin /clusters",
                 min_n=len(kinds) * len(bsubs))
    check.figure("config_lost", len(lost_nodes), "envoys", len(admin) * len(kinds), "envoy admin /clusters (20 ms)",
                 min_n=len(admin) * len(kinds))
    check.evidence("rounds", rounds)
    check.evidence("endpoint_timeline", poll_log)
    check.evidence("failed_requests", [{"ts": r.ts, "status": r.status, "latency_ms": r.latency_ms}
                                       for r in in_fault if r.status != 200][:50])
    _load_evidence(check, res)
    check.judge()


def _consul_outage(mesh, toxi, kind: str, hold_s: float, log):
    """Make Consul unreachable for the control plane, one way; undone on exit.

    pause: Consul itself stopped (SIGSTOP). link_down / reset_peer / timeout: the control
    plane's link to Consul (Toxiproxy) disabled, reset, or stalled and then closed after
    ``hold_s`` (longer than common client timeouts; a 30 s blocking query is cut too).
    http_5xx: every new request of the control plane to Consul answered 503 (Envoy fault filter).
    """
    if kind == "pause":
        return faults.paused(mesh.consul, log=log)
    proxy = mesh.links.get("consul", {}).get("controlplane")
    if proxy is None:
        pytest.skip("the topology does not route the control plane's Consul link through Toxiproxy "
                    "(chaos.links: consul)")
    if kind == "link_down":
        return faults.link_down(toxi, proxy, log=log)
    stack = contextlib.ExitStack()
    if kind == "http_5xx":
        stack.enter_context(log.window("consul-http-503", "consul-gate", abort_percent=100))
        gate_c.set_abort_percent(mesh.consul_gate, 100)
        stack.callback(gate_c.set_abort_percent, mesh.consul_gate, 0)
        return stack
    for stream in ("downstream", "upstream"):
        if kind == "reset_peer":
            stack.enter_context(faults.reset_peer(toxi, proxy, stream=stream, log=log))
        elif kind == "timeout":
            stack.enter_context(faults.timeout(toxi, proxy, int(hold_s * 1000), stream=stream, log=log))
        else:
            raise ValueError(f"DISC-6: unknown outage {kind!r}; known: pause, link_down, reset_peer, timeout, "
                             "http_5xx")
    return stack


@pytest.mark.quick
@pytest.mark.check("DISC-6")
def test_disc6_consul_outage(mesh, check, load, toxi, fault_log):
    """Consul unreachable for ``outage_s`` under load, once per kind of outage (param ``outages``).

    Each round: the outage starts; where Consul still runs (every kind but pause) one backend
    instance deregisters itself 0.5 s in, so the control plane's blocking queries return into the
    fault (the moment a buggy control plane mistakes a failed query for an empty service); after
    the outage ends (for pause: right after the resume, when the apps can reach Consul again) the
    change must converge. partial_pushes: polled endpoint sets (20 ms, every Envoy subscribed to
    frontend/backend) that lack a healthy address other than the one deregistered on purpose.
    convergence_after_return: slowest Envoy from the outage's end until that instance is gone.
    error_rate: Locust failures from outage start to converged.
    """
    p = check.p
    service = "backend"
    subs = _subscriptions(mesh)
    admin = {n: h.url("admin") for n, h in mesh.envoys.items() if n in subs}
    bsubs = _subscribers_view(mesh, service)
    insts = mesh.instances_of(service)
    rounds, conv_all, partial_n, polls, windows, partial = [], [], 0, 0, [], {}
    with load(rps=p.rps, duration_s=len(p.outages) * (p.outage_s + 2 * p.deadline_s + 3) + 5) as run, \
            dh.EndpointPoller(admin, subs, interval=0.02) as poller:
        run.wait_started()
        for k, kind in enumerate(p.outages):
            inst = insts[k % len(insts)]
            addr = mesh.advertised[inst]
            baseline = {n: dh.envoy_endpoints(u, subs[n]) for n, u in admin.items()}
            wait.until(lambda: all(poller.state_at(n, time.time()) == baseline[n] for n in admin), 5,
                       interval=0.02, what="the endpoint poller to see the baseline")
            changed = False
            try:
                with _consul_outage(mesh, toxi, kind, p.outage_s, fault_log):
                    t_start = time.time()
                    if kind != "pause":
                        time.sleep(0.5)
                        mesh.control(inst, "/meshbed/deregister")
                        changed = True
                    time.sleep(max(0.0, t_start + p.outage_s - time.time()))
                t_end = time.time()
                if not changed:
                    mesh.control(inst, "/meshbed/deregister")
                    changed = True
                conv = convergence.converge_times(bsubs, convergence.lacks_host(service, addr), t_end, p.deadline_s)
                t_conv = time.time()
                time.sleep(0.5)  # keep watching a little for a late partial push
                t_watch = time.time()
            finally:
                if changed:
                    mesh.control(inst, "/meshbed/register")
            back = convergence.converge_times(bsubs, convergence.has_host(service, addr), time.time(), p.deadline_s)
            assert all(v is not None for v in back.values()), f"restore: {inst} never came back {back}"
            windows.append((t_start, t_conv))
            conv_all += capped(conv, p.deadline_s)
            states = {n: poller.between(n, t_start, t_watch) for n in admin}
            bad = {n: partial_states(baseline[n], st, {addr}) for n, st in states.items()}
            partial.update({f"{kind}:{n}": v for n, v in bad.items() if v})
            partial_n += sum(count_partial(baseline[n], st, {addr}) for n, st in states.items())
            polls += sum(poller.polls_between(n, t_start, t_watch) for n in admin)
            rounds.append({"outage": kind, "instance": inst, "t_start": t_start, "t_end": t_end, "t_conv": t_conv,
                           "convergence_after_return_s": conv, "partial_envoys": sorted(n for n in bad if bad[n])})
        run.finish()  # every round is over
    res = run.result()
    rate, n_req = error_rate(r for r in res.requests if any(a <= r.ts < b for a, b in windows))
    check.figure("partial_pushes", partial_n, "pushes", polls, "envoy admin /clusters (20 ms polls during outages)",
                 min_n=10 * len(admin) * len(p.outages), bad_count=True)
    check.figure("error_rate", rate, "%", n_req, "locust request log (outage start to converged)",
                 min_n=int(p.rps * p.outage_s * len(p.outages) * 0.5))
    check.figure("convergence_after_return", max(conv_all), "s", len(conv_all), "envoy admin /clusters",
                 min_n=len(bsubs) * len(p.outages))
    check.evidence("rounds", rounds)
    check.evidence("partial_states", partial)
    check.evidence("endpoint_timeline", poller.to_json(since=windows[0][0] - 1))
    _load_evidence(check, res)
    check.judge()


@pytest.mark.quick
@pytest.mark.check("DISC-7")
def test_disc7_control_plane_killed(mesh, check, load, fault_log):
    """The control plane is killed (-9) under load, held down ``down_s``, restarted.

    t_restart = the moment the restart is issued (end of the hold). Right after the CP is
    ready again, one backend and one frontend instance deregister themselves (a change every
    subscribed Envoy must pick up from the new CP process). Per Envoy: reconnect time
    (control_plane.connected_state == 1, all Envoys) and, for subscribers, the time until the
    change shows; reconverge_max = the slowest of all these, from t_restart. error_rate:
    Locust failures from the kill until converged.
    """
    down_s = check.p.down_s
    rps = check.p.rps
    deadline = check.p.deadline_s
    everyone = {n: h.url("admin") for n, h in mesh.envoys.items()}
    changes = {svc: mesh.instances_of(svc)[-1] for svc in ("backend", "frontend")}
    subs_by_svc = {svc: _subscribers_view(mesh, svc) for svc in changes}
    done: list[str] = []
    with load(rps=rps, duration_s=down_s + deadline + 8) as run:
        run.wait_started()
        try:
            with faults.stopped(mesh.controlplane, kill=True, log=fault_log):
                t_kill = time.time()
                time.sleep(down_s)
                t_restart = time.time()  # restart issued on leaving the block, then ready-waited
            t_ready = time.time()
            for svc, inst in changes.items():
                mesh.control(inst, "/meshbed/deregister")
                done.append(inst)
            t_change = time.time()
            with ThreadPoolExecutor(1 + len(subs_by_svc)) as pool:  # all measured at once, from t_restart
                f_re = pool.submit(convergence.first_true_times,
                                   {n: functools.partial(dh.is_connected, u) for n, u in everyone.items()},
                                   t_restart, deadline, 0.02)
                f_conv = {svc: pool.submit(convergence.converge_times, subs,
                                           convergence.lacks_host(svc, mesh.advertised[changes[svc]]),
                                           t_restart, deadline)
                          for svc, subs in subs_by_svc.items()}
                reconnect = f_re.result()
                conv = {svc: f.result() for svc, f in f_conv.items()}
            t_conv = time.time()
        finally:
            for inst in done:
                mesh.control(inst, "/meshbed/register")
        for svc, inst in changes.items():
            back = convergence.converge_times(subs_by_svc[svc], convergence.has_host(svc, mesh.advertised[inst]),
                                              time.time(), deadline)
            assert all(v is not None for v in back.values()), f"restore: {inst} never came back {back}"
        run.finish()  # measured: end the load early
    res = run.result()
    per_envoy: dict[str, float] = {}
    for n, v in reconnect.items():
        per_envoy[n] = deadline if v is None else v
    for svc, times in conv.items():
        for n, v in times.items():
            per_envoy[n] = max(per_envoy.get(n, 0.0), deadline if v is None else v)
    window = res.between(t_kill, t_conv)
    fails = sum(1 for r in window if r.status != 200)
    check.figure("reconverge_max", max(per_envoy.values()), "s", len(per_envoy),
                 "envoy stats control_plane.connected_state + admin /clusters", min_n=len(everyone))
    check.figure("error_rate", 100.0 * fails / len(window) if window else None, "%", len(window),
                 "locust request log (kill to converged)", min_n=int(rps * down_s * 0.5))
    check.evidence("times", {"kill": t_kill, "restart": t_restart, "ready": t_ready, "change": t_change,
                             "converged": t_conv, "cp_ready_after_restart_s": t_ready - t_restart})
    check.evidence("reconnect_s", reconnect)
    check.evidence("change_convergence_s", {svc: {"instance": changes[svc], "per_envoy": t} for svc, t in conv.items()})
    check.evidence("cp_first_sent_after_restart_s", _first_sent(mesh, t_restart))
    check.evidence("failed_requests", [{"ts": r.ts, "status": r.status, "latency_ms": r.latency_ms}
                                       for r in window if r.status != 200][:50])
    _load_evidence(check, res)
    check.judge()


@pytest.mark.quick
@pytest.mark.check("DISC-8")
def test_disc8_sotw_and_delta_alike(mesh, check):
    """The mesh's Envoys speak one xDS protocol; one more Envoy-only node, subscribed like a frontend
    sidecar, speaks the other. The same change (a backend deregistered, then registered, ``repeats``
    times) must reach both sets within the threshold and alike. An Envoy on a protocol the control
    plane does not serve never gets config: its times are the deadline (a measured absence).
    """
    p = check.p
    service, inst = "backend", mesh.instances_of("backend")[0]
    addr = mesh.advertised[inst]
    mine = split_protocol(mesh.wiring.settings.controlplane)[1]
    other = "DELTA_GRPC" if mine == "GRPC" else "GRPC"
    names = {"GRPC": "sotw", "DELTA_GRPC": "delta"}
    subs = {n: h.url("admin") for n, h in mesh.subscribers(service).items()}
    times: dict[str, list[float]] = {"sotw": [], "delta": []}
    with contextlib.ExitStack() as stack:
        try:
            watcher = {"watcher": stack.enter_context(mesh.watcher_envoy((service,), other, p.deadline_s)).url("admin")}
        except MeshbedError as exc:  # never got config over the other protocol
            watcher = {}
            check.evidence("other_protocol_failed", str(exc))
        for _ in range(p.repeats):
            for action, expect in (("/meshbed/deregister", convergence.lacks_host),
                                   ("/meshbed/register", convergence.has_host)):
                t0 = time.time()
                mesh.control(inst, action)
                times[names[mine]] += capped(convergence.converge_times(subs, expect(service, addr), t0,
                                                                        p.deadline_s), p.deadline_s)
                got = convergence.converge_times(watcher, expect(service, addr), t0, p.deadline_s)
                times[names[other]] += capped(got, p.deadline_s) if watcher else [p.deadline_s]
    for name, (value, n) in protocol_figures(times).items():
        check.figure(name, value, "s", n, "envoy admin /clusters (mesh sidecars and one watcher Envoy)",
                     min_n=2 * p.repeats)
    check.evidence("protocols", {"mesh": names[mine], "watcher": names[other]})
    check.chart("cdf", "convergence_s", {"per_envoy": {names[mine]: times[names[mine]],
                                                       names[other]: times[names[other]]}})
    check.judge()
