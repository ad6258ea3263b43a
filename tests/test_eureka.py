"""registry: eureka -- the watcher's pure parsing, the registrar's body, the options, and a real Eureka server.

The integration tests build meshbed's Eureka server on first use (Maven; about
a minute cold) and skip, with the reason, where Java or Maven is missing and no
MESHBED_EUREKA_URL / MESHBED_EUREKA_JAR names a server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest
from aiohttp import web

from meshbed import httpc, wait
from meshbed.controlplane.catalog import HEALTHY, UNHEALTHY
from meshbed.controlplane.eureka_watch import apply_delta, parse_apps, reconcile_hash, services_of
from meshbed.errors import ConfigError
from meshbed.observe.eureka import consul_status
from meshbed.provision import eureka as eureka_p
from meshbed.sample.config import HostPort, SampleConfig
from meshbed.sample.registration import (EUREKA_ENV, ConsulRegistrar, EurekaRegistrar, eureka_instance,
                                         make_registrar)
from meshbed.settings import Settings
from meshbed.topology import parse


def _rec(iid: str, app: str, port: int, status: str = "UP", action: str = "ADDED", **meta: str) -> dict:
    return {"instanceId": iid, "app": app.upper(), "vipAddress": app, "ipAddr": "127.0.0.1", "status": status,
            "port": {"$": port, "@enabled": "true"}, "metadata": {"instance": iid, **meta}, "actionType": action}


def _apps(records: list[dict], hashcode: str) -> dict:
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["app"], []).append(r)
    return {"applications": {"versions__delta": "1", "apps__hashcode": hashcode,
                             "application": [{"name": a, "instance": i} for a, i in by.items()]}}


# -- pure parts ---------------------------------------------------------------------------------


def test_full_fetch_then_delta_keeps_the_same_catalog_as_the_server():
    raw, h = parse_apps(_apps([_rec("api-0", "api", 9001, zone="zone-a", priority="1"), _rec("api-1", "api", 9002),
                               _rec("web-0", "web", 9003)], "UP_3_"))
    assert reconcile_hash(raw) == h == "UP_3_"
    svc = services_of(raw)
    assert [i.id for i in svc["api"]] == ["api-1", "api-0"]  # sorted by zone, priority like Consul's
    assert svc["api"][1].priority == 1 and svc["api"][1].zone == "zone-a"
    delta = _apps([_rec("api-0", "api", 9001, action="DELETED"), _rec("api-1", "api", 9002, "DOWN", "MODIFIED")],
                  "DOWN_1_UP_1_")
    raw2, h2 = apply_delta(raw, delta)
    assert reconcile_hash(raw2) == h2
    assert [(i.id, i.health) for i in services_of(raw2)["api"]] == [("api-1", UNHEALTHY)]
    assert apply_delta(raw2, delta)[0] == raw2  # applying the same delta again changes nothing


def test_a_missed_delta_shows_as_a_hash_mismatch():
    raw, _ = parse_apps(_apps([_rec("api-0", "api", 9001)], "UP_1_"))
    # the server has two instances now, but this delta only says one was modified
    raw2, server_hash = apply_delta(raw, _apps([_rec("api-0", "api", 9001, action="MODIFIED")], "UP_2_"))
    assert reconcile_hash(raw2) != server_hash


def test_single_objects_and_records_without_a_port_are_tolerated():
    body = {"applications": {"apps__hashcode": "UP_1_", "application": {"name": "API", "instance": _rec("a", "api", 1)}}}
    raw, _ = parse_apps(body)
    assert list(raw) == ["a"] and raw["a"][0].health == HEALTHY
    bad = _rec("b", "api", 0)
    assert parse_apps(_apps([bad], "UP_1_"))[0] == {}


def test_statuses_read_as_consul_statuses():
    assert consul_status("UP") == "passing"
    assert {consul_status(s) for s in ("DOWN", "OUT_OF_SERVICE", "STARTING", "UNKNOWN")} == {"critical"}


def _config(port: int = 9, service: str = "api") -> SampleConfig:
    return SampleConfig(service=service, instance=f"{service}-0", listen=HostPort("127.0.0.1", port),
                        advertise=HostPort("127.0.0.1", port + 1), meta={"zone": "zone-b", "priority": "2"},
                        run_id="r1", consul="http://127.0.0.1:1")


def test_register_body_names_app_vip_address_and_lease():
    inst = eureka_instance(_config(), "DOWN")["instance"]
    assert inst["app"] == "API" and inst["vipAddress"] == "api" and inst["status"] == "DOWN"
    assert inst["port"] == {"$": 10, "@enabled": "true"} and inst["ipAddr"] == "127.0.0.1"
    assert inst["metadata"] == {"instance": "api-0", "version": "v1", "meshbed_run": "r1", "zone": "zone-b",
                                "priority": "2"}
    assert inst["leaseInfo"]["renewalIntervalInSecs"] == 1


def test_registrar_is_eureka_only_when_the_environment_names_a_server():
    assert isinstance(make_registrar(_config(), {}), ConsulRegistrar)
    r = make_registrar(_config(), {EUREKA_ENV: "http://127.0.0.1:8761/eureka/"})
    assert isinstance(r, EurekaRegistrar) and r.url == "http://127.0.0.1:8761/eureka/apps/API/api-0"


def test_registry_is_validated_in_topology_and_settings():
    base = {"services": {"api": {}}, "ingress": {"routes": [{"prefix": "/", "service": "api"}]}}
    assert parse(base).registry == "consul" and parse(base).tracing == "w3c"
    assert parse({**base, "registry": "eureka", "tracing": "b3"}).registry == "eureka"
    with pytest.raises(ConfigError, match="registry"):
        parse({**base, "registry": "zookeeper"})
    with pytest.raises(ConfigError, match="registry"):
        Settings(registry="zookeeper")
    assert Settings.build(cli={}, env={"MESHBED_REGISTRY": "eureka"}).registry == "eureka"


def test_eureka_with_another_control_plane_is_refused_before_anything_starts():
    from meshbed.components.mesh_options import choose
    topo = parse({"services": {"api": {}}, "ingress": {"routes": [{"prefix": "/", "service": "api"}]},
                  "registry": "eureka"})
    with pytest.raises(ConfigError, match="only the builtin control plane"):
        choose(Settings(controlplane="go"), topo)


def test_source_hash_covers_the_maven_project():
    assert len(eureka_p.source_hash()) == 12
    assert (eureka_p.source_dir() / "pom.xml").is_file()
    assert "2025.1.4" in (eureka_p.source_dir() / "pom.xml").read_text()


# -- a real Eureka server -----------------------------------------------------------------------


def _server_or_skip() -> eureka_p.EurekaServer:
    s = eureka_p.find()
    if s.found:
        return s
    missing = eureka_p.toolchain_missing()
    if missing:
        pytest.skip(f"no Eureka server: {missing} (set {eureka_p.URL_ENV} or install a JDK and Maven)")
    return eureka_p.ensure(lambda line: print(line))


@pytest.fixture(scope="module")
def eureka_url():
    s = _server_or_skip()
    if s.url:
        yield s.url
        return
    from meshbed.ports import PortAllocator
    port = PortAllocator().take()
    proc = subprocess.Popen(s.command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/eureka"
    try:
        def up() -> object:
            if proc.poll() is not None:
                raise AssertionError(f"eureka exited with {proc.returncode}")
            return httpc.get(url + "/apps", timeout=2, headers={"Accept": "application/json"}).status == 200
        wait.until(up, 240, interval=0.2, what="the Eureka server's REST API", hint="a loaded machine starts it slowly")
        _status(url, "WARMUP", "none")  # lazy initialisation: the first request on a path is the slow one
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _status(url: str, app: str, iid: str) -> str | None:
    r = httpc.get(f"{url}/apps/{app}/{iid}", timeout=30, headers={"Accept": "application/json"})
    return None if r.status == 404 else r.json()["instance"]["status"]


def test_registration_renewal_health_and_cancel_on_a_real_server(eureka_url):
    async def scenario() -> list[tuple[str, str | None]]:
        healthy = {"ok": True}

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(status=200 if healthy["ok"] else 503)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        cfg = SampleConfig(service="regtest", instance=f"regtest-{os.getpid()}", listen=HostPort("127.0.0.1", port),
                           register_timeout=30.0)
        reg = EurekaRegistrar(cfg, eureka_url)
        seen: list[tuple[str, str | None]] = []

        async def until(want: str | None, what: str) -> None:
            deadline = time.monotonic() + 60  # generous: a loaded 2-core machine serves a JVM slowly
            got = None
            while time.monotonic() < deadline:
                got = await asyncio.to_thread(_status, eureka_url, "REGTEST", cfg.instance)
                if got == want:
                    seen.append((what, got))
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{what}: Eureka says {got!r}, wanted {want!r} within 60 s")

        try:
            await reg.start()
            await until("UP", "registered")
            healthy["ok"] = False
            await until("DOWN", "health check failing")
            healthy["ok"] = True
            await until("UP", "healthy again")
            await reg.deregister()
            await until(None, "cancelled")
            await reg.register()
            await until("UP", "registered again")
        finally:
            await reg.close()
            await runner.cleanup()
        return seen

    seen = asyncio.run(scenario())
    assert [w for w, _ in seen] == ["registered", "health check failing", "healthy again", "cancelled",
                                    "registered again"]


TOPOLOGY = {
    "name": "eureka-small",
    "registry": "eureka",
    "services": {"web": {"replicas": 1, "calls": ["api"]}, "api": {"replicas": 2}},
    "ingress": {"routes": [{"prefix": "/", "service": "web"}]},
    "chaos": {"links": []},
}


@pytest.mark.integration
def test_control_plane_converges_an_envoy_on_eureka_changes(tmp_path):
    s = _server_or_skip()
    from meshbed.mesh_build import bring_up
    from meshbed.observe import envoy_admin
    settings = Settings(state_dir=tmp_path / "state", ready_timeout=240.0)
    with bring_up(parse(TOPOLOGY), settings) as mesh:
        assert mesh.eureka_url and (s.url or mesh.eureka is not None)
        cc = mesh.consul_client()
        assert {i.id: i.status for i in cc.instances("api")} == {"api-0": "passing", "api-1": "passing"}
        admin = mesh.sidecars["web-0"].url("admin")
        addr = mesh.advertised["api-0"]

        def envoy_has(present: bool, healthy_only: bool = True):
            def probe() -> object:
                got = envoy_admin.healthy_addresses(admin, "api")
                if (addr in got) != present:
                    raise wait.NotYet(f"web-0's Envoy lists {sorted(got)} healthy for api")
                return True
            return probe

        t0 = time.time()
        mesh.control("api-0", "/meshbed/deregister")
        gone = wait.until(envoy_has(False), 30, interval=0.05, clock=time.time,
                          what="web-0's Envoy to drop api-0 after its Eureka cancel").first_ok_at - t0
        mesh.control("api-0", "/meshbed/register")
        wait.until(envoy_has(True), 30, interval=0.05, what="api-0 back in web-0's Envoy")
        t1 = time.time()
        mesh.control("api-0", "/meshbed/health", {"healthy": False})
        down = wait.until(envoy_has(False), 30, interval=0.05, clock=time.time,
                          what="web-0's Envoy to drop api-0 after it turned DOWN").first_ok_at - t1
        mesh.control("api-0", "/meshbed/health", {"healthy": True})
        wait.until(envoy_has(True), 30, interval=0.05, what="api-0 healthy again in web-0's Envoy")
        r = httpc.get(mesh.ingress_url + "/", timeout=10)
        assert r.status == 200 and r.json()["downstream"][0]["service"] == "api"
        print(f"eureka: cancel -> Envoy {gone:.2f}s, DOWN -> Envoy {down:.2f}s")
        assert gone < 10 and down < 10


def test_checks_that_fault_consul_as_the_service_source_are_skipped_on_eureka_only():
    from meshbed.checks.catalog import CATALOG
    from meshbed.components.mesh_options import unsupported
    assert "registry eureka" in unsupported(CATALOG["DISC-6"].needs, "eureka")
    assert unsupported(CATALOG["DISC-6"].needs, "consul") == ""
    assert all(unsupported(CATALOG[c].needs, "eureka") == "" for c in ("DISC-1", "DISC-2", "DISC-3", "TRACE-1"))


def test_watcher_turns_registry_answers_into_state_and_change_callbacks():
    from meshbed.controlplane.eureka_watch import EurekaWatcher
    changes: list[int] = []
    w = EurekaWatcher("http://127.0.0.1:1/eureka/", "http://127.0.0.1:2", lambda: changes.append(1))
    w._kv_seen = True  # as after the first KV answer
    w._on_registry(parse_apps(_apps([_rec("api-0", "api", 9001)], "UP_1_"))[0])
    assert w.synced.is_set() and [i.id for i in w.state.services["api"]] == ["api-0"] and changes == [1]
    w._on_registry(dict(w.raw))  # the same registry again: no change, no push
    assert changes == [1]
    w._on_registry({})
    assert w.state.services == {} and changes == [1, 1]
    d = w.describe()
    assert d["registry"] == "eureka" and d["eureka_url"] == "http://127.0.0.1:1/eureka" and d["synced"]
