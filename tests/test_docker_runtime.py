"""The docker runtime end to end: pods, published ports, labels, faults, cleanup.

Needs a reachable Docker engine (skipped with the reason otherwise); the
images are built on first use (`meshbed provision --docker` builds them ahead).
"""

from __future__ import annotations

import contextlib
import sys
import uuid

import pytest

from meshbed import httpc, wait
from meshbed.runtime.docker_engine import engine_status
from meshbed.runtime.docker_naming import LABEL_RUN

pytestmark = [pytest.mark.integration, pytest.mark.docker]

_OK, _WHY = engine_status()
if not _OK:
    pytestmark.append(pytest.mark.skip(reason=f"no usable Docker engine: {_WHY}"))


@pytest.fixture(scope="module")
def dmesh(tmp_path_factory):
    from meshbed.mesh_build import bring_up
    from meshbed.settings import Settings
    from meshbed.topology import load
    settings = Settings(runtime="docker", state_dir=tmp_path_factory.mktemp("runs"), ready_timeout=120)
    stack = contextlib.ExitStack()
    mesh = stack.enter_context(bring_up(load("examples/basic.yaml"), settings))
    yield mesh, stack
    stack.close()


def _docker():
    import docker
    return docker.from_env()


def _containers(run_id):
    return _docker().containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})


def test_ingress_answers_through_containers(dmesh):
    mesh, _ = dmesh
    r = httpc.get(mesh.ingress_url, timeout=10, headers={"x-request-id": str(uuid.uuid4())})
    assert r.status == 200, r.text
    assert r.json()["instance"].startswith("frontend-") and r.json()["downstream"][0]["instance"].startswith("backend-")


def test_app_and_sidecar_share_one_network_namespace(dmesh):
    mesh, _ = dmesh
    app, sidecar = mesh.apps["backend-0"], mesh.sidecars["backend-0"]
    app.container.reload()
    sidecar.container.reload()
    mode_a = app.container.attrs["HostConfig"]["NetworkMode"]
    assert mode_a.startswith("container:") and mode_a == sidecar.container.attrs["HostConfig"]["NetworkMode"]
    pause = _docker().containers.get(mode_a.split(":", 1)[1])
    assert pause.labels[LABEL_RUN] == mesh.run_id and pause.labels["meshbed"] == "1"
    # every port of the pod is published by its pause container (or, when the mesh did not
    # announce the pod's ports up front, by a forwarder container of the same pod)
    published = {}
    for c in _containers(mesh.run_id):
        if c.labels.get("meshbed.pod") == "backend-0":
            published.update(c.attrs["HostConfig"].get("PortBindings") or {})
    for port in [*app.spec.ports.values(), *sidecar.spec.ports.values()]:
        assert published[f"{port}/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert mesh.runtime.internal_host("backend-0") in pause.attrs["NetworkSettings"]["Networks"][f"meshbed-{mesh.run_id}"]["IPAddress"]


def test_every_port_is_published_on_loopback_only(dmesh):
    mesh, _ = dmesh
    for c in _containers(mesh.run_id):
        for bindings in (c.attrs["HostConfig"].get("PortBindings") or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings), c.name


def test_pause_and_resume_freeze_the_app(dmesh):
    mesh, _ = dmesh
    app = mesh.apps["backend-2"]
    app.pause()
    try:
        assert app.alive()
        with pytest.raises(Exception):
            httpc.get(app.url("http", "/healthz"), timeout=0.5)
    finally:
        app.resume()
    assert httpc.get(app.url("http", "/healthz"), timeout=5).status == 200


def test_kill_and_restart_a_sidecar_keep_the_pod(dmesh):
    from meshbed.readiness import wait_ready
    mesh, _ = dmesh
    sidecar = mesh.sidecars["backend-1"]
    pid = sidecar.pid
    sidecar.kill()
    assert not sidecar.alive()
    sidecar.restart()
    wait_ready(sidecar, 60)
    assert sidecar.pid not in (None, pid)
    assert "starting envoy-backend-1" in sidecar.log_tail(200)
    # the app in the same pod still answers through the pod's published port
    assert httpc.get(mesh.apps["backend-1"].url("http", "/healthz"), timeout=5).status == 200


def test_logs_reach_the_run_directory(dmesh):
    mesh, _ = dmesh
    assert mesh.consul.log_path.is_file() and mesh.consul.log_path.parent.parent == mesh.run_dir
    assert "--- meshbed: starting consul" in mesh.consul.log_tail(400)


def test_teardown_leaves_no_container_or_network(dmesh):
    mesh, stack = dmesh
    stack.close()
    assert _containers(mesh.run_id) == []
    assert _docker().networks.list(filters={"label": f"{LABEL_RUN}={mesh.run_id}"}) == []


def test_sweeper_removes_a_dead_runs_containers_by_label(tmp_path):
    from meshbed.images import BASE_TAG
    from meshbed.runtime.state import RunState, sweep_run
    st = RunState.create(tmp_path, "docker", "t.yaml")
    c = _docker()
    labels = {"meshbed": "1", LABEL_RUN: st.run_id}
    net = c.networks.create(f"meshbed-{st.run_id}", labels=labels)
    ct = c.containers.run(BASE_TAG, ["sleep", "infinity"], detach=True, labels=labels, network=net.name,
                          name=f"meshbed-{st.run_id}-orphan")
    st.update(lambda d: d.update(containers=[{"name": ct.name, "id": ct.id}], networks=[{"name": net.name}]))
    swept = sweep_run(st)
    assert ct.name in swept and f"network {net.name}" in swept
    assert _containers(st.run_id) == [] and st.data["status"] == "down"


def test_a_port_not_announced_up_front_is_reached_through_the_forwarder(tmp_path):
    """Without prepare_pod, the pause container publishes the first member's port; a later
    member's port is published by a forwarder container (meshbed.runtime.forwarder in meshbed/python)."""
    from meshbed.ports import PortAllocator
    from meshbed.runtime.base import ComponentSpec
    from meshbed.runtime.docker import DockerRuntime
    from meshbed.runtime.state import RunState
    st = RunState.create(tmp_path, "docker", "t.yaml")
    ports = PortAllocator()
    p1, p2 = ports.take(), ports.take()

    def web(name, port):
        return ComponentSpec(name=name, kind="app", pod="web", ports={"http": port},
                             argv=[sys.executable, "-m", "http.server", str(port), "--bind", "0.0.0.0"])

    rt = DockerRuntime.open(st.run_dir, st)
    try:
        a, b = rt.start(web("web-a", p1)), rt.start(web("web-b", p2))
        for h in (a, b):
            wait.until(lambda h=h: httpc.get(h.url("http", "/"), timeout=2).status == 200, 60,
                       interval=0.2, what=f"{h.name} through its published port")
        fwd = [c for c in _containers(st.run_id) if c.labels.get("meshbed.component") == f"fwd-web-{p2}"]
        assert len(fwd) == 1 and fwd[0].status == "running"
        assert fwd[0].attrs["HostConfig"]["PortBindings"] == {f"{p2}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(p2)}]}
    finally:
        rt.close()
    assert _containers(st.run_id) == []
    assert _docker().networks.list(filters={"label": f"{LABEL_RUN}={st.run_id}"}) == []
