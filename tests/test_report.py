"""The results document (schema meshbed.conformance/v1) and the HTML report rendered from it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from meshbed import cli
from meshbed.errors import ConfigError
from meshbed.report import SCHEMA_VERSION, load_document, render_html, schema, validate, write_html
from meshbed.report import evidence as ev
from meshbed.report import svg

DATA = Path(__file__).parent / "data"
REAL = DATA / "conformance-disc1.json"  # written by a real `pytest suites/test_discovery.py -k disc1` run
RICH = DATA / "conformance-rich.json"  # the real document plus synthetic checks of every evidence shape


@pytest.fixture
def real() -> dict:
    return load_document(REAL)


@pytest.fixture
def rich() -> dict:
    return load_document(RICH)


# -- schema --------------------------------------------------------------------

def test_schema_is_versioned_and_matches_the_collector():
    from meshbed.checks.results import SCHEMA
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["properties"]["schema"]["const"] == SCHEMA_VERSION == SCHEMA == "meshbed.conformance/v1"


@pytest.mark.parametrize("path", [REAL, RICH], ids=["real", "rich"])
def test_documents_validate(path):
    assert validate(json.loads(path.read_text())) == []


def test_a_fresh_collector_document_validates():
    from meshbed.checks.model import CheckResult, Figure, Threshold
    from meshbed.checks.results import ResultsCollector
    c = ResultsCollector()
    r = CheckResult("LB-1", "ROUND_ROBIN spread over N endpoints", "lb", verdict="fail", reason="x",
                    figures=[Figure("max_share_dev", float("nan"), "pp", 0)],
                    thresholds=[Threshold.parse("max_share_dev", "<= 3 pp")])
    c.add(r)
    doc = json.loads(json.dumps(c.document(), default=str))
    assert validate(doc) == []


@pytest.mark.parametrize("mutate, expect", [
    (lambda d: d.__setitem__("schema", "meshbed.conformance/v0"), "$.schema: must be"),
    (lambda d: d["checks"][0].__setitem__("verdict", "ok"), "$.checks[0].verdict: 'ok' is not one of"),
    (lambda d: d["checks"][0]["figures"][0].__setitem__("n", "10"), "$.checks[0].figures[0].n: expected integer"),
    (lambda d: d["summary"].pop("not_run"), "$.summary: missing required 'not_run'"),
    (lambda d: d["phases"].__setitem__("mesh up: total", "slow"), "$.phases.mesh up: total: expected number"),
    (lambda d: d["checks"][0]["thresholds"][0].__setitem__("op", "=<"), "is not one of"),
])
def test_validator_reports_each_violation(real, mutate, expect):
    doc = copy.deepcopy(real)
    mutate(doc)
    errors = validate(doc)
    assert any(expect in e for e in errors), errors


def test_jsonschema_agrees_when_installed(real, rich):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed; meshbed's own validator is used")
    jsonschema.Draft202012Validator.check_schema(schema())
    for d in (real, rich):
        jsonschema.Draft202012Validator(schema()).validate(d)


def test_load_document_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_document(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text('{"schema": "other/v1"}')
    with pytest.raises(ConfigError, match="not a meshbed results document"):
        load_document(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        load_document(tmp_path / "y.json")


# -- the page --------------------------------------------------------------------

def test_render_is_deterministic_and_self_contained(rich):
    a, b = render_html(rich), render_html(copy.deepcopy(rich))
    assert a == b
    assert a.startswith("<!DOCTYPE html>")
    # nothing is fetched: no external scripts, styles, images, fonts or imports
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=', a)
    assert "@import" not in a and "url(" not in a
    assert re.findall(r'(?:src|href)="(https?:[^"]+)"', a) == []


def test_banner_table_and_every_check(rich):
    page = render_html(rich)
    assert 'class="banner fail"' in page and ">FAIL<" in page
    assert "1 skipped — not failures" in page
    rows = re.findall(r'<tr data-verdict="(\w+)" data-group="(\w+)"', page)
    assert [v for v, _ in rows] == [c["verdict"] for c in rich["checks"]]
    for c in rich["checks"]:
        assert f'id="check-{c["id"]}"' in page
    # the key figure vs its threshold, coloured by whether it holds
    assert 'class="fig bad">error_rate = <b>0.97 %</b>' in page
    assert "&lt;= 0.1 %" in page
    assert 'id="f-verdict"' in page and 'id="f-group"' in page and 'id="f-text"' in page


def test_pass_banner(real):
    page = render_html(real)
    assert 'class="banner pass"' in page and "All 1 check that ran passed" in page


def _section(page: str, cid: str) -> str:
    start = page.index(f'id="check-{cid}"')
    return page[start:page.index("</article>", start)]


def test_cdf_per_envoy(real):
    sec = _section(render_html(real), "DISC-1")
    assert sec.count("<polyline") == 2  # one CDF line per Envoy
    assert "frontend-0 (n=5)" in sec and "frontend-1 (n=5)" in sec
    assert "convergence CDF per Envoy" in sec


def test_spread_bars_show_expected_share(rich):
    sec = _section(render_html(rich), "LB-1")
    assert sec.count("share of requests per endpoint") >= 2  # the list shape and the counts/expected mapping
    assert sec.count('class="expected"') >= 6  # a marker per endpoint, per chart
    assert "33.7% observed (1012 requests), 33.3% expected" in sec


def test_load_charts_shade_fault_windows(rich):
    sec = _section(render_html(rich), "DISC-5")
    assert "error rate over time" in sec and "latency over time" in sec
    assert sec.count('<rect class="fault"') == 3  # one window, shaded on each of the three charts
    assert "timeout → controlplane" in sec


def test_diagnostics_are_collapsible(rich):
    sec = _section(render_html(rich), "DISC-5")
    assert "<details><summary>Envoy <b>ingress</b>: clusters</summary>" in sec
    assert "<details><summary>log tail: <b>controlplane</b></summary>" in sec
    assert "push EDS v12 to 7 envoys" in sec


def test_traces_one_complete_tree_and_every_incomplete_listed(rich):
    sec = _section(render_html(rich), "TRACE-1")
    assert "a complete trace: <code>4bf92f3577b34da6</code> (4 spans)" in sec
    assert sec.count('<ul class="spantree">') >= 1
    assert "9e0c000000000011" in sec and "9e0c0000000000e9" in sec
    assert "3 traces listed: <b>1</b> complete" in sec


def test_unknown_evidence_is_compact_truncated_json(rich):
    sec = _section(render_html(rich), "TRACE-1")
    assert "more characters)" in sec  # the 3000-value blob is truncated
    big = {"id": "X-1", "evidence": {"weird": {"a": [{"b": list(range(10))}] * 500}}, "thresholds": []}
    out = ev.render_evidence(big)
    assert '<pre class="json">' in out and len(out) < ev.MAX_JSON_CHARS + 2000


def test_skipped_check_says_why(rich):
    sec = _section(render_html(rich), "RES-1")
    assert "skipped because:" in sec and "no retry policy" in sec


def test_environment_topology_profile_phases(rich):
    page = render_html(rich)
    for comp in ("envoy", "consul", "jaeger", "toxiproxy", "controlplane", "python"):
        assert f"<td>{comp}</td>" in page
    assert 'id="topology"' in page and "ROUND_ROBIN" in page
    assert 'id="profile"' in page and "convergence_p99 &lt;= 2.0 s" in page
    assert "mesh up: total" in page and "report render" in page


def test_shape_detectors_ignore_key_names():
    assert ev.is_cdf({"anything": 1, "per_envoy": {"a": [0.1, 0.2]}})
    assert not ev.is_cdf({"per_envoy": {"a": "x"}})
    assert ev.is_spread([{"instance": "b-0", "count": 3}, {"instance": "b-1", "count": 5, "expected": 4}])
    assert ev.is_load({"summary": {}, "history": [{"ts": 1.0, "rps": 3, "failures": 0}]})
    assert ev.is_load([{"t": 0, "rps": 3, "failures": 0, "p95_ms": 2}])
    assert ev.is_spans([{"span_id": "1", "parent_id": "", "service": "s", "name": "n"}])
    assert not ev.is_spans([{"span_id": "1"}])


def test_share_normalisation():
    assert ev._as_percent([0.9, 0.1]) == [90.0, 10.0]
    assert ev._as_percent([90, 10]) == [90, 10]
    assert ev._as_percent([450, 50]) == [90.0, 10.0]


def test_svg_helpers():
    assert svg.nice_ticks(0, 0.04)[-1] >= 0.04
    assert svg.fmt(0.0394, "s") == "0.0394 s" and svg.fmt(None) == "n/a" and svg.fmt(12000.0) == "12,000"
    chart = svg.line_chart([("a", [(0, 1), (1, None), (2, 3)])], title="t", x_label="x", y_label="y")
    assert chart.startswith("<svg") and chart.count("<circle") == 2  # the gap splits the line


# -- `meshbed report` ----------------------------------------------------------------

def test_cli_report_rerenders_deterministically(tmp_path, capsys):
    out1, out2 = tmp_path / "a.html", tmp_path / "b.html"
    assert cli.main(["report", str(RICH), "-o", str(out1)]) == 0
    assert cli.main(["report", str(RICH), "-o", str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    assert str(out1) in capsys.readouterr().out


def test_cli_report_default_output_next_to_the_json(tmp_path):
    src = tmp_path / "conformance.json"
    src.write_text(REAL.read_text())
    assert cli.main(["report", str(src)]) == 0
    assert (tmp_path / "conformance.html").read_text().startswith("<!DOCTYPE html>")


def test_cli_report_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results file not found" in err[0]


def test_write_html_creates_parents(tmp_path, real):
    out = write_html(real, tmp_path / "deep" / "r.html")
    assert out.exists() and not (tmp_path / "deep" / "r.html.tmp").exists()


def test_every_stated_chart_draws_and_a_wrong_one_is_an_error(real, rich):
    """Evidence states its chart; the report draws what it is told and refuses what it cannot draw."""
    for doc in (real, rich):
        for c in doc["checks"]:
            ev.render_evidence(c, strict=True)
    typo = {"id": "X-1", "thresholds": [], "evidence": {"lat": {"chart": "cfd", "data": {"per_envoy": {"a": [1]}}}}}
    with pytest.raises(ev.EvidenceError, match="unknown chart kind 'cfd'"):
        ev.render_evidence(typo, strict=True)
    assert "cannot draw" in ev.render_evidence(typo)
    misfit = {"id": "X-1", "thresholds": [], "evidence": {"lat": {"chart": "cdf", "data": [1, 2]}}}
    with pytest.raises(ev.EvidenceError, match="does not fit a cdf chart"):
        ev.render_evidence(misfit, strict=True)
