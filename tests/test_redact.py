"""Reports leave out the home directory, the cache location and the host name unless --no-redact."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from meshbed import cli
from meshbed.report.redact import redact, redactor

ROOT = Path(__file__).resolve().parents[1]
GOOD_REPORT = ROOT / "tests" / "data" / "conformance-disc1.json"


@pytest.fixture
def r():
    return redactor(cwd="/work/main", home="/home/ann", cache="/opt/meshbed-cache", hosts=["ci-7", "ci-7.corp.example"])


@pytest.mark.parametrize("raw, want", [
    ("/work/main/examples/basic.yaml", "./examples/basic.yaml"),
    ("/work/main", "."),
    ("/home/ann/.cache/meshbed/bin/consul-1.14.11 agent -dev", "~/.cache/meshbed/bin/consul-1.14.11 agent -dev"),
    ("/home/ann", "~"),
    ("/opt/meshbed-cache/bin/jaeger", "<cache>/bin/jaeger"),
    ("node ci-7 at ci-7.corp.example:8500", "node <host> at <host>:8500"),
    ("see /home/ann/x.log.", "see ~/x.log."),
    # whole prefixes and names only
    ("/work/mainline/x", "/work/mainline/x"),
    ("/home/anne/x", "/home/anne/x"),
    ("/srv/work/main/x", "/srv/work/main/x"),
    ("/opt/meshbed-cache2", "/opt/meshbed-cache2"),
    ("ci-70 and xci-7 and ci-7_a", "ci-70 and xci-7 and ci-7_a"),
    ("/work/main.bak", "/work/main.bak"),
])
def test_rules(r, raw, want):
    assert r.text(raw) == want


def test_the_working_directory_under_home_reads_relative(r):
    rr = redactor(cwd="/home/ann/src/app", home="/home/ann", cache="/home/ann/.cache/meshbed", hosts=[])
    assert rr.text("/home/ann/src/app/examples/t.yaml /home/ann/.venv/bin/envoy") == "./examples/t.yaml ~/.venv/bin/envoy"
    # the home directory itself as the working directory: `~`, not `.`
    assert redactor(cwd="/home/ann", home="/home/ann", cache="/x", hosts=[]).text("/home/ann/a") == "~/a"


def test_localhost_is_never_a_host_to_redact():
    rr = redactor(cwd="/w", home="/h", cache="/c", hosts=["localhost", ""])
    assert rr.text("http://localhost:8080") == "http://localhost:8080"


def test_document_is_copied_not_changed(r):
    doc = {"run": {"argv": ["/work/main/suites", "--x"]}, "n": 1.5, "keys": {"/home/ann/k": None}, "l": [None, True]}
    out = redact(doc, r)
    assert out["run"]["argv"] == ["./suites", "--x"] and out["keys"] == {"~/k": None} and out["redacted"] is True
    assert doc["run"]["argv"][0] == "/work/main/suites"


def _doc_with_private_paths(tmp_path: Path) -> Path:
    doc = json.loads(GOOD_REPORT.read_text())
    home = str(Path.home())
    doc["environment"]["components"]["consul"]["path"] = f"{home}/.cache/meshbed/bin/consul-1.14.11"
    doc["checks"][0]["reason"] = f"on {socket.gethostname()}: see {home}/.cache/meshbed/runs/x/consul.log"
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    return p


def test_meshbed_report_redacts_by_default(tmp_path, capsys):
    src = _doc_with_private_paths(tmp_path)
    home, host = str(Path.home()), socket.gethostname()
    assert cli.main(["report", str(src), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert f"{home}/.cache" not in page and "~/.cache/meshbed/bin/consul-1.14.11" in page
    assert f"on {host}:" not in page and "on &lt;host&gt;:" in page
    assert cli.main(["report", str(src), "-o", str(tmp_path / "raw.html"), "--no-redact"]) == 0
    raw = (tmp_path / "raw.html").read_text()
    assert f"{home}/.cache/meshbed/bin/consul-1.14.11" in raw


STANDIN = """
import pytest

@pytest.mark.check("DISC-1")
def test_disc1(check):
    check.figure("convergence_p99", 0.05, "s", 10, "stand-in", min_n=5)
    check.judge()
"""


def _run(tmp_path: Path, *extra: str) -> tuple[str, str]:
    suites = tmp_path / "suites"
    suites.mkdir(exist_ok=True)
    (suites / "test_standin.py").write_text(STANDIN)
    out = tmp_path / ("out" + "".join(extra))
    assert cli.main(["run", "--suites", str(suites), "--out", str(out), "--state-dir", str(tmp_path / "state"),
                     *extra]) == 0
    return (out / "conformance.json").read_text(), (out / "conformance.html").read_text()


def test_meshbed_run_redacts_the_json_and_html(tmp_path, capsys):
    home, cwd = str(Path.home()), str(Path.cwd())
    j, h = _run(tmp_path)
    for text in (j, h):
        assert f"{home}/" not in text and f"{cwd}/" not in text
    doc = json.loads(j)
    assert doc["redacted"] is True
    assert doc["profile"]["source"].startswith(("./", "~/")), doc["profile"]["source"]
    j, h = _run(tmp_path, "--no-redact")
    assert "redacted" not in json.loads(j)
    assert f"{home}/" in j or f"{cwd}/" in j
