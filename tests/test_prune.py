"""`meshbed prune` and the retention setting: finished run directories go, a live run's never does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshbed import cli
from meshbed.errors import ConfigError
from meshbed.prune import apply_retention, parse_age, prune
from meshbed.runtime.state import RunState


def _finished(runs: Path, run_id: str, age_s: float, size: int = 1000) -> Path:
    st = RunState.create(runs, "process", "t.yaml", run_id=run_id)
    (st.run_dir / "envoy.log").write_bytes(b"x" * size)
    st.set_status("down")
    t = time.time() - age_s
    os.utime(st.run_dir / "run.json", (t, t))
    return st.run_dir


def _live(runs: Path, run_id: str) -> Path:
    """A run this very process owns (its supervisor is us): never removed."""
    st = RunState.create(runs, "process", "t.yaml", run_id=run_id)
    t = time.time() - 30 * 86400
    os.utime(st.run_dir / "run.json", (t, t))
    return st.run_dir


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for i, age in enumerate([10, 3600, 2 * 86400, 10 * 86400]):
        _finished(runs, f"run-{i}", age)
    _live(runs, "live-0")
    (runs / "not-a-run").mkdir()  # no run.json: not ours to judge
    (runs / "notes.txt").write_text("keep me")
    (runs / "bad run id").mkdir()
    return runs


def _names(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.iterdir())


def test_keep_n_removes_all_but_the_newest_finished(runs: Path):
    res = prune(runs, keep=2)
    assert sorted(r.path.name for r in res.removed) == ["run-2", "run-3"]
    assert [r.path.name for r in res.kept] == ["run-0", "run-1"]
    assert [r.path.name for r in res.live] == ["live-0"] and "alive" in res.live[0].live
    assert res.freed > 2000
    assert _names(runs) == ["bad run id", "live-0", "not-a-run", "notes.txt", "run-0", "run-1"]


def test_keep_zero_leaves_the_live_run_and_foreign_entries(runs: Path):
    prune(runs, keep=0)
    assert _names(runs) == ["bad run id", "live-0", "not-a-run", "notes.txt"]


def test_older_than_and_both(runs: Path):
    assert sorted(r.path.name for r in prune(runs, older_than=86400, dry_run=True).removed) == ["run-2", "run-3"]
    assert len(_names(runs)) == 8, "a dry run removes nothing"
    # both: beyond the newest 3 *and* older than a day
    assert [r.path.name for r in prune(runs, keep=3, older_than=86400).removed] == ["run-3"]


def test_a_run_with_a_live_process_is_left(tmp_path: Path):
    runs = tmp_path / "runs"
    st = RunState.create(runs, "process", "t.yaml", run_id="orphan")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        st.record_process("sleeper", proc.pid)
        st.update(lambda d: d.__setitem__("supervisor", {"pid": 1, "start": 0}))  # its owner is gone
        st.set_status("down")
        res = prune(runs, keep=0)
        assert not res.removed and "processes still run" in res.live[0].live
    finally:
        proc.kill()
        proc.wait()
    assert [r.path.name for r in prune(runs, keep=0).removed] == ["orphan"]


def test_a_corrupt_run_json_is_reported_and_kept(tmp_path: Path):
    runs = tmp_path / "runs"
    _finished(runs, "good", 100)
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text('{"run_id": "broken", "processes": {"x": {"pid": "1"}}}')
    res = prune(runs, keep=0)
    assert [r.path.name for r in res.removed] == ["good"]
    assert len(res.problems) == 1 and "processes.x.pid" in res.problems[0]
    assert (runs / "broken").is_dir()


def test_retention_setting(runs: Path):
    assert apply_retention(runs, 0) is None  # 0 keeps every run
    res = apply_retention(runs, 3)
    assert res is not None and [r.path.name for r in res.removed] == ["run-3"]
    assert apply_retention(runs / "missing", 3) is None


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                           ("2w", 1209600), ("1.5h", 5400)])
def test_parse_age(text: str, seconds: float):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1d", "7 days", "nan", "1e9w"])
def test_parse_age_refuses(text: str):
    with pytest.raises(ConfigError):
        parse_age(text)


def test_cli_prune(runs: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["prune", "--keep", "1", "--dry-run", "--state-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "would remove run-1" in out and "left live-0" in out and "would remove 3 run directories" in out
    assert cli.main(["prune", "--older-than", "1h", "--state-dir", str(runs)]) == 0
    assert "removed 3 run directories" in capsys.readouterr().out
    assert _names(runs) == ["bad run id", "live-0", "not-a-run", "notes.txt", "run-0"]


def test_cli_prune_without_limits_uses_the_retention_setting(runs: Path, capsys, monkeypatch):
    monkeypatch.setenv("MESHBED_KEEP_RUNS", "2")
    assert cli.main(["prune", "--json", "--state-dir", str(runs)]) == 0
    import json
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["removed"]) == ["run-2", "run-3"] and doc["live"] and not doc["problems"]
    monkeypatch.setenv("MESHBED_KEEP_RUNS", "0")
    assert cli.main(["prune", "--state-dir", str(runs)]) == 2
    assert "keep_runs is 0" in capsys.readouterr().err


def test_cli_prune_bad_keep_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["prune", "--keep", "-1", "--state-dir", str(tmp_path)])
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be >= 0" in err[0]
