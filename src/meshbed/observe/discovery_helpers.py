"""Helpers for the DISC checks: endpoint-set snapshots, a background poller, Consul truth, NACK counters.

Everything here reads; nothing changes the mesh. Endpoint sets are compared on
(address, EDS health) only: outlier ejection is a data-path decision, not
discovery.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import httpc
from .consul import ConsulClient
from .envoy_admin import HostStatus, clusters, stats

# Consul worst-check status -> the EDS health the control plane should send
_CONSUL_TO_EDS = {"passing": "HEALTHY", "warning": "DEGRADED", "critical": "UNHEALTHY"}

Endpoints = frozenset  # of (address, eds_health)


def endpoint_set(hosts: Iterable[HostStatus]) -> Endpoints:
    return frozenset((h.address, h.eds_health or "HEALTHY") for h in hosts)


def healthy_of(eps: Endpoints) -> frozenset[str]:
    return frozenset(a for a, hl in eps if hl == "HEALTHY")


def envoy_endpoints(admin_url: str, services: Iterable[str], timeout: float = 1.0) -> dict[str, Endpoints]:
    cs = clusters(admin_url, timeout)
    return {s: endpoint_set(cs.get(s, [])) for s in services}


def consul_endpoints(consul: ConsulClient, service: str) -> Endpoints:
    """What Consul's catalog says the endpoint set of ``service`` is (address, expected EDS health)."""
    return frozenset((i.address, _CONSUL_TO_EDS.get(i.status, "UNHEALTHY")) for i in consul.instances(service))


def matches(expected: dict[str, Endpoints]):
    """An Expectation for convergence.converge_times: every service's endpoint set equals ``expected``."""
    def f(cs: dict[str, list[HostStatus]]) -> bool:
        return all(endpoint_set(cs.get(s, [])) == want for s, want in expected.items())
    return f


@dataclass
class Sample:
    ts: float
    endpoints: dict[str, Endpoints]


@dataclass
class EndpointPoller:
    """Polls every Envoy's /clusters in its own thread; keeps each change of its endpoint sets.

    ``changes[node]`` holds the first sample and then one per change; ``errors[node]``
    counts polls that failed (admin unreachable), of which ``timeouts[node]`` had no
    answer in time (a paused Envoy) and ``refused[node]`` found nothing serving
    (connection refused or reset: a dead or restarting Envoy).
    """

    admin_urls: dict[str, str]
    services: dict[str, tuple[str, ...]]  # node -> services to watch on it
    interval: float = 0.02
    changes: dict[str, list[Sample]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    # wall-clock time of every successful poll, so a window's sample count is known
    poll_ts: dict[str, list[float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _watch(self, node: str, url: str) -> None:
        last: dict[str, Endpoints] | None = None
        while not self._stop.is_set():
            ts = time.time()
            try:
                cur = envoy_endpoints(url, self.services[node])
            except Exception as exc:  # noqa: BLE001 - any failed poll is counted, the thread must live on
                self.errors[node] = self.errors.get(node, 0) + 1
                if isinstance(exc, httpc.Timeout):
                    self.timeouts[node] = self.timeouts.get(node, 0) + 1
                elif isinstance(exc, httpc.Refused):
                    self.refused[node] = self.refused.get(node, 0) + 1
            else:
                self.polls[node] = self.polls.get(node, 0) + 1
                self.poll_ts[node].append(ts)
                if cur != last:
                    self.changes[node].append(Sample(ts, cur))
                    last = cur
            self._stop.wait(self.interval)

    def __enter__(self) -> "EndpointPoller":
        for n, u in self.admin_urls.items():
            self.changes[n], self.errors[n], self.polls[n], self.poll_ts[n] = [], 0, 0, []
            self.timeouts[n], self.refused[n] = 0, 0
            t = threading.Thread(target=self._watch, args=(n, u), daemon=True, name=f"poll-{n}")
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def state_at(self, node: str, ts: float) -> dict[str, Endpoints] | None:
        """The endpoint sets the node had at ``ts`` (last change at or before it)."""
        cur = None
        for s in self.changes.get(node, []):
            if s.ts > ts:
                break
            cur = s.endpoints
        return cur

    def polls_between(self, node: str, t0: float, t1: float) -> int:
        """Successful polls of ``node`` in [t0, t1): the samples behind a window's verdict."""
        return sum(1 for t in self.poll_ts.get(node, []) if t0 <= t < t1)

    def between(self, node: str, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.changes.get(node, []) if t0 <= s.ts < t1]

    def to_json(self, since: float = 0.0) -> dict[str, Any]:
        return {n: {"polls": self.polls.get(n, 0), "errors": self.errors.get(n, 0),
                    "timeouts": self.timeouts.get(n, 0), "refused": self.refused.get(n, 0),
                    "changes": [{"ts": round(s.ts, 3),
                                 **{svc: sorted(f"{a} {h}" for a, h in eps) for svc, eps in s.endpoints.items()}}
                                for s in ch if s.ts >= since]}
                for n, ch in self.changes.items()}


_REJECTED = re.compile(r"(^cluster_manager\.cds\.update_rejected$|^cluster\.[^.]+(\.[^.]+)*\.update_rejected$"
                       r"|^listener_manager\.lds\.update_rejected$|^http\..*\.rds\..*\.update_rejected$)")


def rejected_updates(admin_urls: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per Envoy: every xDS update_rejected counter (CDS, per-cluster EDS, LDS, RDS)."""
    out: dict[str, dict[str, int]] = {}
    for n, u in admin_urls.items():
        s = stats(u, "update_rejected")
        out[n] = {k: v for k, v in s.items() if _REJECTED.search(k)}
    return out


def rejected_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    """Per Envoy: rejections counted between two readings.

    A counter lower than before (an Envoy restart) counts from 0.
    """
    out = {}
    for n, cur in after.items():
        prev = before.get(n, {})
        out[n] = sum(v - prev.get(k, 0) if v >= prev.get(k, 0) else v for k, v in cur.items())
    return out


def cp_events(cp_url: str | None, since: float, event: str | None = None, type_: str | None = None) -> list[dict[str, Any]]:
    """The reference control plane's push log (/debug/pushes); [] when the CP has none (other CPs)."""
    if not cp_url:
        return []
    try:
        evs = httpc.get_json(f"{cp_url.rstrip('/')}/debug/pushes?since={since}", timeout=5)
    except (OSError, ValueError):
        return []
    if not isinstance(evs, list):
        return []
    return [e for e in evs if (event is None or e.get("event") == event) and (type_ is None or e.get("type") == type_)]


def service_stats(admin_url: str, service: str, part: str, timeout: float = 2.0) -> dict[str, int]:
    """Stats of every cluster serving ``service``, named ``cluster.<service>.<part>...`` whatever the flavour.

    builtin/go name the cluster after the service; Consul Connect after its discovery target
    (``[<subset>.]<service>.default.<dc>.internal.<td>.consul``, several with subsets): their
    counters are summed under the service's name, so ``cluster.backend.outlier_detection.*``
    reads the same on every control plane (``meshbed.flavour.naming``).
    """
    from ..flavour import naming
    out: dict[str, int] = {}
    marker = f".{part}"
    for k, v in stats(admin_url, r"^cluster\..*" + re.escape(marker) + r"(\.|$)", timeout).items():
        if not k.startswith("cluster."):
            continue
        name, sep, rest = k[len("cluster."):].partition(marker)
        if sep and naming.service_of_cluster(name) == service:
            key = f"cluster.{service}{marker}{rest}"
            out[key] = out.get(key, 0) + v
    return out


def is_connected(admin_url: str) -> bool:
    return stats(admin_url, "control_plane.connected_state", timeout=1.0).get("control_plane.connected_state") == 1
