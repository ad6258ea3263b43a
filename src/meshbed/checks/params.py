"""Each check's parameters: one typed dataclass per check, defaults in one place.

A profile's ``params:`` for a check are validated against its dataclass when
the profile loads, so a typo or a wrong type fails before anything starts.
Suites read ``check.p.<name>``; they never carry defaults of their own.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

# how long a policy may take to show before it counts as never applied (the threshold is lower)
POLICY_DEADLINE_S = 6.0


@dataclass(frozen=True)
class Disc1:
    repeats: int = 5
    deadline_s: float = 10.0


@dataclass(frozen=True)
class Disc2:
    repeats: int = 3
    rps: float = 60.0
    late_window_s: float = 2.0
    deadline_s: float = 10.0


@dataclass(frozen=True)
class Disc3:
    repeats: int = 3
    methods: tuple[str, ...] = ("maintenance", "app")
    deadline_s: float = 10.0


@dataclass(frozen=True)
class Disc4:
    events_per_s: float = 5.0
    duration_s: float = 30.0
    rps: float = 40.0
    extra_backends: int = 2
    include_health: bool = False
    deadline_s: float = 15.0


@dataclass(frozen=True)
class Disc5:
    fault_s: float = 4.0
    rps: float = 40.0
    faults: tuple[str, ...] = ("reset_peer", "timeout", "latency", "down")
    latency_ms: int = 500
    timeout_ms: int = 0
    deadline_s: float = 20.0


@dataclass(frozen=True)
class Disc6:
    outage_s: float = 5.0
    rps: float = 40.0
    deadline_s: float = 15.0
    # how Consul becomes unreachable, one round each (see suites/test_discovery.py)
    outages: tuple[str, ...] = ("pause", "link_down", "reset_peer", "timeout", "http_5xx")


@dataclass(frozen=True)
class Disc7:
    down_s: float = 3.0
    rps: float = 40.0
    deadline_s: float = 20.0


@dataclass(frozen=True)
class Disc8:
    repeats: int = 3
    deadline_s: float = 10.0


@dataclass(frozen=True)
class Disc9:
    requests: int = 200
    valid_timeout_ms: int = 4000  # the valid policy's route timeout (with LEAST_REQUEST): a change to show
    nack_deadline_s: float = 10.0  # how long to wait for every Envoy to reject the bad config
    deadline_s: float = 10.0  # how long the valid policy may take before it counts as never shown


@dataclass(frozen=True)
class Lb1:
    requests: int = 3000
    concurrency: int = 4


@dataclass(frozen=True)
class Lb2:
    requests: int = 600
    latency_ms: int = 200
    concurrency: int = 8


@dataclass(frozen=True)
class Lb3:
    requests: int = 5000
    concurrency: int = 4
    weights: dict[str, int] = field(default_factory=lambda: {"v1": 90, "v2": 10})


@dataclass(frozen=True)
class Lb4:
    keys: int = 500
    requests_per_key: int = 3
    requests_per_key_after: int = 1
    concurrency: int = 4
    hash_header: str = "x-user"
    algorithms: tuple[str, ...] = ("RING_HASH", "MAGLEV")


@dataclass(frozen=True)
class Lb5:
    requests: int = 400
    secondaries: int = 2
    concurrency: int = 4


@dataclass(frozen=True)
class Lb6:
    requests: int = 2000
    consecutive_5xx: int = 3
    base_ejection_time_ms: int = 60000
    num_retries: int = 2
    concurrency: int = 4


@dataclass(frozen=True)
class Trace1:
    requests: int = 1000
    rps: float = 50.0


@dataclass(frozen=True)
class Trace2:
    requests: int = 50


@dataclass(frozen=True)
class Trace3:
    requests: int = 60
    route_timeout_ms: int = 300
    latency_ms: int = 1000


@dataclass(frozen=True)
class Trace4:
    requests: int = 200
    fault_s: float = 5.0
    rps: float = 20.0


@dataclass(frozen=True)
class Trace5:
    requests: int = 3000
    sampling_percent: float = 10.0


@dataclass(frozen=True)
class Trace6:
    requests: int = 100  # per route of the ingress (each route's call tree is driven)


@dataclass(frozen=True)
class Res1:
    requests: int = 2000


@dataclass(frozen=True)
class Res2:
    requests: int = 30
    route_timeout_ms: int = 500
    latency_ms: int = 1500


@dataclass(frozen=True)
class Res3:
    max_requests: int = 4
    concurrency: int = 32
    requests: int = 600
    delay_ms: int = 100


@dataclass(frozen=True)
class Res4:
    rps: float = 40.0
    duration_s: float = 25.0


@dataclass(frozen=True)
class Res5:
    requests: int = 40
    size_bytes: int = 262144
    bandwidth_kb_s: int = 2048


PARAMS: dict[str, type] = {
    "DISC-1": Disc1, "DISC-2": Disc2, "DISC-3": Disc3, "DISC-4": Disc4, "DISC-5": Disc5, "DISC-6": Disc6,
    "DISC-7": Disc7, "DISC-8": Disc8, "DISC-9": Disc9, "LB-1": Lb1, "LB-2": Lb2, "LB-3": Lb3, "LB-4": Lb4, "LB-5": Lb5, "LB-6": Lb6,
    "TRACE-1": Trace1, "TRACE-2": Trace2, "TRACE-3": Trace3, "TRACE-4": Trace4, "TRACE-5": Trace5, "TRACE-6": Trace6,
    "RES-1": Res1, "RES-2": Res2, "RES-3": Res3, "RES-4": Res4, "RES-5": Res5,
}


def register(check_id: str, cls: type) -> None:
    """Give a user-defined check its params dataclass (checks without one take no params)."""
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{check_id}: params must be a dataclass, got {cls!r}")
    PARAMS[check_id] = cls


@dataclass(frozen=True)
class NoParams:
    pass


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{where}: must be a non-empty list, got {value!r}")
        (item,) = {a for a in typing.get_args(typ) if a is not Ellipsis}
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        kt, vt = typing.get_args(typ)
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"{where}: must be a non-empty mapping, got {value!r}")
        return {_coerce(str(k), kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported parameter type {typ!r}")  # pragma: no cover - a dataclass bug


def build(check_id: str, raw: dict[str, Any], where: str = "") -> Any:
    """The check's params dataclass from a profile's ``params:`` mapping (unknown or mistyped: one line)."""
    cls = PARAMS.get(check_id, NoParams)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        known = ", ".join(names) or "(none)"
        raise ConfigError(f"{where}params.{unknown[0]}: not a parameter of {check_id}; known: {known}")
    return cls(**{k: _coerce(v, hints[k], f"{where}params.{k}") for k, v in raw.items()})


def to_json(p: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(p).items()}
