"""Judge a mesh meshbed did not start: `meshbed run --attach mesh.json`.

``mesh.json`` names where the running mesh is reached (docs/attach.md): the
ingress, every Envoy's admin API and role, Consul, Jaeger's query API, every
instance's sample app, and optionally a Toxiproxy API with the links it
fronts, the control plane's debug API, commands that kill, pause and restart
components (``controls``) and what it takes to start more instances or
watcher Envoys here (``scale``). What `meshbed up --json` prints is valid
input (:func:`describe` adds what it lacks to :func:`meshbed.mesh_build.describe`).

:func:`load` parses it strictly (one-line ConfigError naming the field);
:func:`capabilities` says what the attached mesh can do, and each catalog
check's ``needs`` (:mod:`meshbed.checks.catalog`) decides, at collection, which
checks are skipped for lack of it; :func:`attach` hands out the same
:class:`~meshbed.mesh.Mesh` handle a started mesh has. Whatever meshbed starts
for the checks (watcher Envoys, scaled-up instances) runs here, in a run
directory of its own, and is stopped on exit.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

from .checks.catalog import CAPABILITIES  # capability -> what grants it in mesh.json (re-exported)
from .errors import ComponentError, ConfigError
from .runtime.base import ComponentSpec, Handle

if TYPE_CHECKING:
    from .mesh import Mesh
    from .settings import Settings
    from .topology import Topology

FORMAT = "meshbed.attach/v1"
LINK_KINDS = ("upstream", "control_plane", "consul", "tracing")
ROLES = ("sidecar", "ingress", "watcher")
CONTROL_ACTIONS = ("kill", "stop", "restart", "pause", "resume")


_TOP_KEYS = {
    "format", "run_id", "run_dir", "runtime", "topology", "topology_file", "ingress_url", "envoy_admin", "envoys",
    "controlplane", "consul_url", "jaeger_query_url", "jaeger_otlp", "toxiproxy_api", "links",
    "consul_gate_admin_url", "instances", "controls", "scale", "timings_s",
}


# -- mesh.json ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvoyEntry:
    admin_url: str
    role: str  # sidecar | ingress | watcher
    instance: str = ""  # the instance a sidecar fronts


@dataclass(frozen=True)
class Scale:
    xds: str = ""  # host:port of the control plane's xDS, as dialled from here
    otlp_grpc: str = ""  # host:port Envoys started here send spans to
    otlp_http_url: str = ""  # URL apps started here send spans to
    consul_url: str = ""  # URL apps started here register with
    local_instances: bool = False  # the mesh's Envoys reach an instance started here (a local process mesh)


@dataclass(frozen=True)
class MeshDoc:
    """A parsed mesh.json."""

    source: str
    topology: str  # a path (absolute, or relative to mesh.json's directory) or a packaged topology's name
    ingress_url: str
    envoys: dict[str, EnvoyEntry]
    consul_url: str
    jaeger_query_url: str
    instances: dict[str, dict[str, str]]  # id -> {app_url, registered}
    controlplane: dict[str, str] = field(default_factory=dict)  # kind, xds, debug_url
    toxiproxy_api: str = ""
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    consul_gate_admin_url: str = ""
    controls: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    scale: Scale = Scale()
    run_id: str = ""
    runtime: str = ""


def _err(source: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {problem}", hint="docs/attach.md describes mesh.json")


def _str(src: str, d: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise _err(src, f"{where}{key}", "missing")
        return ""
    if not isinstance(v, str) or not v.strip():
        raise _err(src, f"{where}{key}", f"expected a non-empty string, got {v!r}"[:200])
    return v.strip()


def _url(src: str, value: str, where: str) -> str:
    u = urlsplit(value)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise _err(src, where, f"{value!r} is not an http(s) URL with a host")
    try:
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _err(src, where, f"{value!r}: bad port") from None
    return value.rstrip("/")


def _hostport(src: str, value: str, where: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _err(src, where, f"{value!r} is not host:port")
    return value


def _obj(src: str, v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _err(src, where, f"expected an object, got {type(v).__name__}")
    return v


def _command(src: str, v: Any, where: str) -> list[str]:
    if isinstance(v, str) and v.strip():
        return shlex.split(v)
    if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return list(v)
    raise _err(src, where, "expected a command: a string or a non-empty list of strings")


def parse(doc: Any, source: str = "<mesh.json>") -> MeshDoc:
    """mesh.json's content as a :class:`MeshDoc`; ConfigError (one line, naming the field) on anything wrong."""
    src = source
    d = _obj(src, doc, "top level")
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise _err(src, unknown[0], f"unknown field (known: {', '.join(sorted(_TOP_KEYS))})")
    topology = _str(src, d, "topology_file", "") or _str(src, d, "topology", "", required=True)
    ingress = _url(src, _str(src, d, "ingress_url", "", required=True), "ingress_url")
    envoys: dict[str, EnvoyEntry] = {}
    if "envoys" in d and "envoy_admin" in d:
        raise _err(src, "envoys", "give envoys or envoy_admin, not both")
    if "envoy_admin" in d:  # `meshbed up --json`: name -> admin URL; the role follows from the name
        for n, u in _obj(src, d["envoy_admin"], "envoy_admin").items():
            if not isinstance(u, str):
                raise _err(src, f"envoy_admin.{n}", "expected an admin URL")
            role = "ingress" if n == "ingress" else "sidecar"
            envoys[n] = EnvoyEntry(_url(src, u, f"envoy_admin.{n}"), role, "" if role == "ingress" else n)
    else:
        for n, e in _obj(src, d.get("envoys"), "envoys").items():
            e = _obj(src, e, f"envoys.{n}")
            extra = sorted(set(e) - {"admin_url", "role", "instance"})
            if extra:
                raise _err(src, f"envoys.{n}.{extra[0]}", "unknown field (known: admin_url, role, instance)")
            role = _str(src, e, "role", f"envoys.{n}.", required=True)
            if role not in ROLES:
                raise _err(src, f"envoys.{n}.role", f"{role!r} is not one of {', '.join(ROLES)}")
            inst = _str(src, e, "instance", f"envoys.{n}.") or (n if role == "sidecar" else "")
            envoys[n] = EnvoyEntry(_url(src, _str(src, e, "admin_url", f"envoys.{n}.", required=True),
                                       f"envoys.{n}.admin_url"), role, inst)
    if not any(e.role == "ingress" for e in envoys.values()):
        raise _err(src, "envoys", "no Envoy with role ingress (its admin API is needed)")
    instances: dict[str, dict[str, str]] = {}
    for i, body in _obj(src, d.get("instances"), "instances").items():
        body = _obj(src, body, f"instances.{i}")
        extra = sorted(set(body) - {"app_url", "registered"})
        if extra:
            raise _err(src, f"instances.{i}.{extra[0]}", "unknown field (known: app_url, registered)")
        app = _url(src, _str(src, body, "app_url", f"instances.{i}.", required=True), f"instances.{i}.app_url")
        reg = body.get("registered") or ""
        if reg:
            _hostport(src, str(reg), f"instances.{i}.registered")
        instances[i] = {"app_url": app, "registered": str(reg)}
    cp: dict[str, str] = {}
    if d.get("controlplane") is not None:
        c = _obj(src, d["controlplane"], "controlplane")
        extra = sorted(set(c) - {"kind", "xds", "debug_url"})
        if extra:
            raise _err(src, f"controlplane.{extra[0]}", "unknown field (known: kind, xds, debug_url)")
        cp = {"kind": _str(src, c, "kind", "controlplane.") or "external",
              "xds": _hostport(src, _str(src, c, "xds", "controlplane."), "controlplane.xds") if c.get("xds") else "",
              "debug_url": _url(src, _str(src, c, "debug_url", "controlplane."), "controlplane.debug_url")
              if c.get("debug_url") else ""}
    toxi = _url(src, _str(src, d, "toxiproxy_api", ""), "toxiproxy_api") if d.get("toxiproxy_api") else ""
    links: dict[str, dict[str, str]] = {}
    for kind, m in _obj(src, d.get("links") or {}, "links").items():
        if kind not in LINK_KINDS:
            raise _err(src, f"links.{kind}", f"unknown link kind (known: {', '.join(LINK_KINDS)})")
        m = _obj(src, m, f"links.{kind}")
        if not all(isinstance(v, str) and v for v in m.values()):
            raise _err(src, f"links.{kind}", "expected {key: Toxiproxy proxy name}")
        links[kind] = dict(m)
    if links and not toxi:
        raise _err(src, "links", "links need toxiproxy_api (the API of the Toxiproxy that fronts them)")
    controls: dict[str, dict[str, list[str]]] = {}
    for target, acts in _obj(src, d.get("controls") or {}, "controls").items():
        acts = _obj(src, acts, f"controls.{target}")
        for a in acts:
            if a not in CONTROL_ACTIONS:
                raise _err(src, f"controls.{target}.{a}", f"unknown action (known: {', '.join(CONTROL_ACTIONS)})")
        controls[target] = {a: _command(src, v, f"controls.{target}.{a}") for a, v in acts.items()}
    scale = _scale(src, d, cp)
    gate = _url(src, _str(src, d, "consul_gate_admin_url", ""), "consul_gate_admin_url") \
        if d.get("consul_gate_admin_url") else ""
    return MeshDoc(source=src, topology=topology, ingress_url=ingress, envoys=envoys,
                   consul_url=_url(src, _str(src, d, "consul_url", "", required=True), "consul_url"),
                   jaeger_query_url=_url(src, _str(src, d, "jaeger_query_url", "", required=True), "jaeger_query_url"),
                   instances=instances, controlplane=cp, toxiproxy_api=toxi, links=links,
                   consul_gate_admin_url=gate, controls=controls, scale=scale,
                   run_id=str(d.get("run_id") or ""), runtime=str(d.get("runtime") or ""))


def _scale(src: str, d: dict[str, Any], cp: dict[str, str]) -> Scale:
    """``scale`` as given; else what `meshbed up` printed before it had one (xDS and OTLP from their fields)."""
    s = d.get("scale")
    if s is None:
        otlp = d.get("jaeger_otlp") if isinstance(d.get("jaeger_otlp"), dict) else {}
        return Scale(xds=cp.get("xds", ""), otlp_grpc=str(otlp.get("grpc") or ""),
                     otlp_http_url=f"{otlp['http']}/v1/traces" if otlp.get("http") else "")
    s = _obj(src, s, "scale")
    extra = sorted(set(s) - {"xds", "otlp_grpc", "otlp_http_url", "consul_url", "local_instances"})
    if extra:
        raise _err(src, f"scale.{extra[0]}", "unknown field (known: xds, otlp_grpc, otlp_http_url, consul_url, "
                                             "local_instances)")
    local = s.get("local_instances", False)
    if not isinstance(local, bool):
        raise _err(src, "scale.local_instances", f"expected true or false, got {local!r}")
    return Scale(xds=_hostport(src, _str(src, s, "xds", "scale."), "scale.xds") if s.get("xds") else "",
                 otlp_grpc=_hostport(src, _str(src, s, "otlp_grpc", "scale."), "scale.otlp_grpc")
                 if s.get("otlp_grpc") else "",
                 otlp_http_url=_url(src, _str(src, s, "otlp_http_url", "scale."), "scale.otlp_http_url")
                 if s.get("otlp_http_url") else "",
                 consul_url=_url(src, _str(src, s, "consul_url", "scale."), "scale.consul_url")
                 if s.get("consul_url") else "",
                 local_instances=local)


def load(path: str | Path) -> MeshDoc:
    """Read and parse mesh.json (strict JSON: no duplicate keys, size and depth capped)."""
    from .safeio import load_json, show
    return parse(load_json(path, "mesh description (--attach)", missing_hint="`meshbed up --detach --json > mesh.json` "
                           "writes one"), show(path))


def topology_path(doc: MeshDoc, mesh_json: str | Path) -> Path:
    """The topology mesh.json names: relative paths from mesh.json's directory; a bare name is a packaged one."""
    from . import packaged
    p = Path(doc.topology)
    if not p.is_absolute():
        beside = Path(mesh_json).resolve().parent / p
        if beside.exists():
            return beside
        if packaged.is_name(doc.topology):
            return packaged.topology(doc.topology)
    if not p.exists():
        raise ConfigError(f"{doc.source}: topology: {doc.topology} not found",
                          hint="give the topology file the mesh runs (or -f FILE)")
    return p.resolve()


# -- what the attached mesh can do --------------------------------------------------------------------


def capabilities(doc: MeshDoc, topology: "Topology") -> frozenset[str]:
    """What ``doc`` lets the checks do (names as in :data:`CAPABILITIES`)."""
    caps: set[str] = set()
    insts = [i.id for s in topology.services.values() for i in s.instances]
    if doc.toxiproxy_api:
        if insts and all(i in doc.links.get("upstream", {}) for i in insts):
            caps.add("toxiproxy:upstream")
        if doc.links.get("control_plane"):
            caps.add("toxiproxy:control_plane")
        if doc.links.get("consul", {}).get("controlplane"):
            caps.add("toxiproxy:consul")
        if doc.links.get("tracing"):
            caps.add("toxiproxy:tracing")

    def has(target: str, *actions: str) -> bool:
        return all(a in doc.controls.get(target, {}) for a in actions)

    if has("controlplane", "kill", "restart"):
        caps.add("controlplane:kill")
    if has("consul", "pause", "resume"):
        caps.add("consul:pause")
    if doc.consul_gate_admin_url:
        caps.add("consul:gate")
    if insts and all(has(f"app:{i}", "restart") and has(f"sidecar:{i}", "restart") for i in insts):
        caps.add("instances:restart")
    sc = doc.scale
    if sc.xds and sc.otlp_grpc:
        caps.add("watchers")
        if sc.local_instances and sc.otlp_http_url and (sc.consul_url or doc.consul_url):
            caps.add("scale")
    return frozenset(caps)


def missing(needs: tuple[str, ...] | frozenset[str], caps: frozenset[str]) -> str:
    """Why a check with ``needs`` cannot run on a mesh with ``caps`` ('' when it can)."""
    lack = [n for n in needs if n not in caps]
    if not lack:
        return ""
    return "the attached mesh lacks " + "; ".join(f"{n} ({CAPABILITIES.get(n, 'unknown capability')})"
                                                 for n in lack)


# -- handles on components meshbed did not start --------------------------------------------------------


def _port_of(url: str) -> int:
    u = urlsplit(url if "://" in url else f"tcp://{url}")
    return u.port or (443 if u.scheme == "https" else 80)


class AttachedHandle(Handle):
    """A component reached at URLs from mesh.json; kill/pause/restart run its ``controls`` commands."""

    def __init__(self, name: str, kind: str, endpoints: dict[str, str], controls: dict[str, list[str]] | None = None,
                 log_dir: Path | None = None, ready_timeout: float = 60.0) -> None:
        self.endpoints = {k: v for k, v in endpoints.items() if v}  # port name -> base URL (or host:port)
        self.controls = controls or {}
        self._log_dir = log_dir or Path("/nonexistent")
        self._paused = False
        self._lock = threading.RLock()
        self._ready_timeout = ready_timeout
        first = next(iter(self.endpoints.values()), "")
        self.spec = ComponentSpec(name=name, kind=kind, argv=[], ports={k: _port_of(v) for k, v in self.endpoints.items()},
                                  ready=(lambda h: _connects(first)) if first else None,
                                  ready_what=f"{name} to accept connections ({first})",
                                  ready_hint="check the attached mesh; mesh.json's controls restart it")

    def address(self, port: str) -> str:
        v = self.endpoints[port]
        u = urlsplit(v if "://" in v else f"tcp://{v}")
        return f"{u.hostname}:{_port_of(v)}"

    def url(self, port: str, path: str = "") -> str:
        v = self.endpoints[port]
        return (v if "://" in v else f"http://{v}") + path

    @property
    def log_path(self) -> Path:
        return self._log_dir / f"{self.name}.log"  # what its controls printed

    def alive(self) -> bool:
        first = next(iter(self.endpoints.values()), "")
        return _connects(first) if first else True

    def _run(self, action: str) -> None:
        argv = self.controls.get(action)
        if argv is None:
            raise ComponentError(f"{self.name}: cannot {action} a component of the attached mesh: mesh.json gives no "
                                 f"controls.{self.name}.{action}", hint="docs/attach.md: controls")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- meshbed: {action}: {shlex.join(argv)}\n".encode())
            log.flush()
            try:
                r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   timeout=self._ready_timeout + 30)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ComponentError(f"{self.name}: {action} command failed: {exc}") from None
        if r.returncode != 0:
            raise ComponentError(f"{self.name}: {action} command exited {r.returncode}: {self.log_tail(1)}",
                                 hint=f"its output: {self.log_path}")

    def stop(self, timeout: float | None = None) -> None:
        self._run("stop" if "stop" in self.controls else "kill")

    def kill(self) -> None:
        self._run("kill")

    def pause(self) -> None:
        self._run("pause")
        self._paused = True

    def resume(self) -> None:
        if self._paused:  # only what this session paused (reset() resumes every handle between tests)
            self._run("resume")
            self._paused = False

    def restart(self) -> None:
        with self._lock:
            self._run("restart")
            self._paused = False

    def _launch(self) -> None:
        self._run("restart")


def _connects(target: str, timeout: float = 1.0) -> bool:
    u = urlsplit(target if "://" in target else f"tcp://{target}")
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", _port_of(target)), timeout=timeout):
            return True
    except OSError:
        return False


# -- the Mesh handle --------------------------------------------------------------------------------


def _settings_for(doc: MeshDoc, settings: "Settings") -> "Settings":
    """The session's settings, with the attached control plane's kind (it decides the xDS protocol checks expect)."""
    kind = doc.controlplane.get("kind") or "external"
    return replace(settings, controlplane=kind)


def _check_instances(doc: MeshDoc, topology: "Topology") -> None:
    want = {i.id for s in topology.services.values() for i in s.instances}
    sidecars = {e.instance for e in doc.envoys.values() if e.role == "sidecar"}
    for label, have in (("instances", set(doc.instances)), ("sidecar envoys", sidecars)):
        lack = sorted(want - have)
        if lack:
            raise ConfigError(f"{doc.source}: {label}: none for {', '.join(lack)} (topology {topology.name} has them)",
                              hint="mesh.json and the topology must describe the same mesh")
        more = sorted(have - want)
        if more:
            raise ConfigError(f"{doc.source}: {label}: {', '.join(more)} not in topology {topology.name}",
                              hint="mesh.json and the topology must describe the same mesh")


@contextlib.contextmanager
def attach(doc: MeshDoc, topology: "Topology", settings: "Settings",
           progress: Any = lambda s: None) -> Iterator["Mesh"]:
    """The :class:`~meshbed.mesh.Mesh` of a running mesh described by ``doc``; what this session starts for the
    checks (watcher Envoys, scaled-up instances) runs in a run directory of its own and stops on exit."""
    from . import wait
    from .chaos.toxiproxy import ToxiproxyClient
    from .mesh import Mesh, wait_converged
    from .mesh_build import Linker, Scaler, Wiring
    from .observe.consul import ConsulClient
    from .ports import PortAllocator
    from .runtime.base import runtime_factory
    from .runtime.state import RunState

    _check_instances(doc, topology)
    s = _settings_for(doc, settings)
    caps = capabilities(doc, topology)
    state = RunState.create(s.runs_dir, "process", topology.source)
    with contextlib.ExitStack() as stack:
        stack.callback(state.set_status, "down")
        runtime = runtime_factory("process").open(state.run_dir, state)
        stack.callback(runtime.close)
        logs = state.run_dir / "attached"

        def h(name: str, kind: str, endpoints: dict[str, str], target: str = "") -> AttachedHandle:
            return AttachedHandle(name, kind, endpoints, doc.controls.get(target or name), logs, s.ready_timeout)

        cp = doc.controlplane
        controlplane = h("controlplane", "controlplane", {"xds": cp.get("xds", ""), "http": cp.get("debug_url", "")})
        consul = h("consul", "consul", {"http": doc.consul_url})
        jaeger = h("jaeger", "jaeger", {"query_http": doc.jaeger_query_url})
        toxi = h("toxiproxy", "toxiproxy", {"api": doc.toxiproxy_api}) if doc.toxiproxy_api else None
        gate = h("consul-gate", "envoy", {"admin": doc.consul_gate_admin_url}) if doc.consul_gate_admin_url else None
        ingress_admin = next(e.admin_url for e in doc.envoys.values() if e.role == "ingress")
        ingress = h("envoy-ingress", "envoy", {"admin": ingress_admin, "outbound": doc.ingress_url})
        sidecars = {e.instance: h(f"envoy-{e.instance}", "envoy", {"admin": e.admin_url}, f"sidecar:{e.instance}")
                    for e in doc.envoys.values() if e.role == "sidecar"}
        apps = {i: h(f"app-{i}", "app", {"http": b["app_url"]}, f"app:{i}") for i, b in doc.instances.items()}
        specs = {i.id: i for svc in topology.services.values() for i in svc.instances}
        advertised = {i: b["registered"] for i, b in doc.instances.items() if b["registered"]}
        links = {k: dict(v) for k, v in doc.links.items()}
        ports = PortAllocator()
        chaos = frozenset(k for k in topology.chaos_links if k in links) if toxi is not None else frozenset()
        linker = Linker(ToxiproxyClient(doc.toxiproxy_api) if toxi is not None else None,  # type: ignore[arg-type]
                        runtime, ports, chaos, links)
        binaries: dict[str, Any] = {}
        if "watchers" in caps:
            from .provision import require
            binaries["envoy"] = require("envoy")
        sc = doc.scale
        wiring = Wiring(s, state, ports, binaries, linker, cp_xds=sc.xds or "127.0.0.1:1",
                        otlp_grpc=sc.otlp_grpc or "127.0.0.1:1", otlp_http_url=sc.otlp_http_url or "http://127.0.0.1:1",
                        consul_url=sc.consul_url or doc.consul_url)
        mesh = Mesh(topology, doc.run_id or state.run_id, state.run_dir, runtime, consul, jaeger, toxi, controlplane,
                    s, wiring, Scaler, ingress=ingress, sidecars=sidecars, apps=apps, instances=specs, links=links,
                    advertised=advertised, consul_gate=gate, origin="attached")
        progress(f"attached to {doc.source} (topology {topology.name}); capabilities: {', '.join(sorted(caps)) or '-'}")
        down = [x.name for x in mesh.all_handles() if not x.alive()]
        if down:
            raise ComponentError(f"attach {doc.source}: cannot reach {', '.join(down[:8])}",
                                 hint="is the mesh up, and are its URLs reachable from here?")
        cc = ConsulClient(doc.consul_url)

        def registered() -> bool:
            for svc in topology.services:
                for inst in cc.instances(svc):
                    if inst.id in specs and inst.id not in advertised:
                        advertised[inst.id] = inst.address
            lack = sorted(set(specs) - set(advertised))
            if lack:
                raise wait.NotYet(f"no Consul registration for {lack}")
            return True

        wait.until(registered, min(s.ready_timeout, 30.0), interval=0.2,
                   what="every instance of the topology registered in the attached mesh's Consul",
                   hint="mesh.json and the topology must describe the same mesh")
        wait_converged(mesh, s.ready_timeout)
        state.set_status("ready")  # this session's own run: the watchers and scale-ups it starts
        yield mesh


def describe(mesh: "Mesh") -> dict[str, Any]:
    """What `meshbed up --json` prints: :func:`meshbed.mesh_build.describe` plus what --attach needs
    (topology file, links, the Consul gate, controls through `meshbed ctl`, and how to start more here)."""
    from . import supervisor_ctl
    from .mesh_build import describe as endpoints
    out = endpoints(mesh)
    jaeger = mesh.jaeger
    out.update({
        "format": FORMAT,
        "topology_file": str(Path(mesh.topology.source).resolve()) if mesh.topology.source != "<dict>" else None,
        "links": {k: dict(v) for k, v in mesh.links.items()},
        "consul_gate_admin_url": mesh.consul_gate.url("admin") if mesh.consul_gate is not None else None,
        "controls": supervisor_ctl.commands(mesh),
        # the mesh's Envoys reach an instance started on this host only when they run here as processes
        "scale": {"xds": mesh.controlplane.address("xds"), "otlp_grpc": jaeger.address("otlp_grpc"),
                  "otlp_http_url": jaeger.url("otlp_http", "/v1/traces"), "consul_url": mesh.consul.url("http"),
                  "local_instances": mesh.runtime.name == "process"},
    })
    if out.get("topology_file") is None:
        out.pop("topology_file")
    return out
