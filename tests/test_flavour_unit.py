"""The flavour seam offline: Connect cluster names, and meshbed policy -> Consul config entries."""

from __future__ import annotations

import pytest

from meshbed import contract
from meshbed.flavour import connect_translate as tr
from meshbed.flavour import connect_wiring as cw
from meshbed.flavour import for_controlplane, naming
from meshbed.errors import ConfigError
from meshbed.policy import CircuitBreaker, OutlierDetection, Retries, ServicePolicy

TD = "9b9cc511-aa58-056c-0db6-7f4652bbfc25"


def test_connect_cluster_names_answer_to_their_service() -> None:
    assert naming.service_of_cluster(f"backend.default.dc1.internal.{TD}.consul") == "backend"
    assert naming.service_of_cluster(f"v2.backend.default.dc1.internal.{TD}.consul") == "backend"
    assert naming.subset_of_cluster(f"v2.backend.default.dc1.internal.{TD}.consul") == "v2"
    assert naming.service_of_cluster("backend") == "backend"  # builtin/go
    assert naming.service_of_cluster("local_app") == "local_app"


def test_by_service_unions_subsets_and_leaves_builtin_names_alone() -> None:
    cs = {f"v1.backend.default.dc1.internal.{TD}.consul": ["a", "b"],
          f"v2.backend.default.dc1.internal.{TD}.consul": ["c"], "local_app": ["x"]}
    out = naming.by_service(cs)
    assert sorted(out["backend"]) == ["a", "b", "c"] and out["local_app"] == ["x"]
    assert naming.by_service({"backend": ["a"]}) == {"backend": ["a"]}


def test_flavour_is_chosen_by_controlplane() -> None:
    assert for_controlplane("consul-connect").name == "consul-connect"
    for cp in ("builtin", "reference", "go", "go:delta"):
        assert for_controlplane(cp).name == "kv"


def test_weights_scale_to_100() -> None:
    assert tr.scaled_weights({"v1": 9, "v2": 1}) == {"v1": 90.0, "v2": 10.0}
    assert tr.scaled_weights({"v1": 90, "v2": 10, "v3": 0}) == {"v1": 90.0, "v2": 10.0}
    s = tr.scaled_weights({"a": 1, "b": 1, "c": 1})
    assert abs(sum(s.values()) - 100.0) < 1e-9
    e = tr.translate("backend", ServicePolicy(weights={"v1": 9, "v2": 1}))
    assert e.splitter == {"Kind": "service-splitter", "Name": "backend",
                          "Splits": [{"Weight": 90.0, "ServiceSubset": "v1"}, {"Weight": 10.0, "ServiceSubset": "v2"}]}
    assert e.resolver["Subsets"]["v2"]["Filter"] == 'Service.Meta.version == "v2"'


def test_weights_consul_cannot_keep_exactly_are_unsupported() -> None:
    assert tr.unsupported(ServicePolicy(weights={"a": 1, "b": 2})), "33.33/66.67 is not 1:2"
    assert not tr.unsupported(ServicePolicy(weights={"v1": 90, "v2": 10}))


def test_ring_hash_always_sets_both_ring_sizes() -> None:
    r = tr.resolver("backend", ServicePolicy(lb_policy="RING_HASH", hash_header="x-user"))
    assert r["LoadBalancer"] == {"Policy": "ring_hash",
                                 "RingHashConfig": {"MinimumRingSize": 1024, "MaximumRingSize": 8388608},
                                 "HashPolicies": [{"Field": "header", "FieldValue": "x-user"}]}
    assert tr.resolver("backend", ServicePolicy(lb_policy="MAGLEV"))["LoadBalancer"] == {"Policy": "maglev"}


def test_round_robin_without_weights_needs_no_resolver_router_or_splitter() -> None:
    e = tr.translate("backend", ServicePolicy())
    assert e.by_kind() == {"service-resolver": None, "service-splitter": None, "service-router": None}
    assert e.override == {"Name": "backend"}


def test_timeout_and_retries_go_to_the_router() -> None:
    r = tr.router("backend", ServicePolicy(timeout_ms=300, retries=Retries("connect-failure,reset,5xx", 2)))
    assert r["Routes"] == [{"Match": {"HTTP": {"PathPrefix": "/"}},
                            "Destination": {"RequestTimeout": "300ms", "NumRetries": 2,
                                            "RetryOnConnectFailure": True, "RetryOn": ["reset", "5xx"]}}]


def test_outlier_and_breaker_go_to_every_callers_overrides() -> None:
    pol = ServicePolicy(outlier_detection=OutlierDetection(3, 1000, 60000, 50),
                        circuit_breaker=CircuitBreaker(8, 8, 8, 3))
    item = tr.override("backend", pol)
    assert item["PassiveHealthCheck"] == {"Interval": "1000ms", "MaxFailures": 3, "EnforcingConsecutive5xx": 100,
                                          "MaxEjectionPercent": 50, "BaseEjectionTime": "60000ms"}
    assert item["Limits"] == {"MaxConnections": 8, "MaxPendingRequests": 8, "MaxConcurrentRequests": 8}
    cur = {"Kind": "service-defaults", "Name": "frontend", "UpstreamConfig": {"Overrides": [
        {"Name": "backend", "Limits": {"MaxConnections": 1}}, {"Name": "other", "Limits": {"MaxConnections": 2}}]}}
    out = tr.caller_defaults("frontend", cur, "backend", item)
    assert out["Protocol"] == "http"
    assert [o["Name"] for o in out["UpstreamConfig"]["Overrides"]] == ["backend", "other"]
    assert out["UpstreamConfig"]["Overrides"][0] == item
    cleared = tr.caller_defaults("frontend", out, "backend", tr.override("backend", ServicePolicy()))
    assert [o["Name"] for o in cleared["UpstreamConfig"]["Overrides"]] == ["other"]


@pytest.mark.parametrize("pol, reason", [
    (ServicePolicy(retries=Retries(per_try_timeout_ms=100)), "per-try timeout"),
    (ServicePolicy(circuit_breaker=CircuitBreaker(max_retries=5)), "max_retries"),
    (ServicePolicy(retries=Retries(retry_on="5xx,bogus-thing")), "RetryOn"),
])
def test_what_consul_cannot_express_is_a_reason(pol: ServicePolicy, reason: str) -> None:
    assert any(reason in r for r in tr.unsupported(pol))


def test_ingress_called_services_cannot_take_outlier_detection() -> None:
    f = for_controlplane("consul-connect")
    pol = ServicePolicy(outlier_detection=OutlierDetection())
    assert f.unsupported(pol, called_by_ingress=True) and not f.unsupported(pol)
    assert f.mesh_unsupported(None)  # type: ignore[arg-type]


def test_sidecar_registration_binds_behind_the_advertised_hop() -> None:
    c = cw.sidecar_service("backend-0", "backend", "127.0.0.1:9000", "127.0.0.1:8000", {}, ("127.0.0.1", 8001))
    sc = c["SidecarService"]
    assert (sc["Address"], sc["Port"]) == ("127.0.0.1", 9000)
    assert sc["Proxy"]["Config"]["bind_port"] == 8001 and sc["Proxy"]["LocalServicePort"] == 8000
    assert sc["Checks"] == [{"Name": "instance alive", "AliasService": "backend-0"}]


def test_connect_topology_limits() -> None:
    with pytest.raises(ConfigError, match="calls 2 services"):
        cw.check_topology({"a": ("b", "c")})
    with pytest.raises(ConfigError, match="one route"):
        cw.ingress_gateway(1, [("/a", "x"), ("/b", "y")])


def _connect_dump(routes: list[dict], inline: bool) -> dict:
    rc = {"name": "backend", "virtual_hosts": [{"name": "backend" if not inline else "backend.default.default.dc1",
                                                 "domains": ["*"], "routes": routes}]}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager", **({"route_config": rc} if inline else {"rds": {}})}
    return {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
            {"name": "backend:127.0.0.1:1", "active_state": {"listener": {"filter_chains": [
                {"filters": [{"typed_config": hcm}]}]}}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
         "dynamic_route_configs": [] if inline else [{"route_config": rc}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": [
            {"cluster": {"name": f"backend.default.dc1.internal.{TD}.consul"}}]}]}


def test_contract_reads_connect_routes_inline_and_by_rds() -> None:
    cluster = f"backend.default.dc1.internal.{TD}.consul"
    inline = contract.view(_connect_dump([{"match": {"prefix": "/"}, "route": {"cluster": cluster}}], True))
    assert contract.service_facts(inline, "backend", ServicePolicy()) == []
    # a router's route, then Consul's catch-all with the same match: the catch-all is never reached
    rds = contract.view(_connect_dump([{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "3s"}},
                                       {"match": {"prefix": "/"}, "route": {"cluster": cluster}}], False))
    assert contract.service_facts(rds, "backend", ServicePolicy(timeout_ms=3000)) == []
    assert contract.service_facts(rds, "backend", ServicePolicy())  # 3 s is not the default 15 s


def test_service_stats_reads_connect_counters_under_the_service_name(monkeypatch) -> None:
    from meshbed.observe import discovery_helpers as dh
    raw = {f"cluster.v1.backend.default.dc1.internal.{TD}.consul.outlier_detection.ejections_enforced_total": 2,
           f"cluster.v2.backend.default.dc1.internal.{TD}.consul.outlier_detection.ejections_enforced_total": 1,
           "cluster.backend.outlier_detection.ejections_active": 4,
           f"cluster.frontend.default.dc1.internal.{TD}.consul.outlier_detection.ejections_enforced_total": 9}
    monkeypatch.setattr(dh, "stats", lambda url, regex="", timeout=2.0: raw)
    assert dh.service_stats("http://x", "backend", "outlier_detection") == {
        "cluster.backend.outlier_detection.ejections_enforced_total": 3,
        "cluster.backend.outlier_detection.ejections_active": 4}


def test_a_restarted_connect_envoy_reuses_its_own_bootstrap_only(tmp_path, monkeypatch) -> None:
    import json

    from meshbed.components import consul_connect_launch as launch
    monkeypatch.chdir(tmp_path)
    assert launch._previous("127.0.0.1:5") is None
    (tmp_path / "bootstrap.json").write_text(json.dumps(
        {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 5}}}}))
    assert launch._previous("127.0.0.1:5") is not None  # a restart of the same Envoy
    assert launch._previous("127.0.0.1:6") is None  # a later instance of the same name: other ports


def test_connect_skips_the_checks_that_need_spans_of_mesh_traffic() -> None:
    c, k = for_controlplane("consul-connect"), for_controlplane("builtin")
    assert "random_sampling" in c.check_unsupported("TRACE-1") and c.check_unsupported("RES-3")
    assert "sidecar_service" in c.check_unsupported("RES-4")
    assert c.check_unsupported("DISC-1") == "" and k.check_unsupported("TRACE-1") == ""
