"""Convergence times: from the moment of a change to the first poll where it shows.

Each Envoy is polled in its own thread (<= 10 ms apart), so a slow Envoy
does not delay the measurement of the others. Times are wall-clock seconds
since ``t0`` (time.time()), comparable with the control plane's push log.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import httpc
from .envoy_admin import HostStatus, clusters

Expectation = Callable[[dict[str, list[HostStatus]]], bool]


def converge_times(admin_urls: dict[str, str], expect: Expectation, t0: float, deadline_s: float,
                   interval: float = 0.01) -> dict[str, float | None]:
    """Per Envoy: seconds from t0 to the first poll where ``expect(clusters)`` holds (None: never)."""
    out: dict[str, float | None] = {}
    lock = threading.Lock()
    end = t0 + deadline_s

    def watch(name: str, url: str) -> None:
        result: float | None = None
        while time.time() < end:
            polled_at = time.time()
            try:
                ok = expect(clusters(url, timeout=1.0))
            except (OSError, ValueError):
                ok = False
            if ok:
                result = polled_at - t0
                break
            time.sleep(interval)
        with lock:
            out[name] = result

    with ThreadPoolExecutor(max_workers=max(1, len(admin_urls))) as pool:
        for n, u in admin_urls.items():
            pool.submit(watch, n, u)
    return out


def has_host(cluster: str, address: str, healthy: bool = True) -> Expectation:
    def f(cs: dict[str, list[HostStatus]]) -> bool:
        return any(h.address == address and (h.healthy or not healthy) for h in cs.get(cluster, []))
    return f


def lacks_healthy_host(cluster: str, address: str) -> Expectation:
    def f(cs: dict[str, list[HostStatus]]) -> bool:
        return not any(h.address == address and h.healthy for h in cs.get(cluster, []))
    return f


def lacks_host(cluster: str, address: str) -> Expectation:
    def f(cs: dict[str, list[HostStatus]]) -> bool:
        return all(h.address != address for h in cs.get(cluster, []))
    return f


def healthy_set_is(cluster: str, addresses: set[str]) -> Expectation:
    def f(cs: dict[str, list[HostStatus]]) -> bool:
        return {h.address for h in cs.get(cluster, []) if h.healthy} == addresses
    return f


def cp_ack_times(cp_debug_url: str | None, t0: float, type_: str = "EDS") -> dict[str, float]:
    """Per node: seconds from t0 to the control plane's first ACK of ``type_`` after t0.

    Evidence only, from the reference control plane's push log; {} for a
    control plane without one (verdicts come from the Envoys).
    """
    if not cp_debug_url:
        return {}
    try:
        events = httpc.get_json(f"{cp_debug_url.rstrip('/')}/debug/pushes?since={t0}", timeout=5)
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for e in events:
        if e.get("event") == "ack" and e.get("type") == type_ and float(e["ts"]) >= t0:
            out.setdefault(str(e["node"]), float(e["ts"]) - t0)
    return out
