"""Conformance profiles: thresholds and parameters per check, overridable by users."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .catalog import CATALOG
from .model import Threshold


@dataclass(frozen=True)
class CheckProfile:
    thresholds: tuple[Threshold, ...]
    params: dict[str, Any] = field(default_factory=dict)


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
        checks[cid] = CheckProfile(tuple(Threshold.parse(k, v, where) for k, v in th.items()), dict(params))
    return Profile(str(data.get("name", Path(source).stem)), source, checks, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found", hint="pass --profile examples/profiles/default.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None


def load(path: str | Path) -> Profile:
    """Load a profile; `extends: other.yaml` overrides another profile field by field."""
    path = Path(path)
    data = _read(path, "profile")
    if isinstance(data, dict) and data.get("extends"):
        base_path = (path.parent / str(data["extends"])).resolve()
        base = _read(base_path, f"profile extended by {path}")
        if not isinstance(base, dict):
            raise ConfigError(f"{base_path}: the extended profile must be a mapping")
        data = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    return parse(data, str(path))
