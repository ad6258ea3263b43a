"""meshbed's Go control plane (controlplanes/go): its own Go checks, its provisioning, and a real mesh on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshbed import httpc, wait

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "controlplanes" / "go"
GO = shutil.which("go")

needs_go = pytest.mark.skipif(GO is None, reason="the Go toolchain is not on PATH")
needs_sources = pytest.mark.skipif(not (MODULE / "go.mod").is_file(), reason=f"no Go module at {MODULE}")


def _go(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    assert GO is not None
    return subprocess.run([GO, *args], cwd=MODULE, capture_output=True, text=True, timeout=timeout)


@needs_go
@needs_sources
def test_go_vet_is_clean():
    r = _go("vet", "./...")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@needs_go
@needs_sources
def test_go_unit_tests_pass():
    r = _go("test", "-count=1", "./...")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]


@needs_go
@needs_sources
def test_gofmt_is_clean():
    gofmt = Path(GO).with_name("gofmt")  # type: ignore[arg-type]
    if not gofmt.exists():
        pytest.skip("gofmt is not next to go")
    r = subprocess.run([str(gofmt), "-l", "."], cwd=MODULE, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "", f"not gofmt-ed: {r.stdout}{r.stderr}"


def test_doctor_lists_it_as_unavailable_without_sources(tmp_path):
    """An installed package has no controlplanes/go: one line saying so, and not a doctor failure."""
    env = dict(os.environ, MESHBED_CP_GO_SRC=str(tmp_path / "nowhere"))
    env.pop("MESHBED_CP_GO", None)
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "doctor"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    lines = [ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["cp-go"]]
    assert len(lines) == 1 and "unavailable" in lines[0] and "MESHBED_CP_GO_SRC" in lines[0], r.stdout
    assert "cp-go" not in r.stderr


def test_copied_package_reports_no_sources(tmp_path):
    """The same package outside a checkout (as in a wheel) finds no sources and explains why."""
    shutil.copytree(ROOT / "src" / "meshbed", tmp_path / "site" / "meshbed")
    code = ("from meshbed.provision.binaries import find_binary; b = find_binary('cp-go'); "
            "print(b.found, b.path, b.source)")
    env = {k: v for k, v in os.environ.items() if k not in ("MESHBED_CP_GO", "MESHBED_CP_GO_SRC")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("True None unavailable: no controlplanes/go sources"), r.stdout


def test_env_override_must_be_executable(tmp_path, monkeypatch):
    from meshbed.errors import ComponentError
    from meshbed.provision import go_controlplane_binary
    monkeypatch.setenv("MESHBED_CP_GO", str(tmp_path / "missing"))
    with pytest.raises(ComponentError, match="MESHBED_CP_GO"):
        go_controlplane_binary()
    fake = tmp_path / "cp"
    fake.write_text("#!/bin/sh\necho meshbed-cp-go test\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MESHBED_CP_GO", str(fake))
    assert go_controlplane_binary() == fake


@needs_sources
def test_source_hash_ignores_tests_and_follows_sources(tmp_path):
    from meshbed.provision import gocp
    mod = tmp_path / "go"
    shutil.copytree(MODULE, mod, ignore=shutil.ignore_patterns(".*"))
    h0 = gocp.source_hash(mod)
    (mod / "internal" / "policy" / "extra_test.go").write_text("package policy\n")
    assert gocp.source_hash(mod) == h0
    (mod / "internal" / "policy" / "extra.go").write_text("package policy\n")
    assert gocp.source_hash(mod) != h0


# -- a real mesh on the Go control plane ------------------------------------------------------------

@pytest.fixture(scope="module")
def go_mesh(tmp_path_factory):
    if GO is None and not os.environ.get("MESHBED_CP_GO"):
        pytest.skip("the Go toolchain is not on PATH (and MESHBED_CP_GO is not set)")
    if not (MODULE / "go.mod").is_file() and not os.environ.get("MESHBED_CP_GO"):
        pytest.skip(f"no Go module at {MODULE}")
    from meshbed.mesh_build import bring_up
    from meshbed.provision import go_controlplane_command
    from meshbed.settings import Settings
    from meshbed.topology import load
    template = go_controlplane_command()  # builds it first when the sources changed
    settings = Settings.build(cli={"controlplane": template, "state_dir": str(tmp_path_factory.mktemp("runs")),
                                   "runtime": "process"})
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(bring_up(load(ROOT / "examples" / "basic.yaml"), settings))


def _answer(mesh) -> dict:
    r = httpc.get(mesh.ingress_url + "/", timeout=10)
    assert r.status == 200, r.text[:300]
    return r.json()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_every_instance_answers_through_the_ingress(go_mesh):
    mesh = go_mesh
    seen: set[str] = set()
    for _ in range(60):
        body = _answer(mesh)
        seen.add(body["instance"])
        seen.update(d["instance"] for d in body["downstream"])
        if seen == set(mesh.apps):
            break
    assert seen == set(mesh.apps), f"never reached: {sorted(set(mesh.apps) - seen)}"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_deregistered_instance_leaves_the_frontend_envoys(go_mesh):
    from meshbed.observe import envoy_admin
    mesh = go_mesh
    victim = mesh.instances_of("backend")[0]
    addr = mesh.advertised[victim]
    subscribers = {n: h.url("admin") for n, h in mesh.subscribers("backend").items()}
    assert subscribers, "no Envoy subscribes to backend"

    def listed_by() -> list[str]:
        return [n for n, u in subscribers.items()
                if addr in {h.address for h in envoy_admin.clusters(u).get("backend", [])}]

    assert sorted(listed_by()) == sorted(subscribers), "every frontend Envoy lists the instance before"
    t0 = time.monotonic()
    mesh.control(victim, "/meshbed/deregister")
    try:
        def gone() -> bool:
            still = listed_by()
            if still:
                raise wait.NotYet(f"still listed by {still}")
            return True
        wait.until(gone, deadline=10, interval=0.05, what=f"{victim} to leave every frontend Envoy")
        took = time.monotonic() - t0
        # and traffic no longer reaches it
        for _ in range(30):
            assert victim not in {d["instance"] for d in _answer(mesh)["downstream"]}
    finally:
        mesh.control(victim, "/meshbed/register")

    def back() -> bool:
        if sorted(listed_by()) != sorted(subscribers):
            raise wait.NotYet("not listed everywhere yet")
        return True
    wait.until(back, deadline=10, interval=0.05, what=f"{victim} to come back")
    assert took < 5, f"deregistration took {took:.2f}s to reach the Envoys"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_delta_xds_envoy_gets_config_and_changes(go_mesh, tmp_path):
    """An extra Envoy with api_type DELTA_GRPC (incremental ADS) gets listeners, clusters, endpoints and changes."""
    import yaml

    from meshbed.observe import envoy_admin
    from meshbed.ports import PortAllocator
    from meshbed.provision import require
    mesh = go_mesh
    boot = yaml.safe_load((Path(mesh.run_dir) / "envoy-frontend-0" / "bootstrap.yaml").read_text())
    ports = PortAllocator()
    admin, inbound, outbound = ports.take(), ports.take(), ports.take()
    boot["node"]["id"] = "frontend-delta"
    meta = boot["node"]["metadata"]["meshbed"]
    meta.update(instance="frontend-delta", inbound_port=inbound, outbound_port=outbound,
                access_log_path=str(tmp_path / "access.log"))
    boot["admin"]["address"]["socket_address"]["port_value"] = admin
    boot["dynamic_resources"]["ads_config"]["api_type"] = "DELTA_GRPC"
    (tmp_path / "bootstrap.yaml").write_text(yaml.safe_dump(boot))
    log = open(tmp_path / "envoy.log", "wb")
    proc = subprocess.Popen([str(require("envoy")), "-c", str(tmp_path / "bootstrap.yaml"), "--base-id", str(admin),
                             "--concurrency", "1", "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path)
    url = f"http://127.0.0.1:{admin}"
    victim = mesh.instances_of("backend")[-1]
    addr = mesh.advertised[victim]
    deregistered = False
    try:
        def ready() -> set[str]:
            if proc.poll() is not None:
                raise AssertionError(f"envoy exited {proc.returncode}: {(tmp_path / 'envoy.log').read_text()[-1500:]}")
            hosts = {h.address for h in envoy_admin.clusters(url, timeout=1).get("backend", [])}
            if hosts != {mesh.advertised[i] for i in mesh.instances_of("backend")}:
                raise wait.NotYet(f"backend hosts {sorted(hosts)}")
            return hosts
        wait.until(ready, deadline=20, interval=0.1, what="the delta Envoy's backend endpoints")
        dump = envoy_admin.config_dump(url, include_eds=False)
        kinds = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
        listeners = {x["name"] for x in kinds["ListenersConfigDump"].get("dynamic_listeners", [])}
        assert listeners == {"inbound", "outbound"}
        assert envoy_admin.stats(url, regex="control_plane.connected_state")["control_plane.connected_state"] == 1
        r = httpc.get(f"http://127.0.0.1:{outbound}/", timeout=10, headers={"Host": "backend"})
        assert r.status == 200 and r.json()["service"] == "backend"

        mesh.control(victim, "/meshbed/deregister")
        deregistered = True

        def gone() -> bool:
            if addr in {h.address for h in envoy_admin.clusters(url, timeout=1).get("backend", [])}:
                raise wait.NotYet(f"{addr} still listed")
            return True
        wait.until(gone, deadline=10, interval=0.05, what=f"{victim} to leave the delta Envoy")
    finally:
        if deregistered:
            mesh.control(victim, "/meshbed/register")
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
