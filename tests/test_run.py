"""`meshbed run`: planning, exit codes and the reports, with stand-in suites that need no mesh.

The stand-in suites use the plugin's `check` fixture (profile + verdict), which
needs no running mesh; the real end-to-end run is in test_run_integration.py.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from meshbed import cli
from meshbed.errors import ConfigError
from meshbed.report import validate
from meshbed.run import RunOptions, plan, repo_root, summary_table

ROOT = Path(__file__).resolve().parents[1]


def _suite(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "suites"
    d.mkdir()
    (d / "test_standin.py").write_text("import pytest\n" + textwrap.dedent(body))
    return d


PASSING = """
    @pytest.mark.quick
    @pytest.mark.check("DISC-1")
    def test_disc1(check):
        check.figure("convergence_p99", 0.05, "s", 10, "stand-in", min_n=5)
        check.evidence("convergence_s", {"per_envoy": {"a": [0.01, 0.05], "b": [0.02, 0.03]}})
        check.judge()

    @pytest.mark.check("LB-2")
    def test_lb2(check):
        check.figure("slow_share_ratio", 0.1, "", 600, "stand-in")
        check.figure("policy_apply_p99", 0.1, "s", 2, "stand-in")
        check.judge()
"""

FAILING = PASSING + """
    @pytest.mark.check("DISC-3")
    def test_disc3(check):
        check.figure("leave_p99", 9.0, "s", 6, "stand-in")
        check.figure("rejoin_p99", 0.1, "s", 6, "stand-in")
        check.judge()
"""

SKIPPING = """
    @pytest.mark.check("RES-1")
    def test_res1(check):
        pytest.skip("no retry policy in this topology")
"""


def _run(tmp_path: Path, suites: Path, *extra: str) -> int:
    return cli.main(["run", "--suites", str(suites), "--out", str(tmp_path / "out"),
                     "--state-dir", str(tmp_path / "state"), *extra])


def test_repo_root_finds_the_checkout():
    assert repo_root() == ROOT and (ROOT / "suites").is_dir()


def test_plan_builds_the_pytest_command(tmp_path):
    p = plan(RunOptions(out_dir=str(tmp_path / "r"), markers="quick", state_dir=str(tmp_path / "s")))
    a = p.argv
    assert a[:4] == [sys.executable, "-m", "pytest", str(ROOT / "suites")]
    for flag in ("-p", "--meshbed-topology", "--meshbed-profile", "--meshbed-runtime", "--meshbed-results",
                 "--junitxml", "-m", "--meshbed-state-dir"):
        assert flag in a
    assert "no:locust" in a and "no:cacheprovider" in a
    assert a[a.index("--meshbed-results") + 1] == str(tmp_path / "r" / "conformance.json")
    assert a[a.index("--junitxml") + 1] == str(tmp_path / "r" / "junit.xml")
    assert a[a.index("-m", 3) + 1] == "quick"
    assert Path(a[a.index("--meshbed-topology") + 1]).is_absolute()


@pytest.mark.parametrize("args, message", [
    (["-f", "nope.yaml"], "topology file not found"),
    (["--profile", "nope.yaml"], "profile not found"),
    (["--runtime", "podman"], "unknown runtime 'podman'"),
    (["--suites", "/nonexistent/suites"], "suites directory not found"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert cli.main(["run", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "conformance.json").exists()


def test_invalid_profile_is_bad_input(tmp_path, capsys):
    prof = tmp_path / "p.yaml"
    prof.write_text("checks:\n  NOPE-1: {}\n")
    assert cli.main(["run", "--profile", str(prof), "--out", str(tmp_path)]) == 2
    assert "not a catalog check id" in capsys.readouterr().err


def test_all_pass_exit_0_with_reports(tmp_path, capsys):
    suites = _suite(tmp_path, PASSING)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "conformance.json").write_text("{stale")  # never mistaken for this run's results
    assert _run(tmp_path, suites) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "conformance.json").read_text())
    assert validate(doc) == []
    assert doc["summary"]["verdict"] == "pass" and doc["summary"]["pass"] == 2
    assert doc["run"]["pytest_exit_code"] == 0
    assert {"suites (pytest wall time, incl. mesh up/down)", "report render"} <= set(doc["phases"])
    html = (tmp_path / "out" / "conformance.html").read_text()
    assert 'class="banner pass"' in html and "report render" in html
    assert (tmp_path / "out" / "junit.xml").exists()  # --junitxml keeps working alongside
    # the summary table and the paths
    assert "DISC-1" in out and "convergence_p99 = 0.05 s" in out and "<= 2 s" in out and "PASS" in out
    assert str(tmp_path / "out" / "conformance.html") in out
    # pytest's progress is streamed (it goes straight to the terminal, not through us)
    assert "meshbed run: PASS" in out


def test_a_failing_check_exits_1(tmp_path, capsys):
    assert _run(tmp_path, _suite(tmp_path, FAILING)) == 1
    out = capsys.readouterr().out
    assert "FAIL: leave_p99 = 9 s, needs <= 2 s" in out
    doc = json.loads((tmp_path / "out" / "conformance.json").read_text())
    assert doc["summary"]["fail"] == 1 and doc["run"]["pytest_exit_code"] == 1


def test_markers_select(tmp_path, capsys):
    assert _run(tmp_path, _suite(tmp_path, FAILING), "-m", "quick") == 0
    doc = json.loads((tmp_path / "out" / "conformance.json").read_text())
    assert [c["id"] for c in doc["checks"]] == ["DISC-1"] and doc["run"]["markers"] == "quick"


def test_skipped_is_not_a_failure_but_is_said(tmp_path, capsys):
    assert _run(tmp_path, _suite(tmp_path, PASSING + SKIPPING)) == 0
    out = capsys.readouterr().out
    assert "1 skipped (skipped checks are not failures, but were not verified)" in out
    assert "SKIPPED: no retry policy in this topology" in out


def test_only_skipped_has_no_verdict_exit_1(tmp_path, capsys):
    assert _run(tmp_path, _suite(tmp_path, SKIPPING)) == 1
    assert "no check ran to a verdict" in capsys.readouterr().out


def test_nothing_selected_exit_1(tmp_path, capsys):
    assert _run(tmp_path, _suite(tmp_path, PASSING), "-m", "resilience") == 1
    assert "no test was selected" in capsys.readouterr().err


def test_bad_marker_expression_exit_2(tmp_path, capsys):
    assert _run(tmp_path, _suite(tmp_path, PASSING), "-m", "quick and (") == 2


def test_summary_table_columns():
    doc = {"checks": [{"id": "LB-1", "title": "t", "verdict": "fail", "reason": "why",
                       "figures": [{"name": "f", "value": 4.0, "unit": "pp", "n": 1}],
                       "thresholds": [{"figure": "f", "op": "<=", "value": 3.0, "unit": "pp", "text": "<= 3 pp"},
                                      {"figure": "g", "op": ">=", "value": 1.0, "unit": "", "text": ">= 1"}]}]}
    lines = summary_table(doc).splitlines()
    assert lines[0].split() == ["ID", "CHECK", "FIGURE", "THRESHOLD", "VERDICT"]
    assert "f = 4 pp (+1)" in lines[1] and "<= 3 pp" in lines[1] and lines[1].rstrip().endswith("FAIL: why")


def test_run_outside_a_checkout_says_so(tmp_path, monkeypatch):
    import meshbed.run as run_mod
    monkeypatch.setattr(run_mod, "repo_root", lambda start=None: None)
    with pytest.raises(ConfigError, match="no suites/ directory found"):
        run_mod.suites_dir()
