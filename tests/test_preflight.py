"""Before anything starts, `meshbed run` checks what `meshbed up` checks; hints that work (issue 14, issue 11.9)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshbed import cli
from meshbed.errors import ConfigError
from meshbed.preflight import check_binaries, check_environment, check_ports
from meshbed.runtime import procutil
from meshbed.runtime.state import RunState
from meshbed.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    exe = tmp_path / "broken-envoy"
    exe.write_text("#!/bin/sh\necho 'error while loading shared libraries: libc++.so.1' >&2\nexit 127\n")
    exe.chmod(0o755)
    return exe


def test_a_binary_that_does_not_run_is_one_line(broken, monkeypatch):
    monkeypatch.setenv("MESHBED_ENVOY", str(broken))
    with pytest.raises(ConfigError) as ei:
        check_binaries()
    msg = str(ei.value)
    assert "envoy binary is not usable" in msg and "exited with 127" in msg and "libc++" in msg
    assert "MESHBED_ENVOY" in msg and "\n" not in msg


def test_the_environment_of_this_machine_passes(tmp_path):
    t0 = time.monotonic()
    check_environment(Settings(state_dir=tmp_path / "runs"))
    assert time.monotonic() - t0 < 30
    check_ports()


def test_a_directory_is_never_told_to_chmod(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHBED_CONSUL", str(tmp_path))
    with pytest.raises(ConfigError) as ei:
        check_environment(Settings(state_dir=tmp_path / "runs"))
    assert "is a directory" in str(ei.value) and "chmod" not in str(ei.value)


def test_run_with_a_broken_envoy_is_one_line_before_pytest(tmp_path, broken):
    """Was: 720-790 lines and 13 check errors from a pytest session that could not work."""
    import os
    env = dict(os.environ, MESHBED_ENVOY=str(broken))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "run", "--out", str(tmp_path / "out"),
                        "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "envoy binary is not usable" in lines[0], r.stderr
    assert r.stdout == "" and not (tmp_path / "state").exists() or not list((tmp_path / "state").iterdir())
    assert time.monotonic() - t0 < 60


# -- --check and -k with catalog ids ---------------------------------------------------------------------------

STANDIN = """
import pytest

@pytest.mark.check("DISC-1")
def test_disc1(check):
    check.figure("convergence_p99", 0.05, "s", 10, "stand-in", min_n=5)
    check.judge()

@pytest.mark.check("LB-2")
def test_lb2(check):
    check.figure("slow_share_ratio", 0.1, "", 600, "stand-in")
    check.figure("policy_apply_p99", 0.1, "s", 2, "stand-in")
    check.judge()
"""


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    suites = tmp_path / "suites"
    suites.mkdir(exist_ok=True)
    (suites / "test_standin.py").write_text(STANDIN)
    out = tmp_path / "out"
    rc = cli.main(["run", "--suites", str(suites), "--out", str(out), "--state-dir", str(tmp_path / "state"), *extra])
    res = out / "conformance.json"
    return rc, json.loads(res.read_text()) if res.exists() else {}


@pytest.mark.parametrize("select", [["--check", "DISC-1"], ["--check", "disc-1"], ["-k", "DISC-1"]])
def test_a_check_is_selected_by_its_id_as_written(tmp_path, capsys, select):
    rc, doc = _run(tmp_path, *select)
    assert rc == 0
    assert [c["id"] for c in doc["checks"]] == ["DISC-1"]


def test_check_is_repeatable(tmp_path, capsys):
    rc, doc = _run(tmp_path, "--check", "DISC-1", "--check", "LB-2")
    assert rc == 0 and sorted(c["id"] for c in doc["checks"]) == ["DISC-1", "LB-2"]


def test_check_of_a_test_not_in_the_suites_selects_nothing(tmp_path, capsys):
    rc, doc = _run(tmp_path, "--check", "RES-1")
    assert rc == 1 and doc == {}
    err = capsys.readouterr().err
    assert "no test was selected" in err and "--check DISC-1" in err


def test_unknown_check_is_one_line(tmp_path, capsys):
    assert cli.main(["run", "--suites", str(tmp_path), "--check", "DISC-99", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a catalog check id" in err[0] and "DISC-1" in err[0]


# -- down without --run, the hidden subcommand -----------------------------------------------------------------

def _detached(runs: Path, run_id: str) -> subprocess.Popen:
    """A stand-in detached run: its 'supervisor' is a sleeping process we started."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    st = RunState.create(runs, "process", "t.yaml", run_id=run_id, detached=True)
    st.update(lambda d: d.update(status="ready",
                                 supervisor={"pid": proc.pid, "start": procutil.start_time(proc.pid)}))
    return proc


def test_down_with_several_detached_meshes_requires_run_or_all(tmp_path, capsys):
    runs = tmp_path / "runs"
    procs = [_detached(runs, "one"), _detached(runs, "two")]
    try:
        assert cli.main(["down", "--state-dir", str(runs)]) == 2  # not a terminal: no question, one line
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("meshbed: error")]
        assert len(err) == 1 and "2 detached meshes are up" in err[0] and "--all" in err[0]
        assert all(p.poll() is None for p in procs), "nothing may be stopped"
        assert cli.main(["down", "--run", "one", "--state-dir", str(runs)]) == 0
        assert procs[0].wait(timeout=40) is not None and procs[1].poll() is None
        assert cli.main(["down", "--state-dir", str(runs)]) == 0  # one left: `down` stops it
        assert procs[1].wait(timeout=40) is not None
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_down_all_stops_every_detached_mesh(tmp_path, capsys):
    runs = tmp_path / "runs"
    procs = [_detached(runs, "one"), _detached(runs, "two")]
    try:
        assert cli.main(["down", "--all", "--state-dir", str(runs)]) == 0
        assert all(p.wait(timeout=40) is not None for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_internal_subcommand_is_hidden():
    r = subprocess.run([sys.executable, "-m", "meshbed.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "_supervise" not in r.stdout and "SUPPRESS" not in r.stdout
    assert "prune" in r.stdout and "soak" in r.stdout


def test_a_directory_as_a_binary_is_never_told_to_chmod(tmp_path):
    """Starting a component whose binary path is a directory says so; the hint is not `chmod +x`."""
    from meshbed.errors import ComponentError
    from meshbed.runtime.base import ComponentSpec
    from meshbed.runtime.process import ProcessHandle

    h = ProcessHandle(ComponentSpec("consul", "consul", [str(tmp_path)]), tmp_path / "work", None)
    with pytest.raises(ComponentError) as err:
        h._launch()
    assert "is a directory" in str(err.value) and "chmod" not in str(err.value) + str(err.value.hint)
