"""Apply a ServicePolicy to a running mesh and wait until every subscribed Envoy shows it.

A policy change is a Consul KV write (``meshbed/services/<svc>``); the
control plane turns it into CDS/RDS. "Shows it" is judged on each subscriber
Envoy's own ``/config_dump``: every active dynamic cluster of the service
(``svc`` and ``svc~<version>`` per weight) and every route action that
targets the service must match what the policy asks for. Matching is on
the policy's own fields only (LB policy, outlier detection, circuit
breakers; route target and weights, timeout, retries, hash policy), taken
from what the reference control plane's resource builders make of the
policy, so any control plane that honours the contract passes, whatever
else it sets. A stale field (an old hash policy, a removed weight, a
leftover ``svc~<version>`` cluster) still counts as not-yet.

Optionally (``endpoints=True``) it also waits until every cluster of the
service lists exactly the instances Consul has as passing (filtered by
version for ``svc~<version>``), healthy, so traffic can start at once.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from google.protobuf.json_format import MessageToDict

from . import wait
from .controlplane import resources
from .observe import envoy_admin
from .policy import KV_SERVICES_PREFIX, ServicePolicy

_CLUSTERS_DUMP = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
_ROUTES_DUMP = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"


@dataclass
class Applied:
    """What apply() measured: seconds from the KV write until each Envoy showed the policy."""

    service: str
    policy: dict[str, Any]
    per_envoy_s: dict[str, float] = field(default_factory=dict)
    endpoints_s: float | None = None
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "policy": self.policy,
                "per_envoy_s": {k: round(v, 3) for k, v in self.per_envoy_s.items()},
                "endpoints_s": None if self.endpoints_s is None else round(self.endpoints_s, 3),
                "elapsed_s": round(self.elapsed_s, 3)}


def _as_dict(msg: Any) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def _norm(v: Any) -> Any:
    """Make proto-JSON from Envoy and from Python comparable (ints vs floats, '@type' dropped)."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if k != "@type"}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


_CLUSTER_POLICY_FIELDS = ("lb_policy", "outlier_detection", "circuit_breakers", "ring_hash_lb_config",
                          "maglev_lb_config", "least_request_lb_config")
_ROUTE_POLICY_FIELDS = ("timeout", "retry_policy", "hash_policy")


def _cluster_policy(c: dict[str, Any]) -> dict[str, Any]:
    """The policy-bearing part of a cluster (ROUND_ROBIN is proto3's default, omitted when unset)."""
    out = {k: _norm(c[k]) for k in _CLUSTER_POLICY_FIELDS if k in c}
    out.setdefault("lb_policy", "ROUND_ROBIN")
    return out


def _route_policy(a: dict[str, Any]) -> dict[str, Any]:
    """The policy-bearing part of a route action: its targets with weights, timeout, retries, hash."""
    out = {k: _norm(a[k]) for k in _ROUTE_POLICY_FIELDS if k in a}
    if "cluster" in a:
        out["targets"] = {a["cluster"]: 1.0}
    else:
        out["targets"] = {c.get("name", ""): _norm(c.get("weight", 0))
                          for c in a.get("weighted_clusters", {}).get("clusters", [])}
    return out


def expected_clusters(service: str, policy: ServicePolicy) -> dict[str, dict[str, Any]]:
    return {n: _cluster_policy(_as_dict(resources.eds_cluster(n, policy)))
            for n in resources.service_clusters(service, policy)}


def expected_route_action(service: str, policy: ServicePolicy) -> dict[str, Any]:
    return _route_policy(_as_dict(resources.route_action(service, policy)))


def _dump(admin_url: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(active dynamic clusters by name, every route action) from one Envoy's /config_dump."""
    data = envoy_admin.config_dump(admin_url, include_eds=False, timeout=3.0)
    clusters: dict[str, dict[str, Any]] = {}
    actions: list[dict[str, Any]] = []
    for cfg in data.get("configs", []):
        t = cfg.get("@type")
        if t == _CLUSTERS_DUMP:
            for c in cfg.get("dynamic_active_clusters", []):
                cl = c.get("cluster", {})
                clusters[cl.get("name", "")] = cl
        elif t == _ROUTES_DUMP:
            for rc in cfg.get("dynamic_route_configs", []):
                for vh in rc.get("route_config", {}).get("virtual_hosts", []):
                    for r in vh.get("routes", []):
                        if "route" in r:
                            actions.append(r["route"])
    return clusters, actions


def _action_service(action: dict[str, Any]) -> set[str]:
    names = [action["cluster"]] if "cluster" in action else \
        [c.get("name", "") for c in action.get("weighted_clusters", {}).get("clusters", [])]
    return {resources.split_cluster_name(n)[0] for n in names}


def shows(admin_url: str, service: str, policy: ServicePolicy) -> tuple[bool, str]:
    """Does this Envoy's config_dump show ``policy`` for ``service``? (ok, what differs)."""
    clusters, actions = _dump(admin_url)
    want = expected_clusters(service, policy)
    have = {n for n in clusters if resources.split_cluster_name(n)[0] == service}
    if have != set(want):
        return False, f"clusters {sorted(have)} != {sorted(want)}"
    for n, exp in want.items():
        got = _cluster_policy(clusters[n])
        if got != exp:
            diff = sorted(k for k in set(got) | set(exp) if got.get(k) != exp.get(k))
            return False, f"cluster {n} differs in {diff}"
    ra = expected_route_action(service, policy)
    mine = [a for a in actions if service in _action_service(a)]
    if not mine:
        return False, f"no route to {service}"
    for a in mine:
        got = _route_policy(a)
        if got != ra:
            diff = sorted(k for k in set(got) | set(ra) if got.get(k) != ra.get(k))
            return False, f"route action to {service} differs in {diff}"
    return True, ""


def _passing(mesh: Any, service: str) -> list[Any]:
    return [i for i in mesh.consul_client().instances(service) if i.status == "passing"]


def endpoints_ready(mesh: Any, service: str, policy: ServicePolicy) -> tuple[bool, str]:
    """Every subscriber's every cluster of ``service`` has exactly Consul's passing instances, healthy."""
    passing = _passing(mesh, service)
    for node, h in mesh.subscribers(service).items():
        cs = envoy_admin.clusters(h.url("admin"))
        for name in resources.service_clusters(service, policy):
            _, ver = resources.split_cluster_name(name)
            want = {i.address for i in passing if ver is None or i.meta.get("version") == ver}
            got = {x.address for x in cs.get(name, []) if x.healthy}
            if got != want:
                return False, f"{node}:{name} healthy {sorted(got)} != consul {sorted(want)}"
    return True, ""


def wait_applied(mesh: Any, service: str, policy: ServicePolicy, deadline: float = 15.0,
                 t0: float | None = None) -> dict[str, float]:
    """Poll every subscriber until it shows ``policy``; seconds from ``t0`` per Envoy."""
    t0 = time.monotonic() if t0 is None else t0
    subs = {n: h.url("admin") for n, h in mesh.subscribers(service).items()}
    seen: dict[str, float] = {}

    def probe() -> bool:
        missing = []
        for n, url in subs.items():
            if n in seen:
                continue
            ok, why = shows(url, service, policy)
            if ok:
                seen[n] = time.monotonic() - t0
            else:
                missing.append(f"{n}: {why}")
        if missing:
            raise wait.NotYet("; ".join(missing[:4]))
        return True

    wait.until(probe, deadline, interval=0.05, what=f"every subscriber of {service} to show policy {policy.to_json()}",
               hint="check the control plane log (bad KV JSON keeps the previous policy) and Envoy's update_rejected")
    return seen


def wait_endpoints(mesh: Any, service: str, policy: ServicePolicy, deadline: float = 15.0) -> float:
    t0 = time.monotonic()

    def probe() -> bool:
        ok, why = endpoints_ready(mesh, service, policy)
        if not ok:
            raise wait.NotYet(why)
        return True

    wait.until(probe, deadline, interval=0.05, converge=2,
               what=f"every subscriber of {service} to list Consul's passing instances in each cluster",
               hint="is every instance registered and passing in Consul?")
    return time.monotonic() - t0


def apply(mesh: Any, service: str, policy: ServicePolicy, deadline: float = 15.0,
          endpoints: bool = True) -> Applied:
    """Write ``policy`` to Consul KV and wait until every subscriber Envoy shows it."""
    t0 = time.monotonic()
    mesh.consul_client().kv_put(KV_SERVICES_PREFIX + service, policy.to_json())
    per = wait_applied(mesh, service, policy, deadline, t0)
    a = Applied(service, policy.to_json(), per)
    if endpoints:
        a.endpoints_s = wait_endpoints(mesh, service, policy, deadline)
    a.elapsed_s = time.monotonic() - t0
    return a


def current(mesh: Any, service: str) -> ServicePolicy:
    """The policy stored in Consul KV now (the topology's default when there is none)."""
    doc = mesh.consul_client().kv_get_json(KV_SERVICES_PREFIX + service)
    return ServicePolicy() if doc is None else ServicePolicy.from_json(doc, where=f"kv {service}")


def baseline(mesh: Any, service: str) -> ServicePolicy:
    return mesh.topology.services[service].policy


def restore(mesh: Any, service: str, deadline: float = 15.0) -> Applied:
    """Put the topology's baseline policy back and wait until every subscriber shows it."""
    return apply(mesh, service, baseline(mesh, service), deadline, endpoints=False)


@contextlib.contextmanager
def applied(mesh: Any, service: str, policy: ServicePolicy, deadline: float = 15.0,
            endpoints: bool = True) -> Iterator[Applied]:
    """``with applied(mesh, "backend", pol) as a:`` -- the baseline policy is restored on exit."""
    try:
        yield apply(mesh, service, policy, deadline, endpoints)
    finally:
        restore(mesh, service, deadline)
