"""The ADS stream state machine, driven with fake DiscoveryRequests (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshbed.controlplane.ads import AdsProtocolError, AdsStream
from meshbed.controlplane.catalog import Instance, MeshState
from meshbed.controlplane.pushlog import PushLog
from meshbed.controlplane.snapshot import CDS, EDS, LDS, RDS, Snapshot, build_snapshot
from meshbed.errors import ConfigError
from meshbed.nodemeta import NodeMeta
from meshbed.policy import ServicePolicy

META = NodeMeta(role="sidecar", service="frontend", instance="frontend-1", inbound_port=15001,
                app_address="127.0.0.1:8080", outbound_port=15002, upstreams=("backend",))


class World:
    """A mutable mesh state and a snapshot source over it."""

    def __init__(self) -> None:
        self.state = MeshState(services={"backend": (self.inst("b1"),)})
        self.synced = True

    @staticmethod
    def inst(i: str, version: str = "v1") -> Instance:
        return Instance(id=i, service="backend", address="127.0.0.1", port=9000, instance=i, version=version)

    def source(self, meta: NodeMeta) -> Snapshot | None:
        return build_snapshot(meta, self.state) if self.synced else None


def node_req(type_url: str, names: tuple[str, ...] = (), meta: NodeMeta = META) -> discovery_pb2.DiscoveryRequest:
    r = req(type_url, names)
    r.node.id = meta.instance
    s = Struct()
    s.update({"meshbed": meta.to_struct()})
    r.node.metadata.CopyFrom(s)
    return r


def req(type_url: str, names: tuple[str, ...] = (), version: str = "", nonce: str = "",
        error: str | None = None) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                       response_nonce=nonce)
    if error is not None:
        r.error_detail.code = 3
        r.error_detail.message = error
    return r


def ack(resp: discovery_pb2.DiscoveryResponse, names: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryRequest:
    return req(resp.type_url, names, resp.version_info, resp.nonce)


def names_of(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for a in resp.resources:
        if resp.type_url == CDS:
            m: Any = cluster_pb2.Cluster()
        elif resp.type_url == EDS:
            m = endpoint_pb2.ClusterLoadAssignment()
        else:
            out.append(a.type_url)
            continue
        a.Unpack(m)
        out.append(m.name if resp.type_url == CDS else m.cluster_name)
    return out


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def log() -> PushLog:
    return PushLog()


def connected(world: World, log: PushLog) -> tuple[AdsStream, dict[str, discovery_pb2.DiscoveryResponse]]:
    """A stream that went through the initial CDS/EDS/LDS/RDS exchange, everything ACKed."""
    s = AdsStream(1, world.source, log)
    (cds,) = s.handle_request(node_req(CDS))
    assert s.handle_request(ack(cds)) == []
    (eds,) = s.handle_request(req(EDS, ("backend",)))
    (lds,) = s.handle_request(req(LDS))
    assert s.handle_request(ack(eds, ("backend",))) == []
    (rds,) = s.handle_request(req(RDS, ("inbound", "outbound")))
    assert s.handle_request(ack(lds)) == []
    assert s.handle_request(ack(rds, ("inbound", "outbound"))) == []
    return s, {CDS: cds, EDS: eds, LDS: lds, RDS: rds}


def test_initial_exchange_and_ack_bookkeeping(world: World, log: PushLog) -> None:
    s, sent = connected(world, log)
    assert s.node_id == "frontend-1" and s.meta == META
    assert sorted(names_of(sent[CDS])) == ["backend", "local_app"]
    assert names_of(sent[EDS]) == ["backend"]
    assert len(sent[LDS].resources) == 2 and len(sent[RDS].resources) == 2
    for t, resp in sent.items():
        assert s.types[t].acked_version == resp.version_info == s.types[t].sent_version
    assert len({r.nonce for r in sent.values()}) == 4
    evs = [(e.type, e.event) for e in log.since(0)]
    assert evs.count(("CDS", "sent")) == 1 and evs.count(("RDS", "ack")) == 1
    assert s.push() == []  # nothing changed: nothing to send


def test_first_request_answered_even_with_current_version(world: World, log: PushLog) -> None:
    s, sent = connected(world, log)
    # a reconnecting Envoy presents the version it already has
    s2 = AdsStream(2, world.source, log)
    r = node_req(CDS)
    r.version_info = sent[CDS].version_info
    (cds,) = s2.handle_request(r)
    assert cds.version_info == sent[CDS].version_info and cds.nonce != sent[CDS].nonce


def test_change_pushes_in_order_cds_eds_lds_rds(world: World, log: PushLog) -> None:
    s, sent = connected(world, log)
    world.state.policies["backend"] = ServicePolicy(weights={"v1": 50, "v2": 50})
    out = s.push()
    assert [r.type_url for r in out] == [CDS, EDS, RDS]  # listeners unchanged
    assert sorted(names_of(out[0])) == ["backend", "backend~v1", "backend~v2", "local_app"]
    # EDS resent although unchanged (cluster re-warming), but only with the subscribed names
    assert names_of(out[1]) == ["backend"] and out[1].version_info != sent[EDS].version_info
    # Envoy then subscribes to the new clusters: ack with new names -> fresh EDS with all of them
    new_names = ("backend", "backend~v1", "backend~v2")
    assert s.handle_request(ack(out[0])) == []
    (eds,) = s.handle_request(ack(out[1], new_names))
    assert sorted(names_of(eds)) == list(new_names)
    assert s.handle_request(ack(eds, new_names)) == []


def test_eds_skips_unknown_names(world: World, log: PushLog) -> None:
    s, _ = connected(world, log)
    world.state.services["backend"] = (world.inst("b1"), world.inst("b2"))
    (eds,) = s.push()
    assert eds.type_url == EDS
    (r,) = s.handle_request(ack(eds, ("backend", "nosuch")))  # names changed -> respond
    assert names_of(r) == ["backend"]


def test_nack_is_recorded_and_not_resent(world: World, log: PushLog) -> None:
    s, sent = connected(world, log)
    world.state.services["backend"] = (world.inst("b1"), world.inst("b2"))
    (eds,) = s.push()
    out = s.handle_request(req(EDS, ("backend",), sent[EDS].version_info, eds.nonce, error="bad endpoint"))
    assert out == []
    ts = s.types[EDS]
    assert ts.acked_version == sent[EDS].version_info and ts.nacks == 1 and ts.last_error == "bad endpoint"
    nack = [e for e in log.since(0) if e.event == "nack"]
    assert len(nack) == 1 and nack[0].version == eds.version_info and nack[0].error == "bad endpoint"
    assert s.push() == []  # same version is not resent
    world.state.services["backend"] = (world.inst("b1"), world.inst("b3"))
    (eds2,) = s.push()  # the next change goes out
    assert eds2.version_info not in (eds.version_info, sent[EDS].version_info)


def test_stale_nonce_ignored_but_subscription_kept(world: World, log: PushLog) -> None:
    s, sent = connected(world, log)
    world.state.services["backend"] = (world.inst("b1"), world.inst("b2"))
    (eds,) = s.push()
    before = len(log)
    # an answer to the old response arrives late, with a new subscription
    assert s.handle_request(req(EDS, ("backend", "x"), sent[EDS].version_info, sent[EDS].nonce)) == []
    assert s.types[EDS].names == {"backend", "x"}
    assert len(log) == before and s.types[EDS].acked_version == sent[EDS].version_info  # neither ack nor nack
    # the ACK of the current response sees the changed subscription and gets a response
    assert len(s.handle_request(ack(eds, ("backend", "x")))) == 1


def test_nothing_sent_before_consul_sync(world: World, log: PushLog) -> None:
    world.synced = False
    s = AdsStream(1, world.source, log)
    assert s.handle_request(node_req(CDS)) == []
    world.synced = True
    (cds,) = s.push()  # the owed first response goes out once synced
    assert cds.type_url == CDS


def test_first_request_needs_a_node(world: World, log: PushLog) -> None:
    s = AdsStream(1, world.source, log)
    with pytest.raises(AdsProtocolError):
        s.handle_request(req(CDS))
    bad = req(CDS)
    bad.node.id = "x"
    with pytest.raises(ConfigError):
        s.handle_request(bad)


def test_unknown_type_ignored(world: World, log: PushLog) -> None:
    s = AdsStream(1, world.source, log)
    assert s.handle_request(node_req("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret")) == []
    assert s.meta == META
