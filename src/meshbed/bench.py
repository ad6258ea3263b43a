"""Benchmarks (`meshbed bench`): medians over several runs, never timed unit tests.

startup     -- `bring_up` to ready, N times (each a fresh mesh)
convergence -- a Consul change (instance deregistered / re-registered) until
               every subscribed Envoy shows it, N changes on one mesh
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from .errors import ComponentError, ConfigError
from .mesh_build import bring_up
from .observe import convergence
from .settings import Settings
from .stats import summarize
from .topology import load


def bench_startup(settings: Settings, runs: int, progress: Callable[[str], None]) -> dict[str, Any]:
    topo = load(settings.topology)
    samples = []
    for i in range(runs):
        t0 = time.monotonic()
        with bring_up(topo, settings) as mesh:
            ready = time.monotonic() - t0
            phases = dict(mesh.timings)
        samples.append(ready)
        progress(f"startup {i + 1}/{runs}: {ready:.2f}s ({', '.join(f'{k} {v:.2f}' for k, v in phases.items() if k != 'total')})")
    return {"benchmark": "startup", "runtime": settings.runtime, "topology": str(settings.topology),
            "unit": "s", "samples": samples, "median": statistics.median(samples), **_spread(samples)}


def bench_convergence(settings: Settings, changes: int, progress: Callable[[str], None]) -> dict[str, Any]:
    topo = load(settings.topology)
    per_change: list[float] = []
    per_envoy: list[float] = []
    misses = 0
    with bring_up(topo, settings) as mesh:
        # the service most Envoys subscribe to, so 'every Envoy' means the most
        candidates = [s for s in topo.services if len(mesh.instances_of(s)) > 1 and mesh.subscribers(s)]
        if not candidates:
            raise ConfigError(f"{topo.source}: bench convergence needs a service with >= 2 instances that "
                              "another service (or the ingress) calls")
        service = max(candidates, key=lambda s: len(mesh.subscribers(s)))
        victim = mesh.instances_of(service)[0]
        addr = mesh.advertised[victim]
        subs = {n: h.url("admin") for n, h in mesh.subscribers(service).items()}
        for i in range(changes):
            deregister = i % 2 == 0
            expect = convergence.lacks_host(service, addr) if deregister else convergence.has_host(service, addr)
            t0 = time.time()
            mesh.control(victim, "/meshbed/deregister" if deregister else "/meshbed/register")
            times = convergence.converge_times(subs, expect, t0, 10)
            if any(v is None for v in times.values()):
                misses += 1  # never converged within 10 s: counted, not given a made-up time
                progress(f"change {i + 1}/{changes}: {sum(v is None for v in times.values())} Envoys never converged")
                continue
            vals = [float(v) for v in times.values() if v is not None]
            per_envoy += vals
            per_change.append(max(vals))
            progress(f"change {i + 1}/{changes} ({'deregister' if deregister else 'register'}): "
                     f"all {len(vals)} Envoys in {max(vals) * 1000:.0f} ms")
        if changes % 2 == 1:
            mesh.control(victim, "/meshbed/register")
    if not per_change:
        raise ComponentError(f"no change converged on every Envoy within 10 s ({misses} of {changes})",
                             hint="see the controlplane log in the run directory")
    return {"benchmark": "convergence", "runtime": settings.runtime, "unit": "s", "service": service,
            "samples_all_envoys": per_change, "median": statistics.median(per_change), **_spread(per_change),
            "per_envoy": summarize(per_envoy).to_json(), "not_converged": misses}


def _spread(samples: list[float]) -> dict[str, float]:
    s = summarize(samples)
    return {"p95": s.p95, "max": s.max, "min": min(samples), "n": s.n}
