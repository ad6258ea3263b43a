"""Envoy's admin API, as data: hosts per cluster with health and request counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import httpc
from ..flavour import naming


@dataclass(frozen=True)
class HostStatus:
    address: str  # host:port
    hostname: str
    eds_health: str  # HEALTHY, UNHEALTHY, DRAINING, DEGRADED, ...
    outlier_ejected: bool
    rq_total: int
    rq_error: int
    rq_success: int
    cx_active: int
    rq_active: int
    priority: int

    @property
    def healthy(self) -> bool:
        return self.eds_health in ("HEALTHY", "") and not self.outlier_ejected


def _host(h: dict[str, Any]) -> HostStatus:
    sa = h.get("address", {}).get("socket_address", {})
    stats = {s["name"]: int(s.get("value", 0)) for s in h.get("stats", []) if "name" in s}
    hs = h.get("health_status", {}) or {}
    return HostStatus(
        address=f"{sa.get('address', '?')}:{sa.get('port_value', 0)}",
        hostname=str(h.get("hostname", "")),
        eds_health=str(hs.get("eds_health_status", "HEALTHY")),
        outlier_ejected=bool(hs.get("failed_outlier_check", False)),
        rq_total=stats.get("rq_total", 0), rq_error=stats.get("rq_error", 0),
        rq_success=stats.get("rq_success", 0), cx_active=stats.get("cx_active", 0),
        rq_active=stats.get("rq_active", 0), priority=int(h.get("priority", 0)),
    )


def clusters(admin_url: str, timeout: float = 2.0) -> dict[str, list[HostStatus]]:
    """Every cluster's hosts; zero-valued stats are omitted by Envoy and read as 0."""
    data = httpc.get_json(admin_url.rstrip("/") + "/clusters?format=json", timeout)
    out: dict[str, list[HostStatus]] = {}
    for c in data.get("cluster_statuses", []):
        out[c["name"]] = [_host(h) for h in c.get("host_statuses", [])]
    return naming.by_service(out)  # Consul Connect's cluster names also answer to their service's name


def healthy_addresses(admin_url: str, cluster: str, timeout: float = 2.0) -> set[str]:
    return {h.address for h in clusters(admin_url, timeout).get(cluster, []) if h.healthy}


def stats(admin_url: str, regex: str = "", timeout: float = 2.0) -> dict[str, int]:
    url = admin_url.rstrip("/") + "/stats?format=json" + (f"&filter={regex}" if regex else "")
    out: dict[str, int] = {}
    for s in httpc.get_json(url, timeout).get("stats", []):
        if "value" in s:
            out[s["name"]] = int(s["value"])
    return out


def config_dump(admin_url: str, resource: str = "", include_eds: bool = True, timeout: float = 5.0) -> Any:
    q = []
    if resource:
        q.append(f"resource={resource}")
    if include_eds:
        q.append("include_eds")
    return httpc.get_json(admin_url.rstrip("/") + "/config_dump" + ("?" + "&".join(q) if q else ""), timeout)
