"""selftest's bookkeeping, offline: what counts as killed, the -k expression, the kill matrix page."""

from __future__ import annotations

from meshbed.controlplane.mutants import MUTANTS
from meshbed.checks.catalog import CATALOG
from meshbed.selftest import CONTROL, Variant, keyword, render_html, summarize, template


def test_every_mutant_targets_catalog_checks():
    for m in MUTANTS.values():
        assert m.targets and set(m.targets) <= set(CATALOG), m.name


def test_keyword_selects_tests_by_check_id():
    assert keyword(["DISC-1", "LB-3"]) == "test_disc1_ or test_lb3_"


def test_template_runs_the_reference_through_the_external_mechanism():
    t = template("late-policy")
    assert "--mutant late-policy" in t and "{xds_port}" in t and "{consul_url}" in t
    assert "--mutant" not in template(None)


def _v(name, targets, **verdicts):
    v = Variant(name, "", tuple(targets))
    v.verdicts = {k.replace("_", "-"): {"verdict": x, "reason": ""} for k, x in verdicts.items()}
    return v


def test_outcomes():
    assert _v("m", ["LB-3"], LB_3="fail").outcome == "killed"
    assert _v("m", ["LB-3", "LB-4"], LB_3="pass", LB_4="fail").outcome == "killed"
    assert _v("m", ["LB-3"], LB_3="error").outcome == "killed-as-error"
    assert _v("m", ["LB-3"], LB_3="pass").outcome == "survived"
    assert _v("m", ["LB-3"]).outcome == "not-run"
    assert _v(CONTROL, [], LB_3="pass", LB_4="skipped").outcome == "pass"
    assert _v(CONTROL, [], LB_3="pass", LB_4="error").outcome == "broken"


def test_summary_and_matrix():
    vs = [_v("a", ["LB-3"], LB_3="fail"), _v("b", ["RES-2"], RES_2="pass"), _v(CONTROL, [], LB_3="pass")]
    s = summarize(vs)
    assert (s["killed"], s["survived"], s["survivors"], s["control"]) == (1, 1, ["b"], "pass")
    page = render_html({"variants": [v.to_json() for v in vs], "summary": s})
    assert "kill matrix" in page and 'class="survived"' in page and 'class="fail target"' in page


def test_diagnostics_without_a_debug_api():
    """An external control plane without {http_port}: diagnostics still come back (no KeyError)."""
    from types import SimpleNamespace

    from meshbed.diagnostics import capture
    mesh = SimpleNamespace(envoys={}, ingress=None, instances={}, all_handles=lambda: [], cp_debug_url=None,
                           controlplane=SimpleNamespace(spec=SimpleNamespace(ports={"xds": 1})))
    assert capture(mesh) == {"envoys": {}, "logs": {}}
