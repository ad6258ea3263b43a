import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "meshbed.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_bad_topology_is_one_line_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  web:\n    replicas: lots\n")
    r = run("up", "-f", str(bad), "--state-dir", str(tmp_path / "runs"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "services.web.replicas" in lines[0]


def test_doctor_json_lists_every_component():
    r = run("doctor", "--json")
    data = json.loads(r.stdout)
    names = [c["component"] for c in data["components"]]
    assert names[:4] == ["envoy", "consul", "jaeger", "toxiproxy"] and "python" in names
    assert r.returncode == (1 if data["problems"] else 0)


def test_doctor_reports_missing_binary_in_one_actionable_line(tmp_path):
    env_missing = str(tmp_path / "no-such-consul")
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "doctor"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "MESHBED_CONSUL": env_missing, "HOME": str(tmp_path)}, timeout=60)
    assert r.returncode == 1
    consul_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("meshbed doctor: consul")]
    assert len(consul_lines) == 1 and "MESHBED_CONSUL" in consul_lines[0]


def test_status_and_down_with_no_runs(tmp_path):
    r = run("status", "--json", "--state-dir", str(tmp_path))
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = run("down", "--state-dir", str(tmp_path))
    assert r.returncode == 0


def test_dead_docker_engine_is_one_actionable_line(tmp_path):
    import os
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "up", "--runtime", "docker", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2  # a preflight failure, as for `meshbed run` (issue 14)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "docker" in lines[0] and "hint:" in lines[0], r.stderr
    assert not list(tmp_path.glob("*/run.json")), "nothing may start without an engine"
