"""Per-service traffic policy, stored in Consul KV for the control plane.

Key ``meshbed/services/<service>`` holds one JSON object (see ServicePolicy);
key ``meshbed/mesh`` holds mesh-wide settings (MeshPolicy). Keeping policy in
Consul makes a policy change a Consul change: the suites flip an LB policy or
route weights the same way they churn endpoints, and the control plane
watches both with blocking queries.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError

KV_SERVICES_PREFIX = "meshbed/services/"
KV_MESH_KEY = "meshbed/mesh"

LB_POLICIES = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")


@dataclass(frozen=True)
class Retries:
    retry_on: str = "connect-failure,reset,5xx"
    num_retries: int = 2
    per_try_timeout_ms: int = 0  # 0: no per-try timeout


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    interval_ms: int = 1000
    base_ejection_time_ms: int = 10000
    max_ejection_percent: int = 50


@dataclass(frozen=True)
class CircuitBreaker:
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True)
class ServicePolicy:
    lb_policy: str = "ROUND_ROBIN"
    # header whose value is hashed for RING_HASH / MAGLEV
    hash_header: str = ""
    # route weights by instance version (Consul service meta "version");
    # empty means one cluster over every instance
    weights: dict[str, int] = field(default_factory=dict)
    timeout_ms: int = 15000
    retries: Retries | None = None
    outlier_detection: OutlierDetection | None = None
    circuit_breaker: CircuitBreaker | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "policy") -> "ServicePolicy":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: must be a mapping, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        lb = str(d.get("lb_policy", "ROUND_ROBIN")).upper()
        if lb not in LB_POLICIES:
            raise ConfigError(f"{where}.lb_policy: {lb!r} is not one of {', '.join(LB_POLICIES)}")
        weights = d.get("weights") or {}
        if not isinstance(weights, dict) or not all(isinstance(v, int) and v >= 0 for v in weights.values()):
            raise ConfigError(f"{where}.weights: must map version -> non-negative integer weight")
        if weights and sum(weights.values()) <= 0:
            raise ConfigError(f"{where}.weights: weights must add up to more than 0")

        def sub(name: str, typ: type) -> Any:
            v = d.get(name)
            if v is None:
                return None
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.{name}: must be a mapping")
            fields = typ.__dataclass_fields__
            for k, x in v.items():
                if k not in fields:
                    raise ConfigError(f"{where}.{name}.{k}: unknown field; known: {', '.join(fields)}")
                want = type(fields[k].default)
                if want is int and (isinstance(x, bool) or not isinstance(x, int) or x < 0):
                    raise ConfigError(f"{where}.{name}.{k}: must be a non-negative integer, got {x!r}")
                if want is str and not isinstance(x, str):
                    raise ConfigError(f"{where}.{name}.{k}: must be a string, got {x!r}")
            return typ(**v)

        timeout_ms = d.get("timeout_ms", 15000)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ConfigError(f"{where}.timeout_ms: must be a positive integer (milliseconds), got {timeout_ms!r}")
        hash_header = d.get("hash_header", "")
        if not isinstance(hash_header, str) or (hash_header and not re.match(r"^[A-Za-z0-9-]+$", hash_header)):
            raise ConfigError(f"{where}.hash_header: must be an HTTP header name, got {hash_header!r}")
        return cls(
            lb_policy=lb,
            hash_header=hash_header,
            weights={str(k): int(v) for k, v in weights.items()},
            timeout_ms=timeout_ms,
            retries=sub("retries", Retries),
            outlier_detection=sub("outlier_detection", OutlierDetection),
            circuit_breaker=sub("circuit_breaker", CircuitBreaker),
        )


@dataclass(frozen=True)
class MeshPolicy:
    # percent of new traces sampled at the edge (ingress); sidecars follow
    # the incoming decision
    sampling_percent: float = 100.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "MeshPolicy":
        try:
            pct = float(d.get("sampling_percent", 100.0))
        except (TypeError, ValueError) as exc:
            raise ConfigError("mesh.sampling_percent: must be a number") from exc
        if not 0.0 <= pct <= 100.0:
            raise ConfigError(f"mesh.sampling_percent: {pct} is outside 0..100")
        return cls(sampling_percent=pct)
