"""Pure logic of the docker runtime: argv mapping, labels, ports, subnets, image input hashing."""

from __future__ import annotations

import ipaddress
import random
import sys
from pathlib import Path

import pytest

from meshbed.errors import ComponentError
from meshbed.images import build as images
from meshbed.runtime import docker as dr
from meshbed.runtime.base import runtime_names
from meshbed.runtime.state import EXTRA_SWEEPERS
from meshbed.sample.config import parse_args
from meshbed.sample.registration import service_definition


def test_docker_runtime_and_sweeper_are_registered():
    assert "docker" in runtime_names()
    assert dr._sweeper in EXTRA_SWEEPERS


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
        dr.pick_subnet(taken, rng)
    taken = [ipaddress.IPv4Network("172.17.0.0/16"), ipaddress.IPv4Network("10.200.0.0/16")]
    for _ in range(50):
        net = dr.pick_subnet(taken, rng)
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
    assert dr._sweeper(st) == []
