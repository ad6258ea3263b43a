"""`meshbed soak` at a small N (the CI tier): up/down cycles with kill -9, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshbed.runtime.state import RunState, stray_processes, sweep_strays
from meshbed.soak import STAGES, count_leftovers, processes_mentioning

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_soak_three_cycles_leaves_nothing(tmp_path):
    """Three cycles, two of them with a kill -9 (the seed picks the stages); exit 0 only when nothing is left."""
    state = tmp_path / "soak-state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_") or k == "MESHBED_CACHE"}
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "soak", "-n", "3", "--kill-fraction", "0.67",
                        "--seed", "7", "--state-dir", str(state), "--max-seconds", "900"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    summary = json.loads(r.stdout)
    assert r.returncode == 0, (summary, r.stderr[-3000:])
    assert summary["ok"] and summary["cycles"] == 3 and summary["kills_delivered"] >= 1
    assert summary["leftover_processes"] == 0 and summary["leftover_ports"] == 0
    assert summary["leftover_containers"] in (0, None)
    assert sum(summary["kills"].values()) == 2 and set(summary["kills"]) == set(STAGES)
    assert len(r.stderr.strip().splitlines()) >= 3  # one progress line per cycle
    assert processes_mentioning(state, {os.getpid()}) == {}


def test_leftovers_are_counted(tmp_path):
    """The counter itself: a recorded process that still runs is a leftover, and so is one that names the dir."""
    runs = tmp_path / "runs"
    st = RunState.create(runs, "process", "t.yaml", run_id="r1")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(runs)])
    try:
        st.record_process("sleeper", proc.pid)
        st.set_status("down")
        left = count_leftovers(runs, {"r1"}, {os.getpid()})
        assert left["processes"] == 2  # the recorded sleeper, and the run's owner (this process) still alive
        assert any(pid == proc.pid for pid, _ in left["process_list"])
        assert left["run_dirs"] == 1 and left["state_dir_bytes"] > 0
    finally:
        proc.kill()
        proc.wait()
    left = count_leftovers(runs, {"r1"}, {os.getpid()})
    assert all(pid != proc.pid for pid, _ in left["process_list"])


def test_an_unrecorded_process_of_a_run_is_swept(tmp_path):
    """A stop between a component's start and its record (SIGTERM in start-up) left a Jaeger running: the
    sweep finds such a process by its working directory inside the run directory."""
    runs = tmp_path / "runs"
    st = RunState.create(runs, "process", "t.yaml", run_id="r2")
    work = st.run_dir / "jaeger"
    work.mkdir()
    # a component: its own session, working directory in the run directory
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=work, start_new_session=True)
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                               start_new_session=True)
    # someone reading logs there: a shell of their own session, and what it runs; never swept
    shell = subprocess.Popen(["/bin/sh", "-c", "sleep 60; true"], cwd=work, start_new_session=True)
    pager = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=work)
    try:
        strays = [pid for pid, _ in stray_processes(st)]
        assert proc.pid in strays and outside.pid not in strays and shell.pid not in strays
        assert pager.pid not in strays
        names = sweep_strays(st, grace=2.0)
        assert any(f"pid {proc.pid}" in n for n in names)
        assert proc.wait(timeout=10) is not None
        assert outside.poll() is None and shell.poll() is None and pager.poll() is None
    finally:
        for p in (proc, outside, shell, pager):
            p.kill()
            p.wait()
