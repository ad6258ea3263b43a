"""The policy contract, offline: the reference control plane's resources honour it, and a correct
control plane that sets fields differently (or sets more) is not told otherwise."""

from __future__ import annotations

import copy

import pytest
from google.protobuf.json_format import MessageToDict

from meshbed import contract
from meshbed.controlplane import resources
from meshbed.nodemeta import NodeMeta, Route
from meshbed.policy import CircuitBreaker, MeshPolicy, OutlierDetection, Retries, ServicePolicy

SIDECAR = NodeMeta(role="sidecar", service="frontend", instance="frontend-1", inbound_port=1, outbound_port=2,
                   app_address="127.0.0.1:3", upstreams=("backend",))
INGRESS = NodeMeta(role="ingress", service="ingress", instance="ingress", outbound_port=4,
                   routes=(Route("/", "frontend"),))

POLICIES = {
    "default": ServicePolicy(),
    "least": ServicePolicy(lb_policy="LEAST_REQUEST"),
    "ring": ServicePolicy(lb_policy="RING_HASH", hash_header="x-user"),
    "maglev": ServicePolicy(lb_policy="MAGLEV", hash_header="x-user"),
    "weights": ServicePolicy(weights={"v1": 90, "v2": 10}),
    "timeout": ServicePolicy(timeout_ms=500),
    "retries": ServicePolicy(retries=Retries(retry_on="5xx,reset,connect-failure", num_retries=2,
                                             per_try_timeout_ms=250)),
    "outlier": ServicePolicy(outlier_detection=OutlierDetection(consecutive_5xx=3, base_ejection_time_ms=60000)),
    "breaker": ServicePolicy(circuit_breaker=CircuitBreaker(max_connections=4, max_pending_requests=4,
                                                            max_requests=4, max_retries=3)),
}


def _d(msg) -> dict:
    return MessageToDict(msg, preserving_proto_field_name=True)


def dump(meta: NodeMeta, service: str, pol: ServicePolicy, mesh: MeshPolicy = MeshPolicy()) -> dict:
    """An admin /config_dump as Envoy would show the reference control plane's resources."""
    pols = {service: pol}
    return {"configs": [
        {"@type": contract._CLUSTERS_DUMP,
         "dynamic_active_clusters": [{"cluster": _d(c)} for c in resources.clusters(meta, pols)]},
        {"@type": contract._ROUTES_DUMP,
         "dynamic_route_configs": [{"route_config": _d(r)} for r in resources.routes(meta, pols)]},
        {"@type": contract._LISTENERS_DUMP,
         "dynamic_listeners": [{"name": lis.name, "active_state": {"listener": _d(lis)}}
                               for lis in resources.listeners(meta, mesh)]},
    ]}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_reference_resources_honour_the_contract(name):
    pol = POLICIES[name]
    v = contract.view(dump(SIDECAR, "backend", pol))
    assert contract.service_facts(v, "backend", pol) == []
    vi = contract.view(dump(INGRESS, "frontend", pol))
    assert contract.service_facts(vi, "frontend", pol, ["/"]) == []


@pytest.mark.parametrize("pct", [100.0, 10.0, 0.0])
def test_reference_edge_sampling_honours_the_contract(pct):
    v = contract.view(dump(INGRESS, "frontend", ServicePolicy(), MeshPolicy(sampling_percent=pct)))
    assert contract.mesh_facts(v, MeshPolicy(sampling_percent=pct)) == []
    assert contract.mesh_facts(v, MeshPolicy(sampling_percent=50.0)) != []


def _mutate(d: dict, fn) -> dict:
    d = copy.deepcopy(d)
    for cfg in d["configs"]:
        fn(cfg)
    return d


def _routes(cfg):
    for rc in cfg.get("dynamic_route_configs", []):
        for vh in rc["route_config"].get("virtual_hosts", []):
            for r in vh.get("routes", []):
                if r["route"].get("cluster") != resources.LOCAL_APP:
                    yield r["route"]


def _clusters(cfg):
    for c in cfg.get("dynamic_active_clusters", []):
        if c["cluster"]["name"] != resources.LOCAL_APP:
            yield c["cluster"]


def test_different_but_correct_control_plane_passes():
    """Extra fields and explicit defaults are free: retry_back_off, ring sizes, LB as an extension, names."""
    pol = ServicePolicy(lb_policy="RING_HASH", hash_header="x-user", retries=Retries(num_retries=1),
                        outlier_detection=OutlierDetection(consecutive_5xx=5, interval_ms=10000,
                                                           base_ejection_time_ms=30000, max_ejection_percent=10))

    def change(cfg):
        for a in _routes(cfg):
            a["retry_policy"]["retry_back_off"] = {"base_interval": "0.025s", "max_interval": "0.250s"}
            a["retry_policy"].pop("num_retries", None)  # Envoy's default is 1
            a["retry_policy"]["retry_on"] += ",gateway-error"  # more conditions than asked: still retries those
            a["hash_policy"][0]["header"]["header_name"] = "X-User"
            a["timeout"] = "15s"  # explicit default
        for c in _clusters(cfg):
            c["ring_hash_lb_config"] = {"minimum_ring_size": "1024", "maximum_ring_size": "8388608"}
            c["connect_timeout"] = "0.250s"
            c["outlier_detection"] = {}  # every field at Envoy's default
            c.pop("lb_policy")
            c["load_balancing_policy"] = {"policies": [{"typed_extension_config": {
                "name": "ring", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash"}}}]}

    d = _mutate(dump(SIDECAR, "backend", pol), change)
    assert contract.service_facts(contract.view(d), "backend", pol) == []


def test_weights_by_proportion_and_any_cluster_names():
    pol = ServicePolicy(weights={"v1": 90, "v2": 10})

    def change(cfg):
        for a in _routes(cfg):
            for c in a.get("weighted_clusters", {}).get("clusters", []):
                c["weight"] = c["weight"] * 10  # 900/100: same proportions
    d = _mutate(dump(SIDECAR, "backend", pol), change)
    assert contract.service_facts(contract.view(d), "backend", pol) == []
    assert contract.service_facts(contract.view(d), "backend", ServicePolicy(weights={"v1": 50, "v2": 50})) != []


@pytest.mark.parametrize("broken, needle", [
    (lambda cfg: [a["retry_policy"].pop("retry_host_predicate") for a in _routes(cfg)], "previous_hosts"),
    (lambda cfg: [a["retry_policy"].update(retry_on="5xx") for a in _routes(cfg)], "retry_on lacks"),
    (lambda cfg: [a.update(timeout="15s") for a in _routes(cfg)], "route timeout"),
    (lambda cfg: [c.pop("outlier_detection") for c in _clusters(cfg)], "no outlier_detection"),
    (lambda cfg: [c.pop("circuit_breakers") for c in _clusters(cfg)], "circuit_breakers"),
    (lambda cfg: [c.update(lb_policy="RANDOM") for c in _clusters(cfg)], "lb_policy RANDOM"),
    (lambda cfg: [a.pop("hash_policy") for a in _routes(cfg)], "hash_policy"),
])
def test_broken_resources_break_the_contract(broken, needle):
    pol = ServicePolicy(lb_policy="RING_HASH", hash_header="x-user", timeout_ms=500,
                        retries=Retries(retry_on="5xx,reset"), outlier_detection=OutlierDetection(),
                        circuit_breaker=CircuitBreaker(max_requests=4))
    d = _mutate(dump(SIDECAR, "backend", pol), broken)
    facts = contract.service_facts(contract.view(d), "backend", pol)
    assert any(needle in f for f in facts), facts


def test_weighted_targets_judged_by_their_endpoints():
    pol = ServicePolicy(weights={"v1": 90, "v2": 10})
    v = contract.view(dump(SIDECAR, "backend", pol))
    passing = {"a:1": "v1", "b:1": "v1", "c:1": "v2"}
    good = {"backend~v1": {"a:1", "b:1"}, "backend~v2": {"c:1"}}
    assert contract.weighted_targets_ok(v, "backend", pol, good, passing) == []
    swapped = {"backend~v1": {"c:1"}, "backend~v2": {"a:1", "b:1"}}  # weights on the wrong versions
    assert contract.weighted_targets_ok(v, "backend", pol, swapped, passing)
    mixed = {"backend~v1": {"a:1", "c:1"}, "backend~v2": {"c:1"}}
    assert contract.weighted_targets_ok(v, "backend", pol, mixed, passing)
    plain = contract.view(dump(SIDECAR, "backend", ServicePolicy()))
    assert contract.weighted_targets_ok(plain, "backend", ServicePolicy(), {"backend": set(passing)}, passing) == []
    assert contract.weighted_targets_ok(plain, "backend", ServicePolicy(), {"backend": {"a:1"}}, passing)


def test_no_route_is_a_fact_not_a_crash():
    assert contract.service_facts(contract.EnvoyView(), "backend", ServicePolicy()) == ["no route to backend"]


def test_an_explicit_zero_duration_is_not_read_as_the_default():
    """interval "0s" is not Envoy's 10 s default: a policy asking for 10 s must not see it as shown."""
    pol = ServicePolicy(outlier_detection=OutlierDetection(interval_ms=10000))

    def zero(cfg):
        for c in _clusters(cfg):
            c["outlier_detection"]["interval"] = "0s"
    d = _mutate(dump(SIDECAR, "backend", pol), zero)
    assert any("interval_ms 0" in f for f in contract.service_facts(contract.view(d), "backend", pol))
