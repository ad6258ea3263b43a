"""`meshbed bench scale`: N Envoys per control plane, convergence, churn and memory as N grows.

Per control plane, one mesh (the topology's) grows to each N in turn with
Envoy-only nodes subscribed like sidecars calling ``backend`` (one process
each, ``--concurrency 1``, in low-memory mode: an overload manager on a
``max_heap_mb`` heap budget, 64 KiB buffers on its static clusters, no hot-restart
shared memory). At each N:

* **change -> every Envoy**: an instance deregistered (then registered) ``changes`` times;
  per Envoy, the seconds from the Consul call to the control plane's first EDS
  ACK from that Envoy after it (the push log; an ACK means the Envoy applied it).
  Envoys with no ACK by the deadline count as the deadline. A sample of Envoys
  is also polled on its admin API as a cross-check.
* **churn storm**: ``churn_rate`` events/s for ``churn_s`` over the backends, then
  the settle time until every polled Envoy lists exactly Consul's endpoints;
* **memory and CPU**: the control plane's CPU seconds over the step and its peak
  RSS; the Envoys' RSS (median and total), from /proc (process runtime), split
  into private memory (RssAnon) and the binary's file pages (RssFile), which
  every Envoy shares: N Envoys really take about N x private + one binary.

Output: a JSON document and an HTML page with latency-vs-N and memory-vs-N,
one line per control plane.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from .chaos.churn import Churn
from .components import controlplane as cp_c
from .errors import ComponentError
from .mesh import wait_converged
from .mesh_build import bring_up
from .observe import convergence
from .observe import discovery_helpers as dh
from .runtime import procutil
from .safeio import atomic_write
from .settings import Settings
from .stats import summarize
from .topology import load

SCHEMA = "meshbed.bench-scale/v1"
SERVICE = "backend"
POLL_SAMPLE = 8  # Envoys also polled on their admin API, as a cross-check of the ACK times


def _acks(cp_url: str, t0: float, nodes: set[str]) -> dict[str, float]:
    return {n: v for n, v in convergence.cp_ack_times(cp_url, t0, "EDS").items() if n in nodes}


def _rss_mb(handles: list[Any]) -> list[dict[str, float]]:
    """Each live process's resident memory now, total/private/file (process runtime; other runtimes give none)."""
    pids = [getattr(h, "pid", None) for h in handles]
    return [r for r in (procutil.rss_split_mb(p) for p in pids if p) if r is not None]


def envoy_memory(handles: list[Any]) -> dict[str, Any]:
    """The Envoys' RSS: per Envoy (median) and in all, and what they take together (the binary's pages once)."""
    rss = _rss_mb(handles)
    if not rss:
        return {"median": None, "total": 0.0, "n": 0}
    anon = [r["anon"] for r in rss]
    return {"median": round(statistics.median(r["rss"] for r in rss), 1),
            "total": round(sum(r["rss"] for r in rss), 1), "n": len(rss),
            "private_median": round(statistics.median(anon), 1), "private_total": round(sum(anon), 1),
            "shared_file_median": round(statistics.median(r["file"] for r in rss), 1),
            "estimated_total": round(sum(anon) + max(r["file"] for r in rss), 1)}


def _changes(mesh: Any, cp_url: str | None, envoys: dict[str, Any], changes: int, deadline: float,
             progress: Callable[[str], None]) -> dict[str, Any]:
    victim = mesh.instances_of(SERVICE)[0]
    addr = mesh.advertised[victim]
    nodes = set(envoys)
    admin = {n: h.url("admin") for n, h in envoys.items()}
    sample = dict(list(admin.items())[:POLL_SAMPLE]) if cp_url else admin  # no push log: poll every Envoy
    per_envoy: list[float] = []
    all_envoys: list[float] = []
    polled: list[float] = []
    for i in range(changes):
        dereg = i % 2 == 0
        t0 = time.time()
        mesh.control(victim, "/meshbed/deregister" if dereg else "/meshbed/register")
        expect = convergence.lacks_host(SERVICE, addr) if dereg else convergence.has_host(SERVICE, addr)
        polled += [deadline if v is None else v for v in
                   convergence.converge_times(sample, expect, t0, deadline, interval=0.02).values()]
        time.sleep(0.3)  # the ACKs of the rest land
        acks = _acks(cp_url, t0, nodes) if cp_url else {}
        vals = [acks.get(n, deadline) for n in nodes] if cp_url else []
        per_envoy += vals
        if vals:
            all_envoys.append(max(vals))
        progress(f"  change {i + 1}/{changes}: {len(acks)}/{len(nodes)} Envoys ACKed, slowest "
                 f"{max(vals) * 1000 if vals else float('nan'):.0f} ms")
    if changes % 2:
        mesh.control(victim, "/meshbed/register")
    s = summarize(per_envoy) if per_envoy else summarize(polled)
    return {"p50": s.p50, "p99": s.p99, "max": s.max, "n": s.n,
            "source": "control plane EDS ACKs" if per_envoy else "admin polls (no push log)",
            "all_envoys_median": statistics.median(all_envoys) if all_envoys else None,
            "admin_poll_sample": summarize(polled).to_json()}


def _churn(mesh: Any, envoys: dict[str, Any], rate: float, duration: float, deadline: float) -> dict[str, Any]:
    insts = mesh.instances_of(SERVICE)
    churn = Churn(mesh, insts, rate, duration, seed=7, keep_at_least=1)
    churn.run(False)
    t_last = max((e.ts for e in churn.events), default=time.time())
    expected = {SERVICE: dh.consul_endpoints(mesh.consul_client(), SERVICE)}
    admin = {n: h.url("admin") for n, h in envoys.items()}
    settle = convergence.converge_times(admin, dh.matches(expected), t_last, deadline, interval=0.1)
    churn.restore()
    vals = [deadline if v is None else v for v in settle.values()]
    return {"events": len(churn.events), "settle_s": max(vals) if vals else None,
            "not_settled": sum(v is None for v in settle.values())}


def bench_scale(settings: Settings, controlplanes: list[str], sizes: list[int], changes: int = 6,
                churn_rate: float = 20.0, churn_s: float = 30.0, deadline: float = 10.0,
                progress: Callable[[str], None] = print, max_heap_mb: int = 64) -> dict[str, Any]:
    """``max_heap_mb``: every Envoy's low-memory heap budget (0: Envoy's defaults, no overload manager)."""
    topo = load(settings.topology)
    rows: list[dict[str, Any]] = []
    for cp in controlplanes:
        s = dataclasses.replace(settings, controlplane=cp, envoy_concurrency=1, envoy_max_heap_mb=max_heap_mb)
        progress(f"{cp}: bringing the mesh up")
        with bring_up(topo, s) as mesh, contextlib.ExitStack() as stack:
            cp_port = mesh.controlplane.spec.ports.get("http")
            # Consul Connect's "http" port is Consul's API, which has no push log: time changes by polling
            cp_url = mesh.controlplane.url("http") if cp_port and not cp_c.is_connect(cp) else None
            base = {n: h for n, h in mesh.subscribers(SERVICE).items()}
            watchers: dict[str, Any] = {}
            for n in sorted(sizes):
                need = n - len(base) - len(watchers)
                t_start = time.monotonic()
                if need > 0:
                    progress(f"{cp}: starting {need} more Envoys (to {n})")
                    try:
                        watchers.update(stack.enter_context(mesh.scale.watcher_envoys(need, (SERVICE,), start=len(watchers))))
                    except ComponentError as exc:
                        rows.append({"controlplane": cp, "envoys": n, "error": f"could not start {need} Envoys: {exc}"})
                        progress(f"{cp}: stopped at {len(base) + len(watchers)} Envoys: {exc}")
                        break
                envoys = {**base, **watchers}
                wait_converged(mesh, settings.ready_timeout)
                up_s = time.monotonic() - t_start
                cpu0 = (mesh.controlplane.usage() or {}).get("cpu_s", 0.0)
                row: dict[str, Any] = {"controlplane": cp, "envoys": len(envoys), "start_s": round(up_s, 2)}
                progress(f"{cp} @ {len(envoys)} Envoys: {changes} changes")
                row["change"] = _changes(mesh, cp_url, envoys, changes, deadline, progress)
                progress(f"{cp} @ {len(envoys)} Envoys: churn {churn_rate:g}/s for {churn_s:g} s")
                row["churn"] = _churn(mesh, envoys, churn_rate, churn_s, deadline)
                usage = mesh.controlplane.usage() or {}
                row["cp_cpu_s"] = round(usage.get("cpu_s", 0.0) - cpu0, 3)
                row["cp_peak_rss_mb"] = usage.get("peak_rss_mb")
                row["envoy_rss_mb"] = envoy_memory(list(envoys.values()))
                rows.append(row)
                progress(f"{cp} @ {len(envoys)}: change p99 {row['change']['p99'] * 1000:.0f} ms, "
                         f"churn settle {row['churn']['settle_s']:.2f} s, CP RSS {row['cp_peak_rss_mb']} MB")
    return {"schema": SCHEMA, "generated_at": time.time(), "sizes": sorted(sizes), "controlplanes": controlplanes,
            "changes": changes, "churn": {"rate_per_s": churn_rate, "duration_s": churn_s}, "rows": rows,
            "machine": {"cpus": os.cpu_count()},
            "envoy_settings": {"concurrency": 1, "max_heap_mb": max_heap_mb,
                               "low_memory": bool(max_heap_mb)}}


def render_html(doc: dict[str, Any]) -> str:
    from .report.svg import line_chart
    rows = [r for r in doc["rows"] if "change" in r]
    cps = doc["controlplanes"]

    def series(key: Callable[[dict[str, Any]], float | None]) -> list[tuple[str, list[tuple[float, float | None]]]]:
        return [(cp, [(float(r["envoys"]), key(r)) for r in rows if r["controlplane"] == cp]) for cp in cps]

    lat = line_chart(series(lambda r: r["change"]["p99"] * 1000), title="Consul change -> every Envoy, p99",
                     x_label="Envoys", y_label="ms")
    mem = line_chart(series(lambda r: r["cp_peak_rss_mb"]), title="control plane peak RSS", x_label="Envoys",
                     y_label="MB")
    env = line_chart(series(lambda r: r["envoy_rss_mb"]["total"]), title="Envoys' RSS, total", x_label="Envoys",
                     y_label="MB")
    e = html.escape
    table = "".join(
        f"<tr><td>{e(r['controlplane'])}</td><td>{r['envoys']}</td>"
        + (f"<td colspan=10>{e(r['error'])}</td>" if "error" in r else
           f"<td>{r['change']['p50'] * 1000:.0f}</td><td>{r['change']['p99'] * 1000:.0f}</td>"
           f"<td>{r['change']['max'] * 1000:.0f}</td><td>{r['churn']['settle_s']:.2f}</td>"
           f"<td>{r['cp_cpu_s']}</td><td>{r['cp_peak_rss_mb']}</td><td>{r['envoy_rss_mb']['median']}</td>"
           f"<td>{r['envoy_rss_mb'].get('private_median', '-')}</td><td>{r['envoy_rss_mb']['total']}</td>"
           f"<td>{r['envoy_rss_mb'].get('estimated_total', '-')}</td>") + "</tr>" for r in doc["rows"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>meshbed bench scale</title><style>"
            "body{font:14px system-ui,sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 8px}"
            "table{border-collapse:collapse}</style></head><body><h1>meshbed bench scale</h1>"
            f"{lat}{mem}{env}<table><tr><th>control plane</th><th>Envoys</th><th>change p50 ms</th>"
            "<th>p99 ms</th><th>max ms</th><th>churn settle s</th><th>CP CPU s</th><th>CP peak RSS MB</th>"
            "<th>Envoy RSS median MB</th><th>Envoy private median MB</th><th>Envoys RSS total MB</th>"
            f"<th>Envoys together MB (private + one binary)</th></tr>{table}</table>"
            f"<pre>{e(json.dumps({k: v for k, v in doc.items() if k != 'rows'}, indent=1))}</pre></body></html>")


def write(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    j = atomic_write(out / "bench-scale.json", json.dumps(doc, indent=1), what="bench JSON")
    h = atomic_write(out / "bench-scale.html", render_html(doc), what="bench HTML")
    return j, h
