"""The conformance catalog (spec v1): every check's id, group and title."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    group: str  # discovery | lb | tracing | resilience
    title: str
    under_load: bool


_ROWS = [
    ("DISC-1", "discovery", "register a new healthy instance", False),
    ("DISC-2", "discovery", "deregister an instance under load", True),
    ("DISC-3", "discovery", "flip a Consul health check to critical, then back", False),
    ("DISC-4", "discovery", "churn storm: register/deregister at 5 events/s for 30 s under load", True),
    ("DISC-5", "discovery", "faults on the Envoy <-> control-plane stream", True),
    ("DISC-6", "discovery", "Consul unreachable (paused or stopped)", True),
    ("DISC-7", "discovery", "control plane killed and restarted under load", True),
    ("LB-1", "lb", "ROUND_ROBIN spread over N endpoints", False),
    ("LB-2", "lb", "LEAST_REQUEST with one endpoint slowed by 200 ms", False),
    ("LB-3", "lb", "weighted clusters 90/10 (canary)", False),
    ("LB-4", "lb", "RING_HASH / MAGLEV on a request header", False),
    ("LB-5", "lb", "priority failover when all primary endpoints fail", False),
    ("LB-6", "lb", "outlier detection ejects a failing endpoint", False),
    ("TRACE-1", "tracing", "complete traces under steady load, 100 % sampling", True),
    ("TRACE-2", "tracing", "propagation through application hops", False),
    ("TRACE-3", "tracing", "data-path faults produce error-marked spans", False),
    ("TRACE-4", "tracing", "trace export link faulted, then healed", False),
    ("TRACE-5", "tracing", "10 % sampling decided once at the edge", False),
    ("RES-1", "resilience", "reset_peer on 1 of 3 endpoints, with retries", False),
    ("RES-2", "resilience", "latency above the route timeout", False),
    ("RES-3", "resilience", "circuit breaker under overload", False),
    ("RES-4", "resilience", "rolling restart of a service under load", True),
    ("RES-5", "resilience", "bandwidth / slicer toxics on large responses", False),
]

CATALOG: dict[str, CatalogEntry] = {r[0]: CatalogEntry(*r) for r in _ROWS}
GROUPS = ("discovery", "lb", "tracing", "resilience")
