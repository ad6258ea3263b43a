"""Pure functions: node metadata + mesh state -> Envoy xDS resources.

No I/O and no clocks here, so the exact Envoy config a node gets is a
function of its inputs and can be unit-tested and content-hashed.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    health_check_pb2,
    substitution_format_string_pb2,
)
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2

from . import zipkin
from ..nodemeta import NodeMeta
from ..policy import MeshPolicy, ServicePolicy
from .catalog import DEGRADED, HEALTHY, UNHEALTHY, Instance

LOCAL_APP = "local_app"
RESERVED_CLUSTERS = frozenset({"xds_cluster", "jaeger_otlp"})
VERSION_SEP = "~"

ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %DURATION%ms "
    'rid=%REQ(X-REQUEST-ID)% tp=%REQ(TRACEPARENT)% up=%UPSTREAM_CLUSTER%\n'
)

_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "RING_HASH": cluster_pb2.Cluster.RING_HASH,
    "MAGLEV": cluster_pb2.Cluster.MAGLEV,
}
_HEALTH = {
    HEALTHY: health_check_pb2.HEALTHY,
    DEGRADED: health_check_pb2.DEGRADED,
    UNHEALTHY: health_check_pb2.UNHEALTHY,
}

Catalog = Mapping[str, Sequence[Instance]]
Policies = Mapping[str, ServicePolicy]


def _ms(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(ms))
    return d


def _pack(msg) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _policy(policies: Policies, service: str) -> ServicePolicy:
    return policies.get(service) or ServicePolicy()


def _socket(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=int(port)))


def _ads_source() -> config_source_pb2.ConfigSource:
    src = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    src.ads.SetInParent()
    return src


def service_clusters(service: str, policy: ServicePolicy) -> list[str]:
    """Cluster names a service needs: itself, plus ``svc~version`` per weighted version."""
    return [service] + [f"{service}{VERSION_SEP}{v}" for v in sorted(policy.weights)]


def split_cluster_name(name: str) -> tuple[str, str | None]:
    """``backend~v2`` -> (``backend``, ``v2``); ``backend`` -> (``backend``, None)."""
    if VERSION_SEP in name:
        svc, ver = name.split(VERSION_SEP, 1)
        return svc, ver
    return name, None


def eds_cluster(name: str, policy: ServicePolicy) -> cluster_pb2.Cluster:
    """An EDS-over-ADS cluster shaped by the service's policy; panic mode off."""
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=_ms(1000),
        lb_policy=_LB.get(policy.lb_policy, cluster_pb2.Cluster.ROUND_ROBIN),
    )
    c.eds_cluster_config.eds_config.CopyFrom(_ads_source())
    c.eds_cluster_config.service_name = name
    # 0: never route to unhealthy endpoints, even when most are unhealthy
    c.common_lb_config.healthy_panic_threshold.value = 0.0
    od = policy.outlier_detection
    if od is not None:
        c.outlier_detection.CopyFrom(
            outlier_detection_pb2.OutlierDetection(
                consecutive_5xx=wrappers_pb2.UInt32Value(value=od.consecutive_5xx),
                interval=_ms(od.interval_ms),
                base_ejection_time=_ms(od.base_ejection_time_ms),
                max_ejection_percent=wrappers_pb2.UInt32Value(value=od.max_ejection_percent),
            )
        )
    cb = policy.circuit_breaker
    if cb is not None:
        c.circuit_breakers.thresholds.append(
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=base_pb2.DEFAULT,
                max_connections=wrappers_pb2.UInt32Value(value=cb.max_connections),
                max_pending_requests=wrappers_pb2.UInt32Value(value=cb.max_pending_requests),
                max_requests=wrappers_pb2.UInt32Value(value=cb.max_requests),
                max_retries=wrappers_pb2.UInt32Value(value=cb.max_retries),
            )
        )
    return c


def static_cluster(name: str, host_port: str) -> cluster_pb2.Cluster:
    """A STATIC cluster with one endpoint, for the sidecar's local app."""
    host, _, port = host_port.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=_ms(1000))
    c.load_assignment.cluster_name = name
    lep = c.load_assignment.endpoints.add().lb_endpoints.add()
    lep.endpoint.address.CopyFrom(_socket(host, int(port or 0)))
    return c


def load_assignment(name: str, instances: Iterable[Instance]) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by (zone, priority); unhealthy ones kept but marked."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    groups: dict[tuple[str, int], list[Instance]] = {}
    for inst in instances:
        groups.setdefault((inst.zone, inst.priority), []).append(inst)
    for (zone, prio), insts in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        loc = cla.endpoints.add(priority=prio)
        if zone:
            loc.locality.zone = zone
        for inst in sorted(insts, key=lambda i: (i.instance, i.id)):
            lep = loc.lb_endpoints.add(health_status=_HEALTH.get(inst.health, health_check_pb2.UNKNOWN))
            lep.endpoint.address.CopyFrom(_socket(inst.address, inst.port))
            lep.endpoint.hostname = inst.instance
            md = struct_pb2.Struct()
            md.update({"instance": inst.instance, "version": inst.version})
            lep.metadata.filter_metadata["meshbed"].CopyFrom(md)
    return cla


def cluster_load_assignment(name: str, catalog: Catalog) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints of cluster ``name``: all instances, or only one version for ``svc~version``."""
    svc, ver = split_cluster_name(name)
    insts = catalog.get(svc, ())
    if ver is not None:
        insts = [i for i in insts if i.version == ver]
    return load_assignment(name, insts)


def route_action(service: str, policy: ServicePolicy) -> route_components_pb2.RouteAction:
    """Cluster or weighted version clusters, plus timeout, retries and hash policy."""
    ra = route_components_pb2.RouteAction(timeout=_ms(policy.timeout_ms))
    if policy.weights:
        for ver, w in sorted(policy.weights.items()):
            ra.weighted_clusters.clusters.add(
                name=f"{service}{VERSION_SEP}{ver}", weight=wrappers_pb2.UInt32Value(value=w)
            )
    else:
        ra.cluster = service
    r = policy.retries
    if r is not None:
        ra.retry_policy.retry_on = r.retry_on
        ra.retry_policy.num_retries.value = r.num_retries
        if r.per_try_timeout_ms > 0:
            ra.retry_policy.per_try_timeout.CopyFrom(_ms(r.per_try_timeout_ms))
        # a retry goes to a host not tried yet for this request (as Istio does by default);
        # without it round robin can hand the retry straight back to the failing endpoint
        ra.retry_policy.retry_host_predicate.add(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=_pack(previous_hosts_pb2.PreviousHostsPredicate()),
        )
        ra.retry_policy.host_selection_retry_max_attempts = 5
    if policy.lb_policy in ("RING_HASH", "MAGLEV") and policy.hash_header:
        ra.hash_policy.add().header.header_name = policy.hash_header
    return ra


def _route(prefix: str, action: route_components_pb2.RouteAction) -> route_components_pb2.Route:
    return route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=prefix), route=action)


def inbound_routes(meta: NodeMeta, policies: Policies) -> route_pb2.RouteConfiguration:
    """Route config ``inbound``: everything to the local app, with the node's own service timeout."""
    timeout = _policy(policies, meta.service).timeout_ms  # defaults to 15 s
    rc = route_pb2.RouteConfiguration(name="inbound")
    vh = rc.virtual_hosts.add(name="inbound", domains=["*"])
    vh.routes.append(_route("/", route_components_pb2.RouteAction(cluster=LOCAL_APP, timeout=_ms(timeout))))
    return rc


def outbound_routes(meta: NodeMeta, policies: Policies) -> route_pb2.RouteConfiguration:
    """Route config ``outbound``: one virtual host per upstream, matched by Host."""
    rc = route_pb2.RouteConfiguration(name="outbound")
    for svc in meta.upstreams:
        vh = rc.virtual_hosts.add(name=svc, domains=[svc, f"{svc}:*"])
        vh.routes.append(_route("/", route_action(svc, _policy(policies, svc))))
    return rc


def ingress_routes(meta: NodeMeta, policies: Policies) -> route_pb2.RouteConfiguration:
    """Route config ``ingress``: one virtual host, a prefix route per meta.routes entry."""
    rc = route_pb2.RouteConfiguration(name="ingress")
    vh = rc.virtual_hosts.add(name="ingress", domains=["*"])
    for r in meta.routes:
        vh.routes.append(_route(r.prefix, route_action(r.service, _policy(policies, r.service))))
    return rc


def http_connection_manager(
    name: str, route_config: str, meta: NodeMeta, sampling_percent: float
) -> hcm_pb2.HttpConnectionManager:
    """HCM with RDS over ADS, UUID request ids, OTel tracing and a file access log."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        generate_request_id=wrappers_pb2.BoolValue(value=True),
    )
    hcm.rds.config_source.CopyFrom(_ads_source())
    hcm.rds.route_config_name = route_config
    hcm.request_id_extension.typed_config.Pack(
        uuid_pb2.UuidRequestIdConfig(pack_trace_reason=wrappers_pb2.BoolValue(value=False))
    )
    otel = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=meta.trace_cluster)
        ),
        service_name=meta.trace_service or f"{meta.instance}-envoy",
    )
    hcm.tracing.provider.CopyFrom(
        http_tracer_pb2.Tracing.Http(name="envoy.tracers.opentelemetry", typed_config=_pack(otel))
    )
    if zipkin.is_zipkin(meta):  # tracing b3: the node's bootstrap has the Zipkin collector cluster
        hcm.tracing.provider.CopyFrom(zipkin.tracing_provider(meta))
    hcm.tracing.random_sampling.CopyFrom(percent_pb2.Percent(value=float(sampling_percent)))
    hcm.tracing.spawn_upstream_span.value = False
    fal = file_pb2.FileAccessLog(
        path=meta.access_log_path or "/dev/stdout",
        log_format=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=ACCESS_LOG_FORMAT)
        ),
    )
    hcm.access_log.append(accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=_pack(fal)))
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router()))
    return hcm


def http_listener(
    name: str, host: str, port: int, direction: int, meta: NodeMeta, sampling_percent: float
) -> listener_pb2.Listener:
    """A listener whose single filter chain is an HCM using RDS route config ``name``."""
    lis = listener_pb2.Listener(name=name, address=_socket(host, port), traffic_direction=direction)
    fc = lis.filter_chains.add()
    fc.filters.add(
        name="envoy.filters.network.http_connection_manager",
        typed_config=_pack(http_connection_manager(name, name, meta, sampling_percent)),
    )
    return lis


def node_services(meta: NodeMeta) -> list[str]:
    """Services whose endpoints the node needs (upstreams or ingress route targets), in order, unique."""
    names = meta.upstreams if meta.role == "sidecar" else tuple(r.service for r in meta.routes)
    return list(dict.fromkeys(names))


def clusters(meta: NodeMeta, policies: Policies) -> list[cluster_pb2.Cluster]:
    """CDS for a node: local_app (sidecar) + per-service and per-version EDS clusters."""
    out: list[cluster_pb2.Cluster] = []
    if meta.role == "sidecar" and meta.app_address:
        out.append(static_cluster(LOCAL_APP, meta.app_address))
    for svc in node_services(meta):
        pol = _policy(policies, svc)
        for name in service_clusters(svc, pol):
            if name not in RESERVED_CLUSTERS:
                out.append(eds_cluster(name, pol))
    return out


def endpoints(meta: NodeMeta, catalog: Catalog, policies: Policies) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """EDS for a node: one assignment per EDS cluster in its CDS (possibly empty)."""
    return [
        cluster_load_assignment(c.name, catalog)
        for c in clusters(meta, policies)
        if c.type == cluster_pb2.Cluster.EDS
    ]


def listeners(meta: NodeMeta, mesh: MeshPolicy) -> list[listener_pb2.Listener]:
    """LDS for a node: inbound (+ outbound if upstreams) for sidecars; ``ingress`` for ingresses."""
    out: list[listener_pb2.Listener] = []
    if meta.role == "sidecar":
        if meta.inbound_port:
            out.append(
                http_listener("inbound", meta.listen_address, meta.inbound_port, base_pb2.INBOUND, meta, 100.0)
            )
        if meta.upstreams and meta.outbound_port:
            out.append(
                http_listener("outbound", meta.listen_address, meta.outbound_port, base_pb2.OUTBOUND, meta, 100.0)
            )
    elif meta.role == "ingress":
        if meta.outbound_port:
            out.append(
                http_listener(
                    "ingress", meta.listen_address, meta.outbound_port, base_pb2.OUTBOUND, meta, mesh.sampling_percent
                )
            )
    return out


def routes(meta: NodeMeta, policies: Policies) -> list[route_pb2.RouteConfiguration]:
    """RDS for a node: one route config per listener, named like it."""
    if meta.role == "sidecar":
        out = [inbound_routes(meta, policies)] if meta.inbound_port else []
        if meta.upstreams and meta.outbound_port:
            out.append(outbound_routes(meta, policies))
        return out
    if meta.role == "ingress" and meta.outbound_port:
        return [ingress_routes(meta, policies)]
    return []
