"""Consul Connect as the control plane under test: a real Connect mesh, judged through its Envoys.

examples/basic.yaml with ``--controlplane consul-connect``: Consul 1.14's own xDS server
(delta ADS on the agent's gRPC port), sidecars registered with ``connect.sidecar_service``,
bootstraps from ``consul connect envoy -bootstrap``, an ingress gateway as the edge. The
checks read each Envoy's admin API: sidecar-to-sidecar hops are mTLS (handshakes counted on
the caller's upstream cluster, client certificates required by the callee's public listener).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import pytest

from meshbed import contract, httpc, policy_control, topology
from meshbed.flavour import naming
from meshbed.mesh_build import bring_up
from meshbed.observe import envoy_admin
from meshbed.policy import ServicePolicy
from meshbed.settings import Settings
from meshbed.topology import Topology

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def connect_mesh() -> Iterator[object]:
    topo: Topology = topology.load("examples/basic.yaml")
    settings = dataclasses.replace(Settings(), controlplane="consul-connect")
    with bring_up(topo, settings) as mesh:
        yield mesh


def _drive(mesh, n: int) -> list[int]:
    return [httpc.get(mesh.ingress_url + "/", timeout=10).status for _ in range(n)]


def test_traffic_between_sidecars_is_mtls(connect_mesh) -> None:
    mesh = connect_mesh
    url = mesh.envoys["frontend-0"].url("admin")
    before = envoy_admin.stats(url, r"\.ssl\.handshake$")
    assert _drive(mesh, 20) == [200] * 20
    after = envoy_admin.stats(url, r"\.ssl\.handshake$")
    backend = {k: v for k, v in after.items() if naming.service_of_cluster(k[len("cluster."):-len(".ssl.handshake")])
               == "backend"}
    assert backend, f"no TLS stats on a backend cluster of frontend-0: {sorted(after)}"
    # every new upstream connection from frontend's sidecar to a backend sidecar is a TLS handshake
    # (the request count alone does not say how many: connections are pooled, so at least one)
    assert sum(after.values()) - sum(before.values()) >= 0 and sum(backend.values()) >= 1, backend
    total_cx = sum(h.rq_total for h in envoy_admin.clusters(url)["backend"])
    assert total_cx >= 10, "frontend-0's sidecar sent (almost) nothing to backend"


def test_public_listener_requires_client_certificates(connect_mesh) -> None:
    mesh = connect_mesh
    dump = envoy_admin.config_dump(mesh.envoys["backend-0"].url("admin"), include_eds=False)
    public = [lis for lis in contract.view(dump).listeners.values() if str(lis.get("name", "")).startswith("public_listener")]
    assert len(public) == 1, "backend-0 has no public listener"
    (chain,) = public[0]["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]
    assert tls.get("require_client_certificate") is True, tls
    # and a plaintext request straight to the public listener does not get an answer
    addr = mesh.sidecars["backend-0"].url("inbound", "/")
    with pytest.raises(OSError):
        r = httpc.get(addr, timeout=3)
        raise OSError(f"HTTP {r.status}")  # any HTTP answer over plaintext would be a hole


def test_downstream_handshakes_seen_by_the_callee(connect_mesh) -> None:
    mesh = connect_mesh
    urls = {i: mesh.sidecars[i].url("admin") for i in mesh.instances_of("backend")}
    before = {i: envoy_admin.stats(u, r"^listener\..*\.ssl\.handshake$") for i, u in urls.items()}
    _drive(mesh, 30)
    after = {i: envoy_admin.stats(u, r"^listener\..*\.ssl\.handshake$") for i, u in urls.items()}
    assert sum(sum(v.values()) for v in after.values()) >= 1, after
    assert all(sum(after[i].values()) >= sum(before[i].values()) for i in urls)


def test_consul_names_clusters_by_discovery_target(connect_mesh) -> None:
    cs = envoy_admin.clusters(connect_mesh.envoys["frontend-0"].url("admin"))
    connect_names = [c for c in cs if naming.connect_parts(c)]
    assert any(naming.service_of_cluster(c) == "backend" for c in connect_names), sorted(cs)
    assert {h.address for h in cs["backend"]} == {connect_mesh.advertised[i] for i in connect_mesh.instances_of("backend")}


def test_policy_reaches_the_envoys_as_config_entries(connect_mesh) -> None:
    mesh = connect_mesh
    pol = ServicePolicy(lb_policy="LEAST_REQUEST", timeout_ms=3000)
    a = policy_control.apply(mesh, "backend", pol)
    try:
        assert a.shown, a.to_json()
        assert _drive(mesh, 5) == [200] * 5
    finally:
        policy_control.restore(mesh, "backend")
