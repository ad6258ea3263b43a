"""Real Consul dev agent + real Envoy against the reference control plane."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest
import yaml

from meshbed import httpc, wait
from meshbed.nodemeta import NodeMeta
from meshbed.provision import find_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    """n distinct ports in 20000-32000 free for TCP and UDP on 127.0.0.1."""
    out: list[int] = []
    deadline = time.monotonic() + 10
    while len(out) < n and time.monotonic() < deadline:
        p = random.randint(20000, 32000)
        if p in out:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", p))
                u.bind(("127.0.0.1", p))
        except OSError:
            continue
        out.append(p)
    assert len(out) == n, "could not find free ports"
    return out


def _http(method: str, url: str, body: Any = None, timeout: float = 3.0) -> tuple[int, Any]:
    r = httpc.request(method, url, body, timeout=timeout)
    return r.status, (r.json() if r.status < 400 and r.body.strip() else None)


class _Exited(Exception):
    """A process the test waits on has exited: no point waiting further."""


def _wait(probe: Callable[[], Any], timeout: float, what: str, procs: Sequence[subprocess.Popen] = ()) -> Any:
    def alive_probe() -> Any:
        for p in procs:
            if p.poll() is not None:
                raise _Exited(f"{p.args[0]} exited with {p.returncode} while waiting for {what}")
        return probe()
    return wait.until(alive_probe, deadline=timeout, interval=0.1, what=what, fatal=(_Exited,)).value


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="meshbed-cp-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _envoy_hosts(admin: int, cluster: str) -> list[dict[str, Any]]:
    st, body = _http("GET", f"http://127.0.0.1:{admin}/clusters?format=json")
    assert st == 200
    for c in body.get("cluster_statuses", []):
        if c["name"] == cluster:
            return c.get("host_statuses", [])
    return []


def test_envoy_follows_consul_registration(workdir: Path) -> None:
    envoy, consul = find_binary("envoy"), find_binary("consul")
    for b in (envoy, consul):
        if b.path is None:
            pytest.skip(f"no {b.name} binary ({b.source}); `meshbed provision` gets it")

    http, serf_lan, serf_wan, server, xds, cp_http, admin, inbound, outbound, dead = _free_ports(10)
    procs: list[subprocess.Popen] = []
    logs = {n: workdir / f"{n}.log" for n in ("consul", "cp", "envoy")}
    consul_url = f"http://127.0.0.1:{http}"
    try:
        procs.append(subprocess.Popen(
            [str(consul.path), "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", "cp-test",
             "-http-port", str(http), "-dns-port", "-1", "-grpc-port", "-1", "-serf-lan-port", str(serf_lan),
             "-serf-wan-port", str(serf_wan), "-server-port", str(server), "-hcl", "ports { grpc_tls = -1 }"],
            stdout=logs["consul"].open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: _http("GET", f"{consul_url}/v1/status/leader")[1], 30, "consul leader", procs)

        procs.append(subprocess.Popen(
            [sys.executable, "-m", "meshbed.controlplane", "--xds", f"127.0.0.1:{xds}",
             "--http", f"127.0.0.1:{cp_http}", "--consul", consul_url, "--log-level", "info"],
            stdout=logs["cp"].open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True))
        _wait(lambda: _http("GET", f"http://127.0.0.1:{cp_http}/healthz")[0] == 200, 20, "CP healthz", procs)

        meta = NodeMeta(role="sidecar", service="frontend", instance="frontend-1", inbound_port=inbound,
                        app_address=f"127.0.0.1:{dead}", outbound_port=outbound, upstreams=("backend",),
                        access_log_path=str(workdir / "access.log"))
        h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}

        def static(name: str, port: int) -> dict[str, Any]:
            return {"name": name, "type": "STATIC", "connect_timeout": "1s",
                    "typed_extension_protocol_options": h2,
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}

        bootstrap = {
            "node": {"id": "frontend-1", "cluster": "frontend", "metadata": {"meshbed": meta.to_struct()}},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "dynamic_resources": {
                "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                               "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                               "set_node_on_first_message_only": True},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [static("xds_cluster", xds), static("jaeger_otlp", dead)]},
        }
        bs = workdir / "envoy.yaml"
        bs.write_text(yaml.safe_dump(bootstrap))
        procs.append(subprocess.Popen(
            [str(envoy.path), "-c", str(bs), "--base-id", str(random.randint(10_000, 60_000)), "--concurrency", "1",
             "--log-level", "warning"],
            stdout=logs["envoy"].open("wb"), stderr=subprocess.STDOUT, start_new_session=True))

        # Envoy gets its config: the backend cluster exists (empty) and both listeners are up
        def listeners_ready() -> bool:
            st, body = _http("GET", f"http://127.0.0.1:{admin}/listeners?format=json")
            names = {ls["name"] for ls in (body or {}).get("listener_statuses", [])}
            return st == 200 and {"inbound", "outbound"} <= names
        _wait(listeners_ready, 20, "Envoy listeners inbound+outbound", procs)

        reg = {"ID": "backend-1", "Name": "backend", "Address": "127.0.0.1", "Port": dead,
               "Meta": {"instance": "backend-1", "version": "v1", "zone": "z1", "priority": "0"}}
        t0 = time.monotonic()
        assert _http("PUT", f"{consul_url}/v1/agent/service/register", reg)[0] == 200
        hosts = _wait(lambda: _envoy_hosts(admin, "backend"), 10, "backend-1 in Envoy /clusters", procs)
        registered_after = time.monotonic() - t0
        assert hosts[0]["address"]["socket_address"]["port_value"] == dead
        assert hosts[0]["hostname"] == "backend-1"
        assert hosts[0]["health_status"]["eds_health_status"] == "HEALTHY"

        # the CP recorded the push and Envoy's ACK
        st, evs = _http("GET", f"http://127.0.0.1:{cp_http}/debug/pushes?since=0")
        assert st == 200 and any(e["type"] == "EDS" and e["event"] == "ack" for e in evs)
        assert not [e for e in evs if e["event"] == "nack"], [e for e in evs if e["event"] == "nack"]
        st, nodes = _http("GET", f"http://127.0.0.1:{cp_http}/debug/nodes")
        assert [n["node"] for n in nodes] == ["frontend-1"]
        st, snap = _http("GET", f"http://127.0.0.1:{cp_http}/debug/snapshot/frontend-1")
        assert st == 200 and "backend" in snap["EDS"]["resources"]

        # maintenance mode adds a critical check: the endpoint stays, marked unhealthy
        assert _http("PUT", f"{consul_url}/v1/agent/service/maintenance/backend-1?enable=true&reason=t")[0] == 200
        _wait(lambda: [h["health_status"].get("eds_health_status") for h in _envoy_hosts(admin, "backend")]
              == ["UNHEALTHY"], 10, "backend-1 UNHEALTHY in Envoy", procs)

        t0 = time.monotonic()
        assert _http("PUT", f"{consul_url}/v1/agent/service/deregister/backend-1")[0] == 200
        _wait(lambda: _envoy_hosts(admin, "backend") == [], 10, "backend-1 gone from Envoy", procs)
        deregistered_after = time.monotonic() - t0
        assert registered_after < 3 and deregistered_after < 3, (registered_after, deregistered_after)

        # the CP stops cleanly and promptly on SIGTERM
        cp = procs[1]
        t0 = time.monotonic()
        cp.send_signal(signal.SIGTERM)
        assert cp.wait(5) == 0 and time.monotonic() - t0 < 3
    except BaseException:
        for name, path in logs.items():
            sys.stderr.write(f"----- {name} log -----\n{_tail(path)}\n")
        raise
    finally:
        for p in reversed(procs):
            _stop(p)
