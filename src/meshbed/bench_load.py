"""`meshbed bench load-overhead`: what meshbed's own polling costs the load's achieved request rate.

While a check runs, meshbed polls the mesh it measures: every watched Envoy's
admin /clusters (every 20 ms, as the DISC checks' endpoint poller does),
Consul's catalog, and Jaeger's query API. On a small machine that polling
competes with the mesh and with Locust for the same cores. This bench keeps
one Locust run going against the mesh's ingress and switches that polling on
and off in short windows, interleaved (A/B, B/A, ...) so noise from neighbours
falls on both sides alike, and reports the median per-pair overhead:
``100 * (1 - rate_polled / rate_bare)``.

The load is unpaced by default (each user sends its next request when the last
one is answered): the achieved rate is then the most the mesh and Locust
manage, the rate polling can take something from. ``--rps`` gives the paced
rate of the suites instead. The result JSON goes to ``--out`` (default
``reports/bench-load-overhead.json``), where the pytest plugin picks it up for
the report's environment section (``environment.load``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from . import httpc
from .errors import ComponentError
from .load import for_mesh
from .mesh_build import bring_up
from .observe.consul import ConsulClient
from .observe.jaeger import JaegerClient
from .safeio import atomic_write
from .settings import Settings
from .stats import summarize
from .topology import load as load_topology

RESULT_NAME = "bench-load-overhead.json"
ENVOY_INTERVAL_S = 0.02
CONSUL_INTERVAL_S = 0.1
JAEGER_INTERVAL_S = 0.25
WARMUP_S = 3.0
SETTLE_S = 0.5


@contextlib.contextmanager
def check_polling(mesh: Any) -> Iterator[dict[str, int]]:
    """The polling a check does while it measures: Envoy admin, Consul, Jaeger. Yields poll counts."""
    from .scenario import watched
    counts = {"envoy_admin": 0, "consul": 0, "jaeger": 0, "errors": 0}
    stop = threading.Event()
    consul: ConsulClient = mesh.consul_client()
    jaeger = JaegerClient(mesh.jaeger.url("query_http"))
    services = list(mesh.topology.services)
    missing_trace = uuid.uuid4().hex  # a lookup Jaeger answers 404 to: the request path trace collection polls

    def loop(name: str, interval: float, poll: Callable[[], Any]) -> None:
        while not stop.is_set():
            try:
                poll()
                counts[name] += 1
            except (httpc.HttpError, ValueError):
                counts["errors"] += 1
            stop.wait(interval)

    threads = [
        threading.Thread(target=loop, args=("consul", CONSUL_INTERVAL_S, lambda: [consul.instances(s) for s in services]),
                         daemon=True, name="bench-consul"),
        threading.Thread(target=loop, args=("jaeger", JAEGER_INTERVAL_S,
                                            lambda: (jaeger.services(), jaeger.trace(missing_trace))),
                         daemon=True, name="bench-jaeger"),
    ]
    with watched(mesh).poller(interval=ENVOY_INTERVAL_S) as poller:
        for t in threads:
            t.start()
        try:
            yield counts
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            counts["envoy_admin"] = sum(poller.polls.values())
            counts["errors"] += sum(poller.errors.values())


def bench_load_overhead(settings: Settings, pairs: int, window_s: float, users: int, rps: float,
                        progress: Callable[[str], None]) -> dict[str, Any]:
    """One Locust run on one mesh; polling switched on and off in ``pairs`` interleaved windows; medians.

    One run for every window, not one per window: Locust's start-up (seconds, on a busy machine
    over ten) would otherwise dominate, and short alternating windows let a neighbour's burst fall
    on both sides of a pair. The rate of a window is its logged requests over its length, less
    ``SETTLE_S`` at its start while the pollers start or stop.
    """
    topo = load_topology(settings.topology)
    windows: list[dict[str, Any]] = []
    with bring_up(topo, settings) as mesh:
        run = for_mesh(mesh, Path(mesh.run_dir) / "bench-load", users=users,
                       user_rps=rps / users if rps > 0 else 0.0, duration_s=pairs * 2 * window_s + WARMUP_S + 10)
        with run:
            run.wait_started()
            time.sleep(WARMUP_S)  # every user spawned and connected before the first window
            for i in range(pairs):
                for polled in ((False, True) if i % 2 == 0 else (True, False)):
                    with contextlib.ExitStack() as stack:
                        counts = stack.enter_context(check_polling(mesh)) if polled else None
                        t0 = time.time()
                        time.sleep(window_s)  # the window: the load runs, the pollers (or none) poll
                        t1 = time.time()
                    windows.append({"pair": i + 1, "polled": polled, "t0": t0, "t1": t1, "counts": counts})
            run.finish()
        res = run.result()
    rows: list[dict[str, Any]] = []
    for i in range(pairs):
        got = {}
        for w in (w for w in windows if w["pair"] == i + 1):
            n = len(res.between(w["t0"] + SETTLE_S, w["t1"]))
            got[w["polled"]] = {"rps": round(n / (w["t1"] - w["t0"] - SETTLE_S), 2), "requests": n,
                                "polls": dict(w["counts"]) if w["counts"] is not None else None}
        bare, polled = got[False], got[True]
        overhead = 100.0 * (1.0 - polled["rps"] / bare["rps"]) if bare["rps"] > 0 else float("nan")
        rows.append({"pair": i + 1, "bare": bare, "polled": polled, "overhead_pct": round(overhead, 2)})
        progress(f"pair {i + 1}/{pairs}: {bare['rps']:.1f} req/s bare, {polled['rps']:.1f} req/s polled "
                 f"-> {overhead:+.1f} %")
    overheads = [r["overhead_pct"] for r in rows if math.isfinite(r["overhead_pct"])]
    if not overheads:
        raise ComponentError("bench load-overhead: no window had any request", hint=f"see {run.log_file}")
    spread = summarize(overheads)
    return {
        "benchmark": "load-overhead", "unit": "%", "runtime": settings.runtime, "topology": str(settings.topology),
        "load": {"users": users, "rps": rps or "unpaced", "window_s": window_s, "workers": settings.load_workers,
                 "requests": res.n, "failures": res.failures},
        "polling": {"envoy_admin_interval_s": ENVOY_INTERVAL_S, "consul_interval_s": CONSUL_INTERVAL_S,
                    "jaeger_interval_s": JAEGER_INTERVAL_S},
        "median_overhead_pct": round(statistics.median(overheads), 2),
        "overhead_pct_min": round(min(overheads), 2), "overhead_pct_max": round(max(overheads), 2),
        "overhead_pct_p95": round(spread.p95, 2),
        "median_rps_bare": round(statistics.median(r["bare"]["rps"] for r in rows), 2),
        "median_rps_polled": round(statistics.median(r["polled"]["rps"] for r in rows), 2),
        "load_average": _loadavg(),
        "pairs": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"meshbed bench load-overhead -n {pairs} --window {window_s:g} --users {users}"
                   + (f" --rps {rps:g}" if rps else "") + (f" --load-workers {settings.load_workers}"
                                                            if settings.load_workers else ""),
        "goal_pct": 5.0,
    }


def _loadavg() -> list[float] | None:
    """The machine's load average when the bench ended: how busy the neighbours kept it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def write(doc: dict[str, Any], out: Path) -> Path:
    atomic_write(out, json.dumps(doc, indent=2), what="bench result")
    return out


def environment_entry(path: Path) -> dict[str, Any] | None:
    """The figure for a report's environment section, from a bench result file (None when there is none)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("benchmark") != "load-overhead" \
            or not isinstance(doc.get("median_overhead_pct"), (int, float)):
        return None
    return {"polling_overhead_pct": doc["median_overhead_pct"], "pairs": len(doc.get("pairs") or []),
            "overhead_pct_range": [doc.get("overhead_pct_min"), doc.get("overhead_pct_max")],
            "rps_bare": doc.get("median_rps_bare"), "rps_polled": doc.get("median_rps_polled"),
            "goal_pct": doc.get("goal_pct", 5.0), "measured_at": doc.get("measured_at"),
            "command": doc.get("command")}
