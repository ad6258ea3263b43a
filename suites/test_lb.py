"""LB: load-balancer spread (CONFORMANCE.md).

Scope: one upstream service (the check's ``target``, found from the topology by
meshbed.roles; ``backend`` on examples/basic.yaml) as seen from its subscribers,
its callers' sidecars. Requests enter through the ingress and reach the upstream
once each through a caller's sidecar, so its spread is the sum of the caller
Envoys' decisions.

Per-endpoint counts come from two independent sources and both are kept as
evidence: Envoy's per-host ``rq_total`` deltas in ``/clusters`` of every
caller sidecar, and each upstream instance's own ``/meshbed/stats`` counter
delta. Figures are judged on the worse of the two sources.

Each check: setup (fixtures, scaled-up instances), apply (a policy through
``meshbed.policy_control`` -- KV write + wait until every subscriber's
config_dump shows it, baseline restored after -- and a fault, undone on exit),
measure (a batch of requests counted by both sources: ``lb.Counts``), judge
(meshbed.measure.lb: pure functions to figures).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import pytest

from meshbed import httpc, policy_control, scenario, wait
from meshbed.chaos import faults
from meshbed.errors import ConfigError, WaitTimeout
from meshbed.measure import lb
from meshbed.measure.discovery import slowest
from meshbed.observe import convergence, discovery_helpers, envoy_admin
from meshbed.policy import OutlierDetection, Retries, ServicePolicy
from meshbed.roles import Upstream
from meshbed.traffic import Batch, drive

pytestmark = [pytest.mark.lb, pytest.mark.integration]

ENVOY_SRC = "envoy admin /clusters rq_total (caller sidecars)"
APP_SRC = "instance /meshbed/stats"
WORSE = f"worse of {ENVOY_SRC} / {APP_SRC}"
_OD = "cluster.{}.outlier_detection."
needs = pytest.mark.needs_topology  # what each check needs from the topology (meshbed.roles)


# -- measure: requests per upstream instance, by both sources ----------------------

def envoy_counts(mesh, service: str) -> dict[str, dict[str, dict[str, dict[str, int]]]]:
    """{envoy: {cluster: {instance: {rq_total, rq_error}}}} for every cluster of ``service``."""
    by_addr = {addr: inst for inst, addr in mesh.advertised.items()}
    return {node: {cname: {(x.hostname or by_addr.get(x.address, x.address)):
                           {"rq_total": x.rq_total, "rq_error": x.rq_error} for x in hosts}
                   for cname, hosts in envoy_admin.clusters(url).items() if cname.split("~", 1)[0] == service}
            for node, url in scenario.subscriber_urls(mesh, service).items()}


def _app_stats(mesh, inst: str) -> dict[str, Any]:
    return httpc.get_json(mesh.apps[inst].url("http", "/meshbed/stats"), 5)


def app_counts(mesh, instances: list[str]) -> dict[str, int]:
    return {i: int(_app_stats(mesh, i)["requests"]) for i in instances}


class Counter:
    """Both sources read once now; :meth:`settle` reads them again once they agree."""

    def __init__(self, mesh, service: str, instances: list[str]) -> None:
        self.mesh, self.service, self.instances = mesh, service, list(instances)
        self.env0, self.app0 = envoy_counts(mesh, service), app_counts(mesh, self.instances)

    def read(self) -> lb.Counts:
        return lb.counted(self.env0, envoy_counts(self.mesh, self.service), self.app0,
                          app_counts(self.mesh, self.instances), self.instances)

    def settle(self, deadline: float = 10.0) -> lb.Counts:
        """Wait until both sources agree on the total (and stay put); a lasting disagreement is
        measured (source_disagreement), not an error."""
        last: list[lb.Counts] = []

        def probe() -> bool:
            last[:] = [self.read()]
            if not last[0].agree:
                raise wait.NotYet(f"envoy total {last[0].served} != instance total {sum(last[0].app.values())}")
            return True

        try:
            wait.until(probe, deadline, interval=0.1, converge=3, what="both request counts to settle")
        except WaitTimeout:
            if not last:
                raise
        return last[0]


def _drive_counted(mesh, svc: str, insts: list[str], n: int, concurrency: int, **kw: Any
                   ) -> tuple[Batch, lb.Counts]:
    """``n`` requests through the ingress, counted per instance of ``svc`` by both sources."""
    c = Counter(mesh, svc, insts)
    batch = drive(mesh.ingress_url, n, concurrency=concurrency, **kw)
    return batch, c.settle()


def _spread_evidence(check, batch: Batch, counts: lb.Counts, spread: lb.Spread, by: str = "") -> None:
    check.evidence("requests", lb.outcome(batch))
    check.chart("spread_map", f"envoy{by}", spread.envoy)
    check.chart("spread_map", f"instances{by}", spread.instances)
    check.evidence("envoy_per_caller", counts.raw)


def _counts_evidence(check, batch: Batch, counts: lb.Counts) -> None:
    check.evidence("requests", lb.outcome(batch))
    check.evidence("envoy", counts.envoy)
    check.evidence("instances", counts.app)
    check.evidence("envoy_per_caller", counts.raw)
    check.evidence("source_disagreement_pct", counts.disagreement_pct)


# -- setup and apply ------------------------------------------------------------

@contextlib.contextmanager
def scaled(mesh, svc: str, count: int = 1, **kw: Any) -> Iterator[list[str]]:
    """``count`` extra instances of ``svc`` for the block (passing in Consul), removed after."""
    added: list[str] = []
    try:
        for _ in range(count):
            added.append(mesh.scale.add_instance(svc, **kw))
        scenario.consul_shows(mesh.consul_client(), svc, added, "passing", deadline=20.0, interval=0.1)
        yield added
    finally:
        for inst in added:
            mesh.scale.remove_instance(inst)


# -- checks ----------------------------------------------------------------

@pytest.mark.quick
@pytest.mark.check("LB-1")
@needs(Upstream(min_instances=2))
def test_lb1_round_robin_spread(mesh, check, target):
    """ROUND_ROBIN: every endpoint gets 1/N of >= 3000 requests, from both sources."""
    p, svc = check.p, target.service
    insts = sorted(mesh.instances_of(svc))
    with policy_control.applied(mesh, svc, ServicePolicy(lb_policy="ROUND_ROBIN"), check):
        batch, counts = _drive_counted(mesh, svc, insts, p.requests, p.concurrency, keep_body=False)
    m = lb.spread(counts, lb.even(insts))
    _spread_evidence(check, batch, counts, m)
    check.figure("max_share_dev", m.max_dev_pp, "pp", m.served, WORSE, min_n=p.requests)
    check.figure("chi2_p", m.chi2_p, "", m.served, WORSE, min_n=p.requests)
    check.figure("source_disagreement", m.disagreement_pct, "%", m.served, f"{ENVOY_SRC} vs {APP_SRC}",
                 min_n=p.requests)
    check.judge()


@pytest.mark.quick
@pytest.mark.check("LB-2")
@needs(Upstream(min_instances=3, links=("upstream",)))
def test_lb2_least_request_avoids_slow_endpoint(mesh, check, toxi, fault_log, target):
    """LEAST_REQUEST: an endpoint slowed by Toxiproxy latency gets less than half its fair share.

    >= 3 endpoints: Envoy's power-of-two-choices draws both choices with replacement, so of N
    endpoints the slow one still gets 1/N^2 of the picks however busy it is: a share ratio of at
    least 1/N, never below the 0.5 threshold with N = 2.
    """
    p, svc = check.p, target.service
    insts = sorted(mesh.instances_of(svc))
    slow, fair = insts[-1], lb.even(insts)
    with policy_control.applied(mesh, svc, ServicePolicy(lb_policy="LEAST_REQUEST"), check), \
            faults.latency(toxi, mesh.links["upstream"][slow], p.latency_ms, log=fault_log):
        batch, counts = _drive_counted(mesh, svc, insts, p.requests, p.concurrency, keep_body=False)
    m = lb.slow_share(counts, slow)
    check.evidence("slow_endpoint", {"instance": slow, "proxy": mesh.links["upstream"][slow],
                                     "latency_ms": p.latency_ms, "fair_share": fair[slow]})
    _spread_evidence(check, batch, counts, lb.spread(counts, fair))
    check.evidence("slow_share_ratio_by_source", {"envoy": m.envoy, "instances": m.instances})
    check.evidence("source_disagreement_pct", counts.disagreement_pct)
    check.figure("slow_share_ratio", m.worst, "", counts.served, f"{WORSE}; share of the slow endpoint / (1/N)",
                 min_n=p.requests)
    check.judge()


@pytest.mark.check("LB-3")
@needs(Upstream(all_serving=False, prefer="versions"))
def test_lb3_weighted_canary_split(mesh, check, target):
    """Weighted clusters by version (v1 90 / v2 10): the observed split is within +-2 pp.

    An upstream whose instances already span the weighted versions (a version split in the
    topology) is used as it is; otherwise one canary instance of the missing version is added.
    """
    p, svc = check.p, target.service
    weights = dict(p.weights)
    missing = sorted(set(weights) - {mesh.instances[i].version for i in mesh.instances_of(svc)})
    with (scaled(mesh, svc, version=missing[0]) if len(missing) == 1 else contextlib.nullcontext([])) as added:
        insts = sorted(mesh.instances_of(svc))
        version = {i: mesh.instances[i].version for i in insts}
        if set(version.values()) != set(weights):
            raise ConfigError(f"LB-3: instance versions {version} do not match the weights {weights}")
        with policy_control.applied(mesh, svc, ServicePolicy(lb_policy="ROUND_ROBIN", weights=weights), check):
            batch, counts = _drive_counted(mesh, svc, insts, p.requests, p.concurrency, keep_body=False)
    m = lb.spread(counts, lb.weighted(weights), group=version)
    check.evidence("canary", {"instance": added[0] if added else None, "versions": version, "weights": weights})
    _spread_evidence(check, batch, counts, m, by="_by_version")
    check.evidence("envoy_by_cluster", counts.by_cluster())  # Envoy's own view per weighted cluster
    check.evidence("envoy_by_instance", counts.envoy)
    check.evidence("instances_by_instance", counts.app)
    check.evidence("source_disagreement_pct", m.disagreement_pct)
    check.figure("split_dev", m.max_dev_pp, "pp", m.served, f"{WORSE}, by version", min_n=p.requests)
    check.judge()


@pytest.mark.check("LB-4")
@needs(Upstream(min_instances=3, from_edge=True))
def test_lb4_consistent_hash_on_header(mesh, check, target):
    """RING_HASH / MAGLEV on x-user: a key sticks to one endpoint; removing 1 of N moves ~1/N of keys.

    The endpoint that served each key is read from the answer body (its first downstream entry),
    so the upstream is the first service the edge service calls.
    """
    p, svc = check.p, target.service
    insts = sorted(mesh.instances_of(svc))
    algorithms = [a.upper() for a in p.algorithms]
    hashes: dict[str, lb.ConsistentHash] = {}
    evidence: dict[str, Any] = {}
    for algo in algorithms:
        hashes[algo], evidence[algo] = _hashed(mesh, check, svc, algo, insts, insts[-1])
    aff, mv = lb.least_affine(hashes), lb.most_moved(hashes)
    check.evidence("algorithms", evidence)
    check.evidence("hash_header", p.hash_header)
    check.figure("key_affinity", aff.affinity_pct, "%", aff.affinity_n,
                 f"answer bodies ({svc} instance per request), worst of {algorithms}",
                 min_n=p.keys * p.requests_per_key)
    check.figure("keys_moved_norm", mv.moved.norm, "", mv.moved.compared,
                 f"answer bodies, moved keys x N (N={len(insts)}) after removing 1 endpoint, worst of {algorithms}",
                 min_n=p.keys)
    check.judge()


def _drive_keys(mesh, check, svc: str, insts: list[str], per_key: int) -> tuple[Batch, lb.Counts]:
    """``per_key`` requests for each of ``keys`` header values, counted. The key also goes into the
    path (/lb4/<key>), which the answer body echoes, so every answer is tied to its key."""
    p = check.p
    key = [f"user-{i % p.keys}" for i in range(p.keys * per_key)]
    return _drive_counted(mesh, svc, insts, len(key), p.concurrency, headers=lambda i: {p.hash_header: key[i]},
                          path=lambda i: f"/lb4/{key[i]}")


def _hashed(mesh, check, svc: str, algo: str, insts: list[str], victim: str
            ) -> tuple[lb.ConsistentHash, dict[str, Any]]:
    """LB-4, one hash policy: the keys driven, then again with ``victim`` deregistered; it registers
    again, and every subscriber routes to it again, before the policy is restored."""
    p, addr = check.p, mesh.advertised[victim]
    with policy_control.applied(mesh, svc, ServicePolicy(lb_policy=algo, hash_header=p.hash_header), check) as a:
        b1, c1 = _drive_keys(mesh, check, svc, insts, p.requests_per_key)
        try:
            mesh.control(victim, "/meshbed/deregister")
            gone = scenario.everywhere(scenario.subscriber_urls(mesh, svc), convergence.lacks_host(svc, addr),
                                       10.0, f"{addr} to leave every subscriber")
            b2, c2 = _drive_keys(mesh, check, svc, insts, p.requests_per_key_after)
        finally:
            mesh.control(victim, "/meshbed/register")
            scenario.consul_shows(mesh.consul_client(), svc, [victim], "passing", deadline=20.0, interval=0.1)
            policy_control.wait_endpoints(mesh, svc, policy_control.current(mesh, svc))
    m = lb.consistent_hash(lb.per_key(b1.answers), lb.per_key(b2.answers), victim, insts)
    return m, {"policy": a.to_json(), "before": {"requests": lb.outcome(b1), "envoy": c1.envoy, "instances": c1.app,
                                                "source_disagreement_pct": c1.disagreement_pct},
               "removal_converged_s": max(gone.values()), "after": {"requests": lb.outcome(b2), "envoy": c2.envoy,
                                                                     "instances": c2.app, "removed": victim},
               **m.to_json()}


def _listed(svc: str, addresses: set[str], healthy: bool) -> convergence.Expectation:
    """Every one of ``addresses`` is listed in the cluster of ``svc``, (un)healthy."""
    def f(cs: dict[str, list[envoy_admin.HostStatus]]) -> bool:
        hosts = {x.address: x for x in cs.get(svc, [])}
        return all(a in hosts and hosts[a].healthy == healthy for a in addresses)
    return f


@contextlib.contextmanager
def _unhealthy(mesh, svc: str, instances: list[str], deadline: float = 15.0) -> Iterator[float]:
    """``instances`` (of ``svc``) fail their health checks for the block; yields the seconds until every
    subscriber lists them unhealthy (never: the deadline, a measured absence). Healthy again on exit:
    passing in Consul, healthy in every subscriber."""
    subs = scenario.subscriber_urls(mesh, svc)
    addrs = {mesh.advertised[i] for i in instances}
    try:
        scenario.set_health(mesh, instances, False)
        yield slowest(convergence.converge_times(subs, _listed(svc, addrs, False), time.time(), deadline), deadline)
    finally:
        scenario.set_health(mesh, instances, True)
        scenario.consul_shows(mesh.consul_client(), svc, instances, "passing", deadline=20.0, interval=0.1)
        scenario.everywhere(subs, _listed(svc, addrs, True), deadline, f"{sorted(addrs)} healthy in every subscriber")


@pytest.mark.quick
@pytest.mark.check("LB-5")
@needs(Upstream(all_serving=False, prefer="priorities"))
def test_lb5_priority_failover(mesh, check, target):
    """All priority-0 endpoints fail (Consul health critical): traffic moves to priority 1.

    An upstream whose instances already span priorities (in the topology) fails over to its own
    lower-priority instances; otherwise ``secondaries`` priority-1 instances are added.
    """
    p, svc = check.p, target.service
    live = sorted(mesh.instances_of(svc))
    best = min(mesh.instances[i].priority for i in live)
    primaries, declared = [i for i in live if mesh.instances[i].priority == best], \
        [i for i in live if mesh.instances[i].priority != best]
    with (contextlib.nullcontext(declared) if declared else scaled(mesh, svc, p.secondaries, priority=best + 1)) \
            as secondaries, \
            policy_control.applied(mesh, svc, ServicePolicy(lb_policy="ROUND_ROBIN"), check):
        insts = primaries + secondaries
        check.evidence("priorities_in_envoy", {x.hostname: x.priority for x in envoy_admin.clusters(
            next(iter(scenario.subscriber_urls(mesh, svc).values()))).get(svc, [])})
        b0, c0 = _drive_counted(mesh, svc, insts, 100, p.concurrency, keep_body=False)
        check.evidence("before_failure", {"requests": lb.outcome(b0), "envoy": c0.envoy, "instances": c0.app})
        with _unhealthy(mesh, svc, primaries) as failover_s:
            check.evidence("primaries_unhealthy_in_every_envoy_s", round(failover_s, 3))
            batch, counts = _drive_counted(mesh, svc, insts, p.requests, p.concurrency, keep_body=False)
    m = lb.failover(counts, secondaries, batch)
    check.evidence("secondaries", secondaries)
    _counts_evidence(check, batch, counts)
    check.evidence("secondary_share_by_source", {"envoy": m.secondary_envoy_pct, "instances": m.secondary_app_pct})
    check.figure("error_rate_after_ejection", m.error_pct, "%", m.requests,
                 "client answers (non-2xx) after every subscriber marked the primaries unhealthy", min_n=p.requests)
    check.figure("secondary_share", m.secondary_pct, "%", m.served, WORSE, min_n=p.requests)
    check.figure("failover_s", failover_s, "s", len(mesh.subscribers(svc)),
                 "envoy admin /clusters: health flipped -> primaries unhealthy in every subscriber")
    check.judge()


def _outlier_stats(mesh, svc: str) -> dict[str, dict[str, int]]:
    """Per subscriber: the outlier counters of every cluster serving ``svc``, whatever the control plane names it."""
    prefix = _OD.format(svc)
    out = {}
    for n, u in scenario.subscriber_urls(mesh, svc).items():
        st = discovery_helpers.service_stats(u, svc, "outlier_detection")
        out[n] = {k[len(prefix):]: v for k, v in st.items() if k.startswith(prefix)}
    return out


def _ejected(mesh, svc: str) -> dict[str, list[str]]:
    """Per subscriber: the hosts that currently fail its outlier check."""
    return {n: [x.hostname for x in envoy_admin.clusters(u).get(svc, []) if x.outlier_ejected]
            for n, u in scenario.subscriber_urls(mesh, svc).items()}


@contextlib.contextmanager
def _failing(mesh, inst: str) -> Iterator[None]:
    """``inst`` answers every request with a 5xx for the block."""
    try:
        mesh.control(inst, "/meshbed/fail", {"mode": "5xx", "ratio": 1.0})
        yield
    finally:
        mesh.control(inst, "/meshbed/fail", {"mode": "none"})


@pytest.mark.quick
@pytest.mark.check("LB-6")
@needs(Upstream(min_instances=2))
def test_lb6_outlier_detection_ejects_5xx_endpoint(mesh, check, target):
    """One endpoint answers 5xx: ejected after consecutive_5xx errors; retries keep clients whole.

    base_ejection_time is longer than the run, so each caller Envoy ejects the endpoint once and
    the figure is about that first ejection (re-admission after the ejection time is not measured).
    An ejection counts as within the threshold when the endpoint served that Envoy at most
    consecutive_5xx 5xx answers, plus the requests that were already in flight to it (measured:
    the endpoint's own max_in_flight - 1), which no ejection can recall.
    """
    p, svc = check.p, target.service
    insts = sorted(mesh.instances_of(svc))
    bad = insts[-1]
    pol = ServicePolicy(lb_policy="ROUND_ROBIN",
                        retries=Retries(retry_on="5xx,reset,connect-failure", num_retries=p.num_retries),
                        outlier_detection=OutlierDetection(consecutive_5xx=p.consecutive_5xx, interval_ms=1000,
                                                           base_ejection_time_ms=p.base_ejection_time_ms,
                                                           max_ejection_percent=50))
    with policy_control.applied(mesh, svc, pol, check):
        mesh.control(bad, "/meshbed/stats/reset")
        od0 = _outlier_stats(mesh, svc)
        with _failing(mesh, bad):
            batch, counts = _drive_counted(mesh, svc, insts, p.requests, p.concurrency, keep_body=False)
            od1, ejected_now, bad_stats = _outlier_stats(mesh, svc), _ejected(mesh, svc), _app_stats(mesh, bad)
    # every answer of `bad` is a 5xx: its per-host rq_total in each caller Envoy counts the 5xx it saw
    m = lb.outlier_ejections(od0, od1, counts.sent_to(svc, bad, od1), p.consecutive_5xx,
                             bad_stats.get("max_in_flight", 1), ejected_now)
    check.evidence("bad_endpoint", {
        "instance": bad, "fault": {"mode": "5xx", "ratio": 1.0},
        "its_stats": {k: bad_stats.get(k) for k in ("requests", "by_status", "max_in_flight")},
        "in_flight_allowance": m.in_flight_allowance, "consecutive_5xx": p.consecutive_5xx})
    check.evidence("per_envoy", m.per_envoy)
    _counts_evidence(check, batch, counts)
    check.figure("ejecting_envoys", m.pct, "%", m.n,
                 f"envoy /stats {_OD.format(svc)}{lb.EJECTIONS} and per-host rq_total of the failing endpoint, "
                 "per caller Envoy that sent to it: ejected with <= consecutive_5xx (+ in-flight) 5xx per ejection",
                 min_n=len(mesh.subscribers(svc)))
    check.figure("client_success", lb.success_pct(batch), "%", batch.n, "client answers (2xx)", min_n=p.requests)
    check.judge()
