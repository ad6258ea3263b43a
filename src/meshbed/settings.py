"""One settings object, built once from CLI flags, pytest ini and environment.

Precedence: CLI > environment (MESHBED_*) > ini > defaults. Nothing reads
the environment at import time; the object is passed explicitly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "meshbed"


@dataclass(frozen=True)
class Settings:
    runtime: str = "process"
    topology: Path = Path("examples/basic.yaml")
    profile: Path = Path("examples/profiles/default.yaml")
    out_dir: Path = Path("reports")
    # where run directories (configs, logs, state) live
    state_dir: Path = Path()
    ready_timeout: float = 90.0
    envoy_log_level: str = "warning"
    envoy_concurrency: int = 1
    # "reference" (meshbed's own) or a command template for your control
    # plane: "my-cp --ads {xds_host}:{xds_port} --consul {consul_url}"
    controlplane: str = "reference"

    def __post_init__(self) -> None:
        if not str(self.controlplane).strip():
            raise ConfigError("controlplane: empty; use 'reference' or a command template with {xds_port}")
        if self.ready_timeout <= 0:
            raise ConfigError(f"ready_timeout must be > 0 seconds, got {self.ready_timeout}")
        if self.envoy_concurrency < 1:
            raise ConfigError(f"envoy_concurrency must be >= 1, got {self.envoy_concurrency}")

    @property
    def runs_dir(self) -> Path:
        return self.state_dir if str(self.state_dir) not in ("", ".") else _default_cache() / "runs"

    @classmethod
    def build(
        cls,
        cli: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        ini: Mapping[str, Any] | None = None,
    ) -> "Settings":
        """Merge the sources; a value of None in a source means 'not given'."""
        env = os.environ if env is None else env
        merged: dict[str, Any] = {}
        names = [f.name for f in fields(cls)]
        for source in (ini or {}, {n: env.get(f"MESHBED_{n.upper()}") for n in names}, cli or {}):
            for k, v in source.items():
                if k in names and v not in (None, ""):
                    merged[k] = v
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in merged:
                continue
            v = merged[f.name]
            try:
                if f.type in ("Path",):
                    out[f.name] = Path(v)
                elif f.type == "float":
                    out[f.name] = float(v)
                elif f.type == "int":
                    out[f.name] = int(v)
                else:
                    out[f.name] = str(v)
            except (TypeError, ValueError):
                raise ConfigError(f"setting {f.name}: {v!r} is not a valid {f.type}") from None
        return cls(**out)
