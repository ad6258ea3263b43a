"""A control plane given as a command is run, faulted and judged like meshbed's own.

The reference control plane stands in for "your control plane" here, started
through the command template: meshbed must not rely on its debug API.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def test_external_control_plane_is_judged_and_faulted(tmp_path):
    template = f"{sys.executable} -m meshbed.controlplane --xds {{xds_host}}:{{xds_port}} --consul {{consul_url}} --http 127.0.0.1:0"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "run", "-k", "disc1 or disc7", "--out", str(out),
                        "--state-dir", str(tmp_path / "runs"), "--controlplane", template],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((out / "conformance.json").read_text())
    assert {c["id"]: c["verdict"] for c in doc["checks"]} == {"DISC-1": "pass", "DISC-7": "pass"}
    assert doc["environment"]["components"]["controlplane"]["version"] == "external"
    # DISC-7 killed and restarted it: its push log was not needed for a verdict
    disc1 = next(c for c in doc["checks"] if c["id"] == "DISC-1")
    assert disc1["evidence"]["convergence_s"]["data"]["cp_eds_ack_s"] is None  # a charted cdf
