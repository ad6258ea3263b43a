"""The topology file: what mesh to build, validated into plain dataclasses.

A bad file fails with one ConfigError line naming the file, the field path
and the problem — never a traceback. The format is described for people in
docs/topology.md and for editors by the JSON Schema ``topology.schema.json``
beside this module (``schema()``); tests keep the three in step.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .policy import LB_POLICIES, MeshPolicy, ServicePolicy
from .safeio import MAX_CONFIG_BYTES, load_yaml, one_line

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
ZONE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
PREFIX_RE = re.compile(r"^/[\x21-\x7e]{0,255}$")
LINKS = ("upstream", "control_plane", "tracing", "consul")
SCHEMA_PATH = Path(__file__).resolve().parent / "topology.schema.json"

# the fields each level of a topology file accepts (policy fields: meshbed.policy)
TOP_FIELDS = frozenset({"name", "services", "ingress", "chaos", "mesh", "registry", "tracing"})
SERVICE_FIELDS = frozenset({"replicas", "calls", "policy", "instances", "propagation"})
INSTANCE_FIELDS = frozenset({"version", "priority", "zone"})
INGRESS_FIELDS = frozenset({"routes"})
ROUTE_FIELDS = frozenset({"prefix", "service"})
CHAOS_FIELDS = frozenset({"links"})
MESH_FIELDS = frozenset({"sampling_percent"})


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
    # w3c | b3 | both: the trace headers this service's app propagates; "" = the mesh's `tracing` (TRACE-6)
    propagation: str = ""


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
    registry: str = "consul"  # consul | eureka: where instances register (docs/registries.md)
    tracing: str = "w3c"  # w3c | b3: trace headers and Envoy's tracer (docs/tracing-formats.md)

    def instances(self) -> list[InstanceSpec]:
        return [i for s in self.services.values() for i in s.instances]

    def callers_of(self, service: str) -> list[str]:
        """Services (and 'ingress') whose Envoys subscribe to ``service``."""
        out = [s.name for s in self.services.values() if service in s.calls]
        if any(r.service == service for r in self.ingress):
            out.append("ingress")
        return out


# What one instance costs: an Envoy sidecar (~65 MB resident, measured with
# Envoy 1.40) and a sample-service process (~40 MB), plus the start-up CPU of
# both. The cap keeps a topology within what this machine can actually run,
# instead of a start-up that swaps or times out half-way.
INSTANCE_MB = 150
INSTANCES_PER_CPU = 16
INSTANCES_FLOOR = 8  # even a small machine runs the examples (basic.yaml: 5)
INSTANCES_CEILING = 256  # beyond this the process runtime's port and fd budget is the limit


def _mem_total_mb() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def instance_limit() -> tuple[int, str]:
    """(total instances this machine can run, why): from its CPUs and memory."""
    cpus, mem = _cpus(), _mem_total_mb()
    limits = [INSTANCES_CEILING, cpus * INSTANCES_PER_CPU]
    if mem:
        limits.append(mem // INSTANCE_MB)
    limit = max(INSTANCES_FLOOR, min(limits))
    mem_text = f"{mem / 1024:.1f} GB RAM" if mem else "unknown RAM"
    why = (f"this machine's limit for {cpus} CPUs and {mem_text}: each instance is an Envoy sidecar and a "
           f"sample-service process (~{INSTANCE_MB} MB, {INSTANCES_PER_CPU} per CPU; at most {INSTANCES_CEILING})")
    return limit, why


class _Path:
    """Builds 'services.backend.replicas' style field paths for errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(one_line(f"{self.source}: {where}: {problem}"))


def _opt(d: dict[str, Any], key: str, default: Any) -> Any:
    """An optional field: absent or null means the default; anything else is checked as given."""
    v = d.get(key)
    return default if v is None else v


def _short(v: Any, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


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
        raise p.fail(where, f"must be an integer in {lo}..{hi}, got {_short(v)}")
    return v


def _name(p: _Path, v: Any, where: str) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise p.fail(where, f"{_short(v)} is not a valid name (lowercase letters, digits, '-', starting with a letter, <= 31 chars)")
    return v


def _check_instance_total(p: _Path, raw_services: dict[Any, Any], max_instances: int | None) -> None:
    """Refuse a topology bigger than this machine can run, before validating it field by field."""
    total = 0
    for s in raw_services.values():
        r = s.get("replicas", 1) if isinstance(s, dict) else 1
        total += r if isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= 32 else 1
    limit, why = instance_limit()
    if max_instances is not None:
        limit, why = max_instances, "the limit given"
    if total > limit:
        raise p.fail("services", f"{len(raw_services)} services with {total} instances in all (services x replicas), "
                                 f"over {limit} ({why}); use fewer services or replicas")


def parse(data: Any, source: str = "<dict>", *, max_instances: int | None = None) -> Topology:
    """Validate a topology document (already loaded from YAML).

    ``max_instances`` caps services x replicas; by default it is what this
    machine can run (see ``instance_limit``).
    """
    p = _Path(source)
    if data is None:
        raise p.fail("(top)", "the file is empty")
    d = _mapping(p, data, "(top)")
    _check_keys(p, d, "", set(TOP_FIELDS))
    if "name" in d:
        name = _name(p, d["name"], "name")
    else:  # no name: derive a valid one from the file name
        stem = re.sub(r"[^a-z0-9-]+", "-", Path(source).stem.lower()).strip("-") if source != "<dict>" else "mesh"
        name = stem[:31] if NAME_RE.match(stem[:31] or "-") else "mesh"
    raw_services = _mapping(p, d["services"], "services") if d.get("services") is not None else None
    if not raw_services:
        raise p.fail("services", "at least one service is required")
    _check_instance_total(p, raw_services, max_instances)
    services: dict[str, ServiceSpec] = {}
    for sname, sraw in raw_services.items():
        where = f"services.{sname}"
        _name(p, sname, where)
        if sname == "ingress":
            raise p.fail(where, "'ingress' is reserved for the edge proxy")
        s = _mapping(p, sraw if sraw is not None else {}, where)
        _check_keys(p, s, where, set(SERVICE_FIELDS))
        replicas = _int(p, s.get("replicas", 1), f"{where}.replicas", 1, 32)
        calls = _opt(s, "calls", [])
        if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
            raise p.fail(f"{where}.calls", "must be a list of service names")
        twice = sorted({c for c in calls if calls.count(c) > 1})
        if twice:
            raise p.fail(f"{where}.calls", f"lists {twice[0]!r} more than once")
        try:
            policy = ServicePolicy.from_json(_mapping(p, _opt(s, "policy", {}), f"{where}.policy"),
                                             where=f"{where}.policy")
        except ConfigError as exc:
            raise ConfigError(one_line(f"{source}: {exc}")) from None
        raw_inst = _opt(s, "instances", [])
        if not isinstance(raw_inst, list):
            raise p.fail(f"{where}.instances", "must be a list of mappings")
        if raw_inst and len(raw_inst) != replicas:
            raise p.fail(f"{where}.instances", f"lists {len(raw_inst)} instances but replicas is {replicas}")
        insts = []
        for i in range(replicas):
            iw = f"{where}.instances[{i}]"
            ir = _mapping(p, raw_inst[i], iw) if raw_inst else {}
            _check_keys(p, ir, iw, set(INSTANCE_FIELDS))
            version = ir.get("version", "v1")
            if not isinstance(version, str) or not re.match(r"^[a-z0-9][a-z0-9.-]{0,15}$", version):
                raise p.fail(f"{iw}.version", f"{_short(version)} is not a valid version label")
            zone = ir.get("zone", "zone-a")
            if not isinstance(zone, str) or not ZONE_RE.match(zone):
                raise p.fail(f"{iw}.zone", f"must be a zone name (letters, digits, '.', '_', '-', <= 63 chars), "
                                           f"got {_short(zone)}")
            insts.append(InstanceSpec(sname, i, version, _int(p, ir.get("priority", 0), f"{iw}.priority", 0, 5), zone))
        versions = {i.version for i in insts}
        missing = sorted(set(policy.weights) - versions)
        if missing:
            raise p.fail(f"{where}.policy.weights", f"version {missing[0]!r} has no instance (versions: {sorted(versions)})")
        propagation = _opt(s, "propagation", "")
        if propagation not in ("", "w3c", "b3", "both"):
            raise p.fail(f"{where}.propagation", f"{_short(propagation)} is not one of w3c, b3, both")
        services[sname] = ServiceSpec(sname, replicas, tuple(calls), policy, tuple(insts), propagation)
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
        _check_keys(p, ig, "ingress", set(INGRESS_FIELDS))
        raw_routes = ig.get("routes")
        if not isinstance(raw_routes, list) or not raw_routes:
            raise p.fail("ingress.routes", "must be a non-empty list of {prefix, service}")
        for i, r in enumerate(raw_routes):
            rw = f"ingress.routes[{i}]"
            rr = _mapping(p, r, rw)
            _check_keys(p, rr, rw, set(ROUTE_FIELDS))
            prefix = rr.get("prefix", "/")
            if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
                raise p.fail(f"{rw}.prefix", f"must be a path starting with '/' (printable, no spaces, <= 256 chars), "
                                             f"got {_short(prefix)}")
            if any(r.prefix == prefix for r in routes):
                raise p.fail(f"{rw}.prefix", f"{prefix!r} is routed twice")
            _check_not_shadowed(p, routes, prefix, rw)
            svc = rr.get("service")
            if not isinstance(svc, str) or svc not in services:
                raise p.fail(f"{rw}.service", f"unknown service {_short(svc)}; known: {', '.join(services)}")
            routes.append(IngressRoute(prefix, svc))
    chaos = _mapping(p, _opt(d, "chaos", {}), "chaos")
    _check_keys(p, chaos, "chaos", set(CHAOS_FIELDS))
    links = _opt(chaos, "links", list(LINKS))
    if not isinstance(links, list):
        raise p.fail("chaos.links", f"must be a list drawn from {', '.join(LINKS)}")
    for i, link in enumerate(links):
        if link not in LINKS:
            raise p.fail(f"chaos.links[{i}]", f"{_short(link)} is not one of {', '.join(LINKS)}")
    mesh_raw = _mapping(p, _opt(d, "mesh", {}), "mesh")
    _check_keys(p, mesh_raw, "mesh", set(MESH_FIELDS))
    sp = mesh_raw.get("sampling_percent")
    if sp is not None and (isinstance(sp, bool) or not isinstance(sp, (int, float))):
        raise p.fail("mesh.sampling_percent", f"must be a number in 0..100, got {_short(sp)}")
    try:
        mesh = MeshPolicy.from_json(mesh_raw)
    except ConfigError as exc:
        raise ConfigError(one_line(f"{source}: {exc}")) from None
    registry, tracing = _opt(d, "registry", "consul"), _opt(d, "tracing", "w3c")
    if registry not in ("consul", "eureka"):
        raise p.fail("registry", f"{_short(registry)} is not one of consul, eureka")
    if tracing not in ("w3c", "b3"):
        raise p.fail("tracing", f"{_short(tracing)} is not one of w3c, b3")
    return Topology(name, services, tuple(routes), frozenset(links), mesh, source, registry=registry, tracing=tracing)


def _check_not_shadowed(p: _Path, earlier: list[IngressRoute], prefix: str, where: str) -> None:
    """The ingress Envoy tries routes in file order and takes the first whose prefix matches (a plain
    string prefix): a route after one with a prefix of its own prefix can never match. An error, not
    a warning: that route's service would silently get no traffic from the edge, and the fix (list
    the longer prefix first) is always possible."""
    for i, r in enumerate(earlier):
        if prefix.startswith(r.prefix):
            raise p.fail(f"{where}.prefix", f"{prefix!r} can never match: the earlier ingress.routes[{i}] "
                                            f"({r.prefix!r} -> {r.service}) takes every path it would; "
                                            f"list the longer prefix first")


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


def schema() -> dict[str, Any]:
    """The JSON Schema of topology files (what editors validate with; docs/topology.md is checked against it)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def load(path: str | Path, *, max_instances: int | None = None) -> Topology:
    """Read and validate a topology YAML file (strictly: see meshbed.safeio)."""
    path = Path(path)
    data = load_yaml(path, "topology file", MAX_CONFIG_BYTES,
                     missing_hint="pass -f examples/basic.yaml or a file of yours")
    return parse(data, str(path), max_instances=max_instances)


__all__ = ["Topology", "ServiceSpec", "InstanceSpec", "IngressRoute", "load", "parse", "instance_limit", "schema",
           "LINKS", "LB_POLICIES", "SCHEMA_PATH"]
