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
from meshbed.observe import envoy_admin
from meshbed.policy import OutlierDetection, Retries, ServicePolicy
from meshbed.stats import chi_square, rate_pct
from meshbed.traffic import Batch, drive

pytestmark = [pytest.mark.lb, pytest.mark.integration]

SERVICE = "backend"
ENVOY_SRC = "envoy admin /clusters rq_total (frontend sidecars)"
APP_SRC = "instance /meshbed/stats"


# -- counting --------------------------------------------------------------

def _post(mesh, instance: str, path: str, body: Any = None) -> None:
    r = httpc.request("POST", mesh.apps[instance].url("http", path), body, timeout=5)
    assert r.status == 200, f"{instance} {path}: HTTP {r.status} {r.text[:200]}"


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


def shares(counts: dict[str, int]) -> dict[str, float]:
    tot = sum(counts.values())
    return {k: (v / tot if tot else float("nan")) for k, v in counts.items()}


def spread_stats(counts: dict[str, int], expected: dict[str, float]) -> dict[str, Any]:
    keys = sorted(expected)
    sh = shares({k: counts.get(k, 0) for k in keys})
    stat, p = chi_square([counts.get(k, 0) for k in keys], [expected[k] for k in keys])
    return {"counts": {k: counts.get(k, 0) for k in keys}, "shares": {k: round(sh[k], 5) for k in keys},
            "expected": {k: round(expected[k], 5) for k in keys},
            "max_dev_pp": max(abs(sh[k] - expected[k]) * 100 for k in keys), "chi2": stat, "chi2_p": p}


def disagreement_pct(env: dict[str, int], app: dict[str, int]) -> float:
    se, sa = shares(env), shares(app)
    return max(abs(se[k] - sa[k]) * 100 for k in env)


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


@contextlib.contextmanager
def policy(mesh, check, pol: ServicePolicy, service: str = SERVICE) -> Iterator[policy_control.Applied]:
    """Apply a policy for the block (evidence: how long each Envoy took); baseline restored after."""
    with policy_control.applied(mesh, service, pol) as a:
        check.evidence("policy", a.to_json())
        yield a


# -- checks ----------------------------------------------------------------

@pytest.mark.quick
@pytest.mark.check("LB-1")
def test_lb1_round_robin_spread(mesh, check):
    """ROUND_ROBIN: every endpoint gets 1/N of >= 3000 requests, from both sources."""
    n_req = int(check.param("requests", 3000))
    conc = int(check.param("concurrency", 4))
    insts = sorted(mesh.instances_of(SERVICE))
    expected = {i: 1 / len(insts) for i in insts}
    with policy(mesh, check, ServicePolicy(lb_policy="ROUND_ROBIN")):
        c = Counter(mesh, insts)
        batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
        env, app, raw = c.settle()
    se, sa = spread_stats(env, expected), spread_stats(app, expected)
    served = sum(env.values())
    check.evidence("requests", outcome(batch))
    check.evidence("envoy", se)
    check.evidence("instances", sa)
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
    n_req = int(check.param("requests", 600))
    latency_ms = int(check.param("latency_ms", 200))
    conc = int(check.param("concurrency", 8))
    insts = sorted(mesh.instances_of(SERVICE))
    slow = insts[-1]
    fair = 1 / len(insts)
    with policy(mesh, check, ServicePolicy(lb_policy="LEAST_REQUEST")):
        with faults.latency(toxi, mesh.links["upstream"][slow], latency_ms, log=fault_log):
            c = Counter(mesh, insts)
            batch = drive(mesh.ingress_url, n_req, concurrency=conc, keep_body=False)
            env, app, raw = c.settle()
    se, sa = shares(env), shares(app)
    ratio_env, ratio_app = se[slow] / fair, sa[slow] / fair
    served = sum(env.values())
    check.evidence("requests", outcome(batch))
    check.evidence("slow_endpoint", {"instance": slow, "proxy": mesh.links["upstream"][slow],
                                     "latency_ms": latency_ms, "fair_share": fair})
    check.evidence("envoy", spread_stats(env, {i: fair for i in insts}))
    check.evidence("instances", spread_stats(app, {i: fair for i in insts}))
    check.evidence("envoy_per_frontend", raw)
    check.evidence("slow_share_ratio_by_source", {"envoy": ratio_env, "instances": ratio_app})
    check.evidence("source_disagreement_pct", disagreement_pct(env, app))
    check.figure("slow_share_ratio", max(ratio_env, ratio_app), "", served,
                 f"worse of {ENVOY_SRC} / {APP_SRC}; share of the slow endpoint / (1/N)", min_n=n_req)
    check.judge()
