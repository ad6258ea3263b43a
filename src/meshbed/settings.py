"""One settings object, built once from CLI flags, pytest ini and environment.

Precedence: CLI > environment (MESHBED_*) > ini > defaults. Nothing reads
the environment at import time; the object is passed explicitly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError


MAX_READY_TIMEOUT = 24 * 3600.0  # a day: beyond it a "deadline" is no deadline
MAX_ENVOY_CONCURRENCY = 256
MAX_LOAD_WORKERS = 64  # Locust workers on this host (meshbed.load.MAX_WORKERS)
REGISTRIES = ("", "consul", "eureka")  # "": the topology's ``registry`` (default consul)
TRACING_FORMATS = ("", "w3c", "b3")  # "": the topology's ``tracing`` (default w3c)


def check_seconds(name: str, value: float, maximum: float = MAX_READY_TIMEOUT) -> float:
    """A duration setting: a finite number of seconds in (0, maximum]; ConfigError (one line) otherwise.

    NaN compares false with everything, so ``value <= 0`` alone lets it through
    and it then disables every deadline: it is refused by name.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: must be a number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number of seconds, got {value!r}")
    if not 0 < value <= maximum:
        raise ConfigError(f"{name}: must be > 0 and <= {maximum:g} seconds, got {value:g}")
    return float(value)


def parse_float(name: str, value: Any) -> float:
    """A float from a CLI flag, an environment variable or an ini value; non-finite values are refused."""
    try:
        v = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"{name}: {value!r} is not a finite number")
    return v


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
    # > 0: Envoys in low-memory mode (overload manager on this heap budget, small buffers); bench scale
    envoy_max_heap_mb: int = 0
    # "reference" (meshbed's own) or a command template for your control
    # plane: "my-cp --ads {xds_host}:{xds_port} --consul {consul_url}"
    controlplane: str = "reference"
    # run directories kept by the automatic pruning of `up` and `run` (finished ones, newest first); 0: keep all
    keep_runs: int = 20
    # "" (the topology's choice, else consul) or consul | eureka: where instances register (docs/registries.md)
    registry: str = ""
    # "" (the topology's choice, else w3c) or w3c | b3: the trace headers and Envoy tracer (docs/tracing-formats.md)
    tracing: str = ""
    # 0: the suites' load is one Locust process; N: Locust's master + N workers (docs/load.md)
    load_workers: int = 0
    # a mesh.json of a running mesh to judge instead of starting one (`meshbed run --attach`, docs/attach.md)
    attach: str = ""

    def __post_init__(self) -> None:
        if not str(self.controlplane).strip():
            raise ConfigError("controlplane: empty; use 'reference' or a command template with {xds_port}")
        check_seconds("ready_timeout", self.ready_timeout)
        if isinstance(self.envoy_concurrency, bool) or not isinstance(self.envoy_concurrency, int) \
                or not 1 <= self.envoy_concurrency <= MAX_ENVOY_CONCURRENCY:
            raise ConfigError(f"envoy_concurrency must be an integer in 1..{MAX_ENVOY_CONCURRENCY}, "
                              f"got {self.envoy_concurrency!r}")
        if isinstance(self.envoy_max_heap_mb, bool) or not isinstance(self.envoy_max_heap_mb, int) \
                or not (self.envoy_max_heap_mb == 0 or 16 <= self.envoy_max_heap_mb <= 65536):
            raise ConfigError(f"envoy_max_heap_mb must be 0 (off) or an integer in 16..65536, "
                              f"got {self.envoy_max_heap_mb!r}")
        if self.registry not in REGISTRIES or self.tracing not in TRACING_FORMATS:
            bad, known = (("registry", REGISTRIES) if self.registry not in REGISTRIES else ("tracing", TRACING_FORMATS))
            raise ConfigError(f"{bad}: {getattr(self, bad)!r} is not one of {', '.join(k for k in known if k)}")
        if isinstance(self.load_workers, bool) or not isinstance(self.load_workers, int) \
                or not 0 <= self.load_workers <= MAX_LOAD_WORKERS:
            raise ConfigError(f"load_workers (--load-workers, MESHBED_LOAD_WORKERS) must be an integer in "
                              f"0..{MAX_LOAD_WORKERS} (0: one Locust process), got {self.load_workers!r}")
        if isinstance(self.keep_runs, bool) or not isinstance(self.keep_runs, int) or not 0 <= self.keep_runs <= 100_000:
            raise ConfigError(f"keep_runs (MESHBED_KEEP_RUNS) must be an integer >= 0 (0 keeps every run directory), "
                              f"got {self.keep_runs!r}")

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
        merged: dict[str, tuple[Any, str]] = {}
        names = [f.name for f in fields(cls)]
        sources = (
            ("ini meshbed_{}", ini or {}),
            ("MESHBED_{}", {n: env.get(f"MESHBED_{n.upper()}") for n in names}),
            ("--{}", cli or {}),
        )
        for label, source in sources:
            for k, v in source.items():
                if k in names and v not in (None, ""):
                    name = k.upper() if label.startswith("MESHBED") else k if label.startswith("ini") else k.replace("_", "-")
                    merged[k] = (v, label.format(name))
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in merged:
                continue
            v, where = merged[f.name]
            what = f"setting {f.name} (from {where})"
            try:
                if f.type in ("Path",):
                    if "\0" in str(v):
                        raise ValueError("NUL in a path")
                    out[f.name] = Path(v)
                elif f.type == "float":
                    out[f.name] = parse_float(what, v)
                    if f.name == "ready_timeout":
                        check_seconds(what, out[f.name])
                elif f.type == "int":
                    if isinstance(v, (float, bool)):
                        raise ValueError(v)
                    out[f.name] = int(v.strip() if isinstance(v, str) else v)
                else:
                    out[f.name] = str(v)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"{what}: {v!r} is not a valid {f.type}") from None
        return cls(**out)
