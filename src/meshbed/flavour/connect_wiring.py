"""How a Consul Connect mesh is wired: registrations, proxy-defaults, the ingress gateway (pure: no I/O).

- every instance registers with a ``connect.sidecar_service``: the sidecar's public (mTLS)
  listener is the address Consul hands out (a Toxiproxy hop when upstream links are faultable),
  its only check is an alias of the instance (so health, maintenance and deregistration follow
  the app at once), and each upstream is a local bind port the app dials;
- ``proxy-defaults`` makes every proxy speak http (L7 routing, needed by routers, splitters and
  per-request retries) and adds the Jaeger cluster to every bootstrap; each proxy's own
  ``envoy_tracing_json`` names its spans (``<service>-sidecar``, ``ingress``);
- the edge is an ingress gateway (config entry ``ingress-gateway``) on one http listener.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError

TRACE_CLUSTER = "jaeger_otlp"


def tracing_json(service_name: str, cluster: str = TRACE_CLUSTER) -> str:
    """Envoy's bootstrap ``tracing.http``: the OpenTelemetry tracer to ``cluster``."""
    return json.dumps({"http": {"name": "envoy.tracers.opentelemetry", "typedConfig": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "grpcService": {"envoyGrpc": {"clusterName": cluster}}, "serviceName": service_name}}})


def trace_cluster_json(host: str, port: int, cluster: str = TRACE_CLUSTER) -> str:
    """A static OTLP/gRPC cluster for ``envoy_extra_static_clusters_json``."""
    return json.dumps({"name": cluster, "type": "STATIC", "connect_timeout": "1s",
                       "typed_extension_protocol_options": {
                           "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                               "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                               "explicit_http_config": {"http2_protocol_options": {}}}},
                       "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
                           {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}})


def proxy_defaults(otlp_host: str, otlp_port: int) -> dict[str, Any]:
    return {"Kind": "proxy-defaults", "Name": "global",
            "Config": {"protocol": "http", "envoy_extra_static_clusters_json": trace_cluster_json(otlp_host, otlp_port),
                       "envoy_tracing_json": tracing_json("mesh")}}


def service_defaults(service: str) -> dict[str, Any]:
    return {"Kind": "service-defaults", "Name": service, "Protocol": "http"}


def sidecar_service(instance: str, service: str, advertise: str, app: str,
                    upstreams: dict[str, tuple[str, int]], public: tuple[str, int] | None = None) -> dict[str, Any]:
    """The registration's ``Connect`` block: the sidecar at ``advertise`` in front of the app at ``app``.

    ``public``: where the sidecar's public listener binds when that differs from what Consul hands
    out (``advertise`` is then a Toxiproxy hop in front of it: proxy config bind_address/bind_port).
    """
    a_host, _, a_port = advertise.rpartition(":")
    l_host, _, l_port = app.rpartition(":")
    config: dict[str, Any] = {"envoy_tracing_json": tracing_json(f"{service}-sidecar")}
    if public is not None:
        config |= {"bind_address": public[0], "bind_port": public[1]}
    return {"SidecarService": {
        "Address": a_host, "Port": int(a_port),
        "Checks": [{"Name": "instance alive", "AliasService": instance}],
        "Proxy": {"LocalServiceAddress": l_host, "LocalServicePort": int(l_port),
                  "Config": config,
                  "Upstreams": [{"DestinationName": u, "LocalBindAddress": h, "LocalBindPort": p}
                                for u, (h, p) in sorted(upstreams.items())]}}}


def watcher_proxy(name: str, address: str, port: int, upstreams: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """An Envoy-only node subscribed like a sidecar (a connect-proxy for a service that has no instance)."""
    return {"Kind": "connect-proxy", "ID": name, "Name": f"{name}-proxy", "Address": address, "Port": port,
            "Proxy": {"DestinationServiceName": f"{name}-svc", "LocalServiceAddress": "127.0.0.1",
                      "LocalServicePort": 1,
                      "Config": {"envoy_tracing_json": tracing_json(f"{name}-sidecar")},
                      "Upstreams": [{"DestinationName": u, "LocalBindAddress": h, "LocalBindPort": p}
                                    for u, (h, p) in sorted(upstreams.items())]}}


def ingress_registration(address: str, port: int) -> dict[str, Any]:
    return {"Kind": "ingress-gateway", "ID": "ingress", "Name": "ingress", "Address": address, "Port": port,
            "Proxy": {"Config": {"envoy_tracing_json": tracing_json("ingress")}}}


def ingress_gateway(listener_port: int, routes: list[tuple[str, str]]) -> dict[str, Any]:
    """The edge: one http listener for the topology's single ingress route (prefix ``/``)."""
    if len(routes) != 1 or routes[0][0] != "/":
        raise ConfigError(f"--controlplane consul-connect: the ingress must have one route with prefix '/' "
                          f"(got {[p for p, _ in routes]})",
                          hint="route the ingress to one entry service, as examples/basic.yaml does")
    return {"Kind": "ingress-gateway", "Name": "ingress",
            "Listeners": [{"Port": listener_port, "Protocol": "http",
                           "Services": [{"Name": routes[0][1], "Hosts": ["*"]}]}]}


def check_topology(calls: dict[str, tuple[str, ...]]) -> None:
    """The sample app dials one sidecar address; under Connect that is one upstream's local bind port."""
    many = sorted(s for s, c in calls.items() if len(c) > 1)
    if many:
        raise ConfigError(f"--controlplane consul-connect: {many[0]} calls {len(calls[many[0]])} services; "
                          "the sample app dials one local bind port, so each service may call at most one",
                          hint="use a topology where every service calls at most one other (examples/basic.yaml)")
