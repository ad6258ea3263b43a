"""Convergence times: from the moment of a change to the first poll where it shows.

Each Envoy is polled in its own thread (<= 10 ms apart), so a slow Envoy
does not delay the measurement of the others. Times are wall-clock seconds
since ``t0`` (time.time()), comparable with the control plane's push log.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import httpc
from .envoy_admin import HostStatus, clusters

Expectation = Callable[[dict[str, list[HostStatus]]], bool]


def first_true_times(probes: dict[str, Callable[[], bool]], t0: float, deadline_s: float,
                     interval: float = 0.01) -> dict[str, float | None]:
    """Per name: seconds from t0 to the first poll where its probe is true (None: not by the deadline).

    Every probe runs in its own thread; a probe that raises OSError/ValueError
    (an admin API paused or restarting) counts as not yet.
    """
    end = t0 + deadline_s

    def watch(probe: Callable[[], bool]) -> float | None:
        while time.time() < end:
            polled_at = time.time()
            try:
                if probe():
                    return polled_at - t0
            except (OSError, ValueError):
                pass
            time.sleep(interval)
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        futures = {n: pool.submit(watch, p) for n, p in probes.items()}
        return {n: f.result() for n, f in futures.items()}


def converge_times(admin_urls: dict[str, str], expect: Expectation | dict[str, Expectation], t0: float,
                   deadline_s: float, interval: float = 0.01) -> dict[str, float | None]:
    """Per Envoy: seconds from t0 to the first poll where ``expect(clusters)`` holds (None: never).

    ``expect`` is one expectation for every Envoy, or one per Envoy by name.
    """
    def probe(name: str, url: str) -> Callable[[], bool]:
        e = expect[name] if isinstance(expect, dict) else expect
        return lambda: e(clusters(url, timeout=1.0))

    return first_true_times({n: probe(n, u) for n, u in admin_urls.items()}, t0, deadline_s, interval)


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
