"""`meshbed bench all`: every speed figure in one JSON record, so regressions show.

Startup and convergence medians (with the convergence breakdown, on each
control plane asked for), optionally the wall time of `meshbed run` for the
quick tier and the full catalog, plus what makes figures comparable: the
machine's core count and load, the commit and the date. docs/performance.md
keeps a table of these records.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .bench import bench_convergence, bench_startup
from .errors import ConfigError
from .safeio import atomic_write
from .settings import Settings

Progress = Callable[[str], None]
TIERS = {"quick": ["-m", "quick"], "full": []}  # `meshbed run` arguments per tier


def commit_of(root: Path | None) -> dict[str, Any]:
    """The checkout's commit and whether it has local changes (read-only git calls); {} without git."""
    if root is None:
        return {}
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": sha, "dirty": dirty} if sha else {}


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cores": os.cpu_count(), "load_1m": round(load[0], 2), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def time_tier(tier: str, settings: Settings, progress: Progress) -> dict[str, Any]:
    """Wall time of one `meshbed run` of ``tier`` (its exit code too: a failing run's time means little)."""
    if tier not in TIERS:
        raise ConfigError(f"--tiers: unknown tier {tier!r}; known: {', '.join(TIERS)}")
    out_dir = Path("reports") / f"bench-{tier}"
    cmd = [sys.executable, "-m", "meshbed", "run", *TIERS[tier], "--runtime", settings.runtime,
           "--controlplane", settings.controlplane, "--out", str(out_dir)]
    progress(f"timing the {tier} tier: {' '.join(cmd[2:])}")
    t0 = time.monotonic()
    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    took = time.monotonic() - t0
    progress(f"{tier} tier: {took:.0f}s, exit {rc}")
    return {"seconds": round(took, 1), "exit_code": rc, "report": str(out_dir)}


def bench_all(settings: Settings, controlplanes: list[str], runs: int, progress: Progress, *, envoys: int,
              tiers: str = "", out: Path = Path("reports/bench-all.json")) -> dict[str, Any]:
    """Run every benchmark and write the record to ``out`` (JSON); returns it."""
    from .run import repo_root
    import dataclasses

    started = datetime.datetime.now(datetime.timezone.utc)
    doc: dict[str, Any] = {"benchmark": "all", "date": started.strftime("%Y-%m-%d %H:%M UTC"),
                           **commit_of(repo_root()), "machine": machine(), "runs": runs}
    doc["startup"] = bench_startup(settings, runs, progress)
    doc["convergence"] = {}
    for cp in controlplanes:
        progress(f"convergence on {cp}")
        doc["convergence"][cp] = bench_convergence(dataclasses.replace(settings, controlplane=cp), max(runs, 10),
                                                   progress, breakdown=True, envoys=envoys)
    if len(controlplanes) > 1:
        a, *rest = controlplanes
        doc["convergence_ratio"] = {f"{a}/{b}": round(doc["convergence"][a]["median"] / doc["convergence"][b]["median"], 3)
                                    for b in rest if doc["convergence"][b]["median"] > 0}
    doc["tiers"] = {t: time_tier(t, settings, progress) for t in (x.strip() for x in tiers.split(",")) if t}
    doc["machine_after"] = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    import json
    atomic_write(out, json.dumps(doc, indent=2))
    progress(f"bench all: {out}")
    return doc
