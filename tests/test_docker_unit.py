"""Pure logic of the docker runtime: argv mapping, labels, ports, subnets, pods, the forwarder,
image input hashing, and that constructing or importing it touches nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from meshbed.errors import ComponentError
from meshbed.images import build as images
from meshbed.runtime import docker_container as dcont
from meshbed.runtime import docker_engine as de
from meshbed.runtime import docker_naming as dr
from meshbed.runtime import docker_network as dn
from meshbed.runtime import forwarder
from meshbed.runtime.base import runtime_factory, runtime_names
from meshbed.runtime.docker import DockerRuntime
from meshbed.runtime.state import EXTRA_SWEEPERS
from meshbed.sample.config import parse_args
from meshbed.sample.registration import service_definition


def test_docker_runtime_and_sweeper_are_registered():
    assert "docker" in runtime_names()
    assert de._sweeper in EXTRA_SWEEPERS
    assert runtime_factory("docker") is DockerRuntime


@pytest.mark.parametrize("kind,argv0,key,exe", [
    ("app", sys.executable, "python", "/usr/bin/python3"),
    ("controlplane", "/work/main/.venv/bin/python", "python", "/usr/bin/python3"),
    ("envoy", "/x/site-packages/envoy/_bin/envoy", "envoy", "/usr/local/bin/envoy"),
    ("consul", "/root/.cache/meshbed/bin/consul-1.14.11", "consul", "/usr/local/bin/consul"),
    ("jaeger", "/root/.cache/meshbed/bin/jaeger-1.76.0", "jaeger", "/usr/local/bin/jaeger"),
    ("toxiproxy", "/usr/bin/toxiproxy-server", "toxiproxy", "/usr/local/bin/toxiproxy"),
])
def test_argv0_maps_to_image_and_in_image_path(kind, argv0, key, exe):
    k, argv = dr.map_argv(kind, [argv0, "-a", "b"])
    assert (k, argv) == (key, [exe, "-a", "b"])


def test_unknown_binary_is_a_clear_error():
    with pytest.raises(ComponentError, match="cannot map"):
        dr.map_argv("custom", ["/opt/my-cp", "--x"])


def test_command_wrapper_execs_the_component_and_appends_to_its_log():
    cmd = dr.wrap_command(["/usr/local/bin/envoy", "-c", "bootstrap.yaml"])
    assert cmd[:2] == ["/bin/sh", "-c"] and cmd[3:] == ["/usr/local/bin/envoy", "-c", "bootstrap.yaml"]
    assert cmd[2].startswith("exec ") and '>>"$MESHBED_LOG"' in cmd[2]


def test_labels_and_names():
    assert dr.run_labels("r1") == {"meshbed": "1", "meshbed.run": "r1"}
    assert dr.run_labels("r1", pod="backend-0")["meshbed.pod"] == "backend-0"
    assert dr.container_name("r1", "envoy-backend-0") == "meshbed-r1-envoy-backend-0"
    assert dr.network_name("r1") == "meshbed-r1"


def test_ports_are_published_on_loopback_under_the_same_number():
    assert dr.port_bindings([21000, 22001]) == {"21000/tcp": ("127.0.0.1", 21000), "22001/tcp": ("127.0.0.1", 22001)}


def test_subnet_pick_avoids_taken_networks():
    rng = random.Random(1)
    taken = [ipaddress.IPv4Network("10.0.0.0/8")]
    with pytest.raises(ComponentError, match="no free"):
        dn.pick_subnet(taken, rng)
    taken = [ipaddress.IPv4Network("172.17.0.0/16"), ipaddress.IPv4Network("10.200.0.0/16")]
    for _ in range(50):
        net = dn.pick_subnet(taken, rng)
        assert net.prefixlen == 22 and not any(net.overlaps(t) for t in taken)


def test_inputs_hash_is_stable_and_sensitive():
    a = {"parent": "sha256:1", "deps": ["aiohttp==3.9", "grpcio==1.85"]}
    assert images.inputs_hash(a) == images.inputs_hash(dict(reversed(list(a.items()))))
    assert images.inputs_hash(a) != images.inputs_hash({**a, "deps": ["aiohttp==3.10", "grpcio==1.85"]})


def test_file_digest_follows_content(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "_digest_cache_path", lambda: tmp_path / "digests.json")
    monkeypatch.setattr(images, "_DIGESTS", None)
    f = tmp_path / "bin"
    f.write_bytes(b"one")
    d1 = images.file_digest(f)
    assert images.file_digest(f) == d1
    f.write_bytes(b"two!")
    assert images.file_digest(f) != d1


def test_binary_image_tag_and_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "_digest_cache_path", lambda: tmp_path / "digests.json")
    f = tmp_path / "consul-1.14.11"
    f.write_bytes(b"elf")
    spec = images.binary_spec("consul", f, "1.14.11", "sha256:base")
    assert spec.tag == "meshbed/consul:1.14.11" and spec.parent == images.BASE_TAG
    assert spec.files == [("usr/local/bin/consul", f)]
    other = images.binary_spec("consul", f, "1.14.11", "sha256:newbase")
    assert other.digest != spec.digest  # a rebuilt base rebuilds the images on top


def test_requirement_names_skip_extras():
    assert images._requirement_name("PyYAML>=6") == "pyyaml"
    assert images._requirement_name("locust==2.47.0; extra == 'load'") is None
    assert images._requirement_name("typing_extensions>=4 ; python_version < '3.0'") is None


def test_python_image_gets_meshbed_deps_but_not_envoy_elf_or_test_tools():
    names = {images._norm(d.metadata["Name"]) for d in images.dependency_closure()}
    assert {"aiohttp", "grpcio", "protobuf", "pyyaml", "jinja2", "xds-protos"} <= names
    assert not names & {"pytest", "locust", "testcontainers", "meshbed"}
    rels = [rel for rel, _ in images.dep_files(images.dependency_closure())]
    assert not any(r.startswith("envoy/_bin/") or "__pycache__" in r for r in rels)
    own = [rel for rel, _ in images.meshbed_files()]
    assert "meshbed/sample/__main__.py" in own and "meshbed/_templates/envoy/bootstrap.yaml.j2" in own


def test_check_host_puts_the_pod_ip_in_the_consul_health_check(monkeypatch):
    monkeypatch.delenv("MESHBED_CHECK_HOST", raising=False)
    base = ["--service", "backend", "--listen", "0.0.0.0:21000"]
    assert service_definition(parse_args(base))["Check"]["HTTP"] == "http://127.0.0.1:21000/healthz"
    d = service_definition(parse_args(base + ["--check-host", "10.201.4.7"]))
    assert d["Check"]["HTTP"] == "http://10.201.4.7:21000/healthz"
    monkeypatch.setenv("MESHBED_CHECK_HOST", "10.201.4.8")
    assert service_definition(parse_args(base))["Check"]["HTTP"] == "http://10.201.4.8:21000/healthz"


def test_consul_binds_the_container_interface_when_listening_on_all():
    from meshbed.components import consul
    from meshbed.ports import PortAllocator
    argv = consul.spec(Path("/bin/consul"), PortAllocator(seed=1), "r1", "0.0.0.0").argv
    assert argv[argv.index("-bind") + 1] == '{{ GetInterfaceIP "eth0" }}'
    assert argv[argv.index("-client") + 1] == "0.0.0.0"
    argv = consul.spec(Path("/bin/consul"), PortAllocator(seed=1), "r1").argv
    assert argv[argv.index("-bind") + 1] == "127.0.0.1"


def test_sweeper_ignores_process_runs_without_touching_docker(tmp_path):
    from meshbed.runtime.state import RunState
    st = RunState.create(tmp_path, "process", "t.yaml")
    assert de._sweeper(st) == []


# -- no work at import or in the constructor ----------------------------------------

def test_importing_the_runtimes_sets_no_environment_and_loads_no_docker_sdk():
    code = ("import os, sys, meshbed.runtime, meshbed.runtime.docker; "
            "print(os.environ.get('TESTCONTAINERS_RYUK_DISABLED'), 'docker' in sys.modules, "
            "'testcontainers' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "TESTCONTAINERS_RYUK_DISABLED"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["None", "False", "False"]


def test_constructor_only_stores(tmp_path, monkeypatch):
    from meshbed.runtime import docker as dmod

    def no_engine(*a, **k):
        raise AssertionError("the constructor contacted the engine")

    monkeypatch.setattr(dmod, "client", no_engine)
    rt = DockerRuntime(tmp_path / "r1")
    assert rt.client is None and rt.images == {} and rt.network.net is None
    assert not (tmp_path / "r1").exists()
    with pytest.raises(ComponentError, match="does not exist yet"):
        rt.internal_host("backend-0")
    rt.close()  # nothing was created: nothing to undo


class _FakeClient:
    def __init__(self):
        self.closed = False
        self.containers = SimpleNamespace(list=lambda **k: [])
        self.networks = SimpleNamespace(list=lambda **k: [])

    def close(self):
        self.closed = True


def test_open_undoes_a_failed_setup_and_restores_ryuk(tmp_path, monkeypatch):
    from meshbed import images as images_pkg
    from meshbed.runtime import docker as dmod
    from meshbed.runtime.state import RunState
    fake = _FakeClient()
    monkeypatch.setattr(dmod, "client", lambda *a, **k: fake)
    monkeypatch.delenv(dcont.RYUK_ENV, raising=False)

    def broken_build(client, progress):
        assert os.environ[dcont.RYUK_ENV] == "true"  # set while the runtime is open
        raise ComponentError("image build failed")

    monkeypatch.setattr(images_pkg, "ensure_images", broken_build)
    st = RunState.create(tmp_path, "docker", "t.yaml")
    with pytest.raises(ComponentError, match="image build failed"):
        DockerRuntime.open(st.run_dir, st)
    assert fake.closed  # close() ran: engine client released, run swept by label
    assert dcont.RYUK_ENV not in os.environ


def test_open_without_an_engine_is_one_clear_error(tmp_path, monkeypatch):
    from meshbed.runtime import docker as dmod

    def no_engine(*a, **k):
        raise ComponentError("docker: engine not reachable at unix:///x: FileNotFoundError", hint=de.ENGINE_HINT)

    monkeypatch.setattr(dmod, "client", no_engine)
    with pytest.raises(ComponentError, match="engine not reachable"):
        DockerRuntime.open(tmp_path / "r2")


def test_ryuk_is_disabled_only_while_held_and_restored_after(monkeypatch):
    cfg = dcont._tc_config()
    monkeypatch.setenv(dcont.RYUK_ENV, "false")
    monkeypatch.setattr(cfg, "ryuk_disabled", False)
    with dcont.ryuk_disabled():
        with dcont.ryuk_disabled():  # a second runtime in the same process
            assert os.environ[dcont.RYUK_ENV] == "true" and cfg.ryuk_disabled is True
        assert os.environ[dcont.RYUK_ENV] == "true" and cfg.ryuk_disabled is True  # still held once
    assert os.environ[dcont.RYUK_ENV] == "false" and cfg.ryuk_disabled is False


# -- pods ---------------------------------------------------------------------------

class _Net:
    def __init__(self):
        self.ips: dict[str, str] = {}

    def ip(self, pod):
        return self.ips.setdefault(pod, f"10.200.0.{len(self.ips) + 2}")

    def attach(self, alias, hostname=None):
        return {"network": "meshbed-r1", "hostname": hostname or alias, "ip": self.ip(alias)}


def _pods():
    started = []

    def run(image, name, command, *, labels, placement, ports=()):
        c = SimpleNamespace(id=f"id-{name}", name=name, image=image, command=command, labels=labels,
                            placement=placement, ports=sorted(ports))
        started.append(c)
        return c

    return dn.Pods("r1", _Net(), run, {"python": "meshbed/python:t"}), started


def test_a_prepared_pod_publishes_every_port_on_its_pause_container():
    pods, started = _pods()
    pods.prepare("backend-0", [21000, 21001, 21002])
    pods.prepare("backend-0", [21000])  # once per pod
    assert [c.name for c in started] == ["meshbed-r1-pod-backend-0"]
    pause = started[0]
    assert pause.image == images.BASE_TAG and pause.command == ["sleep", "infinity"] and pause.ports == [21000, 21001, 21002]
    assert pause.placement["hostname"] == "backend-0" and pause.labels["meshbed.component"] == "pod-backend-0"
    assert pods.member("backend-0", "app", {21000}) == {"network_mode": "container:id-meshbed-r1-pod-backend-0"}
    assert pods.member("backend-0", "envoy", {21001, 21002}) == {"network_mode": "container:id-meshbed-r1-pod-backend-0"}
    assert len(started) == 1  # no forwarder: every port was published up front
    assert [c.name for c in pods.discard("backend-0")] == ["meshbed-r1-pod-backend-0"] and pods.extra == []


def test_an_unannounced_port_gets_a_forwarder_to_the_pod_ip():
    pods, started = _pods()
    pods.member("web", "app", {21000})  # first member: its pause container publishes its ports
    pods.member("web", "envoy", {21000, 22000})
    assert [c.name for c in started] == ["meshbed-r1-pod-web", "meshbed-r1-fwd-web-22000"]
    fwd = started[1]
    assert fwd.image == "meshbed/python:t" and fwd.ports == [22000] and fwd.labels["meshbed.pod"] == "web"
    assert fwd.command == ["python3", "-m", "meshbed.runtime.forwarder", "22000", pods.network.ip("web"), "22000"]
    assert fwd.placement["ip"] != pods.network.ip("web")  # the forwarder has its own address
    assert [c.name for c in pods.discard("web")] == ["meshbed-r1-fwd-web-22000", "meshbed-r1-pod-web"]


def test_infrastructure_is_its_own_pod():
    pods, started = _pods()
    assert pods.member("consul", "consul", {8500}) is None and started == []
    own = SimpleNamespace(id="c1")
    pods.adopt("consul", own, {8500})
    assert pods.member("consul", "consul", {8500}) is None and pods.discard("consul") == [own]


# -- the forwarder ----------------------------------------------------------------------

def test_forwarder_arguments():
    assert forwarder.parse_args(["22000", "10.200.0.5", "21000"]) == forwarder.Route(22000, "10.200.0.5", 21000)
    assert forwarder.parse_args(["1", "h", "2", "--listen-host", "127.0.0.1"]).listen_host == "127.0.0.1"
    for bad in (["0", "h", "1"], ["70000", "h", "1"], ["x", "h", "1"], ["1", "h"]):
        with pytest.raises(SystemExit):
            forwarder.parse_args(bad)


def test_forwarder_pipes_both_ways_and_drops_clients_when_the_target_is_down():
    async def scenario():
        async def echo(r, w):
            while data := await r.read(1024):
                w.write(data.upper())
                await w.drain()
            w.close()

        target = await asyncio.start_server(echo, "127.0.0.1", 0)
        tport = target.sockets[0].getsockname()[1]
        fwd = await forwarder.start(forwarder.Route(0, "127.0.0.1", tport, "127.0.0.1"))
        fport = fwd.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", fport)
        w.write(b"hello")
        await w.drain()
        got = await asyncio.wait_for(r.readexactly(5), 5)
        w.write_eof()
        eof = await asyncio.wait_for(r.read(), 5)  # the target closed after our EOF: so does the forwarder
        w.close()
        target.close()
        await target.wait_closed()
        r2, w2 = await asyncio.open_connection("127.0.0.1", fport)
        dropped = await asyncio.wait_for(r2.read(), 5)
        w2.close()
        fwd.close()
        await fwd.wait_closed()
        return got, eof, dropped

    assert asyncio.run(scenario()) == (b"HELLO", b"", b"")
