"""Conformance profiles: thresholds and parameters per check, overridable by users."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..safeio import load_yaml
from . import params as params_mod
from .catalog import CATALOG
from .model import Threshold, convert

PACKAGED = Path(__file__).resolve().parent.parent / "profiles"
MAX_EXTENDS_DEPTH = 8


@dataclass(frozen=True)
class CheckProfile:
    thresholds: tuple[Threshold, ...]
    params: Any = field(default_factory=params_mod.NoParams)  # the check's params dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    checks: dict[str, CheckProfile]
    raw: dict[str, Any]

    def for_check(self, check_id: str) -> CheckProfile:
        if check_id not in self.checks:
            raise ConfigError(f"{self.source}: no entry for check {check_id}",
                              hint="add it under checks: in the profile (see examples/profiles/default.yaml)")
        return self.checks[check_id]


def parse(data: Any, source: str) -> Profile:
    if not isinstance(data, dict) or not isinstance(data.get("checks"), dict):
        raise ConfigError(f"{source}: a profile needs a 'checks:' mapping of check id -> thresholds/params")
    unknown_top = set(data) - {"name", "checks", "extends"}
    if unknown_top:
        raise ConfigError(f"{source}: {sorted(unknown_top)[0]}: unknown field; expected name, extends, checks")
    checks = {}
    for cid, body in data["checks"].items():
        where = f"{source}: checks.{cid}."
        if cid not in CATALOG:
            raise ConfigError(f"{source}: checks.{cid}: not a catalog check id; known: {', '.join(CATALOG)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where[:-1]}: must be a mapping with thresholds: and params:")
        bad = set(body) - {"thresholds", "params"}
        if bad:
            raise ConfigError(f"{where}{sorted(bad)[0]}: unknown field; expected thresholds, params")
        th = body.get("thresholds") or {}
        if not isinstance(th, dict):
            raise ConfigError(f"{where}thresholds: must map figure -> '<op> <value> <unit>'")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}params: must be a mapping")
        thresholds = tuple(Threshold.parse(k, v, where) for k, v in th.items())
        _check_figures(cid, thresholds, where)
        checks[cid] = CheckProfile(thresholds, params_mod.build(cid, params, where))
    return Profile(str(data.get("name", Path(source).stem)), source, checks, data)


def _check_figures(cid: str, thresholds: tuple[Threshold, ...], where: str) -> None:
    """Every threshold names a figure the check measures, in a unit it can be compared in."""
    figures = CATALOG[cid].figures
    if not figures:  # a user check that declares no figures: anything goes
        return
    for t in thresholds:
        if t.figure not in figures:
            raise ConfigError(f"{where}thresholds.{t.figure}: {cid} measures no such figure; "
                              f"it measures {', '.join(sorted(figures))}")
        if t.unit and convert(1.0, figures[t.figure], t.unit) is None:
            raise ConfigError(f"{where}thresholds.{t.figure}: unit {t.unit!r} does not fit the figure's "
                              f"unit {figures[t.figure]!r}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, what: str) -> Any:
    """Strict YAML: duplicate keys, alias bombs, deep nesting, non-finite numbers, huge or odd files refused."""
    return load_yaml(path, what, missing_hint="omit --profile for the packaged default, or `extends: default`")


def resolve_extends(name: str, relative_to: Path) -> Path:
    """``extends: default`` names a packaged profile; anything with a suffix or a slash is a path."""
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        packaged = PACKAGED / f"{name}.yaml"
        if not packaged.is_file():
            known = ", ".join(sorted(p.stem for p in PACKAGED.glob("*.yaml")))
            raise ConfigError(f"{relative_to}: extends: {name!r} is not a packaged profile; known: {known}",
                              hint="or give a path ending in .yaml")
        return packaged
    return (relative_to.parent / name).resolve()


def _load_chain(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The profile at ``path`` with every ``extends:`` above it merged in (cycles and depth refused)."""
    data = _read(path, "profile" if not seen else f"profile extended by {seen[-1]}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile must be a mapping")
    ext = data.get("extends")
    if not ext:
        return data
    if not isinstance(ext, str):
        raise ConfigError(f"{path}: extends: must be a profile name or a path, got {ext!r}")
    base_path = resolve_extends(ext, path)
    chain = (*seen, path.resolve())
    if base_path in chain:
        raise ConfigError(f"{path}: extends: cycle {' -> '.join(p.name for p in (*chain, base_path))}")
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{path}: extends: chain deeper than {MAX_EXTENDS_DEPTH} profiles")
    base = _load_chain(base_path, chain)
    return _merge({k: v for k, v in base.items() if k != "name"}, {k: v for k, v in data.items() if k != "extends"})


def default_path() -> Path:
    return PACKAGED / "default.yaml"


def load(path: str | Path | None = None) -> Profile:
    """Load a profile (the packaged default when None); ``extends:`` chains merge field by field."""
    path = default_path() if path is None or str(path) == "default" else Path(path)
    return parse(_load_chain(path, ()), str(path))
