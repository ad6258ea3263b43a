"""`meshbed up --detach` / `status` / `down`, including a supervisor killed with -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshbed import httpc
from meshbed.runtime import procutil
from meshbed.runtime.state import list_runs

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshbed.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_detached_mesh_survives_nothing_after_supervisor_kill_9(tmp_path):
    state = str(tmp_path / "runs")
    up = cli("up", "-f", "examples/basic.yaml", "--detach", "--json", "--state-dir", state)
    try:
        assert up.returncode == 0, up.stderr
        ep = json.loads(up.stdout)
        r = httpc.get(ep["ingress_url"] + "/", timeout=10)
        assert r.status == 200 and r.json()["downstream"][0]["service"] == "backend"

        st = cli("status", "--json", "--state-dir", state)
        runs = json.loads(st.stdout)
        assert len(runs) == 1 and runs[0]["status"] == "ready"
        assert all(p["alive"] for p in runs[0]["processes"].values())

        (run,) = list_runs(Path(state))
        sup = run.data["supervisor"]
        os.kill(sup["pid"], signal.SIGKILL)
        procs = run.data["processes"]
        assert procs, "no processes recorded"
    finally:
        down = cli("down", "--state-dir", state)
    assert down.returncode == 0, down.stderr
    (run,) = list_runs(Path(state))
    alive = [n for n, p in run.data["processes"].items() if procutil.is_ours(p["pid"], p.get("start"))]
    leftover = [n for n, p in procs.items() if procutil.is_ours(p["pid"], p.get("start"))]
    assert alive == [] and leftover == []
    assert run.data["status"] == "down"
