#!/usr/bin/env python3
"""The cost of polling an Envoy's admin API: meshbed.httpc against a baseline httpc.

Brings up a one-instance mesh (``meshbed up --detach --json``), polls the
ingress Envoy's ``/clusters?format=json`` a fixed number of times from 1 and
from N threads, and prints, per client and thread count, the median over
``--runs`` runs of: polls/s, this process's CPU seconds per 1000 polls
(``time.process_time``, every thread) and the Envoy's CPU seconds per 1000
polls (/proc/PID/stat). Runs of the clients are interleaved, so machine noise
hits both alike. Tears its own run down (``meshbed down --run ID``) at the end.

    # the baseline: an older httpc.py, e.g. the stdlib one before httpx
    git show c837e91:src/meshbed/httpc.py > /tmp/httpc_stdlib.py
    .venv/bin/python scripts/bench_admin_poll.py --baseline /tmp/httpc_stdlib.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

ONE = """# one service, one instance: the ingress Envoy and one sidecar
name: bench-one
services:
  backend:
    replicas: 1
ingress:
  routes:
    - prefix: /
      service: backend
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load_module(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measure(client: ModuleType, url: str, polls: int, threads: int, envoy_pid: int | None) -> dict[str, float]:
    per_thread = polls // threads

    def worker(n: int) -> int:
        ok = 0
        for _ in range(n):
            ok += client.get(url, timeout=5).status == 200
        return ok

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, [5] * threads))  # warm-up: the same threads, untimed
        e0 = proc_cpu_s(envoy_pid) if envoy_pid else 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        ok = sum(pool.map(worker, [per_thread] * threads))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        envoy = proc_cpu_s(envoy_pid) - e0 if envoy_pid else float("nan")
    n = per_thread * threads
    if ok != n:
        raise SystemExit(f"only {ok}/{n} polls answered 200")
    return {"polls_per_s": n / wall, "cpu_s_per_1000": 1000 * cpu / n, "envoy_cpu_s_per_1000": 1000 * envoy / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="path of a baseline httpc.py to compare with (omit: meshbed.httpc only)")
    ap.add_argument("--polls", type=int, default=2000, help="polls per run (split over the threads)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--meshbed", default=str(Path(sys.executable).with_name("meshbed")))
    ap.add_argument("--json", action="store_true", help="print the medians as JSON")
    a = ap.parse_args()

    from meshbed import httpc
    clients: dict[str, ModuleType] = {}
    if a.baseline:
        clients["baseline"] = load_module(a.baseline, "bench_baseline_httpc")
    clients["httpc"] = httpc

    with tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "one.yaml"
        topo.write_text(ONE)
        up = subprocess.run([a.meshbed, "up", "--detach", "--json", "-f", str(topo)], capture_output=True, text=True,
                            timeout=300)
    if up.returncode != 0:
        sys.stderr.write(up.stderr)
        return 1
    info = json.loads(up.stdout)
    run_id = info["run_id"]
    try:
        url = info["envoy_admin"]["ingress"].rstrip("/") + "/clusters?format=json"
        state = json.loads((Path(info["run_dir"]) / "run.json").read_text())
        envoy_pid = (state.get("processes", {}).get("envoy-ingress") or {}).get("pid")
        samples: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(a.runs):
            for threads in a.threads:
                for name, client in clients.items():
                    m = measure(client, url, a.polls, threads, envoy_pid)
                    samples.setdefault((name, threads), []).append(m)
                    print(f"run {r + 1}/{a.runs} {name:8s} {threads:3d} threads: {m['polls_per_s']:8.0f} polls/s "
                          f"{m['cpu_s_per_1000']:.3f} client CPU s/1000 {m['envoy_cpu_s_per_1000']:.3f} envoy CPU s/1000",
                          file=sys.stderr, flush=True)
        rows: list[dict[str, Any]] = []
        for (name, threads), ms in samples.items():
            rows.append({"client": name, "threads": threads, "polls": (a.polls // threads) * threads, "runs": len(ms),
                         **{k: round(statistics.median(m[k] for m in ms), 4) for k in ms[0]}})
        if a.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{'client':10s} {'threads':>7s} {'polls/s':>9s} {'client CPU s/1000':>18s} {'envoy CPU s/1000':>17s}"
                  f"   (median of {a.runs}, {a.polls} polls per run)")
            for row in sorted(rows, key=lambda r: (r["threads"], r["client"])):
                print(f"{row['client']:10s} {row['threads']:7d} {row['polls_per_s']:9.0f} {row['cpu_s_per_1000']:18.3f} "
                      f"{row['envoy_cpu_s_per_1000']:17.3f}")
    finally:
        subprocess.run([a.meshbed, "down", "--run", run_id], capture_output=True, timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
