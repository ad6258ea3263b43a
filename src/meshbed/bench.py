"""Benchmarks (`meshbed bench`): medians over several runs, never timed unit tests.

startup     -- `bring_up` to ready, N times (each a fresh mesh)
convergence -- a Consul change (instance deregistered / re-registered) until
               every subscribed Envoy shows it, N changes on one mesh per
               control plane; watcher Envoys bring the subscribers up to
               ``--envoys``. ``breakdown`` splits each change into phases from
               the control plane's push log (and, for the builtin one, its
               push rounds): see :func:`breakdown_of`.
all         -- both, plus optionally the quick tier and the full catalog, as
               one JSON record (:mod:`meshbed.bench_record`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

from . import httpc
from .errors import ComponentError, ConfigError
from .mesh_build import bring_up
from .observe import convergence
from .settings import Settings
from .stats import summarize
from .topology import load

Progress = Callable[[str], None]
DEFAULT_ENVOYS = 10  # subscribed Envoys in bench convergence (the target is stated at 10)
CONVERGE_DEADLINE_S = 10.0


def bench_startup(settings: Settings, runs: int, progress: Progress) -> dict[str, Any]:
    topo = load(settings.topology)
    samples = []
    phases: dict[str, list[float]] = {}
    for i in range(runs):
        t0 = time.monotonic()
        with bring_up(topo, settings) as mesh:
            ready = time.monotonic() - t0
            got = dict(mesh.timings)
        samples.append(ready)
        for k, v in got.items():
            phases.setdefault(k, []).append(v)
        progress(f"startup {i + 1}/{runs}: {ready:.2f}s ({', '.join(f'{k} {v:.2f}' for k, v in got.items() if k != 'total')})")
    return {"benchmark": "startup", "runtime": settings.runtime, "topology": str(settings.topology),
            "unit": "s", "samples": samples, "median": statistics.median(samples), **_spread(samples),
            "phase_medians": {k: round(statistics.median(v), 4) for k, v in phases.items()}}


def bench_convergence(settings: Settings, changes: int, progress: Progress, *, breakdown: bool = False,
                      envoys: int = DEFAULT_ENVOYS) -> dict[str, Any]:
    """Convergence on one control plane (``settings.controlplane``)."""
    topo = load(settings.topology)
    per_change: list[float] = []
    per_envoy: list[float] = []
    phases: list[dict[str, float]] = []
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
        # the builtin's debug API, or a named one's (the Go control plane serves the same push log on "http")
        debug_url = mesh.cp_debug_url or (mesh.controlplane.url("http") if "http" in mesh.controlplane.spec.ports
                                          else None)
        extra = max(0, envoys - len(subs))
        with mesh.scale.watcher_envoys(extra, (service,)) as watchers:
            subs.update({n: h.url("admin") for n, h in watchers.items()})
            if extra:  # the watchers must hold the current endpoints before the first change
                settled = convergence.converge_times(subs, convergence.has_host(service, addr), time.time(),
                                                     CONVERGE_DEADLINE_S)
                if any(v is None for v in settled.values()):
                    raise ComponentError(f"watcher Envoys did not get {service}'s endpoints within "
                                         f"{CONVERGE_DEADLINE_S:g}s", hint="see the controlplane log")
            for i in range(changes):
                deregister = i % 2 == 0
                expect = convergence.lacks_host(service, addr) if deregister else convergence.has_host(service, addr)
                t0 = time.time()
                mesh.control(victim, "/meshbed/deregister" if deregister else "/meshbed/register")
                times = convergence.converge_times(subs, expect, t0, CONVERGE_DEADLINE_S)
                if any(v is None for v in times.values()):
                    misses += 1  # never converged within the deadline: counted, not given a made-up time
                    progress(f"change {i + 1}/{changes}: {sum(v is None for v in times.values())} Envoys never converged")
                    continue
                vals = [float(v) for v in times.values() if v is not None]
                per_envoy += vals
                per_change.append(max(vals))
                note = ""
                if breakdown:
                    ph = breakdown_of(debug_url, service, t0, max(vals))
                    if ph:
                        phases.append(ph)
                        note = " [" + ", ".join(f"{k} {v * 1000:.1f}" for k, v in ph.items()) + " ms]"
                progress(f"change {i + 1}/{changes} ({'deregister' if deregister else 'register'}): "
                         f"all {len(vals)} Envoys in {max(vals) * 1000:.0f} ms{note}")
            if changes % 2 == 1:
                mesh.control(victim, "/meshbed/register")
    if not per_change:
        raise ComponentError(f"no change converged on every Envoy within {CONVERGE_DEADLINE_S:g} s "
                             f"({misses} of {changes})", hint="see the controlplane log in the run directory")
    s = summarize(per_change)
    out: dict[str, Any] = {
        "benchmark": "convergence", "runtime": settings.runtime, "controlplane": settings.controlplane,
        "unit": "s", "service": service, "envoys": len(subs),
        "samples_all_envoys": per_change, "median": statistics.median(per_change), **_spread(per_change),
        "p99": s.p99, "per_envoy": summarize(per_envoy).to_json(), "not_converged": misses}
    if breakdown:
        out["breakdown_medians"] = {k: statistics.median(p[k] for p in phases if k in p)
                                    for k in dict.fromkeys(k for p in phases for k in p)}
        out["breakdown_n"] = len(phases)
    return out


def bench_convergence_many(settings: Settings, controlplanes: list[str], changes: int, progress: Progress, *,
                           breakdown: bool = False, envoys: int = DEFAULT_ENVOYS) -> dict[str, Any]:
    """Convergence on each control plane in turn (same topology, same machine, one after the other)."""
    if len(controlplanes) == 1:
        return bench_convergence(dataclasses.replace(settings, controlplane=controlplanes[0]), changes, progress,
                                 breakdown=breakdown, envoys=envoys)
    results: dict[str, Any] = {}
    for cp in controlplanes:
        progress(f"convergence on control plane {cp}")
        results[cp] = bench_convergence(dataclasses.replace(settings, controlplane=cp), changes, progress,
                                        breakdown=breakdown, envoys=envoys)
    out: dict[str, Any] = {"benchmark": "convergence", "controlplanes": results}
    first, *others = controlplanes
    out["median_ratio"] = {f"{first}/{o}": round(results[first]["median"] / results[o]["median"], 3)
                           for o in others if results[o]["median"] > 0}
    return out


def breakdown_of(cp_debug_url: str | None, service: str, t0: float, seen_s: float) -> dict[str, float]:
    """Where one change's time went, in seconds, from the control plane's debug API.

    Every control plane with a push log (/debug/pushes: builtin, go) gives
    ``to_first_sent`` (the change made, Consul applies it and wakes the
    watcher's blocking query, the control plane diffs and builds: until the
    first EDS response for ``service`` is handed to gRPC), ``sent_to_ack``
    (gRPC write, Envoy applies, Envoy's ACK back: the slowest node) and
    ``ack_to_seen`` (until the bench's 10 ms admin poll saw it on every Envoy).
    The builtin control plane's /debug/rounds splits ``to_first_sent`` into
    ``consul`` (change -> Consul's answer arrives), ``diff`` (answer -> the
    change noticed), ``queue`` (-> push round starts) and ``build`` (every
    stream's responses built and serialised). {} when nothing could be read.
    """
    if not cp_debug_url:
        return {}
    base = cp_debug_url.rstrip("/")
    try:
        events = httpc.get_json(f"{base}/debug/pushes?since={t0}", timeout=5)
    except OSError:
        return {}
    try:
        rounds = httpc.get_json(f"{base}/debug/rounds?since={t0}", timeout=5)
    except OSError:
        rounds = []  # a control plane without push rounds (go)
    return phases_from(events, rounds if isinstance(rounds, list) else [], service, t0, seen_s)


def phases_from(events: list[dict[str, Any]], rounds: list[dict[str, Any]], service: str, t0: float,
                seen_s: float) -> dict[str, float]:
    """The phases of :func:`breakdown_of` from push-log events and push rounds newer than ``t0``."""
    sent = [e for e in events if e.get("event") == "sent" and e.get("type") == "EDS"
            and service in (e.get("resources") or [service])]
    if not sent:
        return {}
    nonces = {e["nonce"] for e in sent}
    acks: dict[str, float] = {}
    for e in events:
        if e.get("event") == "ack" and e.get("nonce") in nonces and e["node"] not in acks:
            acks[e["node"]] = e["ts"]
    first_sent = min(e["ts"] for e in sent)
    out: dict[str, float] = {}
    r = next((r for r in rounds if isinstance(r, dict) and r.get("responses") and r.get("consul_answer_at", 0) >= t0),
             None)
    if r is not None:
        out["consul"] = r["consul_answer_at"] - t0
        out["diff"] = r["notified_at"] - r["consul_answer_at"]
        out["queue"] = r["push_start"] - r["notified_at"]
        out["build"] = r["push_end"] - r["push_start"]
    out["to_first_sent"] = first_sent - t0
    if acks:
        last_ack = max(acks.values())
        out["sent_to_ack"] = last_ack - first_sent
        out["ack_to_seen"] = max(0.0, t0 + seen_s - last_ack)
    return out


def _spread(samples: list[float]) -> dict[str, float]:
    s = summarize(samples)
    return {"p95": s.p95, "max": s.max, "min": min(samples), "n": s.n}
