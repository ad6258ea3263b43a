"""No Locust process outlives a pytest run killed outright (kill -9) mid-load (issue 14).

Locust runs in its own session (gevent stays out of pytest), so killing pytest
does not reach it: it survives only as long as nothing knows its PID. Every
Locust process (single, master, workers) is recorded in the run state while it
runs, and `meshbed down --all` sweeps it with the rest of the orphaned mesh.
Only PIDs this test started (through the inner pytest) are looked at.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshbed.runtime import procutil

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]

INNER = '''
import pathlib, time
def test_hold(mesh, load):
    with load(rps=20, duration_s=90) as run:
        run.wait_started()
        pathlib.Path({marker!r}).write_text("loading")
        time.sleep(120)
'''


def _ours(tmp: Path) -> list[int]:
    """Live processes whose command line or environment names ``tmp`` (a directory only this test uses)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if str(tmp).encode() in blob and procutil.is_ours(int(entry), None):
            out.append(int(entry))
    return out


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "master+2-workers"])
def test_kill9_mid_load_then_down_all_leaves_no_locust(tmp_path: Path, workers: int) -> None:
    marker = tmp_path / "load-is-on"
    (tmp_path / "test_inner.py").write_text(INNER.format(marker=str(marker)))
    state = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", str(tmp_path / "test_inner.py"), "-q",
                             "-p", "no:cacheprovider", "-p", "no:locust", "--basetemp", str(tmp_path / "inner"),
                             "--meshbed-state-dir", str(state), "--rootdir", str(tmp_path),
                             "--meshbed-load-workers", str(workers),
                             "--meshbed-topology", str(ROOT / "examples" / "basic.yaml")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 180
        while not marker.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.2)
        if not marker.exists():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # let it tear its mesh down and say where it was
                proc.wait(timeout=120)
            pytest.fail("the inner run never had its load on:\n" + proc.stdout.read().decode()[-3000:])
        (run_json,) = state.glob("*/run.json")
        procs = json.loads(run_json.read_text())["processes"]
        locusts = {n: p for n, p in procs.items() if n.startswith("locust")}
        roles = sorted(n.split(":")[0] for n in locusts)
        assert roles == (["locust"] if not workers else ["locust-master"] + [f"locust-worker-{i + 1}"
                                                                              for i in range(workers)]), roles
        assert all(procutil.is_ours(p["pid"], p.get("start")) for p in locusts.values())
        proc.send_signal(signal.SIGKILL)  # no teardown, no atexit: the run state is all that is left
        proc.wait(timeout=10)
        time.sleep(1)
        assert all(procutil.is_ours(p["pid"], p.get("start")) for p in locusts.values()), \
            "Locust died with pytest: this test no longer shows what it should"
        down = subprocess.run([sys.executable, "-m", "meshbed.cli", "down", "--all", "--state-dir", str(state)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert "locust" in down.stderr  # named among the swept leftovers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if state.exists():  # whatever failed above: the mesh this test started goes down
            subprocess.run([sys.executable, "-m", "meshbed.cli", "down", "--all", "--state-dir", str(state)],
                           cwd=ROOT, capture_output=True, timeout=120)
    alive = [n for n, p in procs.items() if procutil.is_ours(p["pid"], p.get("start"))]
    assert alive == []  # every recorded process, Locust and the mesh
    assert _ours(tmp_path) == []  # and nothing unrecorded that this test's run started
