"""The whole CP in-process: fake Consul, a gRPC ADS client, the debug HTTP API, shutdown."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from meshbed.controlplane.__main__ import parse_args
from meshbed.controlplane.server import ControlPlane, split_host_port
from meshbed.controlplane.snapshot import CDS, EDS
from meshbed.nodemeta import NodeMeta, Route


def _load_sibling(name: str) -> Any:
    """Import a sibling test module by path (works whatever pytest's import mode)."""
    spec = importlib.util.spec_from_file_location(f"_meshbed_cp_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FakeConsul = _load_sibling("test_controlplane_consul").FakeConsul

META = NodeMeta(role="ingress", service="ingress", instance="edge-1", outbound_port=18080,
                routes=(Route("/", "backend"),))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as r:
        return r.status, await r.json()


def test_control_plane_end_to_end() -> None:
    async def main() -> None:
        fake = FakeConsul()
        fake.down = True
        consul_runner, consul_url = await fake.start()
        xds, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        cp = ControlPlane(consul_url, consul_wait_s=2)
        stop = asyncio.Event()
        serving = asyncio.create_task(cp.serve(xds, http, stop))
        base = f"http://{http}"
        channel = grpc.aio.insecure_channel(xds)
        try:
            async with aiohttp.ClientSession() as s:
                deadline = time.monotonic() + 5
                while True:  # the debug server comes up; not ready while Consul is down
                    try:
                        st, body = await get_json(s, f"{base}/healthz")
                        break
                    except aiohttp.ClientError:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                assert st == 503 and body["ok"] is False

                # an Envoy connecting before the first sync gets nothing yet
                requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()

                async def gen():  # type: ignore[no-untyped-def]
                    while True:
                        yield await requests.get()

                call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(gen())
                first = discovery_pb2.DiscoveryRequest(type_url=CDS)
                first.node.id = "edge-1"
                md = Struct()
                md.update({"meshbed": META.to_struct()})
                first.node.metadata.CopyFrom(md)
                await requests.put(first)
                await asyncio.sleep(0.3)
                st, nodes = await get_json(s, f"{base}/debug/nodes")
                assert [n["node"] for n in nodes] == ["edge-1"] and nodes[0]["types"]["CDS"]["sent_version"] is None

                fake.register("backend", "b1", 9001)
                fake.down = False
                cds = await asyncio.wait_for(call.read(), 5)
                assert cds.type_url == CDS and len(cds.resources) == 1
                st, body = await get_json(s, f"{base}/healthz")
                assert st == 200 and body == {"ok": True}
                await requests.put(discovery_pb2.DiscoveryRequest(
                    type_url=CDS, version_info=cds.version_info, response_nonce=cds.nonce))
                await requests.put(discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=["backend"]))
                eds = await asyncio.wait_for(call.read(), 5)
                assert eds.type_url == EDS and len(eds.resources) == 1
                await requests.put(discovery_pb2.DiscoveryRequest(
                    type_url=EDS, resource_names=["backend"], version_info=eds.version_info,
                    response_nonce=eds.nonce))

                t0 = time.time()
                fake.register("backend", "b2", 9002)
                eds2 = await asyncio.wait_for(call.read(), 5)
                assert eds2.type_url == EDS and eds2.version_info != eds.version_info
                assert time.time() - t0 < 0.5

                st, events = await get_json(s, f"{base}/debug/pushes?since={t0}")
                sent = [(e["type"], e["version"], e["node"]) for e in events if e["event"] == "sent"]
                assert sent == [("EDS", eds2.version_info, "edge-1")]
                st, events = await get_json(s, f"{base}/debug/pushes?since=0")
                assert ("CDS", "ack") in [(e["type"], e["event"]) for e in events]
                st, snap = await get_json(s, f"{base}/debug/snapshot/edge-1")
                assert st == 200 and set(snap["CDS"]["resources"]) == {"backend"}
                assert len(snap["EDS"]["resources"]["backend"]["endpoints"][0]["lbEndpoints"]) == 2
                st, _ = await get_json(s, f"{base}/debug/snapshot/nobody")
                assert st == 404
                st, state = await get_json(s, f"{base}/debug/state")
                assert [i["id"] for i in state["services"]["backend"]] == ["b1", "b2"]
                assert state["consul"]["synced"] is True

                t0 = time.monotonic()
                stop.set()
                await asyncio.wait_for(serving, 5)
                assert time.monotonic() - t0 < 3
        finally:
            stop.set()
            await asyncio.gather(serving, return_exceptions=True)
            await channel.close()
            fake.bump()
            await consul_runner.cleanup()

    asyncio.run(main())


def test_cli_args() -> None:
    a = parse_args(["--xds", "127.0.0.1:1", "--http", "127.0.0.1:2", "--consul", "http://127.0.0.1:3"])
    assert (a.xds, a.http, a.consul, a.log_level, a.consul_wait) == (
        "127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3", "info", 30.0)
    assert split_host_port("[::1]:80") == ("::1", 80)
    with pytest.raises(SystemExit):
        parse_args(["--xds", "nope", "--http", "127.0.0.1:2", "--consul", "x"])
