"""What a failed check carries: the involved Envoys' state at the moment of failure, where to look, how to re-run.

Captured while the test still runs (the recorder's judge, or the call phase
when the test itself raised), before any fixture tears down (a ``with`` block
the test judged after has unwound by then). Which Envoys: the ones its failing figures are about
(:func:`attribute`, in this order: the figure says so, the evidence says so,
a per-Envoy breakdown in the evidence shows them breaking the threshold, else
the Envoys that subscribe to the check's target service), and the rule used
is reported with them. What of each Envoy: only the target services'
clusters, endpoints and routes from ``/config_dump`` and ``/clusters``
(:func:`trim_config_dump`, :func:`compact_clusters`), capped in size with a
note of what was cut. Also: the run directory and the log files, the request
and trace ids of failed requests found in the evidence (with Jaeger links
while Jaeger runs), and a one-line command that re-runs just this check.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from . import httpc
from .checks.model import CheckResult, Threshold, convert, judge_one

if TYPE_CHECKING:
    from .mesh import Mesh

MAX_ENVOYS = 4  # Envoys dumped per failed check (every attributed one is named)
MAX_CONFIG_CHARS = 8_000  # per Envoy: the trimmed /config_dump, as indented JSON
MAX_CLUSTERS_CHARS = 4_000  # per Envoy: the compacted /clusters
MAX_TRACES = 20
LOG_LINES = 20
VERSION_SEP = "~"  # builtin control plane: ``backend~v2`` is a version cluster of ``backend``

# how a per-Envoy entry that is a dict says it failed
_BAD_FLAGS = ("in_time", "ok", "complete", "converged", "shown", "passed")
_FIGURE_STAT = {"p50", "p95", "p99", "max", "min", "mean", "pct", "rate", "s", "ms", "count"}


# -- attribution: which Envoys a failure is about ------------------------------

@dataclass(frozen=True)
class Hints:
    """What the recorder knows about a check's Envoys and services (all optional)."""

    # figure -> the Envoys it is about, or each Envoy's own value of it (those breaking the threshold fail)
    figure_envoys: Mapping[str, Sequence[str] | Mapping[str, float | None]] = field(default_factory=dict)
    evidence_envoys: Mapping[str, Sequence[str]] = field(default_factory=dict)  # evidence key -> Envoys
    services: tuple[str, ...] = ()  # the check's target services, when known
    services_from: str = "named by the test"  # how they are known (said in the attribution)


@dataclass(frozen=True)
class Attribution:
    rule: str  # figure | evidence | per-envoy evidence | subscribers | every subscriber | none
    why: str  # one line: what the rule looked at
    envoys: tuple[str, ...]
    services: tuple[str, ...]
    figures: tuple[str, ...] = ()  # the failing (or unmeasured) figures the Envoys were found for

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "why": self.why, "envoys": list(self.envoys), "services": list(self.services),
                "figures": list(self.figures)}


def failing_thresholds(result: CheckResult) -> list[Threshold]:
    """The thresholds that fail; when none does, those that could not be judged (an ``error``)."""
    states = [(t, judge_one(result.figure(t.figure), t)[0]) for t in result.thresholds]
    failing = [t for t, s in states if s == "fail"]
    return failing or [t for t, s in states if s == "error"]


def _breaks(v: Any, t: Threshold, unit: str) -> bool:
    """A per-Envoy value (a number, a list of them, or None: never) breaks ``t``."""
    if isinstance(v, (list, tuple)):
        return any(_breaks(x, t, unit) for x in v) if v else False
    if v is None:
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return False
    c = convert(float(v), unit, t.unit)
    return c is not None and not t.holds(c)


_TIME_UNITS = ("s", "ms", "us")


def _bad_in_map(m: Mapping[str, Any], t: Threshold, unit: str, numbers: bool = True) -> set[str]:
    """The Envoys of a per-Envoy map that fail: a false flag (``in_time``...), or, with ``numbers``, a
    value breaking ``t`` (in ``unit``)."""
    bad = set()
    for n, v in m.items():
        if isinstance(v, Mapping):
            if any(v.get(k) is False for k in _BAD_FLAGS):
                bad.add(n)
        elif numbers and _breaks(v, t, unit):
            bad.add(n)
    return bad


def per_envoy_maps(evidence: Any, known: Iterable[str], path: str = "", depth: int = 0) -> list[tuple[str, dict]]:
    """Per-Envoy breakdowns in the evidence: dicts under a ``per_envoy``/``*_per_envoy`` key, or keyed by
    Envoy names of the mesh (``path`` -> the dict; a chart's ``data`` level is skipped in the path)."""
    known = set(known)
    out: list[tuple[str, dict]] = []
    if depth > 4 or not isinstance(evidence, Mapping):
        return out
    for k, v in evidence.items():
        if not isinstance(v, Mapping) or not v:
            continue
        here = path if k == "data" and "chart" in evidence else (f"{path}.{k}" if path else str(k))
        keyed_by_envoy = all(isinstance(n, str) for n in v) and (
            str(k) == "per_envoy" or str(k).endswith("_per_envoy") or (known and set(v) <= known))
        if keyed_by_envoy:
            out.append((here, dict(v)))
        else:
            out += per_envoy_maps(v, known, here, depth + 1)
    return out


def _tokens(name: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", name.lower()) if t and t not in _FIGURE_STAT and t != "per"
            and t != "envoy"}


def attribute(result: CheckResult, hints: Hints, routes_to: Mapping[str, Iterable[str]]) -> Attribution:
    """Which Envoys the failure is about, and by which rule (see the module docstring).

    ``routes_to``: every Envoy of the mesh -> the services it routes to (the topology's ``calls``,
    the ingress routes).
    """
    routes = {n: set(s) for n, s in routes_to.items()}
    failing = failing_thresholds(result)
    figs = tuple(dict.fromkeys(t.figure for t in failing))
    unit = {f.name: f.unit for f in result.figures}
    policy_services = tuple(dict.fromkeys(
        str(a.get("service")) for a in result.evidence.get("policy_applies") or []
        if isinstance(a, Mapping) and a.get("service") not in (None, "mesh")))
    services = tuple(hints.services) or policy_services

    def done(rule: str, why: str, envoys: Iterable[str]) -> Attribution:
        names = tuple(sorted(set(envoys)))
        svcs = services or tuple(sorted({s for n in names for s in routes.get(n, ())}))
        return Attribution(rule, why, names, svcs, figs)

    # 1. the figure names its Envoys (a list, or each Envoy's value of it)
    found: set[str] = set()
    said = []
    for t in failing:
        given = hints.figure_envoys.get(t.figure)
        if given is None:
            continue
        if isinstance(given, Mapping):
            bad = _bad_in_map(given, t, unit.get(t.figure, t.unit))
            found |= bad or set(given)
            said.append(f"{t.figure}: " + (f"those breaking {t}" if bad else "every Envoy measured (none breaks it alone)"))
        else:
            found |= set(given)
            said.append(f"{t.figure}: the Envoys it was measured on")
    if found:
        return done("figure", "; ".join(said), found)
    # 2. evidence the test attributed to Envoys
    if hints.evidence_envoys:
        keys = sorted(hints.evidence_envoys)
        return done("evidence", f"the Envoys the test named for evidence {', '.join(keys)}",
                    (n for k in keys for n in hints.evidence_envoys[k]))
    # 3. a per-Envoy breakdown in the evidence: the Envoys in it that break a failing threshold
    maps = per_envoy_maps(result.evidence, routes)
    if maps and failing:
        bad: set[str] = set()
        used: list[str] = []
        for t in failing:
            related = [(p, m) for p, m in maps if _tokens(t.figure) & _tokens(p)] or maps
            u = unit.get(t.figure, t.unit)
            for p, m in related:  # evidence values compare with a time figure only (seconds of convergence...)
                b = _bad_in_map(m, t, u, numbers=u in _TIME_UNITS)
                if b:
                    bad |= b
                    used.append(p)
        if bad:
            return done("per-envoy evidence", f"the Envoys in {', '.join(dict.fromkeys(used))} whose values "
                        f"break {', '.join(f'{t.figure} {t}' for t in failing)}", bad)
        every = {n for _, m in maps for n in m}
        return done("per-envoy evidence", f"every Envoy in {', '.join(p for p, _ in maps)}: no value there "
                    f"breaks {', '.join(f'{t.figure} {t}' for t in failing)} on its own", every)
    # 4. the Envoys that subscribe to the check's target service
    if services:
        subs = {n for n, s in routes.items() if s & set(services)}
        src = hints.services_from if hints.services else "whose policy the check applied"
        return done("subscribers", f"no figure or evidence names its Envoys: every subscriber of "
                    f"{', '.join(services)} (the target service {src})", subs)
    # 5. nothing known: every Envoy that routes anywhere
    subs = {n for n, s in routes.items() if s}
    return done("every subscriber", "no figure, evidence or target service names its Envoys: every Envoy "
                "that routes to a service", subs)


# -- trimming: only the target services' clusters, endpoints and routes ---------

_CLUSTERS = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
_ENDPOINTS = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
_ROUTES = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"


def _by_name(name: str, services: Iterable[str]) -> bool:
    return any(name == s or name.startswith(s + VERSION_SEP) for s in services)


def _route_targets(route: Mapping[str, Any]) -> set[str]:
    action = route.get("route") or {}
    if "cluster" in action:
        return {str(action["cluster"])}
    return {str(c.get("name", "")) for c in (action.get("weighted_clusters") or {}).get("clusters", [])}


def _strip_types(v: Any) -> Any:
    """Proto JSON without its ``@type`` keys (the section says what it is) and without absent (None) fields."""
    if isinstance(v, Mapping):
        return {k: _strip_types(x) for k, x in v.items() if k != "@type" and x is not None}
    if isinstance(v, list):
        return [_strip_types(x) for x in v]
    return v


def trim_config_dump(dump: Mapping[str, Any], services: Iterable[str]) -> tuple[dict[str, Any], str]:
    """The target services' part of an admin ``/config_dump?include_eds``, and a line saying what was cut.

    A cluster belongs to a service by name (``svc``, ``svc~version``) or because a route for the
    service (a virtual host whose domains name it, or a route whose cluster does) targets it: an
    external control plane may name its clusters otherwise.
    """
    services = list(services)
    cfgs = {c.get("@type"): c for c in dump.get("configs", []) if isinstance(c, Mapping)}
    routes_cfg = cfgs.get(_ROUTES, {})
    wanted = {n for n in _all_cluster_names(cfgs.get(_CLUSTERS, {})) if _by_name(n, services)}
    hosts = {d for s in services for d in (s, f"{s}:*")}
    kept_routes, n_rc, n_vh, kept_vh = [], 0, 0, 0
    for rc in routes_cfg.get("dynamic_route_configs", []) + routes_cfg.get("static_route_configs", []):
        n_rc += 1
        conf = rc.get("route_config", {})
        vhosts = []
        for vh in conf.get("virtual_hosts", []):
            n_vh += 1
            if hosts & set(vh.get("domains", [])):
                wanted |= {c for r in vh.get("routes", []) for c in _route_targets(r)}
                vhosts.append(vh)
            else:
                mine = [r for r in vh.get("routes", []) if _route_targets(r) & wanted]
                if mine:
                    vhosts.append({**vh, "routes": mine})
        if vhosts:
            kept_vh += len(vhosts)
            kept_routes.append({"name": conf.get("name", ""), "version_info": rc.get("version_info"),
                                "last_updated": rc.get("last_updated"), "virtual_hosts": vhosts})
    clusters, n_cl = [], 0
    cl_cfg = cfgs.get(_CLUSTERS, {})
    for state in ("dynamic_active_clusters", "dynamic_warming_clusters", "static_clusters"):
        for c in cl_cfg.get(state, []):
            n_cl += 1
            cl = c.get("cluster", {})
            if cl.get("name") in wanted:
                clusters.append({"state": state.replace("_clusters", ""), "version_info": c.get("version_info"),
                                 "last_updated": c.get("last_updated"), "cluster": cl})
    eds_names = wanted | {str((c["cluster"].get("eds_cluster_config") or {}).get("service_name", ""))
                          for c in clusters}
    endpoints, n_ep = [], 0
    ep_cfg = cfgs.get(_ENDPOINTS, {})
    for state in ("dynamic_endpoint_configs", "static_endpoint_configs"):
        for e in ep_cfg.get(state, []):
            n_ep += 1
            cla = e.get("endpoint_config", {})
            if cla.get("cluster_name") in eds_names:
                endpoints.append({"version_info": e.get("version_info"), "last_updated": e.get("last_updated"),
                                  "endpoint_config": cla})
    out = _strip_types({"services": services, "clusters": clusters, "endpoints": endpoints, "routes": kept_routes})
    others = sorted(t.rsplit(".", 1)[-1].removesuffix("ConfigDump").lower() for t in cfgs
                    if t not in (_CLUSTERS, _ENDPOINTS, _ROUTES) and isinstance(t, str))
    cut = (f"kept {len(clusters)} of {n_cl} clusters, {len(endpoints)} of {n_ep} endpoint sets, "
           f"{kept_vh} of {n_vh} virtual hosts ({len(kept_routes)} of {n_rc} route configs)"
           + (f"; left out: {', '.join(others)}" if others else ""))
    return out, cut


def _all_cluster_names(cl_cfg: Mapping[str, Any]) -> list[str]:
    return [str(c.get("cluster", {}).get("name", "")) for state in
            ("dynamic_active_clusters", "dynamic_warming_clusters", "static_clusters") for c in cl_cfg.get(state, [])]


def clusters_of(trimmed: Mapping[str, Any]) -> set[str]:
    """The cluster names a trimmed dump kept (for :func:`compact_clusters`)."""
    return {str(c.get("cluster", {}).get("name", "")) for c in trimmed.get("clusters", [])}


_ZERO_OR_EMPTY = {"0", "", "-1", "-1.0", "false"}


def compact_clusters(text: str, clusters: Iterable[str]) -> tuple[str, str]:
    """Admin ``/clusters`` (text) of some clusters, one line per cluster and per host; zero and empty
    values left out. Returns the text and a line saying what was cut."""
    wanted = set(clusters)
    head: dict[str, list[str]] = {}
    hosts: dict[str, dict[str, list[str]]] = {}
    seen: set[str] = set()
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) < 3:
            continue
        seen.add(parts[0])
        if parts[0] not in wanted:
            continue
        name = parts[0]
        if len(parts) == 4 and re.match(r"^\[?[0-9a-fA-F.:]+\]?:\d+$", parts[1]):
            key, val = parts[2], parts[3]
            if val not in _ZERO_OR_EMPTY:
                hosts.setdefault(name, {}).setdefault(parts[1], []).append(f"{key}={val}")
            else:
                hosts.setdefault(name, {}).setdefault(parts[1], [])
        else:
            key, val = "::".join(parts[1:-1]), parts[-1]
            if key in ("observability_name",) or val in _ZERO_OR_EMPTY:
                continue
            head.setdefault(name, []).append(f"{key.replace('::', '.')}={val}")
    lines = []
    for name in sorted(set(head) | set(hosts)):
        lines.append(f"{name}: {' '.join(head.get(name, []))}".rstrip())
        for addr, kv in hosts.get(name, {}).items():
            lines.append(f"  {addr} {' '.join(kv)}".rstrip())
    kept = len(set(head) | set(hosts))
    return "\n".join(lines), f"kept {kept} of {len(seen)} clusters; zero and empty counters left out"


def hosts_in(text: str, clusters: Iterable[str]) -> dict[str, str]:
    """Admin ``/clusters`` (text): every host of these clusters -> its health_flags."""
    wanted, out = set(clusters), {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] in wanted and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def versus_registry(registry: Mapping[str, str], hosts: Mapping[str, str]) -> str:
    """One line: how an Envoy's hosts of a service differ from the registry's passing instances.

    ``registry``: passing address -> instance id; ``hosts``: address -> Envoy's health_flags.
    """
    missing = [f"{a} ({registry[a]})" for a in sorted(registry) if a not in hosts]
    unhealthy = [f"{a} ({hosts[a]})" for a in sorted(registry) if a in hosts and hosts[a] != "healthy"]
    extra = [a for a in sorted(hosts) if a not in registry]
    out = [f"missing {', '.join(missing)}" if missing else "",
           f"not healthy here {', '.join(unhealthy)}" if unhealthy else "",
           f"not passing in the registry {', '.join(extra)}" if extra else ""]
    said = "; ".join(x for x in out if x)
    return said or f"matches ({len(registry)} passing endpoints)"


def capped(text: str, limit: int) -> tuple[str, str]:
    """``text`` cut to ``limit`` characters, and a note of what was cut ('' when nothing was)."""
    if len(text) <= limit:
        return text, ""
    return text[:limit] + "\n…", f"cut at {limit:,} of {len(text):,} characters"


# -- failed requests and traces in the evidence ---------------------------------

def failed_traces(evidence: Any, limit: int = MAX_TRACES) -> list[dict[str, Any]]:
    """Requests the evidence lists as failed: dicts with a trace or request id that are not complete."""
    out: list[dict[str, Any]] = []

    def walk(v: Any, where: str, depth: int) -> None:
        if len(out) >= limit or depth > 5:
            return
        if isinstance(v, Mapping):
            if ("trace_id" in v or "request_id" in v) and v.get("complete") is not True:
                row = {"evidence": where, "trace_id": str(v.get("trace_id") or ""),
                       "request_id": str(v.get("request_id") or "")}
                why = v.get("problems") or v.get("status") or v.get("reason")
                if why not in (None, ""):
                    row["why"] = str(why)[:200]
                if row["trace_id"] or row["request_id"]:
                    out.append(row)
                return
            for k, x in v.items():
                walk(x, where if k == "data" and "chart" in v else (f"{where}.{k}" if where else str(k)), depth + 1)
        elif isinstance(v, list):
            for x in v:
                walk(x, where, depth + 1)

    walk(evidence, "", 0)
    return out


# -- the command that re-runs just this check ----------------------------------

_IDENT = re.compile(r"^[\w:+\-.\[\]\\/]+$")


def keyword_for(name: str, candidates: Iterable[tuple[str, Iterable[str]]], nodeid: str = "") -> str:
    """A pytest ``-k`` expression that selects the test ``name`` and no other of ``candidates``.

    ``candidates``: (nodeid, keyword names) of every test the run collected, as ``-k`` sees
    them (a name matches when it contains the expression's word, case-insensitively).
    """
    if not _IDENT.match(name):  # a parameter id -k cannot spell: the function, every parameter
        name = name.split("[", 1)[0]
    word = name.lower()
    cands = [(node, [n.lower() for n in names]) for node, names in candidates]
    mine = next((names for node, names in cands if node == nodeid), [word])
    others = []
    for node, names in cands:
        if node != nodeid and any(word in n for n in names):
            # excluded by its own name, unless that would exclude ours too
            own = node.rsplit("::", 1)[-1]
            if _IDENT.match(own) and not any(own.lower() in n for n in mine):
                others.append(own)
    return " and not ".join([name, *sorted(set(others))])


def rerun_command(*, check_id: str, keyword: str, use_check_flag: bool, topology: str = "", profile: str = "",
                  runtime: str = "", controlplane: str = "", suites: Sequence[str] = (),
                  catalogs: Sequence[str] = (), state_dir: str = "") -> str:
    """One shell line: ``meshbed run`` with the run's topology, profile, runtime and control plane,
    selecting just this check (``--check ID`` where `meshbed run` has it, else ``-k``)."""
    argv = ["meshbed", "run"]
    argv += ["--check", check_id] if use_check_flag else ["-k", keyword]
    if topology:
        argv += ["-f", topology]
    if profile:
        argv += ["--profile", profile]
    if runtime and runtime != "process":
        argv += ["--runtime", runtime]
    if controlplane and controlplane not in ("builtin", "reference"):
        argv += ["--controlplane", controlplane]
    for s in suites:
        argv += ["--suites", s]
    for c in catalogs:
        argv += ["--catalog", c]
    if state_dir:
        argv += ["--state-dir", state_dir]
    return shlex.join(argv)


def run_has_check_flag() -> bool:
    """Whether `meshbed run` takes ``--check ID`` (else a re-run selects with ``-k``)."""
    import argparse

    from .cli import build_parser
    parser = build_parser()
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction) and "run" in action.choices:  # noqa: SLF001
            return "--check" in action.choices["run"]._option_string_actions  # noqa: SLF001
    return False


# -- capture: I/O against the running mesh -------------------------------------

def routes_to(mesh: "Mesh") -> dict[str, set[str]]:
    """Every Envoy of the mesh -> the services it routes to."""
    topo = mesh.topology
    out: dict[str, set[str]] = {}
    for n in mesh.envoys:
        if n == "ingress":
            out[n] = {r.service for r in topo.ingress}
        else:
            spec = mesh.instances.get(n)
            svc = topo.services.get(spec.service) if spec is not None else None
            out[n] = set(svc.calls) if svc is not None else set()
    return out


def _fetch(url: str) -> tuple[str | None, str]:
    try:
        r = httpc.get(url, timeout=3)
    except OSError as exc:
        return None, f"unreachable: {exc}"
    if r.status != 200:
        return None, f"HTTP {r.status}"
    return r.text, ""


def envoy_state(admin_url: str, services: Sequence[str],
                registry: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """One Envoy's trimmed ``/config_dump`` and ``/clusters`` for ``services``, and how its endpoints
    differ from ``registry`` (service -> passing address -> instance)."""
    entry: dict[str, Any] = {}
    text, err = _fetch(admin_url.rstrip("/") + "/config_dump?include_eds")
    if text is None:
        return {"error": f"/config_dump: {err}"}
    try:
        trimmed, cut = trim_config_dump(json.loads(text), services)
    except (ValueError, TypeError, AttributeError) as exc:
        return {"error": f"/config_dump: not the admin JSON ({exc})"}
    entry["config_dump"], note = capped(json.dumps(trimmed, indent=1), MAX_CONFIG_CHARS)
    entry["config_dump_cut"] = cut + (f"; {note}" if note else "") + f" (of {len(text):,} characters)"
    raw, err = _fetch(admin_url.rstrip("/") + "/clusters")
    if raw is None:
        entry["clusters"], entry["clusters_cut"] = "", f"/clusters: {err}"
    else:
        kept = clusters_of(trimmed) or set(services)
        compact, cut = compact_clusters(raw, kept)
        entry["clusters"], note = capped(compact, MAX_CLUSTERS_CHARS)
        entry["clusters_cut"] = cut + (f"; {note}" if note else "")
        vs = {svc: versus_registry(want, hosts_in(raw, [c for c in kept if _by_name(c, [svc])] or kept))
              for svc, want in (registry or {}).items()}
        if vs:
            entry["vs_registry"] = vs
    return entry


def registry_view(mesh: "Mesh", services: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each service's passing instances in the registry (Consul): address -> instance id."""
    out: dict[str, dict[str, str]] = {}
    for svc in services:
        try:
            out[svc] = {i.address: i.id for i in mesh.consul_client().instances(svc) if i.status == "passing"}
        except Exception:  # noqa: BLE001 - no registry answer: no comparison for it
            continue
    return out


def capture(mesh: "Mesh", envoys: Sequence[str] | None = None, services: Sequence[str] = (),
            log_lines: int = LOG_LINES) -> dict[str, Any]:
    """The given Envoys' state trimmed to ``services``, and log tails of them, the control plane and Consul."""
    names = [n for n in (envoys or []) if n in mesh.envoys][:MAX_ENVOYS]
    out: dict[str, Any] = {"envoys": {}, "logs": {}}
    registry = registry_view(mesh, services) if names else {}
    for n in names:
        try:
            out["envoys"][n] = envoy_state(mesh.envoys[n].url("admin"), list(services), registry)
        except Exception as exc:  # noqa: BLE001 - one Envoy's state must not lose the others'
            out["envoys"][n] = {"error": f"{type(exc).__name__}: {exc}"}
    mine = {f"envoy-{n}" for n in names}
    for h in mesh.all_handles():
        if h.kind in ("controlplane", "consul") or h.name in mine:
            out["logs"][h.name] = h.log_tail(log_lines)
    if mesh.cp_debug_url:  # only meshbed's own control plane has a push log
        try:
            out["controlplane_pushes_tail"] = json.loads(
                httpc.get(mesh.cp_debug_url + "/debug/pushes", timeout=3).text)[-20:]
        except (OSError, ValueError, TypeError):
            pass
    return out


def log_paths(mesh: "Mesh", envoys: Sequence[str]) -> dict[str, str]:
    """Where the run's logs are: the named Envoys' (and their access logs), the control plane's, Consul's."""
    mine = {f"envoy-{n}" for n in envoys}
    out: dict[str, str] = {}
    for h in mesh.all_handles():
        if h.kind in ("controlplane", "consul") or h.name in mine:
            path = Path(h.log_path)
            out[h.name] = str(path)
            access = path.parent / "access.log"
            if h.name in mine and access.is_file():
                out[f"{h.name} access"] = str(access)
    return out


def _jaeger(mesh: "Mesh") -> str | None:
    try:
        return mesh.jaeger.url("query_http") if mesh.jaeger.alive() else None
    except Exception:  # noqa: BLE001 - no Jaeger: no links
        return None


def diagnose(mesh: "Mesh", result: CheckResult, hints: Hints, moment: str, rerun: str = "",
             why_now: str = "") -> dict[str, Any]:
    """Everything a failed check carries (``CheckResult.diagnostics``); see docs/report-schema.md."""
    att = attribute(result, hints, routes_to(mesh))
    d: dict[str, Any] = {"captured": {"moment": moment, "at": time.time(), **({"note": why_now} if why_now else {})},
                         "attribution": att.to_json()}
    if rerun:
        d["rerun"] = rerun
    try:
        d.update(capture(mesh, att.envoys, att.services))
    except Exception as exc:  # noqa: BLE001 - the rest of the diagnostics still helps
        d["error"] = f"could not capture Envoy state: {type(exc).__name__}: {exc}"
    skipped = [n for n in att.envoys if n not in d.get("envoys", {})]
    if skipped:
        gone = [n for n in skipped if n not in mesh.envoys]
        d["envoys_not_dumped"] = (f"{len(skipped)} more not dumped (at most {MAX_ENVOYS} per check"
                                  + (f"; not in the mesh any more: {', '.join(gone)}" if gone else "") + ")")
    d["run"] = {"run_id": str(getattr(mesh, "run_id", "")), "run_dir": str(mesh.run_dir),
                "logs": log_paths(mesh, [n for n in att.envoys if n in mesh.envoys])}
    traces = failed_traces(result.evidence)
    if traces:
        base = _jaeger(mesh)
        d["failed_requests"] = {"requests": traces}
        if base:
            d["failed_requests"]["jaeger"] = {"query_url": base, "trace_url": base + "/trace/{trace_id}",
                                              "api_url": base + "/api/traces/{trace_id}",
                                              "note": "live only while the run's mesh is up"}
    return d


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Diagnostics never hide a verdict: a failure to capture is one line in them."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return {"error": f"could not capture diagnostics: {type(exc).__name__}: {exc}"}


# -- glue for the pytest plugin ------------------------------------------------

_CHECK_FLAG: list[bool] = []


def _has_check_flag() -> bool:
    if not _CHECK_FLAG:
        try:
            _CHECK_FLAG.append(run_has_check_flag())
        except Exception:  # noqa: BLE001 - cannot tell: -k always works
            _CHECK_FLAG.append(False)
    return _CHECK_FLAG[0]


def _short(path: Any, resolve: Callable[[str], Path]) -> str:
    """A packaged topology or profile by its name (``basic``), anything else as the path it is."""
    p = Path(str(path))
    try:
        if resolve(p.stem).resolve() == p.resolve():
            return p.stem
    except Exception:  # noqa: BLE001 - not a packaged one
        pass
    return str(path)


def rerun_for(item: Any, check_id: str, settings: Any, candidates: Iterable[tuple[str, Iterable[str]]]) -> str:
    """The `meshbed run` line that re-runs just this test's check, with the run's own options."""
    from . import packaged
    config = item.config
    builtin = packaged.builtin_suites(packaged.checkout_root())
    path = Path(str(item.path)).resolve()
    suites: list[str] = []
    if builtin is None or not path.is_relative_to(builtin.resolve()):
        dirs = [Path(a.split("::")[0]).resolve() for a in config.args]
        mine = [d for d in dirs if d.is_dir() and path.is_relative_to(d)]
        suites = [str(mine[0] if mine else path.parent)]
    catalogs = [str(Path(c).resolve()) for c in (config.getoption("meshbed_catalog", None) or [])]
    state_dir = config.getoption("meshbed_state_dir", None) or ""
    return rerun_command(
        check_id=check_id, keyword=keyword_for(item.name, candidates, item.nodeid),
        use_check_flag=_has_check_flag(), topology=_short(settings.topology, packaged.topology),
        profile=_short(settings.profile, packaged.profile), runtime=str(settings.runtime),
        controlplane=str(settings.controlplane), suites=suites, catalogs=catalogs, state_dir=str(state_dir))


def for_check(item: Any, check: Any, meshes: Sequence[Any], settings: Any,
              candidates: Iterable[tuple[str, Iterable[str]]], moment: str, note: str = "") -> dict[str, Any]:
    """A recorder ``Check``'s diagnostics, from the mesh its test used (else the session's last one)."""
    def go() -> dict[str, Any]:
        notes, rerun = [note] if note else [], ""
        try:
            rerun = rerun_for(item, check.id, settings, candidates)
        except Exception as exc:  # noqa: BLE001 - the rest still helps
            notes.append(f"no re-run command: {type(exc).__name__}: {exc}")
        from .mesh import Mesh
        funcargs = getattr(item, "funcargs", {})
        mesh = funcargs.get("mesh") if isinstance(funcargs.get("mesh"), Mesh) else (meshes[-1] if meshes else None)
        if mesh is None:
            return {"captured": {"moment": moment, "at": time.time(), **({"note": "; ".join(notes)} if notes else {})},
                    "error": "no mesh was up: nothing to capture", **({"rerun": rerun} if rerun else {})}
        services, src = tuple(check.services), "named by the test"
        tgt = funcargs.get("target")
        if not services and isinstance(getattr(tgt, "service", None), str):
            services, src = (tgt.service,), "the `target` fixture's service"
        hints = Hints(check.figure_envoys, check.evidence_envoys, services, src)
        return diagnose(mesh, check.result, hints, moment, rerun, "; ".join(notes))
    return guarded(go)


def keyword_candidates(items: Iterable[Any]) -> list[tuple[str, list[str]]]:
    """(nodeid, the names ``-k`` matches against) of every collected test."""
    out = []
    for it in items:
        try:
            from _pytest.mark import KeywordMatcher
            names = list(KeywordMatcher.from_item(it)._names)  # noqa: SLF001 - what -k itself reads
        except Exception:  # noqa: BLE001 - another pytest: the node names
            names = [n.name for n in it.listchain()[1:]]
        out.append((it.nodeid, names))
    return out
