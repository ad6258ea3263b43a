"""The delta ADS stream, driven with fake DeltaDiscoveryRequests (no network)."""

from __future__ import annotations

import dataclasses

from google.protobuf.struct_pb2 import Struct

from envoy.service.discovery.v3 import discovery_pb2

from meshbed.controlplane.delta import DeltaStream
from meshbed.controlplane.pushlog import PushLog
from meshbed.controlplane.snapshot import CDS, EDS, LDS, RDS
from meshbed.policy import ServicePolicy

from test_controlplane_ads import META, World


def dreq(type_url: str, subscribe=(), unsubscribe=(), nonce: str = "", error: str | None = None,
         initial: dict | None = None, node: bool = False) -> discovery_pb2.DeltaDiscoveryRequest:
    r = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(subscribe),
                                            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce,
                                            initial_resource_versions=initial or {})
    if node:
        r.node.id = META.instance
        s = Struct()
        s.update({"meshbed": META.to_struct()})
        r.node.metadata.CopyFrom(s)
    if error is not None:
        r.error_detail.code = 3
        r.error_detail.message = error
    return r


def connect(world: World) -> tuple[DeltaStream, dict[str, discovery_pb2.DeltaDiscoveryResponse]]:
    """CDS (wildcard) -> EDS backend -> LDS (wildcard) -> RDS, each ACKed."""
    s = DeltaStream(1, world.source, PushLog(100))
    last = {}
    for t, subs, first in ((CDS, (), True), (EDS, ("backend",), False), (LDS, (), False),
                           (RDS, ("inbound", "outbound"), False)):
        (resp,) = s.handle_request(dreq(t, subs, node=first))
        assert s.handle_request(dreq(t, nonce=resp.nonce)) == []
        last[t] = resp
    return s, last


def test_initial_responses_carry_every_subscribed_resource():
    s, last = connect(World())
    assert {r.name for r in last[CDS].resources} == {"local_app", "backend"}
    assert [r.name for r in last[EDS].resources] == ["backend"]
    assert {r.name for r in last[LDS].resources} == {"inbound", "outbound"}
    assert not any(r.removed_resources for r in last.values())


def test_an_endpoint_change_sends_only_that_assignment():
    w = World()
    s, _ = connect(w)
    w.state.services["backend"] = (w.inst("b1"), w.inst("b2"))
    out = s.push()
    assert [(r.type_url, [x.name for x in r.resources]) for r in out] == [(EDS, ["backend"])]
    assert s.push() == []  # one in flight per type; and nothing else changed


def test_nothing_changed_nothing_sent_and_removals_are_named():
    w = World()
    s, _ = connect(w)
    assert s.push() == []
    w.state.policies = {"backend": ServicePolicy(weights={"v1": 100})}  # backend~v1 appears
    (cds,) = [r for r in s.push() if r.type_url == CDS]
    assert [x.name for x in cds.resources] == ["backend", "backend~v1"] or \
        {x.name for x in cds.resources} >= {"backend~v1"}
    s.handle_request(dreq(CDS, nonce=cds.nonce))
    w.state.policies = {}
    out = [r for r in s.push() if r.type_url == CDS]
    assert out and list(out[0].removed_resources) == ["backend~v1"]


def test_a_nack_is_not_resent_until_the_state_changes():
    w = World()
    s, _ = connect(w)
    w.state.services["backend"] = (w.inst("b1"), w.inst("b2"))
    (eds,) = s.push()
    assert s.handle_request(dreq(EDS, nonce=eds.nonce, error="bad")) == []
    assert s.push() == []
    w.state.services["backend"] = (w.inst("b1"),)
    assert s.push() == []  # back to what the client holds: nothing to send
    w.state.services["backend"] = (w.inst("b1"), w.inst("b3"))
    assert [r.type_url for r in s.push()] == [EDS]


def test_a_reconnect_with_initial_versions_gets_nothing_unchanged():
    w = World()
    s, last = connect(w)
    held = {t: {r.name: r.version for r in resp.resources} for t, resp in last.items()}
    s2 = DeltaStream(2, w.source, PushLog(100))
    assert s2.handle_request(dreq(CDS, node=True, initial=held[CDS])) == []
    assert s2.handle_request(dreq(EDS, ("backend",), initial=held[EDS])) == []


def test_a_changed_cluster_resends_its_endpoints():
    w = World()
    s, _ = connect(w)
    w.state.policies = {"backend": dataclasses.replace(ServicePolicy(), lb_policy="RANDOM")}
    out = s.push()
    assert [r.type_url for r in out][:1] == [CDS]
    s.handle_request(dreq(CDS, nonce=out[0].nonce))
    eds = [r for r in out + s.push() if r.type_url == EDS]
    assert eds and [x.name for x in eds[0].resources] == ["backend"]
