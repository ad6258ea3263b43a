"""DISC: discovery convergence (CONFORMANCE.md). Ground truth: every subscribed Envoy's admin API.

Each check: setup (fixtures, the Envoys it watches), apply (a change in Consul or a fault,
undone on exit: meshbed.scenario, meshbed.chaos.faults), measure (per-Envoy convergence
times, endpoint sets polled every 20 ms, the Locust request log), judge
(meshbed.measure.discovery: pure functions to figures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ContextManager, Iterator

import pytest

from meshbed import scenario
from meshbed.roles import Upstream
from meshbed.chaos import faults
from meshbed.components import consul_gate as gate_c
from meshbed.components.controlplane import split_protocol
from meshbed.errors import MeshbedError
from meshbed.measure import discovery as dm
from meshbed.mesh import wait_converged
from meshbed.observe import convergence
from meshbed.observe import discovery_helpers as dh

pytestmark = [pytest.mark.discovery, pytest.mark.integration]

ADMIN = "envoy admin /clusters"
needs = pytest.mark.needs_topology  # what each check needs from the topology (meshbed.roles)


def _load_evidence(check, res) -> None:
    check.evidence("load_summary", res.summary())
    check.chart("load", "load_history", res.history())


# -- DISC-1..3: one change at a time ---------------------------------------------

@pytest.mark.quick
@pytest.mark.check("DISC-1")
@needs(Upstream())
def test_disc1_register_new_instance(mesh, check, target):
    """A new healthy instance of an upstream appears, healthy, in every subscribed Envoy."""
    p, service = check.p, target.service
    inst = mesh.scale.add_instance(service)
    addr = mesh.advertised[inst]
    subs = scenario.subscriber_urls(mesh, service)
    conv = dm.Convergence(p.deadline_s)
    # the new instance must be in every Envoy first: otherwise the first round's "setup: leave"
    # holds at once and a late-applied join of add_instance is timed as the round's convergence
    scenario.everywhere(subs, convergence.has_host(service, addr), p.deadline_s, f"setup: {inst} to join")
    for _ in range(p.repeats):
        mesh.control(inst, "/meshbed/deregister")
        scenario.everywhere(subs, convergence.lacks_host(service, addr), p.deadline_s, f"setup: {inst} to leave")
        t0 = time.time()
        mesh.control(inst, "/meshbed/register")
        conv.add(convergence.converge_times(subs, convergence.has_host(service, addr), t0, p.deadline_s),
                 scenario.eds_acks(mesh, t0).values())
    s = conv.summary
    check.figure("convergence_p99", s.p99, "s", s.n, ADMIN, min_n=p.repeats * len(subs))
    check.figure("convergence_p50", s.p50, "s", s.n, ADMIN)
    check.chart("cdf", "convergence_s", conv.chart())
    check.judge()


@pytest.mark.check("DISC-2")
@needs(Upstream(min_instances=2))
def test_disc2_deregister_under_load(mesh, check, load, target):
    """An instance deregistered under load leaves every subscribed Envoy, and stops getting traffic.

    Per repeat: deregister one instance of the upstream (its own /meshbed/deregister) at t0 and time
    its removal per subscribed Envoy; then keep the load on for ``late_window_s`` more and
    count requests *started* later than t0 + (slowest Envoy's convergence) + 1 s that were
    still served by that instance (Request.instances); then re-register it and wait until it is
    back everywhere before the next repeat.
    """
    p, service = check.p, target.service
    insts = mesh.instances_of(service)
    subs = scenario.subscriber_urls(mesh, service)
    conv, rounds = dm.Convergence(p.deadline_s), []
    with load(rps=p.rps, duration_s=dm.deregister_load_s(p.repeats, p.deadline_s, p.late_window_s)) as run:
        run.wait_started()
        time.sleep(1.0)  # steady traffic to every instance before the first change
        for i in range(p.repeats):
            rounds.append(_deregistered(mesh, subs, insts[i % len(insts)], conv, p.late_window_s))
        time.sleep(0.5)  # margin: the last window's requests are logged
        run.finish()  # every round is over: end the load here, not at a fixed time
    res = run.result()
    lr = dm.late_requests(rounds, res.requests)
    s = conv.summary
    check.figure("convergence_p99", s.p99, "s", s.n, ADMIN, min_n=p.repeats * len(subs))
    check.figure("convergence_p50", s.p50, "s", s.n, ADMIN)
    check.figure("late_requests", lr.late, "requests", lr.thinnest_window,
                 "locust request log (x-meshbed instances; n = fewest requests in one window)", min_n=10,
                 bad_count=True)
    check.evidence("late_requests_checked", lr.checked)
    check.figure("error_rate", res.error_rate_pct, "%", res.n, "locust request log")
    check.chart("cdf", "convergence_s", conv.chart())
    check.evidence("rounds", rounds)
    check.evidence("late_request_samples", lr.samples)
    _load_evidence(check, res)
    check.judge()


def _deregistered(mesh, subs: dict[str, str], inst: str, conv: dm.Convergence, late_window_s: float) -> dict:
    """DISC-2, one round: ``inst`` deregistered at t0 and timed out of every subscriber; it stays out
    1 s past its late window (a slow request started inside it must not meet the re-registration)."""
    service, addr = mesh.instances[inst].service, mesh.advertised[inst]
    with scenario.withdrawn(mesh, conv.deadline) as w:
        t0 = w.deregister(inst)
        times = convergence.converge_times(subs, convergence.lacks_host(service, addr), t0, conv.deadline)
        late_from, late_until = dm.late_window(t0, conv.add(times), late_window_s)
        time.sleep(max(0.0, late_until + 1.0 - time.time()))
        conv.acks += scenario.eds_acks(mesh, t0).values()
    return {"instance": inst, "address": addr, "t0": t0, "convergence_s": times,
            "late_from": late_from, "late_until": late_until}


@pytest.mark.quick
@pytest.mark.check("DISC-3")
@needs(Upstream(min_instances=2))
def test_disc3_health_flip(mesh, check, consul, target):
    """An upstream instance's health goes critical, then passing again: it leaves, then rejoins, the healthy set.

    Two ways to flip, alternating per repeat (param ``methods``):
    - ``maintenance``: Consul maintenance mode (adds a critical check); t0 = the API call.
    - ``app``: the instance fails its own HTTP health check (POST /meshbed/health); Consul's
      1 s check interval decides when it turns critical, so t0 = the first 10 ms poll of
      Consul's health API that shows the new status (the moment the change is in Consul).
    leave/rejoin = seconds from t0 until each subscribed Envoy's healthy set lacks/has it.
    """
    p, service = check.p, target.service
    insts = mesh.instances_of(service)
    subs = scenario.subscriber_urls(mesh, service)
    leave, rejoin, rounds = dm.Convergence(p.deadline_s), dm.Convergence(p.deadline_s), []
    for i in range(p.repeats * len(p.methods)):
        rounds.append(_flipped(mesh, consul, subs, insts[i % len(insts)], p.methods[i % len(p.methods)],
                               leave, rejoin))
    sl, sr = leave.summary, rejoin.summary
    need = p.repeats * len(p.methods) * len(subs)
    check.figure("leave_p99", sl.p99, "s", sl.n, ADMIN, min_n=need)
    check.figure("rejoin_p99", sr.p99, "s", sr.n, ADMIN, min_n=need)
    check.figure("leave_p50", sl.p50, "s", sl.n, ADMIN)
    check.figure("rejoin_p50", sr.p50, "s", sr.n, ADMIN)
    check.evidence("convergence_s", {"leave": sl.to_json(), "rejoin": sr.to_json()})
    check.evidence("rounds", rounds)
    check.judge()


def _flipped(mesh, consul, subs: dict[str, str], inst: str, method: str, leave: dm.Convergence,
             rejoin: dm.Convergence) -> dict:
    """DISC-3, one round: ``inst`` critical, timed out of every healthy set; passing, timed back in."""
    service, addr = mesh.instances[inst].service, mesh.advertised[inst]
    with scenario.health_flipped(mesh, consul, inst, method, reason="meshbed-DISC-3") as f:
        out = convergence.converge_times(subs, convergence.lacks_healthy_host(service, addr), f.t_critical,
                                         leave.deadline)
        t1 = f.back()
        back = convergence.converge_times(subs, convergence.has_host(service, addr, healthy=True), t1,
                                          rejoin.deadline)
    leave.add(out)
    rejoin.add(back)
    return {"method": method, "instance": inst, "address": addr, "t_critical": f.t_critical, "t_passing": t1,
            "leave_s": out, "rejoin_s": back, "cp_eds_ack_leave_s": scenario.eds_acks(mesh, f.t_critical)}


# -- DISC-4: a churn storm ---------------------------------------------------------

@pytest.mark.check("DISC-4")
@needs(Upstream())
def test_disc4_churn_storm(mesh, check, load, consul, target):
    """Random register/deregister at ``events_per_s`` for ``duration_s`` under load.

    Churned: every instance of every service plus ``extra_backends`` scaled-up instances of the upstream,
    one Churn per service (keep_at_least=1 each, so no service is ever empty), the rate split
    by instance count. settle_time = seconds from the storm's last event until the slowest
    subscribed Envoy's endpoint set equals Consul's catalog exactly (addresses and EDS health;
    Consul read right after the last event). nacks = rejected xDS updates in every Envoy's
    stats (cds/lds/rds update_rejected + cluster.*.update_rejected), before vs after; the CP's
    push-log NACKs are evidence. error_rate = Locust failures from the storm's start until settled.
    """
    p, churned = check.p, tuple(mesh.topology.services)
    for _ in range(p.extra_backends):
        mesh.scale.add_instance(target.service)
    wait_converged(mesh, 30)
    w, everyone = scenario.watched(mesh), scenario.envoy_urls(mesh)
    rejected_before = dh.rejected_updates(everyone)
    with load(rps=p.rps, duration_s=p.duration_s + p.deadline_s + 6) as run:
        run.wait_started()
        t_start = time.time()
        with scenario.churned(mesh, churned, p.events_per_s, p.duration_s, p.include_health) as events:
            settled = _settled_on_consul(consul, w, churned, events[-1].ts, p.deadline_s)
        run.finish()  # the settle is measured: end the load early
    res = run.result()
    wait_converged(mesh, 30)
    rejected_after = dh.rejected_updates(everyone)
    m = dm.churn_storm(settled.times, p.deadline_s, rejected_before, rejected_after, res.requests,
                       (t_start, settled.at))
    check.figure("settle_time", m.settle_s, "s", m.envoys, "envoy admin /clusters vs consul catalog",
                 min_n=len(w.services))
    check.figure("nacks", m.nack_total, "nacks", len(m.nacks), "envoy stats *update_rejected", min_n=len(everyone))
    check.figure("error_rate", m.errors.pct, "%", m.errors.n, "locust request log",
                 min_n=dm.min_requests(p.rps, p.duration_s))
    check.figure("events", len(events), "events", len(events), "churn log")
    check.evidence("settle_s", settled.times)
    check.evidence("expected_from_consul", dm.fmt_endpoints(settled.expected))
    check.evidence("envoy_endpoints_at_settle", settled.final)
    check.evidence("churn_events", [dataclasses.asdict(e) for e in events])
    check.evidence("rejected_updates", {"before": rejected_before, "after": rejected_after, "delta": m.nacks})
    check.evidence("cp_nack_events", scenario.push_log(mesh, t_start, event="nack")[:50])
    check.evidence("failed_requests", m.errors.failed)
    _load_evidence(check, res)
    check.judge()


@dataclasses.dataclass(frozen=True)
class Settled:
    times: dict[str, float | None]  # per watched Envoy, from the storm's last event
    at: float  # when the slowest settled (or the deadline passed)
    expected: dict[str, dh.Endpoints]  # Consul's catalog right after the last event
    final: dict[str, Any]  # what each Envoy showed then


def _settled_on_consul(consul, w: scenario.Watched, churned: tuple[str, ...], t_last: float,
                       deadline: float) -> Settled:
    """DISC-4: per watched Envoy, seconds from ``t_last`` until its endpoint sets equal Consul's
    catalog exactly (addresses and EDS health)."""
    expected = {s: dh.consul_endpoints(consul, s) for s in churned}
    times = convergence.converge_times(w.admin, {n: dh.matches({s: expected[s] for s in svcs})
                                                 for n, svcs in w.services.items()}, t_last, deadline)
    at = time.time()
    final = {n: dm.fmt_endpoints(dh.envoy_endpoints(u, w.services[n])) for n, u in w.admin.items()}
    return Settled(times, at, expected, final)


# -- DISC-5/6: faults between the control plane and its peers ----------------------

@pytest.mark.check("DISC-5")
@needs(Upstream(min_instances=2, links=("control_plane",)))
def test_disc5_control_plane_link_faults(mesh, check, load, toxi, fault_log, target):
    """Faults on every Envoy<->control-plane link (Toxiproxy), one kind at a time, under load.

    Per fault (reset_peer, timeout, latency, down; param ``faults``), on all control_plane proxies
    at once for ``fault_s``: ~0.5 s in, one upstream instance deregisters itself (a Consul change
    during the fault). Measured:
    - config_lost: Envoys (every subscriber of any service) whose endpoint set, polled every
      20 ms from fault start until the change converged, was ever anything but the last-known
      set or that set minus the deregistered instance (e.g. empty);
    - error_rate: Locust failures among requests started inside the fault windows;
    - post_fault_convergence_max: slowest Envoy, over all faults, from the fault's end until the
      deregistered instance is gone (0-ish when it already converged during the fault).
    The instance is re-registered, and seen back everywhere, before the next fault.
    """
    p, service = check.p, target.service
    proxies = sorted(mesh.links["control_plane"].values())
    w, insts, rounds = scenario.watched(mesh), mesh.instances_of(service), []
    with load(rps=p.rps, duration_s=len(p.faults) * (p.fault_s + 3) + 5) as run, w.poller() as poller:
        run.wait_started()
        for k, kind in enumerate(p.faults):
            fault = scenario.link_faults(toxi, proxies, kind, fault_log,
                                         latency_ms=p.latency_ms, timeout_ms=p.timeout_ms)
            rounds.append(scenario.withdraw_around(mesh, w, poller, kind, fault, insts[k % len(insts)],
                                                   hold_s=p.fault_s, deadline=p.deadline_s, log_pushes=True))
    res = run.result()
    m = dm.link_faults(rounds, poller, res.requests, service, p.deadline_s)
    check.figure("error_rate", m.errors.pct, "%", m.errors.n, "locust request log (fault windows)",
                 min_n=dm.min_requests(p.rps, p.fault_s, len(p.faults)))
    check.figure("post_fault_convergence_max", m.post_max, "s", len(m.post), ADMIN,
                 min_n=len(p.faults) * len(mesh.subscribers(service)))
    check.figure("config_lost", len(m.lost), "envoys", m.checked, "envoy admin /clusters (20 ms)",
                 min_n=len(w.admin) * len(p.faults))
    check.evidence("rounds", m.rounds)
    check.evidence("endpoint_timeline", poller.to_json())
    check.evidence("failed_requests", m.errors.failed)
    _load_evidence(check, res)
    check.judge()


def _consul_outage(mesh, toxi, kind: str, hold_s: float, log) -> ContextManager[Any]:
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
    if kind == "http_5xx":
        return _consul_answers_503(mesh, log)
    if kind not in ("link_down", "reset_peer", "timeout"):
        raise ValueError(f"DISC-6: unknown outage {kind!r}; known: pause, link_down, reset_peer, timeout, "
                         "http_5xx")
    return scenario.link_faults(toxi, [proxy], "down" if kind == "link_down" else kind, log,
                                timeout_ms=int(hold_s * 1000))


@contextlib.contextmanager
def _consul_answers_503(mesh, log) -> Iterator[None]:
    with log.window("consul-http-503", "consul-gate", abort_percent=100):
        gate_c.set_abort_percent(mesh.consul_gate, 100)
        try:
            yield
        finally:
            gate_c.set_abort_percent(mesh.consul_gate, 0)


@pytest.mark.quick
@pytest.mark.check("DISC-6")
@needs(Upstream(min_instances=2))
def test_disc6_consul_outage(mesh, check, load, toxi, fault_log, target):
    """Consul unreachable for ``outage_s`` under load, once per kind of outage (param ``outages``).

    Each round: the outage starts; where Consul still runs (every kind but pause) one upstream
    instance deregisters itself 0.5 s in, so the control plane's blocking queries return into the
    fault (the moment a buggy control plane mistakes a failed query for an empty service); after
    the outage ends (for pause: right after the resume, when the apps can reach Consul again) the
    change must converge. partial_pushes: polled endpoint sets (20 ms, every Envoy subscribed to
    any service) that lack a healthy address other than the one deregistered on purpose.
    convergence_after_return: slowest Envoy from the outage's end until that instance is gone.
    error_rate: Locust failures from outage start to converged.
    """
    p, service = check.p, target.service
    w, insts, rounds = scenario.watched(mesh), mesh.instances_of(service), []
    with load(rps=p.rps, duration_s=len(p.outages) * (p.outage_s + 2 * p.deadline_s + 3) + 5) as run, \
            w.poller() as poller:
        run.wait_started()
        for k, kind in enumerate(p.outages):
            outage = _consul_outage(mesh, toxi, kind, p.outage_s, fault_log)
            rounds.append(scenario.withdraw_around(mesh, w, poller, kind, outage, insts[k % len(insts)],
                                                   hold_s=p.outage_s, deadline=p.deadline_s, watch_s=0.5,
                                                   change_after_s=None if kind == "pause" else 0.5))
        run.finish()  # every round is over
    res = run.result()
    m = dm.consul_outages(rounds, poller, res.requests, p.deadline_s)
    check.figure("partial_pushes", m.partial, "pushes", m.polls, "envoy admin /clusters (20 ms polls during outages)",
                 min_n=10 * len(w.admin) * len(p.outages), bad_count=True)
    check.figure("error_rate", m.errors.pct, "%", m.errors.n, "locust request log (outage start to converged)",
                 min_n=dm.min_requests(p.rps, p.outage_s, len(p.outages)))
    check.figure("convergence_after_return", m.convergence_max, "s", len(m.convergence), ADMIN,
                 min_n=len(mesh.subscribers(service)) * len(p.outages))
    check.evidence("rounds", m.rounds)
    check.evidence("partial_states", m.examples)
    check.evidence("endpoint_timeline", poller.to_json(since=rounds[0].t_start - 1))
    _load_evidence(check, res)
    check.judge()


# -- DISC-7/8: the control plane itself ----------------------------------------------

@pytest.mark.quick
@pytest.mark.check("DISC-7")
@needs(Upstream(min_instances=2, caller_min_instances=2))
def test_disc7_control_plane_killed(mesh, check, load, fault_log, target):
    """The control plane is killed (-9) under load, held down ``down_s``, restarted.

    t_restart = the moment the restart is issued (end of the hold). Right after the CP is
    ready again, one instance of the upstream and one of its caller deregister themselves (a change every
    subscribed Envoy must pick up from the new CP process). Per Envoy: reconnect time
    (control_plane.connected_state == 1, all Envoys) and, for subscribers, the time until the
    change shows; reconverge_max = the slowest of all these, from t_restart. error_rate:
    Locust failures from the kill until converged.
    """
    p = check.p
    everyone = scenario.envoy_urls(mesh)
    changes = {svc: mesh.instances_of(svc)[-1] for svc in (target.service, target.caller)}
    with load(rps=p.rps, duration_s=p.down_s + p.deadline_s + 8) as run:
        run.wait_started()
        with scenario.withdrawn(mesh, p.deadline_s) as out:
            with faults.stopped(mesh.controlplane, kill=True, log=fault_log):
                t_kill = time.time()
                time.sleep(p.down_s)
                t_restart = time.time()  # restart issued on leaving the block, then ready-waited
            t_ready = time.time()
            for inst in changes.values():
                out.deregister(inst)
            t_change = time.time()
            reconnect, conv = _reconverged(mesh, everyone, changes, t_restart, p.deadline_s)
            t_conv = time.time()
        run.finish()  # measured: end the load early
    res = run.result()
    m = dm.reconverged(reconnect, conv, p.deadline_s, res.requests, (t_kill, t_conv))
    check.figure("reconverge_max", m.slowest, "s", len(m.per_envoy),
                 "envoy stats control_plane.connected_state + admin /clusters", min_n=len(everyone))
    check.figure("error_rate", m.errors.pct, "%", m.errors.n, "locust request log (kill to converged)",
                 min_n=dm.min_requests(p.rps, p.down_s))
    check.evidence("times", {"kill": t_kill, "restart": t_restart, "ready": t_ready, "change": t_change,
                             "converged": t_conv, "cp_ready_after_restart_s": t_ready - t_restart})
    check.evidence("reconnect_s", reconnect)
    check.evidence("change_convergence_s", {svc: {"instance": changes[svc], "per_envoy": t} for svc, t in conv.items()})
    check.evidence("cp_first_sent_after_restart_s", scenario.first_sent(mesh, t_restart))
    check.evidence("failed_requests", m.errors.failed)
    _load_evidence(check, res)
    check.judge()


def _reconverged(mesh, everyone: dict[str, str], changes: dict[str, str], t0: float, deadline: float):
    """DISC-7, all at once from ``t0``: per Envoy, when it is connected to the control plane again;
    per changed service, when each subscriber no longer lists its deregistered instance."""
    with ThreadPoolExecutor(1 + len(changes)) as pool:
        f_re = pool.submit(convergence.first_true_times,
                           {n: functools.partial(dh.is_connected, u) for n, u in everyone.items()}, t0, deadline, 0.02)
        f_conv = {svc: pool.submit(convergence.converge_times, scenario.subscriber_urls(mesh, svc),
                                   convergence.lacks_host(svc, mesh.advertised[inst]), t0, deadline)
                  for svc, inst in changes.items()}
        return f_re.result(), {svc: f.result() for svc, f in f_conv.items()}


@pytest.mark.quick
@pytest.mark.check("DISC-8")
@needs(Upstream())
def test_disc8_sotw_and_delta_alike(mesh, check, target):
    """The mesh's Envoys speak one xDS protocol; one more Envoy-only node, subscribed like a caller's
    sidecar, speaks the other. The same change (an upstream instance deregistered, then registered, ``repeats``
    times) must reach both sets within the threshold and alike. An Envoy on a protocol the control
    plane does not serve never gets config: its times are the deadline (a measured absence).
    """
    p, service = check.p, target.service
    inst = mesh.instances_of(service)[0]
    addr = mesh.advertised[inst]
    mine = split_protocol(mesh.settings.controlplane)[1]
    names = {"mesh": dm.XDS_PROTOCOLS[mine], "watcher": dm.XDS_PROTOCOLS[dm.other_protocol(mine)]}
    subs = scenario.subscriber_urls(mesh, service)
    times: dict[str, list[float]] = {"sotw": [], "delta": []}
    with _watcher(mesh, check, service, dm.other_protocol(mine), p.deadline_s) as watcher:
        for _ in range(p.repeats):
            for action, expect in (("/meshbed/deregister", convergence.lacks_host),
                                   ("/meshbed/register", convergence.has_host)):
                t0 = time.time()
                mesh.control(inst, action)
                got = convergence.converge_times(subs, expect(service, addr), t0, p.deadline_s)
                times[names["mesh"]] += dm.capped(got, p.deadline_s)
                got = convergence.converge_times(watcher, expect(service, addr), t0, p.deadline_s)
                times[names["watcher"]] += dm.capped_or_never(got, p.deadline_s)
    for name, (value, n) in dm.protocol_figures(times).items():
        check.figure(name, value, "s", n, "envoy admin /clusters (mesh sidecars and one watcher Envoy)",
                     min_n=2 * p.repeats)
    check.evidence("protocols", names)
    check.chart("cdf", "convergence_s", {"per_envoy": {v: times[v] for v in names.values()}})
    check.judge()


@contextlib.contextmanager
def _watcher(mesh, check, service: str, api_type: str, deadline: float) -> Iterator[dict[str, str]]:
    """DISC-8: one Envoy-only node on ``api_type`` subscribed to ``service`` ({name: admin URL}); none
    ({}, with evidence) when it never got config over that protocol."""
    with contextlib.ExitStack() as stack:
        try:
            h = stack.enter_context(mesh.scale.watcher_envoy((service,), api_type, deadline))
        except MeshbedError as exc:  # never got config over the other protocol
            check.evidence("other_protocol_failed", str(exc))
            yield {}
            return
        yield {"watcher": h.url("admin")}
