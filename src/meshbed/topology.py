"""The topology file: what mesh to build, validated into plain dataclasses.

A bad file fails with one ConfigError line naming the file, the field path
and the problem — never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .policy import LB_POLICIES, MeshPolicy, ServicePolicy

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
LINKS = ("upstream", "control_plane", "tracing", "consul")


@dataclass(frozen=True)
class InstanceSpec:
    service: str
    index: int
    version: str = "v1"
    priority: int = 0
    zone: str = "zone-a"

    @property
    def id(self) -> str:
        return f"{self.service}-{self.index}"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    replicas: int
    calls: tuple[str, ...] = ()
    policy: ServicePolicy = field(default_factory=ServicePolicy)
    instances: tuple[InstanceSpec, ...] = ()


@dataclass(frozen=True)
class IngressRoute:
    prefix: str
    service: str


@dataclass(frozen=True)
class Topology:
    name: str
    services: dict[str, ServiceSpec]
    ingress: tuple[IngressRoute, ...]
    chaos_links: frozenset[str]
    mesh: MeshPolicy
    source: str = "<dict>"

    def instances(self) -> list[InstanceSpec]:
        return [i for s in self.services.values() for i in s.instances]

    def callers_of(self, service: str) -> list[str]:
        """Services (and 'ingress') whose Envoys subscribe to ``service``."""
        out = [s.name for s in self.services.values() if service in s.calls]
        if any(r.service == service for r in self.ingress):
            out.append("ingress")
        return out


class _Path:
    """Builds 'services.backend.replicas' style field paths for errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")


def _mapping(p: _Path, v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise p.fail(where, f"must be a mapping, got {type(v).__name__}")
    return v


def _check_keys(p: _Path, d: dict[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise p.fail(f"{where}.{unknown[0]}" if where else unknown[0],
                     f"unknown field; expected one of {', '.join(sorted(allowed))}")


def _int(p: _Path, v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise p.fail(where, f"must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _name(p: _Path, v: Any, where: str) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise p.fail(where, f"{v!r} is not a valid name (lowercase letters, digits, '-', starting with a letter, <= 31 chars)")
    return v


def parse(data: Any, source: str = "<dict>") -> Topology:
    """Validate a topology document (already loaded from YAML)."""
    p = _Path(source)
    if data is None:
        raise p.fail("(top)", "the file is empty")
    d = _mapping(p, data, "(top)")
    _check_keys(p, d, "", {"name", "services", "ingress", "chaos", "mesh"})
    if "name" in d:
        name = _name(p, d["name"], "name")
    else:  # no name: derive a valid one from the file name
        stem = re.sub(r"[^a-z0-9-]+", "-", Path(source).stem.lower()).strip("-") if source != "<dict>" else "mesh"
        name = stem[:31] if NAME_RE.match(stem[:31] or "-") else "mesh"
    raw_services = _mapping(p, d.get("services"), "services") if "services" in d else None
    if not raw_services:
        raise p.fail("services", "at least one service is required")
    services: dict[str, ServiceSpec] = {}
    for sname, sraw in raw_services.items():
        where = f"services.{sname}"
        _name(p, sname, where)
        if sname == "ingress":
            raise p.fail(where, "'ingress' is reserved for the edge proxy")
        s = _mapping(p, sraw if sraw is not None else {}, where)
        _check_keys(p, s, where, {"replicas", "calls", "policy", "instances"})
        replicas = _int(p, s.get("replicas", 1), f"{where}.replicas", 1, 32)
        calls = s.get("calls", []) or []
        if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
            raise p.fail(f"{where}.calls", "must be a list of service names")
        try:
            policy = ServicePolicy.from_json(s.get("policy") or {}, where=f"{where}.policy")
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        raw_inst = s.get("instances") or []
        if not isinstance(raw_inst, list):
            raise p.fail(f"{where}.instances", "must be a list of mappings")
        if raw_inst and len(raw_inst) != replicas:
            raise p.fail(f"{where}.instances", f"lists {len(raw_inst)} instances but replicas is {replicas}")
        insts = []
        for i in range(replicas):
            iw = f"{where}.instances[{i}]"
            ir = _mapping(p, raw_inst[i], iw) if raw_inst else {}
            _check_keys(p, ir, iw, {"version", "priority", "zone"})
            version = ir.get("version", "v1")
            if not isinstance(version, str) or not re.match(r"^[a-z0-9][a-z0-9.-]{0,15}$", version):
                raise p.fail(f"{iw}.version", f"{version!r} is not a valid version label")
            zone = ir.get("zone", "zone-a")
            if not isinstance(zone, str) or not zone:
                raise p.fail(f"{iw}.zone", f"must be a non-empty string, got {zone!r}")
            insts.append(InstanceSpec(sname, i, version, _int(p, ir.get("priority", 0), f"{iw}.priority", 0, 5), zone))
        versions = {i.version for i in insts}
        missing = sorted(set(policy.weights) - versions)
        if missing:
            raise p.fail(f"{where}.policy.weights", f"version {missing[0]!r} has no instance (versions: {sorted(versions)})")
        services[sname] = ServiceSpec(sname, replicas, tuple(calls), policy, tuple(insts))
    for s in services.values():
        for i, c in enumerate(s.calls):
            if c not in services:
                raise p.fail(f"services.{s.name}.calls[{i}]", f"calls unknown service {c!r}; known: {', '.join(services)}")
            if c == s.name:
                raise p.fail(f"services.{s.name}.calls[{i}]", "a service cannot call itself")
    _check_cycles(p, services)
    ing = d.get("ingress")
    routes: list[IngressRoute] = []
    if ing is None:
        first = next(iter(services))
        routes = [IngressRoute("/", first)]
    else:
        ig = _mapping(p, ing, "ingress")
        _check_keys(p, ig, "ingress", {"routes"})
        raw_routes = ig.get("routes")
        if not isinstance(raw_routes, list) or not raw_routes:
            raise p.fail("ingress.routes", "must be a non-empty list of {prefix, service}")
        for i, r in enumerate(raw_routes):
            rw = f"ingress.routes[{i}]"
            rr = _mapping(p, r, rw)
            _check_keys(p, rr, rw, {"prefix", "service"})
            prefix = rr.get("prefix", "/")
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise p.fail(f"{rw}.prefix", f"must start with '/', got {prefix!r}")
            svc = rr.get("service")
            if not isinstance(svc, str) or svc not in services:
                raise p.fail(f"{rw}.service", f"unknown service {svc!r}; known: {', '.join(services)}")
            routes.append(IngressRoute(prefix, svc))
    chaos = _mapping(p, d.get("chaos") or {}, "chaos")
    _check_keys(p, chaos, "chaos", {"links"})
    links = chaos.get("links", list(LINKS))
    if not isinstance(links, list):
        raise p.fail("chaos.links", f"must be a list drawn from {', '.join(LINKS)}")
    for i, link in enumerate(links):
        if link not in LINKS:
            raise p.fail(f"chaos.links[{i}]", f"{link!r} is not one of {', '.join(LINKS)}")
    mesh_raw = _mapping(p, d.get("mesh") or {}, "mesh")
    _check_keys(p, mesh_raw, "mesh", {"sampling_percent"})
    try:
        mesh = MeshPolicy.from_json(mesh_raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return Topology(name, services, tuple(routes), frozenset(links), mesh, source)


def _check_cycles(p: _Path, services: dict[str, ServiceSpec]) -> None:
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 1:
            raise p.fail(f"services.{n}.calls", f"call cycle: {' -> '.join(trail + [n])}")
        if state.get(n) == 2:
            return
        state[n] = 1
        for c in services[n].calls:
            visit(c, trail + [n])
        state[n] = 2

    for n in services:
        visit(n, [])


def load(path: str | Path) -> Topology:
    """Read and validate a topology YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: topology file not found", hint="pass -f examples/basic.yaml or a file of yours") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read topology file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file", hint="a topology is YAML text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}: invalid YAML: {problem}") from None
    return parse(data, str(path))


__all__ = ["Topology", "ServiceSpec", "InstanceSpec", "IngressRoute", "load", "parse", "LINKS", "LB_POLICIES"]
