"""Nothing survives a pytest session that is interrupted (Ctrl-C) or terminated (SIGTERM)."""

from __future__ import annotations

import json
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
def test_hold(mesh):
    pathlib.Path({marker!r}).write_text("up")
    time.sleep(120)
'''


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_session_leaves_no_process(tmp_path, sig):
    marker = tmp_path / "mesh-is-up"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER.format(marker=str(marker)))
    state = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider",
                             "--meshbed-state-dir", str(state), "--rootdir", str(tmp_path),
                             "--meshbed-topology", str(ROOT / "examples" / "basic.yaml")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), proc.stdout.read().decode() if proc.poll() is not None else "mesh never came up"
        (run_json,) = state.glob("*/run.json")
        procs = json.loads(run_json.read_text())["processes"]
        assert len(procs) >= 10
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    alive = [n for n, p in procs.items() if procutil.is_ours(p["pid"], p.get("start"))]
    assert alive == []
