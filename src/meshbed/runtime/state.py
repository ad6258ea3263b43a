"""Run directories: each run's configs, logs and a state file that outlives it.

The state file records every process the run started (PID + start time), so
`meshbed down` and the next `meshbed up` can sweep a run whose supervisor
was killed outright.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import procutil

STATE_FILE = "run.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class RunState:
    """The run.json of one run, written atomically on every change."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.data = data
        self._lock = threading.Lock()

    @classmethod
    def create(cls, runs_dir: Path, runtime: str, topology: str, run_id: str | None = None,
               detached: bool = False) -> "RunState":
        run_id = run_id or new_run_id()
        run_dir = runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=False)
        me = os.getpid()
        st = cls(run_dir, {
            "run_id": run_id, "runtime": runtime, "topology": topology, "status": "starting", "detached": detached,
            "created_at": time.time(), "supervisor": {"pid": me, "start": procutil.start_time(me)},
            "processes": {}, "containers": [], "networks": [], "endpoints": {}, "error": "",
        })
        st.save()
        return st

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        return cls(run_dir, json.loads((run_dir / STATE_FILE).read_text()))

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    def save(self) -> None:
        with self._lock:
            tmp = self.run_dir / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
            tmp.replace(self.run_dir / STATE_FILE)

    def update(self, fn: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            fn(self.data)
        self.save()

    def record_process(self, name: str, pid: int | None) -> None:
        def f(d: dict[str, Any]) -> None:
            if pid is None:
                d["processes"].pop(name, None)
            else:
                d["processes"][name] = {"pid": pid, "start": procutil.start_time(pid)}
        self.update(f)

    def set_status(self, status: str, error: str = "") -> None:
        def f(d: dict[str, Any]) -> None:
            d["status"] = status
            if error:
                d["error"] = error
        self.update(f)

    def supervisor_alive(self) -> bool:
        sup = self.data.get("supervisor") or {}
        return bool(sup.get("pid")) and procutil.is_ours(int(sup["pid"]), sup.get("start"))

    def live_processes(self) -> dict[str, int]:
        out = {}
        for name, p in (self.data.get("processes") or {}).items():
            if procutil.is_ours(int(p["pid"]), p.get("start")):
                out[name] = int(p["pid"])
        return out


def list_runs(runs_dir: Path) -> list[RunState]:
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(runs_dir.iterdir()):
        if (d / STATE_FILE).is_file():
            try:
                out.append(RunState.load(d))
            except (OSError, ValueError):
                continue
    return out


def sweep_processes(state: RunState, grace: float = 3.0) -> list[str]:
    """End every recorded process of a run that is still ours; return their names."""
    killed = []
    for name, p in list((state.data.get("processes") or {}).items()):
        pid, started = int(p["pid"]), p.get("start")
        # the whole process group: a component started through a wrapper leaves children
        if procutil.terminate_group(pid, started, grace):
            killed.append(name)
    return killed


# Sweepers for other resources (docker containers, networks) register here,
# so sweeping needs no knowledge of which runtimes exist.
EXTRA_SWEEPERS: list[Callable[[RunState], list[str]]] = []


def sweep_run(state: RunState) -> list[str]:
    swept = sweep_processes(state)
    for sweeper in EXTRA_SWEEPERS:
        swept += sweeper(state)
    state.set_status("down")
    return swept


def sweep_orphans(runs_dir: Path) -> dict[str, list[str]]:
    """Sweep runs whose supervisor is gone but that never reached 'down'."""
    out = {}
    for st in list_runs(runs_dir):
        if st.data.get("status") != "down" and not st.supervisor_alive():
            out[st.run_id] = sweep_run(st)
    return out
