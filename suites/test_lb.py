"""LB: load-balancer spread (CONFORMANCE.md).

Scope: the ``backend`` service as seen from its subscribers, the ``frontend``
sidecars. Requests enter through the ingress, which spreads them over the
frontends; each frontend calls ``backend`` once per request through its own
sidecar, so the backend spread is the sum of the frontend Envoys' decisions.

Per-endpoint counts come from two independent sources and both are kept as
evidence: Envoy's per-host ``rq_total`` deltas in ``/clusters`` of every
frontend sidecar, and each backend instance's own ``/meshbed/stats`` counter
delta. Figures are judged on the worse of the two sources. Every test sets its
policy through ``meshbed.policy_control`` (KV write + wait until every
subscriber's config_dump shows it) and restores the baseline policy after.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import pytest

from meshbed import httpc, policy_control, wait
from meshbed.chaos import faults
from meshbed.errors import WaitTimeout
from meshbed.observe import envoy_admin
from meshbed.policy import OutlierDetection, Retries, ServicePolicy
from meshbed.measure.lb import (affinity_pct, by_version, disagreement_pct, ejections, keys_moved, modal,
                                shares, slow_share_ratio, spread_stats)
from meshbed.stats import rate_pct
from meshbed.traffic import Batch, drive

pytestmark = [pytest.mark.lb, pytest.mark.integration]

SERVICE = "backend"
ENVOY_SRC = "envoy admin /clusters rq_total (frontend sidecars)"
APP_SRC = "instance /meshbed/stats"


# -- counting --------------------------------------------------------------

def _host_instance(mesh) -> dict[str, str]:
    return {addr: inst for inst, addr in mesh.advertised.items()}


def envoy_counts(mesh, service: str = SERVICE) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """{envoy: {cluster: {instance: {rq_total, rq_error}}}} for every cluster of ``service``."""
    by_addr = _host_instance(mesh)
    out: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    for node, h in mesh.subscribers(service).items():
        per: dict[str, dict[str, dict[str, int]]] = {}
        for cname, hosts in envoy_admin.clusters(h.url("admin")).items():
            if cname.split("~", 1)[0] != service:
                continue
            per[cname] = {(x.hostname or by_addr.get(x.address, x.address)):
                          {"rq_total": x.rq_total, "rq_error": x.rq_error} for x in hosts}
        out[node] = per
    return out


def app_counts(mesh, instances: list[str]) -> dict[str, int]:
    return {i: int(httpc.get_json(mesh.apps[i].url("http", "/meshbed/stats"), 5)["requests"]) for i in instances}


class Counter:
    """Before/after snapshots of both sources for the instances of ``service``."""

    def __init__(self, mesh, instances: list[str], service: str = SERVICE) -> None:
        self.mesh, self.instances, self.service = mesh, list(instances), service
        self.env0 = envoy_counts(mesh, service)
        self.app0 = app_counts(mesh, self.instances)

    def envoy_delta(self) -> tuple[dict[str, int], dict[str, Any]]:
        """(per-instance rq_total delta summed over subscriber Envoys and clusters, raw per envoy/cluster)."""
        now = envoy_counts(self.mesh, self.service)
        tot = {i: 0 for i in self.instances}
        raw: dict[str, Any] = {}
        for node, per in now.items():
            for cname, hosts in per.items():
                for inst, st in hosts.items():
                    before = self.env0.get(node, {}).get(cname, {}).get(inst, {"rq_total": 0, "rq_error": 0})
                    d = st["rq_total"] - before["rq_total"]
                    e = st["rq_error"] - before["rq_error"]
                    raw.setdefault(node, {}).setdefault(cname, {})[inst] = {"rq_total": d, "rq_error": e}
                    if inst in tot:
                        tot[inst] += d
        return tot, raw

    def app_delta(self) -> dict[str, int]:
        now = app_counts(self.mesh, self.instances)
        return {i: now[i] - self.app0[i] for i in self.instances}

    def settle(self, deadline: float = 10.0) -> tuple[dict[str, int], dict[str, int], dict[str, Any]]:
        """Wait until both sources agree on the total (and stay put), then return both."""
        box: dict[str, Any] = {}

        def probe() -> bool:
            env, raw = self.envoy_delta()
            app = self.app_delta()
            box.update(env=env, raw=raw, app=app)
            if sum(env.values()) != sum(app.values()):
                raise wait.NotYet(f"envoy total {sum(env.values())} != instance total {sum(app.values())}")
            return True

        try:
            wait.until(probe, deadline, interval=0.1, converge=3, what="both request counts to settle")
        except Exception:  # noqa: BLE001 - a disagreement is measured (source_disagreement), not an error
            if "env" not in box:
                raise
        return box["env"], box["app"], box["raw"]


def outcome(batch: Batch) -> dict[str, Any]:
    return {"requests": batch.n, "ok": batch.ok, "by_status": {str(k): v for k, v in batch.by_status().items()},
            "errors": sorted({a.error for a in batch.answers if a.error})[:5],
            "duration_s": round(max((a.sent_at + a.latency_s for a in batch.answers), default=0)
                                - min((a.sent_at for a in batch.answers), default=0), 3)}


def backend_of(answer) -> str:
    """The backend instance that served this request (from the frontend's answer body)."""
    try:
        ds = answer.json().get("downstream") or []
        return str(ds[0].get("instance", "")) if ds else ""
    except (ValueError, AttributeError):
        return ""


def wait_passing(mesh, instances: list[str], passing: bool = True, deadline: float = 20.0) -> float:
    """Wait until Consul has each instance registered and passing (or not passing); seconds waited."""
    t0 = time.monotonic()
    want = {mesh.advertised[i] for i in instances}

    def probe() -> bool:
        st = {i.address: i.status for i in mesh.consul_client().instances(SERVICE)}
        bad = [a for a in want if (st.get(a) == "passing") != passing]
        if bad:
            raise wait.NotYet(f"consul status of {bad}: {[st.get(a) for a in bad]}")
        return True

    wait.until(probe, deadline, interval=0.1, what=f"consul to show {instances} {'passing' if passing else 'not passing'}")
    return time.monotonic() - t0


@contextlib.contextmanager
def scaled(mesh, count: int = 1, **kw: Any) -> Iterator[list[str]]:
    """``count`` extra backend instances for the block (passing in Consul), removed after."""
    added: list[str] = []
    try:
        for _ in range(count):
            added.append(mesh.add_instance(SERVICE, **kw))
        wait_passing(mesh, added)
        yield added
    finally:
        for inst in added:
            mesh.remove_instance(inst)


@contextlib.contextmanager
def policy(mesh, check, pol: ServicePolicy, service: str = SERVICE) -> Iterator[policy_control.Applied]:
    """Apply a policy for the block (evidence: how long each Envoy took); baseline restored after."""
    with policy_control.applied(mesh, service, pol, check) as a:
        yield a


# -- checks ----------------------------------------------------------------

@pytest.mark.quick
@pytest.mark.check("LB-1")
def test_lb1_round_robin_spread(mesh, check):
    """ROUND_ROBIN: every endpoint gets 1/N of >= 3000 requests, from both sources."""
    n_req = check.p.requests
    conc = check.p.concurrency
    insts = sorted(mesh.instances_of(SERVICE))
    expected = {i: 1 / len(insts) for i in insts}
    with policy(mesh, check, ServicePolicy(lb_policy="ROUND_ROBIN")):
        c = Counter(mesh, insts)
        batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
        env, app, raw = c.settle()
    se, sa = spread_stats(env, expected), spread_stats(app, expected)
    served = sum(env.values())
    check.evidence("requests", outcome(batch))
    check.chart("spread_map", "envoy", se)
    check.chart("spread_map", "instances", sa)
    check.evidence("envoy_per_frontend", raw)
    check.figure("max_share_dev", max(se["max_dev_pp"], sa["max_dev_pp"]), "pp", served,
                 f"worse of {ENVOY_SRC} / {APP_SRC}", min_n=n_req)
    check.figure("chi2_p", min(se["chi2_p"], sa["chi2_p"]), "", served, f"worse of {ENVOY_SRC} / {APP_SRC}",
                 min_n=n_req)
    check.figure("source_disagreement", disagreement_pct(env, app), "%", served, f"{ENVOY_SRC} vs {APP_SRC}",
                 min_n=n_req)
    check.judge()


@pytest.mark.quick
@pytest.mark.check("LB-2")
def test_lb2_least_request_avoids_slow_endpoint(mesh, check, toxi, fault_log):
    """LEAST_REQUEST: an endpoint slowed by Toxiproxy latency gets less than half its fair share."""
    n_req = check.p.requests
    latency_ms = check.p.latency_ms
    conc = check.p.concurrency
    insts = sorted(mesh.instances_of(SERVICE))
    slow = insts[-1]
    fair = 1 / len(insts)
    with policy(mesh, check, ServicePolicy(lb_policy="LEAST_REQUEST")):
        with faults.latency(toxi, mesh.links["upstream"][slow], latency_ms, log=fault_log):
            c = Counter(mesh, insts)
            batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
            env, app, raw = c.settle()
    ratio_env, ratio_app = slow_share_ratio(env, slow), slow_share_ratio(app, slow)
    served = sum(env.values())
    check.evidence("requests", outcome(batch))
    check.evidence("slow_endpoint", {"instance": slow, "proxy": mesh.links["upstream"][slow],
                                     "latency_ms": latency_ms, "fair_share": fair})
    check.chart("spread_map", "envoy", spread_stats(env, {i: fair for i in insts}))
    check.chart("spread_map", "instances", spread_stats(app, {i: fair for i in insts}))
    check.evidence("envoy_per_frontend", raw)
    check.evidence("slow_share_ratio_by_source", {"envoy": ratio_env, "instances": ratio_app})
    check.evidence("source_disagreement_pct", disagreement_pct(env, app))
    check.figure("slow_share_ratio", max(ratio_env, ratio_app), "", served,
                 f"worse of {ENVOY_SRC} / {APP_SRC}; share of the slow endpoint / (1/N)", min_n=n_req)
    check.judge()


@pytest.mark.check("LB-3")
def test_lb3_weighted_canary_split(mesh, check):
    """Weighted clusters by version (v1 90 / v2 10): the observed split is within +-2 pp."""
    n_req = check.p.requests
    conc = check.p.concurrency
    weights = dict(check.p.weights)
    wsum = sum(weights.values())
    with scaled(mesh, version="v2") as (canary,):
        insts = sorted(mesh.instances_of(SERVICE))
        version = {i: mesh.instances[i].version for i in insts}
        assert set(version.values()) == set(weights), f"versions {version} vs weights {weights}"
        with policy(mesh, check, ServicePolicy(lb_policy="ROUND_ROBIN", weights=weights)):
            c = Counter(mesh, insts)
            batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
            env, app, raw = c.settle()
    expected = {v: w / wsum for v, w in weights.items()}

    ve, va = by_version(env, version, weights), by_version(app, version, weights)
    se, sa = spread_stats(ve, expected), spread_stats(va, expected)
    # Envoy's own view per weighted cluster (backend~v1 / backend~v2), summed over the frontends
    per_cluster: dict[str, int] = {}
    for per in raw.values():
        for cname, hosts in per.items():
            per_cluster[cname] = per_cluster.get(cname, 0) + sum(h["rq_total"] for h in hosts.values())
    served = sum(env.values())
    check.evidence("requests", outcome(batch))
    check.evidence("canary", {"instance": canary, "versions": version, "weights": weights})
    check.chart("spread_map", "envoy_by_version", se)
    check.chart("spread_map", "instances_by_version", sa)
    check.evidence("envoy_by_cluster", per_cluster)
    check.evidence("envoy_by_instance", env)
    check.evidence("instances_by_instance", app)
    check.evidence("envoy_per_frontend", raw)
    check.evidence("source_disagreement_pct", disagreement_pct(env, app))
    check.figure("split_dev", max(se["max_dev_pp"], sa["max_dev_pp"]), "pp", served,
                 f"worse of {ENVOY_SRC} / {APP_SRC}, by version", min_n=n_req)
    check.judge()



def _drive_keys(mesh, keys: int, per_key: int, conc: int, header: str) -> tuple[Batch, dict[str, dict[str, int]]]:
    """``per_key`` requests for each of ``keys`` header values; {key: {backend instance: requests}}.

    The key also goes into the path (/lb4/<key>), which the answer body echoes, so every answer
    is tied to its key; the body's downstream entry names the backend instance that served it.
    """
    n = keys * per_key
    key = [f"user-{i % keys}" for i in range(n)]
    batch = drive(mesh.ingress_url, n, concurrency=conc, headers=lambda i: {header: key[i]},
                  path=lambda i: f"/lb4/{key[i]}")
    per: dict[str, dict[str, int]] = {}
    for a in batch.answers:
        if not 200 <= a.status < 300:
            continue
        k = a.json().get("path", "").rsplit("/", 1)[-1]
        b = backend_of(a)
        if k and b:
            per.setdefault(k, {})
            per[k][b] = per[k].get(b, 0) + 1
    return batch, per


def _gone_from_envoys(mesh, address: str, deadline: float = 10.0) -> float:
    t0 = time.monotonic()
    subs = {n: h.url("admin") for n, h in mesh.subscribers(SERVICE).items()}

    def probe() -> bool:
        left = [n for n, u in subs.items()
                if any(x.address == address for x in envoy_admin.clusters(u).get(SERVICE, []))]
        if left:
            raise wait.NotYet(f"{address} still listed by {left}")
        return True

    wait.until(probe, deadline, interval=0.02, what=f"{address} to leave every subscriber")
    return time.monotonic() - t0


@pytest.mark.check("LB-4")
def test_lb4_consistent_hash_on_header(mesh, check):
    """RING_HASH / MAGLEV on x-user: a key sticks to one endpoint; removing 1 of N moves ~1/N of keys."""
    keys = check.p.keys
    per_key = check.p.requests_per_key
    per_key_after = check.p.requests_per_key_after
    conc = check.p.concurrency
    header = check.p.hash_header
    algorithms = [a.upper() for a in check.p.algorithms]
    insts = sorted(mesh.instances_of(SERVICE))
    n_ep = len(insts)
    victim = insts[-1]
    results: dict[str, Any] = {}
    for algo in algorithms:
        r: dict[str, Any] = {}
        with policy_control.applied(mesh, SERVICE, ServicePolicy(lb_policy=algo, hash_header=header), check) as a:
            r["policy"] = a.to_json()
            c = Counter(mesh, insts)
            b1, per1 = _drive_keys(mesh, keys, per_key, conc, header)
            env, app, _ = c.settle()
            r["before"] = {"requests": outcome(b1), "envoy": env, "instances": app,
                           "source_disagreement_pct": disagreement_pct(env, app)}
            r["affinity_pct"], r["affinity_n"] = affinity_pct(per1)
            r["split_keys"] = {k: v for k, v in per1.items() if len(v) > 1}
            try:
                mesh.control(victim, "/meshbed/deregister")
                r["removal_converged_s"] = _gone_from_envoys(mesh, mesh.advertised[victim])
                c2 = Counter(mesh, insts)
                b2, per2 = _drive_keys(mesh, keys, per_key_after, conc, header)
                env2, app2, _ = c2.settle()
            finally:
                mesh.control(victim, "/meshbed/register")
                wait_passing(mesh, [victim])
                policy_control.wait_endpoints(mesh, SERVICE, policy_control.current(mesh, SERVICE))
            r["after"] = {"requests": outcome(b2), "envoy": env2, "instances": app2, "removed": victim}
            m1 = modal(per1)
            km = keys_moved(m1, modal(per2), victim, n_ep)
            r.update(keys_compared=km.compared, keys_moved=km.moved, keys_moved_norm=km.norm,
                     moved_not_from_removed=km.moved_not_from_removed,
                     keys_on_removed_endpoint=sum(1 for k in m1 if m1[k] == victim))
            r["keys_per_endpoint_before"] = {i: sum(1 for k in m1 if m1[k] == i) for i in insts}
        results[algo] = r
    check.evidence("algorithms", results)
    check.evidence("hash_header", header)
    worst_aff = min(results.values(), key=lambda r: r["affinity_pct"])
    worst_mv = max(results.values(), key=lambda r: r["keys_moved_norm"])
    check.figure("key_affinity", worst_aff["affinity_pct"], "%", worst_aff["affinity_n"],
                 f"answer bodies (backend instance per request), worst of {algorithms}", min_n=keys * per_key)
    check.figure("keys_moved_norm", worst_mv["keys_moved_norm"], "", worst_mv["keys_compared"],
                 f"answer bodies, moved keys x N (N={n_ep}) after removing 1 endpoint, worst of {algorithms}",
                 min_n=keys)
    check.judge()


def _set_health(mesh, instances: list[str], healthy: bool) -> None:
    for i in instances:
        mesh.control(i, "/meshbed/health", {"healthy": healthy})


def _wait_eds_health(mesh, addresses: set[str], healthy: bool, deadline: float = 15.0,
                     absence_ok: bool = False) -> float:
    """Wait until every subscriber lists ``addresses`` as (un)healthy in the service's cluster.

    ``absence_ok``: never getting there is a measured absence (returns the deadline), not an error.
    """
    t0 = time.monotonic()
    subs = {n: h.url("admin") for n, h in mesh.subscribers(SERVICE).items()}

    def probe() -> bool:
        bad = []
        for n, u in subs.items():
            hosts = {x.address: x for x in envoy_admin.clusters(u).get(SERVICE, [])}
            bad += [f"{n}:{a}" for a in addresses if a not in hosts or hosts[a].healthy != healthy]
        if bad:
            raise wait.NotYet(f"not yet {'healthy' if healthy else 'unhealthy'}: {bad[:6]}")
        return True

    try:
        wait.until(probe, deadline, interval=0.02, what=f"{sorted(addresses)} {'healthy' if healthy else 'unhealthy'} "
                   "in every subscriber", hint="the Consul health check runs every 1 s")
    except WaitTimeout:
        if not absence_ok:
            raise
        return deadline
    return time.monotonic() - t0


@pytest.mark.quick
@pytest.mark.check("LB-5")
def test_lb5_priority_failover(mesh, check):
    """All priority-0 endpoints fail (Consul health critical): traffic moves to priority 1."""
    n_req = check.p.requests
    n_sec = check.p.secondaries
    conc = check.p.concurrency
    primaries = sorted(mesh.instances_of(SERVICE))
    with scaled(mesh, n_sec, priority=1) as secondaries:
        insts = primaries + secondaries
        with policy(mesh, check, ServicePolicy(lb_policy="ROUND_ROBIN")):
            prio = {x.hostname: x.priority for x in envoy_admin.clusters(
                next(iter(mesh.subscribers(SERVICE).values())).url("admin")).get(SERVICE, [])}
            check.evidence("priorities_in_envoy", prio)
            c0 = Counter(mesh, insts)
            b0 = drive(mesh.ingress_url, 100, concurrency=conc, keep_body=False)
            env0, app0, _ = c0.settle()
            check.evidence("before_failure", {"requests": outcome(b0), "envoy": env0, "instances": app0})
            try:
                _set_health(mesh, primaries, False)
                ejected_s = _wait_eds_health(mesh, {mesh.advertised[i] for i in primaries}, healthy=False,
                                             absence_ok=True)
                check.evidence("primaries_unhealthy_in_every_envoy_s", round(ejected_s, 3))
                c = Counter(mesh, insts)
                batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
                env, app, raw = c.settle()
            finally:
                _set_health(mesh, primaries, True)
                wait_passing(mesh, primaries)
                _wait_eds_health(mesh, {mesh.advertised[i] for i in primaries}, healthy=True)
    sec_env = rate_pct(sum(env[i] for i in secondaries), sum(env.values()))
    sec_app = rate_pct(sum(app[i] for i in secondaries), sum(app.values()))
    errors = batch.n - batch.ok
    check.evidence("requests", outcome(batch))
    check.evidence("secondaries", secondaries)
    check.evidence("envoy", env)
    check.evidence("instances", app)
    check.evidence("envoy_per_frontend", raw)
    check.evidence("secondary_share_by_source", {"envoy": sec_env, "instances": sec_app})
    check.evidence("source_disagreement_pct", disagreement_pct(env, app))
    check.figure("error_rate_after_ejection", rate_pct(errors, batch.n), "%", batch.n,
                 "client answers (non-2xx) after every subscriber marked the primaries unhealthy", min_n=n_req)
    check.figure("secondary_share", min(sec_env, sec_app), "%", sum(env.values()),
                 f"worse of {ENVOY_SRC} / {APP_SRC}", min_n=n_req)
    check.figure("failover_s", ejected_s, "s", len(mesh.subscribers(SERVICE)),
                 "envoy admin /clusters: health flipped -> primaries unhealthy in every subscriber")
    check.judge()


_OD = "cluster.{}.outlier_detection."


def _outlier_stats(mesh) -> dict[str, dict[str, int]]:
    prefix = _OD.format(SERVICE)
    out = {}
    for n, h in mesh.subscribers(SERVICE).items():
        st = envoy_admin.stats(h.url("admin"), regex=prefix.replace(".", r"\."))
        out[n] = {k[len(prefix):]: v for k, v in st.items() if k.startswith(prefix)}
    return out


@pytest.mark.quick
@pytest.mark.check("LB-6")
def test_lb6_outlier_detection_ejects_5xx_endpoint(mesh, check):
    """One endpoint answers 5xx: ejected after consecutive_5xx errors; retries keep clients whole.

    base_ejection_time is longer than the run, so each frontend Envoy ejects the endpoint once and
    the figure is about that first ejection (re-admission after the ejection time is not measured).
    An ejection counts as within the threshold when the endpoint served that Envoy at most
    consecutive_5xx 5xx answers, plus the requests that were already in flight to it (measured:
    the endpoint's own max_in_flight - 1), which no ejection can recall.
    """
    n_req = check.p.requests
    threshold = check.p.consecutive_5xx
    conc = check.p.concurrency
    insts = sorted(mesh.instances_of(SERVICE))
    bad = insts[-1]
    pol = ServicePolicy(
        lb_policy="ROUND_ROBIN",
        retries=Retries(retry_on="5xx,reset,connect-failure", num_retries=check.p.num_retries),
        outlier_detection=OutlierDetection(consecutive_5xx=threshold, interval_ms=1000,
                                           base_ejection_time_ms=check.p.base_ejection_time_ms,
                                           max_ejection_percent=50),
    )
    with policy(mesh, check, pol):
        mesh.control(bad, "/meshbed/stats/reset")
        od0 = _outlier_stats(mesh)
        c = Counter(mesh, insts)
        try:
            mesh.control(bad, "/meshbed/fail", {"mode": "5xx", "ratio": 1.0})
            batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
            env, app, raw = c.settle()
            od1 = _outlier_stats(mesh)
            ejected_now = {n: [x.hostname for x in envoy_admin.clusters(h.url("admin")).get(SERVICE, [])
                               if x.outlier_ejected] for n, h in mesh.subscribers(SERVICE).items()}
            bad_stats = httpc.get_json(mesh.apps[bad].url("http", "/meshbed/stats"), 5)
        finally:
            mesh.control(bad, "/meshbed/fail", {"mode": "none"})
    in_flight_allowance = max(0, int(bad_stats.get("max_in_flight", 1)) - 1)
    key = "ejections_enforced_consecutive_5xx"
    ej_delta = {n: od1[n].get(key, 0) - od0.get(n, {}).get(key, 0) for n in od1}
    # every answer of `bad` is a 5xx: its per-host rq_total in each caller Envoy counts the 5xx it saw
    seen_5xx = {n: raw.get(n, {}).get(SERVICE, {}).get(bad, {}).get("rq_total", 0) for n in od1}
    ej = ejections(ej_delta, seen_5xx, threshold, in_flight_allowance)
    per_envoy = {n: {**v, "outlier_stats_delta": {k: x - od0.get(n, {}).get(k, 0) for k, x in od1[n].items()},
                     "failed_outlier_check_at_end": ejected_now.get(n, [])} for n, v in ej.per_envoy.items()}
    check.evidence("requests", outcome(batch))
    check.evidence("bad_endpoint", {"instance": bad, "fault": {"mode": "5xx", "ratio": 1.0},
                                    "its_stats": {k: bad_stats.get(k) for k in ("requests", "by_status", "max_in_flight")},
                                    "in_flight_allowance": in_flight_allowance, "consecutive_5xx": threshold})
    check.evidence("per_envoy", per_envoy)
    check.evidence("envoy", env)
    check.evidence("instances", app)
    check.evidence("envoy_per_frontend", raw)
    check.evidence("source_disagreement_pct", disagreement_pct(env, app))
    check.figure("ejecting_envoys", ej.pct, "%", ej.n,
                 f"envoy /stats {_OD.format(SERVICE)}{key} and per-host rq_total of the failing endpoint, per "
                 "caller Envoy that sent to it: ejected with <= consecutive_5xx (+ in-flight) 5xx per ejection",
                 min_n=len(mesh.subscribers(SERVICE)))
    check.figure("client_success", rate_pct(batch.ok, batch.n), "%", batch.n, "client answers (2xx)", min_n=n_req)
    check.judge()
