"""The conformance catalog (spec v2): every check's id, group, title and the figures it measures.

``figures`` maps each figure a check records to its unit; a profile's
thresholds are validated against it when the profile loads. Every check that
applies a traffic policy also measures ``policy_apply_p99`` (policy written to
Consul KV -> every affected Envoy shows it, per the contract in
``meshbed.contract``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    group: str  # discovery | lb | tracing | resilience (or a user's own group)
    title: str
    figures: dict[str, str] = field(default_factory=dict)  # figure -> unit

    @property
    def applies_policy(self) -> bool:
        return "policy_apply_p99" in self.figures


_POLICY = {"policy_apply_p99": "s", "policy_apply_p50": "s"}

_ROWS: list[CatalogEntry] = [
    CatalogEntry("DISC-1", "discovery", "register a new healthy instance",
                 {"convergence_p99": "s", "convergence_p50": "s"}),
    CatalogEntry("DISC-2", "discovery", "deregister an instance under load",
                 {"convergence_p99": "s", "convergence_p50": "s", "late_requests": "requests", "error_rate": "%"}),
    CatalogEntry("DISC-3", "discovery", "flip a Consul health check to critical, then back",
                 {"leave_p99": "s", "rejoin_p99": "s", "leave_p50": "s", "rejoin_p50": "s"}),
    CatalogEntry("DISC-4", "discovery", "churn storm: register/deregister at 5 events/s for 30 s under load",
                 {"settle_time": "s", "nacks": "nacks", "error_rate": "%", "events": "events"}),
    CatalogEntry("DISC-5", "discovery", "faults on the Envoy <-> control-plane stream",
                 {"error_rate": "%", "post_fault_convergence_max": "s", "config_lost": "envoys"}),
    CatalogEntry("DISC-6", "discovery",
                 "Consul unreachable: paused, link down / reset / timed out, answering 5xx",
                 {"partial_pushes": "pushes", "error_rate": "%", "convergence_after_return": "s"}),
    CatalogEntry("DISC-7", "discovery", "control plane killed and restarted under load",
                 {"error_rate": "%", "reconverge_max": "s"}),
    CatalogEntry("LB-1", "lb", "ROUND_ROBIN spread over N endpoints",
                 {"max_share_dev": "pp", "chi2_p": "", "source_disagreement": "%", **_POLICY}),
    CatalogEntry("LB-2", "lb", "LEAST_REQUEST with one endpoint slowed by 200 ms",
                 {"slow_share_ratio": "", **_POLICY}),
    CatalogEntry("LB-3", "lb", "weighted clusters 90/10 (canary)", {"split_dev": "pp", **_POLICY}),
    CatalogEntry("LB-4", "lb", "RING_HASH / MAGLEV on a request header",
                 {"key_affinity": "%", "keys_moved_norm": "", **_POLICY}),
    CatalogEntry("LB-5", "lb", "priority failover when all primary endpoints fail",
                 {"error_rate_after_ejection": "%", "secondary_share": "%", "failover_s": "s", **_POLICY}),
    CatalogEntry("LB-6", "lb", "outlier detection ejects a failing endpoint (every caller Envoy)",
                 {"ejecting_envoys": "%", "client_success": "%", **_POLICY}),
    CatalogEntry("TRACE-1", "tracing", "complete traces under steady load, 100 % sampling", {"completeness": "%", "achieved_rps": "rps"}),
    CatalogEntry("TRACE-2", "tracing", "propagation through application hops",
                 {"service_parented": "%", "tagged": "%"}),
    CatalogEntry("TRACE-3", "tracing", "data-path faults produce error-marked spans",
                 {"error_marked": "%", "completeness": "%", **_POLICY}),
    CatalogEntry("TRACE-4", "tracing", "trace export link faulted, then healed",
                 {"completeness_after_heal": "%", "completeness_during_fault": "%", "span_loss_during_fault": "%"}),
    CatalogEntry("TRACE-5", "tracing", "10 % sampling decided once at the edge",
                 {"sampling_dev": "pp", "partial_traces": "traces", "sampled_pct": "%", **_POLICY}),
    CatalogEntry("RES-1", "resilience", "reset_peer on 1 of 3 endpoints, with retries",
                 {"client_success": "%", "retries": "retries", "faulted_attempts": "requests", **_POLICY}),
    CatalogEntry("RES-2", "resilience", "latency above the route timeout",
                 {"timeout_overshoot_max": "ms", "answered_504": "%", "hung": "requests", **_POLICY}),
    CatalogEntry("RES-3", "resilience", "circuit breaker under overload",
                 {"overflow_503_p99": "ms", "concurrency_excess": "requests", "overflow_503_caller_p99": "ms",
                  "overflow_client_p99": "ms", "upstream_concurrency_peak_per_envoy": "requests",
                  "overflow_share": "%", "other_failures": "requests", **_POLICY}),
    CatalogEntry("RES-4", "resilience", "rolling restart of a service under load",
                 {"error_rate": "%", "error_rate_during_restarts": "%"}),
    CatalogEntry("RES-5", "resilience", "bandwidth / slicer toxics on large responses", {"intact_bodies": "%"}),
]

CATALOG: dict[str, CatalogEntry] = {r.id: r for r in _ROWS}
GROUPS = ("discovery", "lb", "tracing", "resilience")


def register(entry: CatalogEntry) -> None:
    """Add a user's own check to the catalog (from a conftest), so profiles and the report know it."""
    if entry.id in CATALOG and CATALOG[entry.id] != entry:
        raise ConfigError(f"check {entry.id}: already in the catalog with another definition")
    CATALOG[entry.id] = entry
