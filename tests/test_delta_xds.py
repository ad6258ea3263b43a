"""Delta xDS end to end: the builtin control plane serving Envoys bootstrapped with DELTA_GRPC."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from meshbed import httpc
from meshbed.observe import convergence

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def delta_mesh(tmp_path_factory):
    from meshbed.mesh_build import bring_up
    from meshbed.settings import Settings
    from meshbed.topology import load
    settings = Settings(controlplane="builtin:delta", state_dir=tmp_path_factory.mktemp("runs"))
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(bring_up(load(ROOT / "examples" / "basic.yaml"), settings))


def test_every_envoy_is_on_a_delta_stream_and_traffic_flows(delta_mesh):
    nodes = httpc.get_json(delta_mesh.cp_debug_url + "/debug/nodes", 5)
    assert {n["node"] for n in nodes} >= set(delta_mesh.envoys)
    assert {n.get("protocol") for n in nodes} == {"delta"}, nodes
    r = httpc.get(delta_mesh.ingress_url + "/", timeout=10)
    assert r.status == 200 and r.json()["downstream"][0]["service"] == "backend"


def test_a_deregistration_reaches_every_envoy_as_a_delta(delta_mesh):
    inst = delta_mesh.instances_of("backend")[0]
    addr = delta_mesh.advertised[inst]
    subs = {n: h.url("admin") for n, h in delta_mesh.subscribers("backend").items()}
    delta_mesh.control(inst, "/meshbed/deregister")
    try:
        gone = convergence.converge_times(subs, convergence.lacks_host("backend", addr), time.time(), 10)
        assert all(v is not None for v in gone.values()), gone
    finally:
        delta_mesh.control(inst, "/meshbed/register")
    back = convergence.converge_times(subs, convergence.has_host("backend", addr), time.time(), 10)
    assert all(v is not None for v in back.values()), back
