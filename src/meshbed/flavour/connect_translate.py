"""meshbed's per-service policy -> Consul 1.14 config entries (pure: no I/O).

The mapping (each part checked against Envoy's config dump, issue 10):

- ``lb_policy``, ``hash_header``: ``service-resolver`` ``LoadBalancer`` (both ring sizes always set:
  a resolver with only ``MinimumRingSize`` makes Consul send ``maximum_ring_size: 0``, which Envoy NACKs);
- ``weights``: resolver ``Subsets`` on ``Service.Meta.version`` plus a ``service-splitter``
  (weights scaled to sum 100, Consul's resolution is 0.01);
- ``timeout_ms``, ``retries``: a ``service-router`` with one catch-all route;
- ``outlier_detection``, ``circuit_breaker``: every caller's ``service-defaults``
  ``UpstreamConfig.Overrides`` (``PassiveHealthCheck``, ``Limits``);
- L7 needs protocol http: ``proxy-defaults`` sets it mesh-wide.

What Consul cannot express comes back from :func:`unsupported` as reasons; the
checks that need such a policy are skipped with them (never a silent pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..policy import CircuitBreaker, ServicePolicy

# Envoy's own defaults (RingHash.minimum_ring_size / maximum_ring_size)
RING_MIN = 1024
RING_MAX = 8 * 1024 * 1024
DEFAULT_TIMEOUT_MS = 15000
SPLIT_RESOLUTION = 0.01  # Consul rounds splitter weights to 2 decimals
# retry_on conditions a Consul 1.14 service-router accepts in RetryOn (connect-failure has its own flag)
RETRY_ON = frozenset({"5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
                      "refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                      "unavailable"})
_LB = {"ROUND_ROBIN": "round_robin", "LEAST_REQUEST": "least_request", "RANDOM": "random",
       "RING_HASH": "ring_hash", "MAGLEV": "maglev"}
KINDS = ("service-resolver", "service-splitter", "service-router")  # write order; delete in reverse


@dataclass
class Entries:
    """The config entries one service's policy needs (None: that kind must not exist)."""

    resolver: dict[str, Any] | None = None
    splitter: dict[str, Any] | None = None
    router: dict[str, Any] | None = None
    override: dict[str, Any] = field(default_factory=dict)  # the callers' UpstreamConfig.Overrides item

    def by_kind(self) -> dict[str, dict[str, Any] | None]:
        return {"service-resolver": self.resolver, "service-splitter": self.splitter, "service-router": self.router}


def _ms(v: int) -> str:
    return f"{int(v)}ms"


def scaled_weights(weights: dict[str, int]) -> dict[str, float]:
    """Non-zero weights scaled to sum 100 at Consul's 0.01 resolution (the last takes the rounding)."""
    nz = [(k, w) for k, w in sorted(weights.items()) if w > 0]
    total = sum(w for _, w in nz)
    out: dict[str, float] = {}
    for k, w in nz[:-1]:
        out[k] = round(w * 100.0 / total, 2)
    if nz:
        out[nz[-1][0]] = round(100.0 - sum(out.values()), 2)
    return out


def unsupported(policy: ServicePolicy) -> list[str]:
    """Why Consul 1.14 cannot express ``policy`` exactly ([] when it can)."""
    out = []
    r = policy.retries
    if r is not None:
        if r.per_try_timeout_ms > 0:
            out.append("retries.per_try_timeout_ms: Consul 1.14's service-router has no per-try timeout")
        bad = sorted({c.strip() for c in r.retry_on.split(",") if c.strip()} - RETRY_ON)
        if bad:
            out.append(f"retries.retry_on {bad}: not a condition Consul 1.14's service-router RetryOn accepts")
    cb = policy.circuit_breaker
    if cb is not None and cb.max_retries != CircuitBreaker().max_retries:
        out.append("circuit_breaker.max_retries: Consul 1.14's Limits have no max_retries (Envoy's default 3 stays)")
    if policy.weights:
        want = {k: w for k, w in policy.weights.items() if w > 0}
        total = sum(want.values())
        got = scaled_weights(policy.weights)
        if any(abs(got[k] / 100.0 - w / total) > 1e-6 for k, w in want.items()):
            out.append(f"weights {policy.weights}: Consul's service-splitter resolution (0.01 %) cannot keep "
                       "these proportions exactly")
    return out


def resolver(service: str, policy: ServicePolicy) -> dict[str, Any] | None:
    """The service-resolver: LoadBalancer (both ring sizes for hashing) and version subsets."""
    e: dict[str, Any] = {"Kind": "service-resolver", "Name": service}
    if policy.lb_policy != "ROUND_ROBIN" or policy.hash_header:
        lb: dict[str, Any] = {"Policy": _LB[policy.lb_policy]}
        if policy.lb_policy == "RING_HASH":
            lb["RingHashConfig"] = {"MinimumRingSize": RING_MIN, "MaximumRingSize": RING_MAX}
        if policy.lb_policy in ("RING_HASH", "MAGLEV") and policy.hash_header:
            lb["HashPolicies"] = [{"Field": "header", "FieldValue": policy.hash_header}]
        e["LoadBalancer"] = lb
    if policy.weights:
        e["Subsets"] = {v: {"Filter": f'Service.Meta.version == "{v}"', "OnlyPassing": True}
                        for v in sorted(policy.weights)}
    return e if len(e) > 2 else None


def splitter(service: str, policy: ServicePolicy) -> dict[str, Any] | None:
    if not policy.weights:
        return None
    return {"Kind": "service-splitter", "Name": service,
            "Splits": [{"Weight": w, "ServiceSubset": v} for v, w in scaled_weights(policy.weights).items()]}


def router(service: str, policy: ServicePolicy) -> dict[str, Any] | None:
    dest: dict[str, Any] = {}
    if policy.timeout_ms != DEFAULT_TIMEOUT_MS:
        dest["RequestTimeout"] = _ms(policy.timeout_ms)
    r = policy.retries
    if r is not None:
        conds = [c.strip() for c in r.retry_on.split(",") if c.strip()]
        dest["NumRetries"] = r.num_retries
        dest["RetryOnConnectFailure"] = "connect-failure" in conds
        rest = [c for c in conds if c != "connect-failure" and c in RETRY_ON]
        if rest:
            dest["RetryOn"] = rest
    if not dest:
        return None
    return {"Kind": "service-router", "Name": service,
            "Routes": [{"Match": {"HTTP": {"PathPrefix": "/"}}, "Destination": dest}]}


def override(service: str, policy: ServicePolicy) -> dict[str, Any]:
    """The item every caller's service-defaults lists under UpstreamConfig.Overrides for ``service``."""
    o: dict[str, Any] = {"Name": service}
    od = policy.outlier_detection
    if od is not None:
        o["PassiveHealthCheck"] = {"Interval": _ms(od.interval_ms), "MaxFailures": od.consecutive_5xx,
                                   "EnforcingConsecutive5xx": 100, "MaxEjectionPercent": od.max_ejection_percent,
                                   "BaseEjectionTime": _ms(od.base_ejection_time_ms)}
    cb = policy.circuit_breaker
    if cb is not None:
        o["Limits"] = {"MaxConnections": cb.max_connections, "MaxPendingRequests": cb.max_pending_requests,
                       "MaxConcurrentRequests": cb.max_requests}
    return o


def translate(service: str, policy: ServicePolicy) -> Entries:
    """Every config entry ``policy`` needs for ``service`` (callers' overrides in ``override``)."""
    return Entries(resolver(service, policy), splitter(service, policy), router(service, policy),
                   override(service, policy))


def caller_defaults(caller: str, current: dict[str, Any] | None, service: str, item: dict[str, Any]) -> dict[str, Any]:
    """``caller``'s service-defaults with the override for ``service`` replaced by ``item`` (protocol http)."""
    keep = [o for o in ((current or {}).get("UpstreamConfig") or {}).get("Overrides") or []
            if o.get("Name") != service]
    if len(item) > 1:
        keep.append(item)
    out: dict[str, Any] = {"Kind": "service-defaults", "Name": caller, "Protocol": "http"}
    if keep:
        out["UpstreamConfig"] = {"Overrides": sorted(keep, key=lambda o: str(o.get("Name")))}
    return out
