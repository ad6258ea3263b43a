"""ConsulWatcher against an in-process fake Consul: sync, changes, outages, bad policy."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from meshbed.controlplane.catalog import UNHEALTHY
from meshbed.controlplane.consul_watch import ConsulWatcher, next_index


class FakeConsul:
    """Just enough of Consul's HTTP API, with blocking queries on one global index."""

    def __init__(self) -> None:
        self.index = 10
        self.changed = asyncio.Event()
        self.down = False  # answer 500 to everything
        self.services: dict[str, list[dict[str, Any]]] = {}
        self.kv: dict[str, str] = {}

    def bump(self) -> None:
        self.index += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def register(self, svc: str, sid: str, port: int, checks: tuple[str, ...] = ("passing",)) -> None:
        entries = [e for e in self.services.get(svc, []) if e["Service"]["ID"] != sid]
        entries.append({"Node": {"Address": "127.0.0.1"},
                        "Service": {"ID": sid, "Service": svc, "Address": "", "Port": port,
                                    "Meta": {"instance": sid, "version": "v1"}},
                        "Checks": [{"Status": c} for c in checks]})
        self.services[svc] = entries
        self.bump()

    async def _block(self, request: web.Request) -> web.Response | None:
        if self.down:
            return web.Response(status=500, text="No cluster leader")
        idx = int(request.query.get("index", "0") or 0)
        if idx >= self.index:
            wait = float(request.query.get("wait", "1s").rstrip("s"))
            try:
                await asyncio.wait_for(self.changed.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if self.down:
            return web.Response(status=500, text="No cluster leader")
        return None

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers={"X-Consul-Index": str(self.index)})

    async def catalog(self, request: web.Request) -> web.Response:
        return await self._block(request) or self._json({s: [] for s in self.services})

    async def health(self, request: web.Request) -> web.Response:
        return await self._block(request) or self._json(self.services.get(request.match_info["svc"], []))

    async def kv_get(self, request: web.Request) -> web.Response:
        if (r := await self._block(request)) is not None:
            return r
        if not self.kv:
            return self._json(None, status=404)
        return self._json([{"Key": k, "Value": base64.b64encode(v.encode()).decode()} for k, v in self.kv.items()])

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_get("/v1/catalog/services", self.catalog)
        app.router.add_get("/v1/health/service/{svc}", self.health)
        app.router.add_get("/v1/kv/meshbed/", self.kv_get)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}"


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run(scenario: Callable[[FakeConsul, ConsulWatcher, list[float]], Awaitable[None]]) -> None:
    async def main() -> None:
        fake = FakeConsul()
        fake.register("backend", "b1", 9001)
        runner, url = await fake.start()
        changes: list[float] = []
        w = ConsulWatcher(url, lambda: changes.append(time.monotonic()), wait_s=2)
        task = asyncio.create_task(w.run())
        try:
            await asyncio.wait_for(w.synced.wait(), 3)
            await asyncio.wait_for(scenario(fake, w, changes), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            fake.bump()  # release blocked handlers so cleanup is quick
            await runner.cleanup()

    asyncio.run(main())


def ids(w: ConsulWatcher, svc: str = "backend") -> list[str]:
    return [i.id for i in w.state.services.get(svc, ())]


def test_next_index_rules() -> None:
    assert next_index(5, 7) == 7 and next_index(7, 5) == 0 and next_index(7, 0) == 0 and next_index(0, 3) == 3


def test_sync_then_changes() -> None:
    async def scenario(fake: FakeConsul, w: ConsulWatcher, changes: list[float]) -> None:
        assert ids(w) == ["b1"] and w.state.services["backend"][0].address == "127.0.0.1"
        n = len(changes)
        t0 = time.monotonic()
        fake.register("backend", "b2", 9002, checks=("passing", "critical"))
        await until(lambda: ids(w) == ["b1", "b2"])
        assert time.monotonic() - t0 < 0.5 and len(changes) > n
        assert w.state.services["backend"][1].health == UNHEALTHY
        fake.register("db", "d1", 5432)
        await until(lambda: ids(w, "db") == ["d1"])
        del fake.services["db"]
        fake.bump()
        await until(lambda: "db" not in w.state.services)

    run(scenario)


def test_outage_keeps_state_and_resyncs() -> None:
    async def scenario(fake: FakeConsul, w: ConsulWatcher, changes: list[float]) -> None:
        n = len(changes)
        fake.down = True
        fake.bump()  # wake the blocked queries into errors
        await until(lambda: w.stats["errors"] >= 3)
        await asyncio.sleep(0.5)
        assert ids(w) == ["b1"] and len(changes) == n  # nothing dropped, nothing pushed
        assert not w.stats["up"]
        fake.services["backend"].clear()  # what Consul will say once back: b1 gone, b3 there
        fake.down = False
        fake.register("backend", "b3", 9003)
        await until(lambda: ids(w) == ["b3"])
        assert w.stats["up"]

    run(scenario)


def test_bad_policy_keeps_previous_good_one() -> None:
    async def scenario(fake: FakeConsul, w: ConsulWatcher, changes: list[float]) -> None:
        fake.kv["meshbed/services/backend"] = json.dumps({"lb_policy": "MAGLEV", "hash_header": "x"})
        fake.bump()
        await until(lambda: w.state.policy("backend").lb_policy == "MAGLEV")
        fake.kv["meshbed/services/backend"] = "{oops"
        fake.kv["meshbed/mesh"] = json.dumps({"sampling_percent": 1})
        fake.bump()
        await until(lambda: w.state.mesh.sampling_percent == 1)
        assert w.state.policy("backend").lb_policy == "MAGLEV"
        fake.kv.clear()
        fake.bump()
        await until(lambda: not w.state.policies and w.state.mesh.sampling_percent == 100)

    run(scenario)


def test_many_services_each_get_a_watcher() -> None:
    async def scenario(fake: FakeConsul, w: ConsulWatcher, changes: list[float]) -> None:
        for k in range(120):
            fake.register(f"svc{k}", f"svc{k}-a", 10000 + k)
        await until(lambda: all(f"svc{k}" in w.state.services for k in range(120)), 5)
        await asyncio.sleep(0.2)  # every watcher is now parked in a blocking query
        t0 = time.monotonic()
        fake.register("svc119", "svc119-b", 20000)
        await until(lambda: len(w.state.services["svc119"]) == 2)
        assert time.monotonic() - t0 < 0.5

    run(scenario)
