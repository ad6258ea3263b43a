"""RES: resilience under faults (CONFORMANCE.md). Ground truth: what clients get back.

Policies are changed through meshbed.policy_control (Consul KV, then wait until
every subscriber Envoy's config_dump shows it) and always restored to the
topology's baseline on exit; faults undo themselves (meshbed.chaos.faults).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest

from meshbed import httpc, policy_control, wait
from meshbed.chaos import faults
from meshbed.policy import CircuitBreaker, Retries
from meshbed.stats import rate_pct, summarize
from meshbed.traffic import drive

pytestmark = [pytest.mark.resilience, pytest.mark.integration]


def _entry(mesh) -> str:
    return mesh.topology.ingress[0].service


def _proxies(mesh, service: str) -> dict[str, str]:
    """Toxiproxy proxy in front of each instance's sidecar, by instance."""
    links = mesh.links.get("upstream", {})
    out = {i: links[i] for i in mesh.instances_of(service) if i in links}
    if not out:
        pytest.skip("the topology does not route upstream links through Toxiproxy (chaos.links: upstream)")
    return out


@pytest.mark.quick
@pytest.mark.check("RES-2")
def test_res2_latency_above_route_timeout(mesh, check, toxi, fault_log):
    """A latency toxic above the route timeout: every answer a 504 at timeout (+ <= 100 ms), none hangs.

    The timeout is set on the route the client sees directly (ingress -> entry
    service), and the latency toxic sits on every link into the entry service's
    sidecars, so the answer the client gets *is* the timed-out hop's 504.
    """
    n = int(check.param("requests", 30))
    timeout_ms = int(check.param("route_timeout_ms", 500))
    latency_ms = int(check.param("latency_ms", 1500))
    if latency_ms <= timeout_ms:
        pytest.fail(f"RES-2 params: latency_ms {latency_ms} must exceed route_timeout_ms {timeout_ms}")
    svc = _entry(mesh)
    proxies = _proxies(mesh, svc)
    pol = dataclasses.replace(policy_control.baseline(mesh, svc), timeout_ms=timeout_ms)
    # a client-side bound well above the toxic: an answer that does not come by then has hung
    client_timeout_s = (latency_ms + 2000) / 1000.0
    with policy_control.applied(mesh, svc, pol) as applied:
        with _all_toxics(toxi, proxies.values(), lambda p: faults.latency(toxi, p, latency_ms, log=fault_log)):
            batch = drive(mesh.ingress_url, n, concurrency=4, timeout=client_timeout_s)
    lat_ms = [a.latency_s * 1000.0 for a in batch.answers]
    got504 = [a for a in batch.answers if a.status == 504]
    overshoot = [a.latency_s * 1000.0 - timeout_ms for a in got504]
    hung = [a for a in batch.answers if a.status == 0]
    check.figure("answered_504", rate_pct(len(got504), batch.n), "%", batch.n, "client (traffic.drive)", min_n=n)
    check.figure("timeout_overshoot_max", max(overshoot) if overshoot else None, "ms", len(overshoot),
                 "client (traffic.drive)", min_n=n)
    check.figure("hung", len(hung), "requests", batch.n, "client (traffic.drive)")
    check.evidence("policy", applied.to_json())
    check.evidence("answers", {"by_status": batch.by_status(), "latency_ms": summarize(lat_ms).to_json(),
                               "overshoot_ms": summarize(overshoot).to_json(),
                               "client_timeout_s": client_timeout_s,
                               "samples": [{"status": a.status, "ms": round(a.latency_s * 1000, 1),
                                            "body": a.body[:60].decode("utf-8", "replace"), "error": a.error}
                                           for a in batch.answers]})
    check.judge()


class _all_toxics:
    """Enter one fault context per proxy; exit them all (even when one fails to enter)."""

    def __init__(self, toxi, proxies, make) -> None:
        self.cms = [make(p) for p in proxies]
        self.entered: list = []

    def __enter__(self):
        try:
            for cm in self.cms:
                cm.__enter__()
                self.entered.append(cm)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        err = None
        for cm in reversed(self.entered):
            try:
                cm.__exit__(None, None, None)
            except Exception as e:  # noqa: BLE001 - undo the rest, then report
                err = err or e
        self.entered = []
        if err is not None:
            raise err
        return False


def _stats(mesh, inst: str) -> dict:
    return httpc.get_json(mesh.apps[inst].url("http", "/meshbed/stats"), 5)


def _reset_stats(mesh, insts) -> None:
    for i in insts:
        r = httpc.request("POST", mesh.apps[i].url("http", "/meshbed/stats/reset"), timeout=5)
        assert r.status == 200, f"{i} stats reset: HTTP {r.status}"


def _downstream_error(a) -> tuple[int, str]:
    """(status, error text) of the first downstream call named in an app answer; (0, '') if none."""
    try:
        doc = a.json()
    except ValueError:
        return 0, ""
    downs = doc.get("downstream") if isinstance(doc, dict) else None
    if not downs:
        return 0, ""
    d = downs[0]
    return int(d.get("status", 0) or 0), str(d.get("error", ""))


def max_overlap(intervals: list[tuple[int, int]]) -> int:
    """The largest number of [start, end) intervals open at one instant."""
    ev = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


@pytest.mark.quick
@pytest.mark.check("RES-3")
def test_res3_circuit_breaker_under_overload(mesh, check):
    """Circuit breaker on the backend cluster (max_requests = max_pending = max_connections = N) under overload.

    Each caller Envoy (every frontend sidecar) enforces its own limit, so the
    backends as a whole may see up to N x callers; the check is per caller Envoy:
    from the backends' own server spans (start/end, one host clock), the
    largest number of backend requests in flight at once that came through one
    frontend sidecar must not exceed N. Sums of per-instance max_in_flight are
    kept as evidence only: per-instance peaks need not coincide, so their sum
    over-states the simultaneous concurrency.

    Overflow: the frontend sidecar answers 503 "reset reason: overflow"
    (x-envoy-overloaded) to the frontend app, which answers the client 502 and
    names the 503 in its body. overflow_503_p99 is how long the overflowing
    Envoy took to answer (its span, response flag UO): the time the mesh takes.
    The calling app's client span and the end client's latency are kept as
    extra figures; on 2 shared cores they mostly measure Python event-loop
    queueing (p99 38-90 ms for the app, 90-200 ms end to end, in trial runs).
    """
    from meshbed.observe.trace_collect import collect
    from meshbed.observe import traces

    limit = int(check.param("max_requests", 4))
    conc = int(check.param("concurrency", 32))
    n = int(check.param("requests", 600))
    delay = int(check.param("delay_ms", 100))
    svc = "backend"
    callers = [c for c in mesh.topology.callers_of(svc) if c != "ingress"]
    caller_envoys = sorted(i for c in callers for i in mesh.instances_of(c))
    backends = mesh.instances_of(svc)
    cb = CircuitBreaker(max_connections=limit, max_pending_requests=limit, max_requests=limit, max_retries=3)
    pol = dataclasses.replace(policy_control.baseline(mesh, svc), circuit_breaker=cb)
    with policy_control.applied(mesh, svc, pol) as applied:
        _reset_stats(mesh, backends)
        batch = drive(mesh.ingress_url, n, concurrency=conc, path=f"/?delay_ms={delay}&only={svc}", timeout=10)
        max_in_flight = {i: _stats(mesh, i)["max_in_flight"] for i in backends}
    overflow = []
    other = []
    for a in batch.answers:
        if a.status == 200:
            continue
        st, err = _downstream_error(a)
        (overflow if st == 503 and "overflow" in err else other).append(a)
    ok = [a for a in batch.answers if a.status == 200]
    full = traces.expected_edges({k: tuple(s.calls) for k, s in mesh.topology.services.items()}, _entry(mesh))
    cut = traces.without_descendants(full, (traces.sidecar(callers[0]), traces.CLIENT))
    over_ids = {a.request_id for a in overflow}
    col = collect(mesh, ok + overflow, lambda a: cut if a.request_id in over_ids else full)
    per_caller: dict[str, list[tuple[int, int]]] = {e: [] for e in caller_envoys}
    attributed = 0
    envoy_ms: list[float] = []  # the overflowing sidecar's own span (response flag UO)
    caller_ms: list[float] = []  # the calling app's client span: how long it waited for the 503
    for rid, spans in col.spans.items():
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            if rid in over_ids:
                if s.service.endswith(traces.SIDECAR_SUFFIX) and s.kind == traces.CLIENT \
                        and "UO" in str(s.attributes.get("response_flags", "")):
                    envoy_ms.append((s.end_ns - s.start_ns) / 1e6)
                if s.service in callers and s.kind == traces.CLIENT and str(s.attributes.get("http.status_code")) == "503":
                    caller_ms.append((s.end_ns - s.start_ns) / 1e6)
                continue
            if s.service != svc or s.kind != traces.SERVER:
                continue
            sc_in = by_id.get(s.parent_id)
            out = by_id.get(sc_in.parent_id) if sc_in else None
            node = out.attributes.get("node_id") if out else None
            if node in per_caller:
                per_caller[node].append((s.start_ns, s.end_ns))
                attributed += 1
    peak = {e: max_overlap(iv) for e, iv in per_caller.items()}
    peak_all = max_overlap([x for iv in per_caller.values() for x in iv])
    lat_over = [a.latency_s * 1000.0 for a in overflow]
    s_over = summarize(lat_over)
    s_caller = summarize(caller_ms)
    s_envoy = summarize(envoy_ms)
    check.figure("overflow_503_p99", s_envoy.p99, "ms", s_envoy.n,
                 "overflowing sidecar's span (jaeger, response flag UO)", min_n=max(1, len(overflow)))
    check.figure("overflow_503_caller_p99", s_caller.p99, "ms", s_caller.n, "calling app's client span (jaeger)")
    check.figure("overflow_client_p99", s_over.p99, "ms", s_over.n, "end client (traffic.drive), via ingress+frontend")
    check.figure("concurrency_excess", max(0, max(peak.values(), default=0) - limit), "requests", attributed,
                 "backend server spans in jaeger, per frontend sidecar", min_n=len(ok))
    check.figure("upstream_concurrency_peak_per_envoy", max(peak.values(), default=None), "requests", attributed,
                 "backend server spans in jaeger")
    check.figure("overflow_share", rate_pct(len(overflow), batch.n), "%", batch.n, "client (traffic.drive)")
    check.evidence("policy", applied.to_json())
    check.evidence("answers", {"by_status": batch.by_status(), "ok": len(ok), "overflow": len(overflow),
                               "other_failures": [{"status": a.status, "body": a.body[:200].decode("utf-8", "replace"),
                                                   "error": a.error} for a in other[:10]],
                               "overflow_latency_ms": s_over.to_json(),
                               "ok_latency_ms": summarize([a.latency_s * 1000 for a in ok]).to_json()})
    check.evidence("concurrency", {
        "limit_per_envoy": limit, "caller_envoys": caller_envoys, "peak_per_envoy": peak,
        "peak_all_envoys": peak_all, "bound_all_envoys": limit * len(caller_envoys),
        "backend_max_in_flight": max_in_flight, "sum_max_in_flight": sum(max_in_flight.values()),
        "spans_attributed": attributed, "ok_answers": len(ok), "jaeger_wait_s": round(col.wait_s, 2)})
    check.evidence("overflow_latency_ms", {"caller_client_span": s_caller.to_json(), "envoy_span": s_envoy.to_json(),
                                           "end_client": s_over.to_json()})
    if len(other) > 0:
        pytest.fail(f"{len(other)} answers failed other than by overflow: {other[0].status} {other[0].body[:200]!r}")
    check.judge()


def _envoy_counters(mesh, envoys, regex: str) -> dict[str, dict[str, int]]:
    from meshbed.observe import envoy_admin
    return {e: envoy_admin.stats(mesh.envoys[e].url("admin"), regex) for e in envoys}


def _delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e, stats in after.items():
        for k, v in stats.items():
            out[k] = out.get(k, 0) + v - before.get(e, {}).get(k, 0)
    return out


@pytest.mark.check("RES-1")
def test_res1_reset_peer_on_one_endpoint_with_retries(mesh, check, toxi, fault_log):
    """reset_peer on the link into 1 of the backend endpoints; the retry policy hides it from clients."""
    n = int(check.param("requests", 2000))
    svc = "backend"
    proxies = _proxies(mesh, svc)
    victim = sorted(proxies)[0]
    callers = sorted(i for c in mesh.topology.callers_of(svc) if c != "ingress" for i in mesh.instances_of(c))
    pol = dataclasses.replace(policy_control.baseline(mesh, svc),
                              retries=Retries(retry_on="connect-failure,reset,5xx", num_retries=2))
    regex = rf"^cluster\.{svc}\.(upstream_rq_retry|upstream_rq_retry_success|upstream_cx_destroy_remote|upstream_rq_total)$"
    with policy_control.applied(mesh, svc, pol) as applied:
        before = _envoy_counters(mesh, callers, regex)
        with faults.reset_peer(toxi, proxies[victim], timeout_ms=0, log=fault_log):
            t0 = time.time()
            batch = drive(mesh.ingress_url, n, concurrency=4, timeout=10)
            sent_s = time.time() - t0
        after = _envoy_counters(mesh, callers, regex)
    served: dict[str, int] = {}
    for a in batch.answers:
        if a.status == 200:
            for d in a.json().get("downstream", []):
                served[d.get("instance", "?")] = served.get(d.get("instance", "?"), 0) + 1
    deltas = _delta(before, after)
    check.figure("client_success", rate_pct(batch.ok, batch.n), "%", batch.n, "client (traffic.drive)", min_n=n)
    check.figure("retries", deltas.get(f"cluster.{svc}.upstream_rq_retry", 0), "retries", len(callers),
                 "caller envoys' cluster stats")
    check.evidence("policy", applied.to_json())
    check.evidence("fault", {"victim": victim, "proxy": proxies[victim], "toxic": "reset_peer timeout=0"})
    check.evidence("answers", {"by_status": batch.by_status(), "sent_s": round(sent_s, 2), "served_by": served,
                               "failures": [{"status": a.status, "body": a.body[:200].decode("utf-8", "replace"),
                                             "error": a.error} for a in batch.answers if a.status != 200][:10]})
    check.evidence("envoy_counters_delta", deltas)
    if deltas.get(f"cluster.{svc}.upstream_rq_retry", 0) == 0:
        pytest.fail(f"the fault on {victim} never made an Envoy retry: it was not exercised")
    check.judge()


def _intact(a, size: int) -> tuple[bool, str]:
    """Is this answer's large body complete and byte-exact? (ok, why not)."""
    from meshbed.sample.payload import payload_bytes, payload_sha256
    if a.status != 200:
        return False, f"HTTP {a.status} {a.error}".strip()
    if "x-meshbed-sha256" in a.headers:  # /bytes/N: the body itself
        if len(a.body) != size:
            return False, f"{len(a.body)} of {size} bytes"
        if hashlib.sha256(a.body).hexdigest() != a.headers["x-meshbed-sha256"] or \
                a.headers["x-meshbed-sha256"] != payload_sha256(size):
            return False, "sha256 mismatch"
        return True, ""
    try:  # ?size=N&only=backend: the backend's payload, carried inside the frontend's JSON
        doc = a.json()
        payload = doc["downstream"][0]["payload"].encode("ascii")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return False, f"no payload: {type(exc).__name__}"
    if payload != payload_bytes(size):
        return False, f"payload {len(payload)} of {size} bytes or corrupted"
    return True, ""


@pytest.mark.quick
@pytest.mark.check("RES-5")
def test_res5_bandwidth_and_slicer_on_large_responses(mesh, check, toxi, fault_log):
    """Bandwidth and slicer toxics on every link into the sidecars; every large body arrives whole.

    Half the requests fetch /bytes/N from the entry service (the body crosses the
    ingress -> frontend link, checked against x-meshbed-sha256), half fetch
    ?size=N&only=backend (the backend's N-byte payload crosses the frontend ->
    backend link and comes back inside the frontend's JSON).
    """
    n = int(check.param("requests", 40))
    size = int(check.param("size_bytes", 262144))
    rate_kb = int(check.param("bandwidth_kb_s", 2048))
    proxies = {**_proxies(mesh, _entry(mesh)), **_proxies(mesh, "backend")}

    def path(i: int) -> str:
        return f"/bytes/{size}" if i % 2 == 0 else f"/?size={size}&only=backend"

    def both(p: str):
        class _Both:
            def __enter__(self):
                self.a = faults.bandwidth(toxi, p, rate_kb, log=fault_log)
                self.b = faults.slicer(toxi, p, average_size=1024, size_variation=512, delay_us=50, log=fault_log)
                self.a.__enter__()
                try:
                    self.b.__enter__()
                except BaseException:
                    self.a.__exit__(None, None, None)
                    raise
            def __exit__(self, *exc):
                try:
                    self.b.__exit__(None, None, None)
                finally:
                    self.a.__exit__(None, None, None)
        return _Both()

    with _all_toxics(toxi, proxies.values(), both):
        t0 = time.time()
        batch = drive(mesh.ingress_url, n, concurrency=4, path=path, timeout=30)
        sent_s = time.time() - t0
    verdicts = [(a, *_intact(a, size)) for a in batch.answers]
    good = sum(1 for _, ok, _ in verdicts if ok)
    check.figure("intact_bodies", rate_pct(good, batch.n), "%", batch.n, "client (traffic.drive), sha256 / byte compare",
                 min_n=n)
    check.evidence("answers", {"by_status": batch.by_status(), "sent_s": round(sent_s, 2), "size_bytes": size,
                               "latency_ms": summarize([a.latency_s * 1000 for a in batch.answers]).to_json(),
                               "broken": [{"path": path(i), "why": why} for i, (a, ok, why) in enumerate(verdicts)
                                          if not ok][:10]})
    check.evidence("toxics", {"proxies": sorted(proxies.values()), "bandwidth_kb_s": rate_kb,
                              "slicer": {"average_size": 1024, "size_variation": 512, "delay_us": 50}})
    check.judge()


@pytest.mark.check("RES-4")
def test_res4_rolling_restart_under_load(mesh, check, load, fault_log):
    """Restart every backend instance (app and sidecar), one at a time, under Locust load.

    Per instance: deregister from Consul, wait until no subscriber Envoy lists it,
    wait until the app has no request in flight (drained), restart the sidecar,
    then the app (which registers itself when up), and wait until every
    subscriber lists it healthy again before the next instance.
    """
    from meshbed.observe import convergence
    from meshbed.readiness import wait_ready

    rps = float(check.param("rps", 40))
    duration = float(check.param("duration_s", 25))
    svc = "backend"
    insts = sorted(mesh.instances_of(svc))
    subs = {n: h.url("admin") for n, h in mesh.subscribers(svc).items()}
    steps: list[dict] = []
    ready_timeout = mesh.wiring.settings.ready_timeout
    run = load(rps=rps, duration_s=duration)
    with run:
        run.wait_started()
        for inst in insts:
            addr = mesh.advertised[inst]
            step: dict = {"instance": inst}
            with fault_log.window("rolling-restart", inst):
                t0 = time.time()
                r = httpc.request("POST", mesh.apps[inst].url("http", "/meshbed/deregister"), timeout=5)
                assert r.status == 200, f"{inst} deregister: HTTP {r.status}"
                gone = convergence.converge_times(subs, convergence.lacks_host(svc, addr), t0, 10)
                assert all(v is not None for v in gone.values()), f"{inst} never left every Envoy: {gone}"
                step["gone_s"] = round(max(gone.values()), 3)
                wait.until(lambda: _stats(mesh, inst)["in_flight"] == 0, deadline=10, interval=0.02,
                           what=f"{inst} to drain its in-flight requests")
                step["drained_s"] = round(time.time() - t0, 3)
                mesh.sidecars[inst].restart()
                wait_ready(mesh.sidecars[inst], ready_timeout)
                mesh.apps[inst].restart()
                wait_ready(mesh.apps[inst], ready_timeout)
                step["restarted_s"] = round(time.time() - t0, 3)
                back = convergence.converge_times(subs, convergence.has_host(svc, addr), time.time(), 15)
                assert all(v is not None for v in back.values()), f"{inst} never came back healthy: {back}"
                step["back_s"] = round(time.time() - t0, 3)
            steps.append(step)
        restarts_end = time.time()
        t_left = run._t0 + duration - restarts_end
    res = run.result()
    during = [r for w in fault_log.windows for r in res.between(w.start, w.end or restarts_end)]
    check.figure("error_rate", res.error_rate_pct, "%", res.n, "locust request log", min_n=int(rps * duration * 0.8))
    check.figure("error_rate_during_restarts", rate_pct(sum(1 for r in during if r.status != 200), len(during)),
                 "%", len(during), "locust request log")
    check.evidence("restarts", steps)
    check.evidence("load", res.summary())
    check.evidence("load_history", res.history())
    check.evidence("failures", [{"ts": r.ts, "request_id": r.request_id, "status": r.status}
                                for r in res.requests if r.status != 200][:20])
    if t_left < 2:
        pytest.fail(f"the restarts outlasted the load ({-t_left:.1f}s over): raise RES-4 duration_s")
    check.judge()
