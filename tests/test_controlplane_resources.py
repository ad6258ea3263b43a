"""Unit tests of the pure parts of the control plane: Consul parsing and resource building."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2

from meshbed.controlplane import resources
from meshbed.controlplane.catalog import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    Instance,
    MeshState,
    check_health,
    parse_health_entries,
    parse_kv_entries,
)
from meshbed.controlplane.snapshot import CDS, EDS, LDS, RDS, build_snapshot
from meshbed.nodemeta import NodeMeta, Route
from meshbed.policy import CircuitBreaker, MeshPolicy, OutlierDetection, Retries, ServicePolicy

SIDECAR = NodeMeta(role="sidecar", service="frontend", instance="frontend-1", inbound_port=15001,
                   app_address="127.0.0.1:8080", outbound_port=15002, upstreams=("backend",))
INGRESS = NodeMeta(role="ingress", service="ingress", instance="ingress-1", outbound_port=18080,
                   routes=(Route("/api", "backend"), Route("/", "frontend")), trace_service="edge")


def inst(i: str, version: str = "v1", zone: str = "z1", priority: int = 0, health: str = HEALTHY,
         port: int = 9000) -> Instance:
    return Instance(id=i, service="backend", address="127.0.0.1", port=port, instance=i, version=version,
                    zone=zone, priority=priority, health=health)


def entry(sid: str, checks: list[str], meta: dict[str, str] | None = None, address: str = "10.0.0.1") -> dict[str, Any]:
    return {"Node": {"Node": "n1", "Address": "192.168.0.9"},
            "Service": {"ID": sid, "Service": "backend", "Address": address, "Port": 9000, "Meta": meta or {}},
            "Checks": [{"Status": s} for s in checks]}


# -- catalog parsing -------------------------------------------------------

@pytest.mark.parametrize("statuses,want", [
    ([], HEALTHY), (["passing"], HEALTHY), (["passing", "warning"], DEGRADED),
    (["warning", "critical"], UNHEALTHY), (["passing", "critical"], UNHEALTHY),
])
def test_check_health_worst_wins(statuses: list[str], want: str) -> None:
    assert check_health([{"Status": s} for s in statuses]) == want


def test_parse_health_entries_reads_meta_and_falls_back_to_node_address() -> None:
    insts = parse_health_entries("backend", [
        entry("b-2", ["passing", "critical"], {"instance": "backend-2", "version": "v2", "zone": "z2", "priority": "1"}),
        entry("b-1", ["passing"], {}, address=""),
    ])
    assert [i.id for i in insts] == ["b-1", "b-2"]
    b1, b2 = insts
    assert (b1.address, b1.instance, b1.version, b1.priority, b1.health) == ("192.168.0.9", "b-1", "", 0, HEALTHY)
    assert (b2.address, b2.instance, b2.version, b2.zone, b2.priority, b2.health) == (
        "10.0.0.1", "backend-2", "v2", "z2", 1, UNHEALTHY)


def kv(key: str, value: Any) -> dict[str, Any]:
    raw = value if isinstance(value, str) else json.dumps(value)
    return {"Key": key, "Value": base64.b64encode(raw.encode()).decode()}


def test_parse_kv_policies_and_mesh() -> None:
    pols, mesh = parse_kv_entries([
        kv("meshbed/services/backend", {"lb_policy": "maglev", "hash_header": "x-user"}),
        kv("meshbed/mesh", {"sampling_percent": 10}),
        {"Key": "meshbed/", "Value": None},
    ], {}, MeshPolicy())
    assert pols["backend"].lb_policy == "MAGLEV" and mesh.sampling_percent == 10


def test_parse_kv_bad_json_keeps_previous_good_policy() -> None:
    good = ServicePolicy(timeout_ms=500)
    pols, mesh = parse_kv_entries([
        kv("meshbed/services/backend", "{not json"),
        kv("meshbed/services/other", {"lb_policy": "NOPE"}),
        kv("meshbed/mesh", {"sampling_percent": 500}),
    ], {"backend": good}, MeshPolicy(sampling_percent=3))
    assert pols == {"backend": good}  # other had no previous: defaults
    assert mesh.sampling_percent == 3


def test_parse_kv_404_means_defaults() -> None:
    assert parse_kv_entries(None, {"backend": ServicePolicy(timeout_ms=1)}, MeshPolicy(1)) == ({}, MeshPolicy())


# -- resources ---------------------------------------------------------------

def state(policy: ServicePolicy | None = None, instances: tuple[Instance, ...] = ()) -> MeshState:
    return MeshState(services={"backend": instances},
                     policies={"backend": policy} if policy else {}, mesh=MeshPolicy(sampling_percent=7))


def test_sidecar_clusters_default_policy() -> None:
    cs = {c.name: c for c in resources.clusters(SIDECAR, {})}
    assert set(cs) == {"local_app", "backend"}
    la = cs["local_app"]
    assert la.type == cluster_pb2.Cluster.STATIC
    sa = la.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.1", 8080)
    b = cs["backend"]
    assert b.type == cluster_pb2.Cluster.EDS and b.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert b.eds_cluster_config.service_name == "backend"
    assert b.eds_cluster_config.eds_config.HasField("ads")
    assert b.connect_timeout.seconds == 1
    assert b.common_lb_config.HasField("healthy_panic_threshold")
    assert b.common_lb_config.healthy_panic_threshold.value == 0
    assert not b.HasField("outlier_detection") and not b.HasField("circuit_breakers")


def test_weights_make_per_version_clusters_and_weighted_routes() -> None:
    pol = ServicePolicy(weights={"v1": 90, "v2": 10}, lb_policy="LEAST_REQUEST", timeout_ms=2500,
                        retries=Retries(num_retries=3, per_try_timeout_ms=700),
                        outlier_detection=OutlierDetection(consecutive_5xx=3),
                        circuit_breaker=CircuitBreaker(max_requests=7))
    snap = build_snapshot(SIDECAR, state(pol, (inst("a", "v1"), inst("b", "v2"), inst("c", "v2"))))
    cds = snap.get(CDS)
    assert set(cds) == {"local_app", "backend", "backend~v1", "backend~v2"}
    v2 = cds["backend~v2"]
    assert v2.eds_cluster_config.service_name == "backend~v2"
    assert v2.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert v2.outlier_detection.consecutive_5xx.value == 3
    assert v2.circuit_breakers.thresholds[0].max_requests.value == 7
    eds = snap.get(EDS)
    assert set(eds) == {"backend", "backend~v1", "backend~v2"}
    hosts = lambda name: sorted(e.endpoint.hostname for loc in eds[name].endpoints for e in loc.lb_endpoints)  # noqa: E731
    assert hosts("backend") == ["a", "b", "c"] and hosts("backend~v1") == ["a"] and hosts("backend~v2") == ["b", "c"]

    out = snap.get(RDS)["outbound"]
    (vh,) = out.virtual_hosts
    assert list(vh.domains) == ["backend", "backend:*"]
    ra = vh.routes[0].route
    assert vh.routes[0].match.prefix == "/"
    assert [(c.name, c.weight.value) for c in ra.weighted_clusters.clusters] == [("backend~v1", 90), ("backend~v2", 10)]
    assert ra.timeout.ToMilliseconds() == 2500
    assert ra.retry_policy.num_retries.value == 3 and ra.retry_policy.retry_on == "connect-failure,reset,5xx"
    assert ra.retry_policy.per_try_timeout.ToMilliseconds() == 700
    assert not ra.hash_policy


def test_unhealthy_endpoints_kept_but_marked_and_grouped_by_zone_priority() -> None:
    cla = resources.cluster_load_assignment("backend", {"backend": [
        inst("a", zone="z1", priority=0), inst("b", zone="z1", priority=0, health=UNHEALTHY),
        inst("c", zone="z2", priority=1, health=DEGRADED)]})
    groups = [(loc.locality.zone, loc.priority, [(e.endpoint.hostname, e.health_status) for e in loc.lb_endpoints])
              for loc in cla.endpoints]
    assert groups == [
        ("z1", 0, [("a", health_check_pb2.HEALTHY), ("b", health_check_pb2.UNHEALTHY)]),
        ("z2", 1, [("c", health_check_pb2.DEGRADED)]),
    ]
    md = cla.endpoints[0].lb_endpoints[0].metadata.filter_metadata["meshbed"]
    assert dict(md) == {"instance": "a", "version": "v1"}


def test_ring_hash_gets_header_hash_policy() -> None:
    ra = resources.route_action("backend", ServicePolicy(lb_policy="RING_HASH", hash_header="x-user"))
    assert ra.cluster == "backend" and ra.hash_policy[0].header.header_name == "x-user"
    c = resources.eds_cluster("backend", ServicePolicy(lb_policy="RING_HASH"))
    assert c.lb_policy == cluster_pb2.Cluster.RING_HASH
    # the header is only used with a hashing LB
    assert not resources.route_action("backend", ServicePolicy(hash_header="x-user")).hash_policy


def _hcm(listener: Any) -> hcm_pb2.HttpConnectionManager:
    h = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(h)
    return h


def test_sidecar_listeners_and_hcm() -> None:
    snap = build_snapshot(SIDECAR, state(ServicePolicy()))
    lds = snap.get(LDS)
    assert set(lds) == {"inbound", "outbound"}
    assert lds["inbound"].traffic_direction == base_pb2.INBOUND
    assert lds["outbound"].traffic_direction == base_pb2.OUTBOUND
    assert lds["inbound"].address.socket_address.port_value == 15001
    h = _hcm(lds["inbound"])
    assert h.stat_prefix == "inbound" and h.rds.route_config_name == "inbound"
    assert h.codec_type == hcm_pb2.HttpConnectionManager.AUTO and h.generate_request_id.value
    u = uuid_pb2.UuidRequestIdConfig()
    assert h.request_id_extension.typed_config.Unpack(u) and u.HasField("pack_trace_reason") and not u.pack_trace_reason.value
    assert h.tracing.provider.name == "envoy.tracers.opentelemetry" and h.tracing.random_sampling.value == 100
    assert h.tracing.HasField("spawn_upstream_span") and not h.tracing.spawn_upstream_span.value
    otel = opentelemetry_pb2.OpenTelemetryConfig()
    assert h.tracing.provider.typed_config.Unpack(otel)
    assert otel.grpc_service.envoy_grpc.cluster_name == "jaeger_otlp" and otel.service_name == "frontend-1-envoy"
    fal = file_pb2.FileAccessLog()
    assert h.access_log[0].typed_config.Unpack(fal) and fal.path == "/dev/stdout"
    fmt = fal.log_format.text_format_source.inline_string
    for tok in ("%START_TIME%", "%RESPONSE_CODE%", "%RESPONSE_FLAGS%", "%UPSTREAM_HOST%", "%DURATION%",
                "%REQ(X-REQUEST-ID)%", "%REQ(TRACEPARENT)%"):
        assert tok in fmt
    assert [f.name for f in h.http_filters] == ["envoy.filters.http.router"]
    inbound = snap.get(RDS)["inbound"]
    assert inbound.virtual_hosts[0].domains == ["*"]
    assert inbound.virtual_hosts[0].routes[0].route.cluster == "local_app"
    assert inbound.virtual_hosts[0].routes[0].route.timeout.seconds == 15


def test_sidecar_without_upstreams_has_no_outbound() -> None:
    meta = NodeMeta(role="sidecar", service="backend", instance="b-1", inbound_port=1, app_address="127.0.0.1:2",
                    outbound_port=3)
    snap = build_snapshot(meta, MeshState(policies={"backend": ServicePolicy(timeout_ms=1234)}))
    assert set(snap.get(LDS)) == {"inbound"} and set(snap.get(CDS)) == {"local_app"} and not snap.get(EDS)
    assert snap.get(RDS)["inbound"].virtual_hosts[0].routes[0].route.timeout.ToMilliseconds() == 1234


def test_ingress_routes_sampling_and_clusters() -> None:
    snap = build_snapshot(INGRESS, state(ServicePolicy(weights={"v2": 1})))
    assert set(snap.get(CDS)) == {"backend", "backend~v2", "frontend"}
    (lis,) = snap.get(LDS).values()
    assert lis.name == "ingress" and lis.traffic_direction == base_pb2.OUTBOUND
    h = _hcm(lis)
    assert h.tracing.random_sampling.value == 7 and h.rds.route_config_name == "ingress"
    otel = opentelemetry_pb2.OpenTelemetryConfig()
    h.tracing.provider.typed_config.Unpack(otel)
    assert otel.service_name == "edge"
    (vh,) = snap.get(RDS)["ingress"].virtual_hosts
    assert [(r.match.prefix, r.route.cluster or r.route.weighted_clusters.clusters[0].name) for r in vh.routes] == [
        ("/api", "backend~v2"), ("/", "frontend")]


def test_reserved_cluster_names_never_sent() -> None:
    meta = NodeMeta(role="sidecar", service="x", instance="x-1", inbound_port=1, app_address="127.0.0.1:2",
                    outbound_port=3, upstreams=("xds_cluster", "backend"))
    assert [c.name for c in resources.clusters(meta, {})] == ["local_app", "backend"]


def test_versions_are_content_hashes() -> None:
    a = build_snapshot(SIDECAR, state(None, (inst("a"),)))
    b = build_snapshot(SIDECAR, state(None, (inst("a"),)))
    c = build_snapshot(SIDECAR, state(None, (inst("a", health=UNHEALTHY),)))
    assert a.versions == b.versions
    assert c.version(EDS) != a.version(EDS)
    assert {t: c.version(t) for t in (CDS, LDS, RDS)} == {t: a.version(t) for t in (CDS, LDS, RDS)}
