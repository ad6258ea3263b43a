"""The conformance catalog (spec v2): every check's id, group, title and the figures it measures.

``figures`` maps each figure a check records to its unit; a profile's
thresholds are validated against it when the profile loads. Every check that
applies a traffic policy also measures ``policy_apply_p99`` (policy written to
Consul KV -> every affected Envoy shows it, per the contract in
``meshbed.contract``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    group: str  # discovery | lb | tracing | resilience (or a user's own group)
    title: str
    figures: dict[str, str] = field(default_factory=dict)  # figure -> unit
    # what the check needs beyond reading the mesh (meshbed.attach.CAPABILITIES): with --attach, a check
    # whose needs the attached mesh lacks is skipped with the reason; a mesh meshbed starts has them all
    needs: tuple[str, ...] = ()

    @property
    def applies_policy(self) -> bool:
        return "policy_apply_p99" in self.figures


# what a check can need (CatalogEntry.needs) -> what grants it in an attached mesh's mesh.json
# (meshbed.attach; docs/attach.md); the skip reason of a check that lacks one names it
CAPABILITIES: dict[str, str] = {
    "toxiproxy:upstream": "toxiproxy_api and links.upstream for every instance",
    "toxiproxy:control_plane": "toxiproxy_api and links.control_plane",
    "toxiproxy:consul": "toxiproxy_api and links.consul.controlplane",
    "toxiproxy:tracing": "toxiproxy_api and links.tracing",
    "controlplane:kill": "controls.controlplane.kill and .restart",
    "consul:pause": "controls.consul.pause and .resume",
    "consul:gate": "consul_gate_admin_url (an Envoy before Consul that can answer 503)",
    "instances:restart": "controls.app:<instance>.restart and controls.sidecar:<instance>.restart for every instance",
    "scale": "scale.local_instances: true (instances started here are reachable by the mesh's Envoys)",
    "watchers": "scale.xds (Envoy-only nodes started here subscribe to the control plane)",
}

_POLICY = {"policy_apply_p99": "s", "policy_apply_p50": "s"}

_ROWS: list[CatalogEntry] = [
    CatalogEntry("DISC-1", "discovery", "register a new healthy instance",
                 {"convergence_p99": "s", "convergence_p50": "s"},
                 needs=("scale",)),
    CatalogEntry("DISC-2", "discovery", "deregister an instance under load",
                 {"convergence_p99": "s", "convergence_p50": "s", "late_requests": "requests", "error_rate": "%"}),
    CatalogEntry("DISC-3", "discovery", "flip a Consul health check to critical, then back",
                 {"leave_p99": "s", "rejoin_p99": "s", "leave_p50": "s", "rejoin_p50": "s"}),
    CatalogEntry("DISC-4", "discovery", "churn storm: register/deregister at 5 events/s for 30 s under load",
                 {"settle_time": "s", "nacks": "nacks", "error_rate": "%", "events": "events"},
                 needs=("scale",)),
    CatalogEntry("DISC-5", "discovery", "faults on the Envoy <-> control-plane stream",
                 {"error_rate": "%", "post_fault_convergence_max": "s", "config_lost": "envoys"},
                 needs=("toxiproxy:control_plane",)),
    CatalogEntry("DISC-6", "discovery",
                 "Consul unreachable: paused, link down / reset / timed out, answering 5xx",
                 {"partial_pushes": "pushes", "error_rate": "%", "convergence_after_return": "s"},
                 needs=("consul:pause", "toxiproxy:consul", "consul:gate")),
    CatalogEntry("DISC-7", "discovery", "control plane killed and restarted under load",
                 {"error_rate": "%", "reconverge_max": "s"},
                 needs=("controlplane:kill",)),
    CatalogEntry("DISC-9", "discovery", "a config Envoy rejects (NACK), then a valid policy: recovered, no restart",
                 {"nack_seen": "envoys", "recovery_p99": "s", "restarted": "envoys", "requests_ok_after": "%"}),
    CatalogEntry("DISC-8", "discovery", "the same change converges alike over SotW and delta xDS",
                 {"sotw_convergence_p99": "s", "delta_convergence_p99": "s", "protocol_gap_p99": "s"},
                 needs=("watchers",)),
    CatalogEntry("LB-1", "lb", "ROUND_ROBIN spread over N endpoints",
                 {"max_share_dev": "pp", "chi2_p": "", "source_disagreement": "%", **_POLICY}),
    CatalogEntry("LB-2", "lb", "LEAST_REQUEST with one endpoint slowed by 200 ms",
                 {"slow_share_ratio": "", **_POLICY},
                 needs=("toxiproxy:upstream",)),
    CatalogEntry("LB-3", "lb", "weighted clusters 90/10 (canary)", {"split_dev": "pp", **_POLICY},
                 needs=("scale",)),
    CatalogEntry("LB-4", "lb", "RING_HASH / MAGLEV on a request header",
                 {"key_affinity": "%", "keys_moved_norm": "", **_POLICY}),
    CatalogEntry("LB-5", "lb", "priority failover when all primary endpoints fail",
                 {"error_rate_after_ejection": "%", "secondary_share": "%", "failover_s": "s", **_POLICY},
                 needs=("scale",)),
    CatalogEntry("LB-6", "lb", "outlier detection ejects a failing endpoint (every caller Envoy)",
                 {"ejecting_envoys": "%", "client_success": "%", **_POLICY}),
    CatalogEntry("TRACE-1", "tracing", "complete traces under steady load, 100 % sampling", {"completeness": "%", "achieved_rps": "rps"}),
    CatalogEntry("TRACE-2", "tracing", "propagation through application hops",
                 {"service_parented": "%", "tagged": "%"}),
    CatalogEntry("TRACE-3", "tracing", "data-path faults produce error-marked spans",
                 {"error_marked": "%", "completeness": "%", **_POLICY},
                 needs=("toxiproxy:upstream",)),
    CatalogEntry("TRACE-4", "tracing", "trace export link faulted, then healed",
                 {"completeness_after_heal": "%", "completeness_during_fault": "%", "span_loss_during_fault": "%"},
                 needs=("toxiproxy:tracing",)),
    CatalogEntry("TRACE-5", "tracing", "10 % sampling decided once at the edge",
                 {"sampling_dev": "pp", "partial_traces": "traces", "sampled_pct": "%", **_POLICY}),
    CatalogEntry("TRACE-6", "tracing", "mixed propagation: every app hop carries the mesh's trace format",
                 {"complete": "%", "broken_hops": "hops"}),
    CatalogEntry("RES-1", "resilience", "reset_peer on 1 of 3 endpoints, with retries",
                 {"client_success": "%", "retries": "retries", "faulted_attempts": "requests", **_POLICY},
                 needs=("toxiproxy:upstream",)),
    CatalogEntry("RES-2", "resilience", "latency above the route timeout",
                 {"timeout_overshoot_max": "ms", "answered_504": "%", "hung": "requests", **_POLICY},
                 needs=("toxiproxy:upstream",)),
    CatalogEntry("RES-3", "resilience", "circuit breaker under overload",
                 {"overflow_503_p99": "ms", "concurrency_excess": "requests", "overflow_503_caller_p99": "ms",
                  "overflow_client_p99": "ms", "upstream_concurrency_peak_per_envoy": "requests",
                  "overflow_share": "%", "other_failures": "requests", **_POLICY}),
    CatalogEntry("RES-4", "resilience", "rolling restart of a service under load",
                 {"error_rate": "%", "error_rate_during_restarts": "%"},
                 needs=("instances:restart",)),
    CatalogEntry("RES-5", "resilience", "bandwidth / slicer toxics on large responses", {"intact_bodies": "%"},
                 needs=("toxiproxy:upstream",)),
]

CATALOG: dict[str, CatalogEntry] = {r.id: r for r in _ROWS}
GROUPS = ("discovery", "lb", "tracing", "resilience")


def register(entry: CatalogEntry, params: type | None = None) -> CatalogEntry:
    """Add a user's own check to the catalog, so profiles, the `check` fixture and the report know it.

    Call it from a catalog file (``meshbed_catalog.py``, found by ``meshbed run``
    and the plugin before any profile is read) or, under plain pytest only, from
    a conftest. ``params`` is the check's params dataclass (its defaults; a
    profile's ``params:`` override them). Registering the same entry again is a
    no-op; another definition under a taken id is refused.
    """
    if not isinstance(entry, CatalogEntry):
        raise ConfigError(f"register: expected a CatalogEntry, got {type(entry).__name__}")
    _validate(entry)
    if entry.id in CATALOG and CATALOG[entry.id] != entry:
        raise ConfigError(f"check {entry.id}: already in the catalog with another definition")
    CATALOG[entry.id] = entry
    if params is not None:
        from . import params as params_mod
        params_mod.register(entry.id, params)
    return entry


# -- a user repository's own checks: catalog files ------------------------------------------------------

# found at the top of a suites directory given to `meshbed run` (and of a directory pytest collects, up to
# its rootdir); more with `meshbed run --catalog FILE`, `pytest --meshbed-catalog FILE` or MESHBED_CATALOG
CATALOG_FILES = ("meshbed_catalog.yaml", "meshbed_catalog.yml", "meshbed_catalog.py")
_ENTRY_FIELDS = ("title", "group", "figures", "params", "needs")
_loaded: set[Path] = set()


def _report_rules() -> dict:
    """What the results schema allows for a check's id and group (a user check must fit the report)."""
    import json
    schema = json.loads((Path(__file__).resolve().parents[1] / "report" / "schema.json").read_text())
    return schema["$defs"]["check"]["properties"]


def _validate(entry: CatalogEntry) -> None:
    import re
    rules = _report_rules()
    where = f"check {entry.id!r}"
    pattern = rules.get("id", {}).get("pattern")
    if not isinstance(entry.id, str) or (pattern and not re.match(pattern, entry.id)):
        raise ConfigError(f"{where}: an id is letters, a dash and a number, like MY-1 (pattern {pattern})")
    if not isinstance(entry.title, str) or not entry.title.strip():
        raise ConfigError(f"{where}: needs a title")
    groups = rules.get("group", {}).get("enum")
    if not isinstance(entry.group, str) or (groups and entry.group not in groups):
        raise ConfigError(f"{where}: group {entry.group!r} is not one of {', '.join(groups or ())}")
    if not isinstance(entry.figures, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                      for k, v in entry.figures.items()):
        raise ConfigError(f"{where}: figures must map each figure's name to its unit (\"\" for none), "
                          f"e.g. {{reached: \"%\"}}")
    bad = [n for n in entry.needs if n not in CAPABILITIES] if isinstance(entry.needs, tuple) else [entry.needs]
    if bad:
        raise ConfigError(f"{where}: needs {bad[0]!r}: not a capability; known: {', '.join(CAPABILITIES)}")


def _params_class(cid: str, defaults: dict, where: str) -> type:
    """A frozen dataclass for a YAML-declared check: one field per default, typed by its value."""
    import dataclasses
    import keyword

    def typ(name: str, v: object) -> object:
        for t in (bool, int, float, str):
            if type(v) is t:
                return t
        if isinstance(v, list) and v and len({type(x) for x in v}) == 1 and type(v[0]) in (int, float, str):
            return tuple[type(v[0]), ...]  # type: ignore[misc]
        raise ConfigError(f"{where}params.{name}: a default must be a number, a string, true/false or a "
                          f"non-empty list of one of those, got {v!r}")

    fields = []
    for name, v in defaults.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigError(f"{where}params.{name}: not a valid parameter name")
        t = typ(name, v)
        fields.append((name, t, dataclasses.field(default=tuple(v) if isinstance(v, list) else v)))
    return dataclasses.make_dataclass("Params_" + cid.replace("-", "_"), fields, frozen=True)


def _load_yaml(path: Path) -> None:
    import yaml
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the catalog file: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("checks"), dict) or set(data) - {"checks"}:
        raise ConfigError(f"{path}: a catalog file is a 'checks:' mapping of check id -> "
                          f"{{title, group, figures, params}}")
    for cid, body in data["checks"].items():
        where = f"{path}: checks.{cid}."
        if not isinstance(body, dict):
            raise ConfigError(f"{where[:-1]}: must be a mapping with {', '.join(_ENTRY_FIELDS)}")
        unknown = sorted(set(body) - set(_ENTRY_FIELDS))
        if unknown:
            raise ConfigError(f"{where}{unknown[0]}: unknown field; expected {', '.join(_ENTRY_FIELDS)}")
        figures = body.get("figures") or {}
        if not isinstance(figures, dict):
            raise ConfigError(f"{where}figures: must map figure -> unit")
        defaults = body.get("params") or {}
        if not isinstance(defaults, dict):
            raise ConfigError(f"{where}params: must map parameter -> default value")
        needs = body.get("needs") or []
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise ConfigError(f"{where}needs: must be a list of capabilities, e.g. [\"toxiproxy:upstream\"]")
        entry = CatalogEntry(str(cid), body.get("group"), body.get("title"),  # type: ignore[arg-type]
                             {str(k): "" if v is None else str(v) for k, v in figures.items()}, tuple(needs))
        try:
            register(entry, _params_class(str(cid), defaults, where) if defaults else None)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _load_python(path: Path) -> None:
    import hashlib
    import importlib.util
    import sys
    name = f"meshbed_user_catalog_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot import the catalog file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its params dataclasses resolve their type hints through it
    try:
        spec.loader.exec_module(module)
    except ConfigError as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a user's file: one line naming it
        sys.modules.pop(name, None)
        raise ConfigError(f"{path}: the catalog file raised {type(exc).__name__}: {exc}") from None


def load_file(path: str | Path) -> None:
    """Register the checks a catalog file declares (``.yaml``/``.yml``: declared; ``.py``: calls register()).

    Loading the same file again does nothing.
    """
    p = Path(path).resolve()
    if p in _loaded:
        return
    if not p.is_file():
        raise ConfigError(f"{path}: catalog file not found")
    if p.suffix in (".yaml", ".yml"):
        _load_yaml(p)
    elif p.suffix == ".py":
        _load_python(p)
    else:
        raise ConfigError(f"{path}: a catalog file is .yaml, .yml or .py")
    _loaded.add(p)


def discover(paths: list[str | Path], stop_at: str | Path | None = None) -> list[Path]:
    """The catalog files for these test paths: in each directory (a file's own), and in every directory
    above it up to ``stop_at`` (the rootdir) when it is below that; nearest first, each once."""
    stop = Path(stop_at).resolve() if stop_at is not None else None
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).resolve()
        d = p if p.is_dir() else p.parent
        dirs = [d]
        if stop is not None and d.is_relative_to(stop):
            dirs += [a for a in d.parents if a.is_relative_to(stop)]
        for cand in dirs:
            for name in CATALOG_FILES:
                f = cand / name
                if f.is_file() and f not in out:
                    out.append(f)
    return out
