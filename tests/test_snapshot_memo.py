"""Nodes that call the same services share the resources built for the first of them."""

from __future__ import annotations

import dataclasses

from meshbed.controlplane.snapshot import CDS, EDS, LDS, build_snapshot

from test_controlplane_ads import META, World


def test_equal_needs_share_work_and_results_stay_per_node():
    w = World()
    memo: dict = {}
    other = dataclasses.replace(META, instance="frontend-2", outbound_port=16002, inbound_port=16001)
    a, b = build_snapshot(META, w.state, memo), build_snapshot(other, w.state, memo)
    assert a.get(EDS)["backend"] is b.get(EDS)["backend"]  # built once
    assert a.get(CDS)["backend"] is b.get(CDS)["backend"]
    assert a.get(LDS)["outbound"] is not b.get(LDS)["outbound"]  # ports differ: per node
    assert a.version(EDS) == b.version(EDS) and a.version(LDS) != b.version(LDS)
    assert build_snapshot(META, w.state).to_json() == a.to_json()  # sharing changes no content
