"""The policy contract: what an Envoy must show for a meshbed policy, whoever configured it.

Written from Envoy's v3 API reference (field defaults included) and the
meaning of each policy field (``meshbed.policy``), never from a control
plane's code. Each fact is the least an Envoy must show for the policy to
hold; fields the contract does not name are free (a control plane may set
``retry_back_off``, ring sizes, connect timeouts or anything else as it likes).
A field set explicitly to Envoy's default counts the same as a field left out.

Input is one Envoy's ``/config_dump`` (admin JSON, proto field names), reduced
to an :class:`EnvoyView`. Which clusters belong to a service is read from the
routes (the virtual host matching the service's Host, or the ingress routes
for it), not from cluster names. Whether each weighted target serves the
right version is a fact about endpoints (:func:`weighted_targets_ok`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .policy import CircuitBreaker, MeshPolicy, OutlierDetection, Retries, ServicePolicy

_CLUSTERS_DUMP = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
_ROUTES_DUMP = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"
_LISTENERS_DUMP = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Envoy's documented defaults for the fields the contract names
DEFAULT_ROUTE_TIMEOUT_MS = 15000  # RouteAction.timeout
DEFAULT_NUM_RETRIES = 1  # RetryPolicy.num_retries
OUTLIER_DEFAULTS = {"consecutive_5xx": 5, "interval_ms": 10000, "base_ejection_time_ms": 30000,
                    "max_ejection_percent": 10, "enforcing_consecutive_5xx": 100}
BREAKER_DEFAULTS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}
DEFAULT_SAMPLING_PERCENT = 100.0  # Tracing.random_sampling
PREVIOUS_HOSTS = ("envoy.retry_host_predicates.previous_hosts",
                  "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")
# Cluster.lb_policy, or the same algorithm as a load_balancing_policy extension
_LB_EXTENSIONS = {
    "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": "ROUND_ROBIN",
    "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": "LEAST_REQUEST",
    "envoy.extensions.load_balancing_policies.random.v3.Random": "RANDOM",
    "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash": "RING_HASH",
    "envoy.extensions.load_balancing_policies.maglev.v3.Maglev": "MAGLEV",
}


@dataclass
class RouteEntry:
    """One route of a route config: where it matches and its action (proto JSON)."""

    route_config: str
    domains: tuple[str, ...]
    prefix: str | None
    action: dict[str, Any]
    vhost_retry_policy: dict[str, Any] | None = None
    vhost: str = ""  # the virtual host's name (Consul Connect names it <service>.<ns>.<partition>.<dc>)


@dataclass
class EnvoyView:
    """The parts of one Envoy's config the contract reads."""

    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)  # active dynamic clusters by name
    routes: list[RouteEntry] = field(default_factory=list)
    listeners: dict[str, dict[str, Any]] = field(default_factory=dict)  # active dynamic listeners by name


def view(config_dump: Mapping[str, Any]) -> EnvoyView:
    """Reduce an admin ``/config_dump`` (without EDS) to what the contract reads."""
    v = EnvoyView()
    for cfg in config_dump.get("configs", []):
        t = cfg.get("@type")
        if t == _CLUSTERS_DUMP:
            for c in cfg.get("dynamic_active_clusters", []):
                cl = c.get("cluster", {})
                v.clusters[cl.get("name", "")] = cl
        elif t == _ROUTES_DUMP:
            for rc in cfg.get("dynamic_route_configs", []):
                _add_routes(v, rc.get("route_config", {}))
        elif t == _LISTENERS_DUMP:
            for lis in cfg.get("dynamic_listeners", []):
                active = lis.get("active_state", {}).get("listener")
                if active:
                    v.listeners[lis.get("name", "")] = active
                    for conf in _inline_route_configs(active):  # e.g. Consul's upstream listeners
                        _add_routes(v, conf)
    return v


def _add_routes(v: EnvoyView, conf: Mapping[str, Any]) -> None:
    """Every route that can carry traffic: a route whose match repeats an earlier one of its virtual
    host is never reached (first match wins), e.g. the catch-all Consul appends after a router's."""
    for vh in conf.get("virtual_hosts", []):
        seen: list[Any] = []
        for r in vh.get("routes", []):
            if r.get("match") in seen:
                continue
            seen.append(r.get("match"))
            if "route" in r:
                v.routes.append(RouteEntry(conf.get("name", ""), tuple(vh.get("domains", [])),
                                           r.get("match", {}).get("prefix"), r["route"],
                                           vh.get("retry_policy"), str(vh.get("name", ""))))


def _inline_route_configs(listener: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Route configs given inline in a listener's HTTP connection managers (not by RDS)."""
    out = []
    for fc in listener.get("filter_chains", []):
        for f in fc.get("filters", []):
            tc = f.get("typed_config", {})
            if str(tc.get("@type", "")).endswith(_HCM) and "route_config" in tc:
                out.append(tc["route_config"])
    return out


# -- helpers on proto JSON ---------------------------------------------------

_DUR = re.compile(r"^(-?\d+(?:\.\d+)?)s$")


def duration_ms(v: Any) -> float | None:
    """Proto JSON Duration ('1.500s') -> milliseconds; None when absent."""
    if v is None:
        return None
    m = _DUR.match(str(v))
    return float(m.group(1)) * 1000.0 if m else None


def _u32(v: Any, default: int) -> int:
    """A UInt32Value in proto JSON is a bare number (or a string of one); absent -> the default."""
    if v is None:
        return default
    if isinstance(v, dict):
        v = v.get("value", default)
    return int(v)


def targets(action: Mapping[str, Any]) -> dict[str, float]:
    """A route action's target clusters -> weight (a single cluster has weight 1)."""
    if "cluster" in action:
        return {str(action["cluster"]): 1.0}
    wc = action.get("weighted_clusters", {})
    return {str(c.get("name", "")): float(_u32(c.get("weight"), 0)) for c in wc.get("clusters", [])}


def service_routes(v: EnvoyView, service: str, ingress_prefixes: Iterable[str] = ()) -> list[RouteEntry]:
    """Routes that carry traffic for ``service``: its Host virtual host, or the ingress prefixes routed to it."""
    prefixes = set(ingress_prefixes)
    hosts = {service, f"{service}:*"}
    return [r for r in v.routes if hosts & set(r.domains) or _connect_vhost(r, service)
            or (r.prefix is not None and r.prefix in prefixes and "*" in r.domains)]


def _connect_vhost(r: RouteEntry, service: str) -> bool:
    """Consul Connect routes by listener, not Host: its virtual host for a service matches every
    domain and is named ``<service>`` (RDS, with a router) or ``<service>.<ns>.<partition>.<dc>`` (inline)."""
    return "*" in r.domains and (r.vhost == service or (r.vhost.startswith(service + ".") and r.vhost.count(".") == 3))


def service_clusters(v: EnvoyView, service: str, ingress_prefixes: Iterable[str] = ()) -> set[str]:
    return {c for r in service_routes(v, service, ingress_prefixes) for c in targets(r.action)}


def effective_lb(cluster: Mapping[str, Any]) -> str:
    lbp = cluster.get("load_balancing_policy")
    if lbp:
        for p in lbp.get("policies", []):
            t = str(p.get("typed_extension_config", {}).get("typed_config", {}).get("@type", ""))
            name = _LB_EXTENSIONS.get(t.rsplit("/", 1)[-1])
            if name:
                return name
    return str(cluster.get("lb_policy", "ROUND_ROBIN"))


# -- the facts, one per policy field ------------------------------------------

def lb_facts(cluster: Mapping[str, Any], policy: ServicePolicy) -> list[str]:
    got = effective_lb(cluster)
    return [] if got == policy.lb_policy else [f"lb_policy {got}, wants {policy.lb_policy}"]


def hash_facts(action: Mapping[str, Any], policy: ServicePolicy) -> list[str]:
    if policy.lb_policy not in ("RING_HASH", "MAGLEV") or not policy.hash_header:
        return []
    headers = {str(h.get("header", {}).get("header_name", "")).lower() for h in action.get("hash_policy", [])}
    return [] if policy.hash_header.lower() in headers else [f"hash_policy headers {sorted(headers)}, "
                                                               f"wants {policy.hash_header}"]


def weight_facts(action: Mapping[str, Any], policy: ServicePolicy) -> list[str]:
    """Weights: as many non-zero targets as non-zero policy weights, in the same proportions."""
    want = sorted(w for w in policy.weights.values() if w > 0)
    got = sorted(w for w in targets(action).values() if w > 0)
    if not policy.weights:
        return [] if len(got) == 1 else [f"{len(got)} weighted targets, wants one cluster"]
    if len(got) != len(want):
        return [f"{len(got)} weighted targets, wants {len(want)} ({policy.weights})"]
    ws, gs = sum(want), sum(got)
    if any(abs(a / ws - b / gs) > 1e-6 for a, b in zip(want, got)):
        return [f"target weights {got}, wants proportions of {want}"]
    return []


def timeout_facts(action: Mapping[str, Any], policy: ServicePolicy) -> list[str]:
    got = duration_ms(action.get("timeout"))
    got = DEFAULT_ROUTE_TIMEOUT_MS if got is None else got
    return [] if abs(got - policy.timeout_ms) < 0.5 else [f"route timeout {got:g} ms, wants {policy.timeout_ms}"]


def retry_facts(action: Mapping[str, Any], vhost_retry: Mapping[str, Any] | None, r: Retries | None) -> list[str]:
    """Retries: the policy's conditions at least, its count, per-try timeout, and a retry to another host."""
    if r is None:
        return []
    rp = action.get("retry_policy") or vhost_retry
    if not rp:
        return ["no retry_policy"]
    out = []
    want = {c.strip() for c in r.retry_on.split(",") if c.strip()}
    got = {c.strip() for c in str(rp.get("retry_on", "")).split(",") if c.strip()}
    if not want <= got:
        out.append(f"retry_on lacks {sorted(want - got)}")
    if _u32(rp.get("num_retries"), DEFAULT_NUM_RETRIES) != r.num_retries:
        out.append(f"num_retries {_u32(rp.get('num_retries'), DEFAULT_NUM_RETRIES)}, wants {r.num_retries}")
    if r.per_try_timeout_ms > 0 and duration_ms(rp.get("per_try_timeout")) != float(r.per_try_timeout_ms):
        out.append(f"per_try_timeout {rp.get('per_try_timeout')}, wants {r.per_try_timeout_ms} ms")
    preds = rp.get("retry_host_predicate", [])
    names = {str(p.get("name", "")) for p in preds} | \
        {str(p.get("typed_config", {}).get("@type", "")).rsplit("/", 1)[-1] for p in preds}
    if not names & set(PREVIOUS_HOSTS):
        out.append("retries may return to the failed host (no previous_hosts retry predicate)")
    return out


def _ms_or(v: Any, default: int) -> float:
    """A proto JSON Duration in ms, or Envoy's default when the field is absent (an explicit 0s stays 0)."""
    ms = duration_ms(v)
    return float(default) if ms is None else ms


def outlier_facts(cluster: Mapping[str, Any], od: OutlierDetection | None) -> list[str]:
    if od is None:
        return []
    o = cluster.get("outlier_detection")
    if o is None:
        return ["no outlier_detection"]
    got = {"consecutive_5xx": _u32(o.get("consecutive_5xx"), OUTLIER_DEFAULTS["consecutive_5xx"]),
           "interval_ms": _ms_or(o.get("interval"), OUTLIER_DEFAULTS["interval_ms"]),
           "base_ejection_time_ms": _ms_or(o.get("base_ejection_time"), OUTLIER_DEFAULTS["base_ejection_time_ms"]),
           "max_ejection_percent": _u32(o.get("max_ejection_percent"), OUTLIER_DEFAULTS["max_ejection_percent"]),
           "enforcing_consecutive_5xx": _u32(o.get("enforcing_consecutive_5xx"),
                                             OUTLIER_DEFAULTS["enforcing_consecutive_5xx"])}
    want = {"consecutive_5xx": od.consecutive_5xx, "interval_ms": od.interval_ms,
            "base_ejection_time_ms": od.base_ejection_time_ms, "max_ejection_percent": od.max_ejection_percent,
            "enforcing_consecutive_5xx": 100}
    return [f"outlier_detection.{k} {got[k]:g}, wants {want[k]}" for k in want if float(got[k]) != float(want[k])]


def breaker_facts(cluster: Mapping[str, Any], cb: CircuitBreaker | None) -> list[str]:
    if cb is None:
        return []
    ths = [t for t in cluster.get("circuit_breakers", {}).get("thresholds", [])
           if t.get("priority", "DEFAULT") == "DEFAULT"]
    if not ths:
        return ["no circuit_breakers thresholds for priority DEFAULT"]
    t = ths[0]
    out = []
    for k, default in BREAKER_DEFAULTS.items():
        got, want = _u32(t.get(k), default), getattr(cb, k)
        if got != want:
            out.append(f"circuit_breakers.{k} {got}, wants {want}")
    return out


def service_facts(v: EnvoyView, service: str, policy: ServicePolicy,
                  ingress_prefixes: Iterable[str] = ()) -> list[str]:
    """Every way this Envoy's config falls short of ``policy`` for ``service`` ([] when it shows it)."""
    routes = service_routes(v, service, ingress_prefixes)
    if not routes:
        return [f"no route to {service}"]
    out: list[str] = []
    for r in routes:
        where = f"route {r.route_config}{'/' + r.prefix if r.prefix and r.prefix != '/' else ''}: "
        problems = (weight_facts(r.action, policy) + timeout_facts(r.action, policy)
                    + hash_facts(r.action, policy) + retry_facts(r.action, r.vhost_retry_policy, policy.retries))
        out += [where + p for p in problems]
        for name in targets(r.action):
            c = v.clusters.get(name)
            if c is None:
                out.append(f"{where}target cluster {name} is not an active cluster")
                continue
            out += [f"cluster {name}: {p}" for p in lb_facts(c, policy) + outlier_facts(c, policy.outlier_detection)
                    + breaker_facts(c, policy.circuit_breaker)]
    return out


def edge_sampling(v: EnvoyView) -> list[float]:
    """random_sampling of every HTTP connection manager on this (ingress) Envoy's listeners."""
    out = []
    for lis in v.listeners.values():
        for fc in lis.get("filter_chains", []):
            for f in fc.get("filters", []):
                tc = f.get("typed_config", {})
                if str(tc.get("@type", "")).endswith(_HCM):
                    rs = tc.get("tracing", {}).get("random_sampling")
                    out.append(DEFAULT_SAMPLING_PERCENT if rs is None else float(rs.get("value", 0.0)))
    return out


def mesh_facts(v: EnvoyView, mesh: MeshPolicy) -> list[str]:
    """The edge (ingress) samples ``sampling_percent`` of new traces on every HTTP listener."""
    got = edge_sampling(v)
    if not got:
        return ["no HTTP listener with tracing"]
    bad = [g for g in got if abs(g - mesh.sampling_percent) > 1e-6]
    return [f"random_sampling {bad}, wants {mesh.sampling_percent:g}"] if bad else []


def weighted_targets_ok(v: EnvoyView, service: str, policy: ServicePolicy, hosts: Mapping[str, set[str]],
                        passing: Mapping[str, str], ingress_prefixes: Iterable[str] = ()) -> list[str]:
    """Endpoints behind each route target: the version the weight is for, and nothing else.

    ``hosts``: cluster -> healthy endpoint addresses this Envoy lists; ``passing``: address ->
    version of every instance Consul has passing. Without weights every target lists every
    passing instance. With weights each non-zero target lists exactly the passing instances of
    one version, and its share of the total weight is that version's share.
    """
    out = []
    for r in service_routes(v, service, ingress_prefixes):
        tg = {n: w for n, w in targets(r.action).items() if w > 0}
        if not policy.weights:
            for n in tg:
                if hosts.get(n, set()) != set(passing):
                    out.append(f"{n} lists {sorted(hosts.get(n, set()))}, consul passing {sorted(passing)}")
            continue
        total_w, total_p = sum(tg.values()), sum(w for w in policy.weights.values() if w > 0)
        for n, w in tg.items():
            got = hosts.get(n, set())
            versions = {passing.get(a) for a in got}
            if len(versions) != 1 or None in versions:
                out.append(f"{n} lists {sorted(got)}: not the instances of one version")
                continue
            (ver,) = versions
            want = {a for a, vv in passing.items() if vv == ver}
            if got != want:
                out.append(f"{n} lists {sorted(got)}, consul passing {ver}: {sorted(want)}")
            elif abs(w / total_w - policy.weights.get(str(ver), 0) / total_p) > 1e-6:
                out.append(f"{n} (version {ver}) has weight share {w / total_w:.3f}, "
                           f"wants {policy.weights.get(str(ver), 0) / total_p:.3f}")
    return out
