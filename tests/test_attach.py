"""`meshbed run --attach mesh.json`: parsing, capabilities, and the same verdicts as a normal run.

Unit tests need no mesh. The integration tests bring a mesh up in another process
(`meshbed up --detach --json`), judge it with `meshbed run -m quick --attach`, and compare
each check's verdict with a normal `meshbed run -m quick` (process runtime; the docker
runtime too when an engine is reachable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshbed import attach
from meshbed.checks.catalog import CATALOG
from meshbed.errors import ComponentError, ConfigError
from meshbed.topology import load as load_topology

ROOT = Path(__file__).resolve().parents[1]
BASIC = ROOT / "examples" / "basic.yaml"
INSTANCES = ("frontend-0", "frontend-1", "backend-0", "backend-1", "backend-2")


def _doc(**over) -> dict:
    """A mesh.json shaped like `meshbed up --json` output (before the attach fields)."""
    d = {
        "run_id": "r1", "runtime": "process", "topology": str(BASIC),
        "ingress_url": "http://127.0.0.1:30000",
        "envoy_admin": {"ingress": "http://127.0.0.1:30001", **{i: f"http://127.0.0.1:{31000 + n}"
                                                                 for n, i in enumerate(INSTANCES)}},
        "controlplane": {"xds": "127.0.0.1:30002", "debug_url": "http://127.0.0.1:30003", "kind": "reference"},
        "consul_url": "http://127.0.0.1:8500", "jaeger_query_url": "http://127.0.0.1:16686",
        "jaeger_otlp": {"grpc": "127.0.0.1:4317", "http": "http://127.0.0.1:4318"},
        "toxiproxy_api": "http://127.0.0.1:8474",
        "instances": {i: {"app_url": f"http://127.0.0.1:{32000 + n}", "registered": f"127.0.0.1:{33000 + n}"}
                      for n, i in enumerate(INSTANCES)},
    }
    d.update(over)
    return d


def _full() -> dict:
    ctl = {a: ["true"] for a in attach.CONTROL_ACTIONS}
    return _doc(links={"upstream": {i: f"upstream-{i}" for i in INSTANCES}, "control_plane": {"ingress": "cp-ingress"},
                       "consul": {"controlplane": "consul-controlplane"}, "tracing": {"otlp-grpc": "tracing-otlp-grpc"}},
                consul_gate_admin_url="http://127.0.0.1:30004",
                controls={"controlplane": ctl, "consul": ctl, **{f"{k}:{i}": ctl for i in INSTANCES
                                                                for k in ("app", "sidecar")}},
                scale={"xds": "127.0.0.1:30002", "otlp_grpc": "127.0.0.1:4317",
                       "otlp_http_url": "http://127.0.0.1:4318/v1/traces", "consul_url": "http://127.0.0.1:8500",
                       "local_instances": True})


# -- unit: mesh.json ---------------------------------------------------------------------------------

def test_up_json_shape_parses_and_roles_follow_names():
    d = attach.parse(_doc())
    assert d.envoys["ingress"].role == "ingress"
    assert d.envoys["backend-1"] == attach.EnvoyEntry("http://127.0.0.1:31003", "sidecar", "backend-1")
    assert d.controlplane["kind"] == "reference"
    assert d.scale.xds == "127.0.0.1:30002" and d.scale.otlp_http_url == "http://127.0.0.1:4318/v1/traces"


def test_envoys_with_explicit_roles():
    doc = _doc()
    del doc["envoy_admin"]
    doc["envoys"] = {"edge": {"admin_url": "http://10.0.0.1:15000", "role": "ingress"},
                     **{f"sc{n}": {"admin_url": f"http://10.0.0.2:{15000 + n}", "role": "sidecar", "instance": i}
                        for n, i in enumerate(INSTANCES)},
                     "w": {"admin_url": "http://10.0.0.3:15000", "role": "watcher"}}
    d = attach.parse(doc)
    assert d.envoys["sc2"].instance == "backend-0" and d.envoys["w"].role == "watcher"


@pytest.mark.parametrize("over, words", [
    ({"surprise": 1}, "surprise: unknown field"),
    ({"ingress_url": None}, "ingress_url: missing"),
    ({"ingress_url": "127.0.0.1:80"}, "not an http(s) URL"),
    ({"toxiproxy_api": None, "links": {"upstream": {"backend-0": "x"}}}, "links need toxiproxy_api"),
    ({"links": {"wire": {}}}, "links.wire: unknown link kind"),
    ({"controls": {"controlplane": {"explode": "true"}}}, "controls.controlplane.explode: unknown action"),
    ({"controls": {"consul": {"pause": []}}}, "expected a command"),
    ({"scale": {"local_instances": "yes"}}, "scale.local_instances"),
    ({"envoy_admin": {"frontend-0": "http://127.0.0.1:1"}}, "no Envoy with role ingress"),
    ({"instances": {"backend-0": {"app_url": "http://127.0.0.1:1", "registered": "nowhere"}}}, "not host:port"),
])
def test_bad_mesh_json_is_one_line_naming_the_field(over, words):
    doc = {k: v for k, v in _doc(**over).items() if v is not None}
    with pytest.raises(ConfigError) as ei:
        attach.parse(doc, "mesh.json")
    msg = str(ei.value)
    assert words in msg and "\n" not in msg and msg.startswith("mesh.json: ")


def test_load_refuses_duplicate_keys(tmp_path):
    p = tmp_path / "mesh.json"
    p.write_text('{"ingress_url": "http://a:1", "ingress_url": "http://a:2"}')
    with pytest.raises(ConfigError, match="duplicate key"):
        attach.load(p)


def test_topology_path_is_relative_to_mesh_json(tmp_path):
    (tmp_path / "topo.yaml").write_text(BASIC.read_text())
    d = attach.parse(_doc(topology="topo.yaml"))
    assert attach.topology_path(d, tmp_path / "mesh.json") == tmp_path / "topo.yaml"
    with pytest.raises(ConfigError, match="not found"):
        attach.topology_path(attach.parse(_doc(topology="nope.yaml")), tmp_path / "mesh.json")


# -- unit: capabilities and the catalog's needs ------------------------------------------------------

def test_capabilities_from_what_mesh_json_gives():
    topo = load_topology(BASIC)
    assert attach.capabilities(attach.parse(_full()), topo) == frozenset(attach.CAPABILITIES)
    bare = attach.capabilities(attach.parse(_doc(toxiproxy_api=None, controlplane={"kind": "go"}, jaeger_otlp=None)),
                               topo)
    assert bare == frozenset()
    # watchers only where the mesh's xDS is reachable; scale only when the mesh's Envoys reach local instances
    assert attach.capabilities(attach.parse(_doc()), topo) == {"watchers"}


def test_every_catalog_need_is_a_known_capability_and_reasons_name_what_grants_it():
    for entry in CATALOG.values():
        assert set(entry.needs) <= set(attach.CAPABILITIES), entry.id
    why = attach.missing(CATALOG["DISC-7"].needs, frozenset())
    assert why.startswith("the attached mesh lacks controlplane:kill") and "controls.controlplane.kill" in why
    assert attach.missing(CATALOG["DISC-3"].needs, frozenset()) == ""


def test_attached_handle_runs_controls_and_resumes_only_what_it_paused(tmp_path):
    mark = tmp_path / "resumed"
    h = attach.AttachedHandle("consul", "consul", {"http": "http://127.0.0.1:1"},
                              {"pause": ["true"], "resume": ["touch", str(mark)], "kill": ["false"]}, tmp_path)
    h.resume()
    assert not mark.exists()
    h.pause()
    h.resume()
    assert mark.exists()
    with pytest.raises(ComponentError, match="kill command exited 1"):
        h.kill()
    with pytest.raises(ComponentError, match="mesh.json gives no controls.consul.restart"):
        h.restart()
    assert h.url("http", "/v1/x") == "http://127.0.0.1:1/v1/x" and h.address("http") == "127.0.0.1:1"
    assert not h.alive()  # nothing listens on port 1


def test_ctl_socket_acts_on_the_owners_own_handles(tmp_path):
    """`meshbed ctl` (what `controls` runs): the process that owns the mesh does the action on its handle."""
    from types import SimpleNamespace

    from meshbed import supervisor_ctl
    calls = []

    class H:
        def kill(self):
            calls.append("kill")

        def pause(self):
            calls.append("pause")

    mesh = SimpleNamespace(run_dir=tmp_path, controlplane=H(), consul=H(), apps={}, sidecars={},
                           settings=SimpleNamespace(ready_timeout=5))
    with supervisor_ctl.serve(mesh) as path:
        assert path is not None and (path.stat().st_mode & 0o777) == 0o600
        supervisor_ctl.request(tmp_path, "controlplane", "kill")
        with pytest.raises(ComponentError, match="unknown target 'nope'"):
            supervisor_ctl.request(tmp_path, "nope", "kill")
        cmds = supervisor_ctl.commands(mesh)
        assert set(cmds) == {"controlplane", "consul"} and cmds["consul"]["pause"][-2:] == ["consul", "pause"]
        assert subprocess.run(cmds["consul"]["pause"], capture_output=True, timeout=60).returncode == 0
    assert calls == ["kill", "pause"] and not path.exists()
    with pytest.raises(ConfigError, match="no control socket"):
        supervisor_ctl.request(tmp_path, "consul", "resume")
    assert supervisor_ctl.commands(mesh) == {}


# -- integration: attach to a mesh another process brought up ----------------------------------------

def _meshbed(*args: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshbed.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _verdicts(out: Path) -> dict[str, tuple[str, str]]:
    doc = json.loads((out / "conformance.json").read_text())
    return {c["id"]: (c["verdict"], c.get("reason") or "") for c in doc["checks"]}, doc


@pytest.fixture(scope="module")
def normal_quick(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """A normal quick-tier run: the verdicts an attached run must match."""
    base = tmp_path_factory.mktemp("normal")
    r = _meshbed("run", "-m", "quick", "--out", str(base / "out"), "--state-dir", str(base / "state"))
    assert (base / "out" / "conformance.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
    return _verdicts(base / "out")[0]


def _attached_quick(tmp: Path, runtime: str) -> tuple[dict, dict, dict]:
    state = tmp / "state"
    up = _meshbed("up", "--detach", "--json", "--runtime", runtime, "--state-dir", str(state), timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    endpoints = json.loads(up.stdout)
    try:
        mesh_json = tmp / "mesh.json"
        mesh_json.write_text(up.stdout)
        r = _meshbed("run", "-m", "quick", "--attach", str(mesh_json), "--out", str(tmp / "out"),
                     "--state-dir", str(state))
        assert (tmp / "out" / "conformance.json").exists(), r.stdout[-3000:] + r.stderr[-3000:]
        verdicts, doc = _verdicts(tmp / "out")
        # the detached mesh is still up, and back at its baseline
        st = _meshbed("status", "--run", endpoints["run_id"], "--json", "--state-dir", str(state), timeout=60)
        assert json.loads(st.stdout)["status"] == "ready"
        return verdicts, doc, endpoints
    finally:
        _meshbed("down", "--run", endpoints["run_id"], "--state-dir", str(state), timeout=300)


def _compare(normal: dict, attached: dict, expected_skips: set[str]) -> None:
    # the same code selects the same checks; ids only one run has come from the tree changing between the runs
    common = set(normal) & set(attached)
    assert len(common) >= 10 and expected_skips <= common, (sorted(normal), sorted(attached))
    diff = {cid: (normal[cid], attached[cid]) for cid in common
            if cid not in expected_skips and normal[cid][0] != attached[cid][0]}
    assert not diff, f"verdicts differ (normal, attached): {diff}"
    for cid in expected_skips:
        verdict, reason = attached[cid]
        assert verdict == "skipped" and reason.startswith("the attached mesh lacks"), (cid, attached[cid])


@pytest.mark.integration
def test_attach_process_mesh_gets_the_same_verdicts(normal_quick, tmp_path):
    verdicts, doc, endpoints = _attached_quick(tmp_path, "process")
    assert endpoints["format"] == attach.FORMAT and endpoints["scale"]["local_instances"] is True
    env = doc["environment"]
    assert env["runtime"] == "attached"
    assert env["attached"]["capabilities"] == sorted(attach.CAPABILITIES)
    assert not any(env["leftovers_at_end"].values()), env["leftovers_at_end"]
    _compare(normal_quick, verdicts, set())


def _docker_ok() -> bool:
    from meshbed.runtime.docker import engine_status
    return engine_status()[0]


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.skipif(os.environ.get("MESHBED_SKIP_DOCKER") == "1" or not _docker_ok(), reason="no Docker engine")
def test_attach_docker_mesh_gets_the_same_verdicts_but_cannot_scale(normal_quick, tmp_path):
    """The mesh's Envoys run in containers: they cannot reach an instance started on the host, so the quick
    checks that scale a service up (DISC-1, LB-5) are skipped; every other verdict matches the normal run."""
    verdicts, doc, endpoints = _attached_quick(tmp_path, "docker")
    assert endpoints["scale"]["local_instances"] is False
    assert "scale" not in doc["environment"]["attached"]["capabilities"]
    scaling = {cid for cid, e in CATALOG.items() if "scale" in e.needs} & set(verdicts)
    _compare(normal_quick, verdicts, scaling)
