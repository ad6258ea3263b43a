"""`meshbed run` end to end on a real mesh: one quick check, reports written, mesh torn down."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meshbed.report import validate

pytestmark = pytest.mark.integration


def test_meshbed_run_disc1_end_to_end(tmp_path):
    out, state = tmp_path / "reports", tmp_path / "state"
    p = subprocess.run([sys.executable, "-m", "meshbed.cli", "run", "-k", "disc1", "--out", str(out),
                        "--state-dir", str(state)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "test_discovery.py ." in p.stdout  # pytest's progress is streamed through
    assert "DISC-1" in p.stdout and "convergence_p99 =" in p.stdout and "meshbed run: PASS" in p.stdout
    doc = json.loads((out / "conformance.json").read_text())
    assert validate(doc) == []
    assert [c["id"] for c in doc["checks"]] == ["DISC-1"]
    assert "mesh up: total" in doc["phases"] and "report render" in doc["phases"]
    assert doc["environment"]["components"]["envoy"]["version"]
    html = (out / "conformance.html").read_text()
    assert "convergence CDF per Envoy" in html and (out / "junit.xml").exists()
    # torn down: every run in our private state dir is down
    from meshbed.runtime.state import RunState
    runs = [RunState.load(d.parent) for d in state.glob("*/run.json")]
    assert runs and all(not r.live_processes() for r in runs)
