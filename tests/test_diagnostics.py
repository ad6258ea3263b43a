"""Diagnostics of a failed check: attribution to Envoys, trimming, the re-run command, the report.

Pure functions on stand-in data (an admin /config_dump and /clusters as Envoy 1.40 writes them);
the plugin's wiring through a plain pytest run of stand-in checks (no mesh). The real thing, a
check failed by a planted control-plane bug, is the integration test at the end.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshbed import diagnostics as dg
from meshbed.checks.model import CheckResult, Figure, Threshold
from meshbed.report.evidence import render_diagnostics

ROUTES = {"ingress": {"frontend"}, "frontend-0": {"backend"}, "frontend-1": {"backend"},
          "backend-0": set(), "backend-1": set()}


def _cluster(name: str, eds: str | None = None) -> dict:
    c = {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": name, "type": "EDS"}
    if eds:
        c["eds_cluster_config"] = {"eds_config": {"ads": {}}, "service_name": eds}
    return {"version_info": "v7", "cluster": c, "last_updated": "2026-12-02T17:04:32.741Z"}


def _cla(name: str, *ports: int) -> dict:
    return {"endpoint_config": {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                                "cluster_name": name, "endpoints": [{"lb_endpoints": [
                                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                                   "port_value": p}}}}
                                    for p in ports]}]}}


def _dump(vhosts: list[dict], clusters: list[dict], endpoints: list[dict]) -> dict:
    return {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {"node": {"id": "x" * 5000}}},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "static_clusters": [{"cluster": {"name": "xds_cluster"}}], "dynamic_active_clusters": clusters},
        {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": endpoints},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [{"name": "l"}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": [
            {"version_info": "r3", "route_config": {"name": "outbound", "virtual_hosts": vhosts}},
            {"route_config": {"name": "inbound", "virtual_hosts": [
                {"name": "inbound", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
                                                                  "route": {"cluster": "local_app"}}]}]}}]},
    ]}


SIDECAR = _dump(
    [{"name": "backend", "domains": ["backend", "backend:*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "backend~v1", "weight": 90}, {"name": "backend~v2", "weight": 10}]}}}]},
     {"name": "cache", "domains": ["cache", "cache:*"], "routes": [{"match": {"prefix": "/"},
                                                                     "route": {"cluster": "cache"}}]}],
    [_cluster("backend", "backend"), _cluster("backend~v1", "backend~v1"), _cluster("backend~v2", "backend~v2"),
     _cluster("cache", "cache"), _cluster("local_app")],
    [_cla("backend", 1, 2, 3), _cla("backend~v1", 1, 2), _cla("backend~v2", 3), _cla("cache", 9), _cla("local_app", 5)])

CLUSTERS_TEXT = """\
backend::observability_name::backend
backend::default_priority::max_connections::1024
backend::default_priority::max_retries::3
backend::added_via_api::true
backend::127.0.0.1:1::cx_active::0
backend::127.0.0.1:1::rq_total::12
backend::127.0.0.1:1::rq_error::0
backend::127.0.0.1:1::hostname::backend-0
backend::127.0.0.1:1::health_flags::/failed_outlier_check
backend::127.0.0.1:1::region::
backend::127.0.0.1:1::success_rate::-1
backend::127.0.0.1:2::rq_total::0
backend::127.0.0.1:2::health_flags::healthy
cache::127.0.0.1:9::rq_total::7
xds_cluster::127.0.0.1:7::rq_total::1
"""


# -- trimming --------------------------------------------------------------------------------------------

def test_trim_keeps_only_the_service_clusters_endpoints_and_routes():
    trimmed, cut = dg.trim_config_dump(SIDECAR, ["backend"])
    names = [c["cluster"]["name"] for c in trimmed["clusters"]]
    assert names == ["backend", "backend~v1", "backend~v2"]
    assert sorted(e["endpoint_config"]["cluster_name"] for e in trimmed["endpoints"]) == names
    assert [vh["name"] for r in trimmed["routes"] for vh in r["virtual_hosts"]] == ["backend"]
    assert trimmed["routes"][0]["version_info"] == "r3"
    text = json.dumps(trimmed)
    assert "bootstrap" not in text and "@type" not in text and "cache" not in text and "local_app" not in text
    assert cut == ("kept 3 of 6 clusters, 3 of 5 endpoint sets, 1 of 3 virtual hosts (1 of 2 route configs); "
                   "left out: bootstrap, listeners")
    assert len(text) < len(json.dumps(SIDECAR)) / 3


def test_trim_follows_routes_to_clusters_named_otherwise():
    """An external control plane's cluster names: found through the virtual host that names the service."""
    dump = _dump([{"name": "x", "domains": ["backend.mesh", "backend"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "outbound|80||backend.default"}}]}],
        [_cluster("outbound|80||backend.default", "eds-backend"), _cluster("other")],
        [_cla("eds-backend", 1), _cla("other", 2)])
    trimmed, _ = dg.trim_config_dump(dump, ["backend"])
    assert [c["cluster"]["name"] for c in trimmed["clusters"]] == ["outbound|80||backend.default"]
    assert [e["endpoint_config"]["cluster_name"] for e in trimmed["endpoints"]] == ["eds-backend"]


def test_trim_on_the_ingress_keeps_the_routes_to_the_service_only():
    dump = _dump([{"name": "ingress", "domains": ["*"], "routes": [
        {"match": {"prefix": "/c"}, "route": {"cluster": "cart"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "frontend"}}]}],
        [_cluster("frontend", "frontend"), _cluster("cart", "cart")], [_cla("frontend", 1), _cla("cart", 2)])
    trimmed, cut = dg.trim_config_dump(dump, ["frontend"])
    routes = trimmed["routes"][0]["virtual_hosts"][0]["routes"]
    assert [r["route"]["cluster"] for r in routes] == ["frontend"]
    assert "kept 1 of 3 clusters" in cut


def test_compact_clusters_one_line_per_host_without_zeroes():
    text, cut = dg.compact_clusters(CLUSTERS_TEXT, {"backend"})
    assert text.splitlines() == [
        "backend: default_priority.max_connections=1024 default_priority.max_retries=3 added_via_api=true",
        "  127.0.0.1:1 rq_total=12 hostname=backend-0 health_flags=/failed_outlier_check",
        "  127.0.0.1:2 health_flags=healthy",
    ]
    assert cut == "kept 1 of 3 clusters; zero and empty counters left out"


def test_capped_says_what_was_cut():
    assert dg.capped("abc", 10) == ("abc", "")
    text, note = dg.capped("x" * 12_345, 8_000)
    assert len(text) == 8_002 and note == "cut at 8,000 of 12,345 characters"


# -- attribution -----------------------------------------------------------------------------------------

def _result(figures: list[Figure], thresholds: list[Threshold], evidence: dict | None = None) -> CheckResult:
    return CheckResult("DISC-1", "t", "discovery", figures=figures, thresholds=thresholds, evidence=evidence or {})


P99 = Threshold("convergence_p99", "<=", 2.0, "s")


def test_attribution_per_envoy_evidence_names_the_envoys_breaking_the_threshold():
    """DISC-1's cdf evidence: frontend-1 was slow every time, frontend-0 never."""
    r = _result([Figure("convergence_p99", 3.1, "s", 10)], [P99], {
        "convergence_s": {"chart": "cdf", "data": {"summary": {}, "per_envoy": {
            "frontend-0": [0.02, 0.03], "frontend-1": [3.1, 3.0]}}}})
    a = dg.attribute(r, dg.Hints(), ROUTES)
    assert (a.rule, a.envoys, a.services, a.figures) == ("per-envoy evidence", ("frontend-1",), ("backend",),
                                                         ("convergence_p99",))
    assert "convergence_s.per_envoy" in a.why and "convergence_p99 <= 2 s" in a.why


def test_attribution_per_envoy_flags_and_never_values():
    """LB-6's per-Envoy dicts (in_time false) and a None ("never converged") both count as failing."""
    r = _result([Figure("ejecting_envoys", 50.0, "%", 2)], [Threshold("ejecting_envoys", ">=", 100.0, "%")],
                {"per_envoy": {"frontend-0": {"in_time": True}, "frontend-1": {"in_time": False}}})
    assert dg.attribute(r, dg.Hints(), ROUTES).envoys == ("frontend-1",)
    r = _result([Figure("convergence_p99", 3.0, "s", 2)], [P99],
                {"conv": {"per_envoy": {"frontend-0": None, "frontend-1": 0.1}}})
    assert dg.attribute(r, dg.Hints(), ROUTES).envoys == ("frontend-0",)


def test_attribution_compares_evidence_values_with_time_figures_only():
    """DISC-2 failing on late_requests: convergence seconds say nothing about it; every Envoy, said so."""
    r = _result([Figure("late_requests", 3.0, "requests", 50)], [Threshold("late_requests", "<=", 0.0, "requests")],
                {"convergence_s": {"per_envoy": {"frontend-0": [0.1], "frontend-1": [0.2]}}})
    a = dg.attribute(r, dg.Hints(), ROUTES)
    assert (a.rule, a.envoys) == ("per-envoy evidence", ("frontend-0", "frontend-1"))
    assert a.why == ("every Envoy in convergence_s.per_envoy: no value there breaks late_requests <= 0 requests "
                     "on its own")


def test_attribution_by_the_figure_wins_and_values_pick_the_breaking_ones():
    r = _result([Figure("convergence_p99", 3.0, "s", 2)], [P99],
                {"per_envoy": {"frontend-0": [9.0]}})  # evidence would say frontend-0
    a = dg.attribute(r, dg.Hints(figure_envoys={"convergence_p99": {"ingress": 0.1, "frontend-1": 3.0}}), ROUTES)
    assert (a.rule, a.envoys, a.services) == ("figure", ("frontend-1",), ("backend",))
    # no Envoy breaks it on its own (a p99 over all of them): every Envoy measured, and it says so
    a = dg.attribute(r, dg.Hints(figure_envoys={"convergence_p99": {"frontend-0": 0.1, "frontend-1": 1.9}}),
                     ROUTES)
    assert (a.rule, a.envoys) == ("figure", ("frontend-0", "frontend-1")) and "none breaks it alone" in a.why
    a = dg.attribute(r, dg.Hints(figure_envoys={"convergence_p99": ["ingress"]}), ROUTES)
    assert (a.envoys, a.services) == (("ingress",), ("frontend",))


def test_attribution_by_evidence_the_test_attributed():
    r = _result([Figure("convergence_p99", 3.0, "s", 2)], [P99])
    a = dg.attribute(r, dg.Hints(evidence_envoys={"stale": ["frontend-1"]}), ROUTES)
    assert (a.rule, a.envoys) == ("evidence", ("frontend-1",)) and "stale" in a.why


def test_attribution_falls_back_to_the_subscribers_of_the_target_service():
    r = _result([Figure("error_rate", 5.0, "%", 100)], [Threshold("error_rate", "<=", 0.1, "%")])
    a = dg.attribute(r, dg.Hints(services=("backend",), services_from="the `target` fixture's service"), ROUTES)
    assert (a.rule, a.envoys, a.services) == ("subscribers", ("frontend-0", "frontend-1"), ("backend",))
    assert "target` fixture" in a.why
    # the service whose policy the check applied
    r.evidence["policy_applies"] = [{"service": "frontend", "per_envoy_s": {}}]
    a = dg.attribute(r, dg.Hints(), ROUTES)
    assert (a.rule, a.envoys, a.services) == ("subscribers", ("ingress",), ("frontend",))
    assert "policy" in a.why
    # nothing known: every Envoy that routes somewhere, and says so
    del r.evidence["policy_applies"]
    a = dg.attribute(r, dg.Hints(), ROUTES)
    assert a.rule == "every subscriber" and a.envoys == ("frontend-0", "frontend-1", "ingress")


def test_attribution_of_an_error_uses_the_unmeasured_figures():
    r = _result([Figure("convergence_p99", None, "s", 0)], [P99])
    a = dg.attribute(r, dg.Hints(figure_envoys={"convergence_p99": ["frontend-0"]}), ROUTES)
    assert (a.rule, a.envoys, a.figures) == ("figure", ("frontend-0",), ("convergence_p99",))


def test_recorder_carries_envoys_and_calls_the_hook_before_raising():
    from meshbed.checks.recorder import Check
    c = Check("DISC-1", _profile().for_check("DISC-1"))
    seen = []
    c.on_failure = lambda chk: seen.append((chk.result.verdict, [f.to_json() for f in chk.result.figures]))
    c.figure("convergence_p99", 3.0, "s", 10, "admin", envoys={"frontend-1": [3.0], "frontend-0": [0.1]})
    c.evidence("stale", {"x": 1}, envoys=["frontend-1"])
    c.target("backend")
    with pytest.raises(AssertionError, match="DISC-1 failed"):
        c.judge()
    assert seen and seen[0][0] == "fail" and seen[0][1][0]["envoys"] == ["frontend-0", "frontend-1"]
    assert c.evidence_envoys == {"stale": ["frontend-1"]} and c.services == ["backend"]
    ok = Check("DISC-1", _profile().for_check("DISC-1"))
    ok.on_failure = lambda chk: seen.append("called")
    ok.figure("convergence_p99", 0.1, "s", 10)
    ok.judge()
    assert len(seen) == 1 and "envoys" not in ok.result.figures[0].to_json()


def _profile():
    from meshbed import packaged
    from meshbed.checks.profile import load
    return load(packaged.profile())


# -- failed requests -------------------------------------------------------------------------------------

def test_failed_traces_from_tracing_evidence():
    ev = {"incomplete_examples": {"chart": "traces", "data": [
        {"trace_id": "4bf9", "request_id": "r-1", "spans": 2, "complete": False, "problems": "missing backend/server"},
        {"trace_id": "ok", "request_id": "r-2", "complete": True}]},
        "unmarked": [{"phase": "reset", "request_id": "r-3", "status": 503}],
        "traffic": {"requests": 10}}
    assert dg.failed_traces(ev) == [
        {"evidence": "incomplete_examples", "trace_id": "4bf9", "request_id": "r-1", "why": "missing backend/server"},
        {"evidence": "unmarked", "trace_id": "", "request_id": "r-3", "why": "503"}]
    assert len(dg.failed_traces({"x": [{"trace_id": str(i)} for i in range(50)]})) == dg.MAX_TRACES


# -- the re-run command ----------------------------------------------------------------------------------

def test_keyword_selects_exactly_one_test():
    cands = [("s/test_lb.py::test_lb1_spread", ["test_lb1_spread", "test_lb.py", "s", "lb", "check"]),
             ("s/test_lb.py::test_lb1_spread_weighted", ["test_lb1_spread_weighted", "test_lb.py", "lb"]),
             ("s/test_lb.py::test_lb2", ["test_lb2", "test_lb.py", "lb"])]
    kw = dg.keyword_for("test_lb1_spread", cands, "s/test_lb.py::test_lb1_spread")
    assert kw == "test_lb1_spread and not test_lb1_spread_weighted"
    assert dg.keyword_for("test_lb2", cands, "s/test_lb.py::test_lb2") == "test_lb2"
    # a parameter id -k cannot spell: the function (every parameter)
    assert dg.keyword_for("test_x[a b]", [], "f::test_x[a b]") == "test_x"
    assert dg.keyword_for("test_x[p1-2]", [], "f::test_x[p1-2]") == "test_x[p1-2]"


def test_rerun_command_keeps_the_run_options_and_parses():
    from meshbed.cli import build_parser
    cmd = dg.rerun_command(check_id="DISC-1", keyword="test_disc1_x", use_check_flag=True, topology="chain",
                           profile="default", runtime="docker",
                           controlplane="python -m meshbed.controlplane --mutant late-endpoints --xds {xds_host}:{xds_port}",
                           suites=["/my tests"], catalogs=["/c.yaml"], state_dir="/tmp/s")
    argv = shlex.split(cmd)
    assert argv[:4] == ["meshbed", "run", "--check", "DISC-1"]
    args = build_parser().parse_args(argv[1:])
    assert (args.topology, args.profile, args.runtime, args.suites, args.catalog, args.state_dir) == (
        "chain", "default", "docker", ["/my tests"], ["/c.yaml"], "/tmp/s")
    assert "--mutant late-endpoints" in args.controlplane
    plain = dg.rerun_command(check_id="DISC-1", keyword="test_disc1_x", use_check_flag=False, runtime="process",
                             controlplane="builtin")
    assert plain == "meshbed run -k test_disc1_x"


def test_keyword_from_a_real_collection_selects_exactly_that_test(tmp_path):
    """-k as pytest evaluates it, on names that contain each other."""
    (tmp_path / "test_k.py").write_text(textwrap.dedent("""
        import pytest
        def test_alpha(): pass
        def test_alpha_two(): pass
        class TestAlpha:
            def test_beta(self): pass
        @pytest.mark.parametrize("x", [1, 2])
        def test_gamma(x): pass
    """))

    class Grab:
        items: list = []

        def pytest_collection_modifyitems(self, items):  # noqa: ANN001
            Grab.items = list(items)

    from _pytest.mark import KeywordMatcher
    from _pytest.mark.expression import Expression
    assert pytest.main([str(tmp_path), "--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[Grab()]) == 0
    items = list(Grab.items)
    assert len(items) == 5
    cands = dg.keyword_candidates(items)
    for it in items:
        kw = dg.keyword_for(it.name, cands, it.nodeid)
        # what pytest's own -k keeps (_pytest.mark.deselect_by_keyword)
        kept = [i.nodeid for i in items if Expression.compile(kw).evaluate(KeywordMatcher.from_item(i))]
        assert kept == [it.nodeid], (kw, kept)


def test_meshbed_run_has_the_check_flag():
    assert dg.run_has_check_flag() is True


# -- the report ------------------------------------------------------------------------------------------

NEW = {"captured": {"moment": "judge", "at": 1795794500.0},
       "attribution": {"rule": "per-envoy evidence", "why": "the Envoys in convergence_s.per_envoy ...",
                       "envoys": ["frontend-1"], "services": ["backend"], "figures": ["convergence_p99"]},
       "rerun": "meshbed run --check DISC-1",
       "envoys": {"frontend-1": {"config_dump": json.dumps({"clusters": [{"cluster": {"name": "backend"}}]}),
                                 "config_dump_cut": "kept 1 of 4 clusters", "clusters": "backend: x=1",
                                 "clusters_cut": "kept 1 of 4 clusters; zero and empty counters left out"}},
       "logs": {"controlplane": "push EDS"},
       "run": {"run_id": "r1", "run_dir": "~/.cache/meshbed/runs/r1",
               "logs": {"envoy-frontend-1": "~/.cache/meshbed/runs/r1/envoy-frontend-1/envoy-frontend-1.log"}},
       "failed_requests": {"requests": [{"evidence": "incomplete_examples", "trace_id": "4bf9", "request_id": "r-1"}],
                           "jaeger": {"query_url": "http://127.0.0.1:1", "trace_url": "http://127.0.0.1:1/trace/{trace_id}",
                                      "api_url": "http://127.0.0.1:1/api/traces/{trace_id}", "note": "live"}}}


def test_report_renders_the_diagnostics_compactly():
    html = render_diagnostics(NEW)
    assert '<code class="cmd">meshbed run --check DISC-1</code>' in html
    assert "<b>frontend-1</b> <span class=\"muted\">(rule: per-envoy evidence" in html
    assert "~/.cache/meshbed/runs/r1</code>" in html and "envoy-frontend-1.log" in html
    assert "when the check was judged, before the test&#x27;s own cleanup" in html
    assert ('<details><summary>Envoy <b>frontend-1</b>: config_dump <span class="muted">(kept 1 of 4 clusters)'
            '</span></summary>') in html
    assert 'href="http://127.0.0.1:1/trace/4bf9"' in html and 'href="http://127.0.0.1:1/api/traces/4bf9"' in html
    assert html.index("re-run") < html.index("<details>")  # the facts first, the bulk folded below


def test_report_still_renders_old_diagnostics():
    html = render_diagnostics({"envoys": {"ingress": {"clusters": "a::b", "config_dump": "{}"}},
                               "logs": {"controlplane": ["x"]}, "controlplane_pushes_tail": [{"v": 1}]})
    assert "<details><summary>Envoy <b>ingress</b>: clusters</summary>" in html
    assert "<details><summary>log tail: <b>controlplane</b></summary>" in html
    assert "controlplane_pushes_tail" in html


def test_schema_accepts_the_diagnostics():
    from meshbed.report import validate
    doc = json.loads((Path(__file__).parent / "data" / "conformance-disc1.json").read_text())
    c = doc["checks"][0]
    c["verdict"], c["reason"], c["diagnostics"] = "fail", "convergence_p99 = 3 s, needs <= 2 s", NEW
    c["figures"][0]["envoys"] = ["frontend-1"]
    doc["summary"].update({"pass": 0, "fail": 1, "verdict": "fail"})
    assert validate(doc) == []
    c["diagnostics"]["attribution"]["rule"] = "guess"
    assert any("rule" in e for e in validate(doc))


# -- the plugin's wiring (plain pytest, stand-in checks, no mesh) ----------------------------------------

STANDINS = """
import pytest

@pytest.mark.check("DISC-1")
def test_judged_fail(check):
    check.figure("convergence_p99", 3.0, "s", 10, "stand-in", envoys=["frontend-1"])
    check.judge()

@pytest.mark.check("DISC-3")
def test_raised(check):
    check.figure("leave_p99", 0.1, "s", 3)
    raise RuntimeError("the harness broke")

@pytest.mark.check("DISC-2")
def test_skipped(check):
    pytest.skip("not here")
"""


def test_plugin_captures_at_the_judge_and_prints_the_rerun(tmp_path):
    (tmp_path / "test_standins.py").write_text(textwrap.dedent(STANDINS))
    results = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_")}
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:locust", str(tmp_path),
                        "--meshbed-results", str(results)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    doc = json.loads(results.read_text())
    by_id = {c["id"]: c for c in doc["checks"]}
    d1, d3 = by_id["DISC-1"]["diagnostics"], by_id["DISC-3"]["diagnostics"]
    assert by_id["DISC-1"]["verdict"] == "fail" and d1["captured"]["moment"] == "judge"
    assert d1["error"] == "no mesh was up: nothing to capture"
    assert d1["rerun"] == f"meshbed run --check DISC-1 -f basic --profile default --suites {tmp_path}"
    assert by_id["DISC-1"]["figures"][0]["envoys"] == ["frontend-1"]
    assert by_id["DISC-3"]["verdict"] == "error" and d3["captured"]["moment"] == "call"
    assert "the harness broke" in d3["captured"]["note"]
    assert by_id["DISC-2"]["verdict"] == "skipped" and by_id["DISC-2"]["diagnostics"] == {}
    assert "meshbed: re-run DISC-1: meshbed run --check DISC-1" in p.stdout, p.stdout[-2000:]
    assert "meshbed: re-run DISC-3: meshbed run --check DISC-3" in p.stdout


def test_endpoints_versus_the_registry():
    hosts = dg.hosts_in(CLUSTERS_TEXT, ["backend"])
    assert hosts == {"127.0.0.1:1": "/failed_outlier_check", "127.0.0.1:2": "healthy"}
    line = dg.versus_registry({"127.0.0.1:1": "backend-0", "127.0.0.1:3": "backend-3"}, hosts)
    assert line == ("missing 127.0.0.1:3 (backend-3); not healthy here 127.0.0.1:1 (/failed_outlier_check); "
                    "not passing in the registry 127.0.0.1:2")
    assert dg.versus_registry({"127.0.0.1:2": "b"}, {"127.0.0.1:2": "healthy"}) == "matches (1 passing endpoints)"
    d = {"envoys": {"frontend-1": {"vs_registry": {"backend": "missing 127.0.0.1:3 (backend-3)"}}}}
    assert "<b>frontend-1</b> backend: missing 127.0.0.1:3 (backend-3)" in render_diagnostics(d)


# -- the real thing: a planted bug fails DISC-1 -----------------------------------------------------------

@pytest.mark.integration
def test_a_planted_bug_fails_disc1_and_the_diagnostics_point_at_it(tmp_path):
    """late-endpoints (Consul health events applied 3 s late) fails DISC-1; its diagnostics name the subscribed
    Envoys, hold their trimmed config of the target service, the run dir and logs, and a re-run that selects
    DISC-1 alone.

    The mutant delays some rounds by up to 3 s and others hardly at all (the delayed handler may apply a
    later state): alone it does not fail DISC-1 every time against 2 s, so the profile asks for 0.5 s, which
    the builtin control plane meets (p99 ~0.05 s) and the mutant does not.
    """
    from meshbed.selftest import template
    out, state, cp = tmp_path / "reports", tmp_path / "state", template("late-endpoints")
    profile = tmp_path / "strict.yaml"
    profile.write_text("extends: default\nchecks:\n  DISC-1: {thresholds: {convergence_p99: '<= 0.5 s'}}\n")
    p = subprocess.run([sys.executable, "-m", "meshbed.cli", "run", "--check", "DISC-1", "--controlplane", cp,
                        "--profile", str(profile), "--out", str(out), "--state-dir", str(state), "--no-redact"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((out / "conformance.json").read_text())
    from meshbed.report import validate
    assert validate(doc) == []
    (c,) = doc["checks"]
    assert (c["id"], c["verdict"]) == ("DISC-1", "fail"), c["reason"]
    d = c["diagnostics"]
    assert d["captured"]["moment"] == "judge"  # inside the test, before its cleanup
    # the Envoys: those whose convergence broke the threshold, all subscribers of the target service
    att = d["attribution"]
    (service,) = att["services"]
    subscribers = {f"{s}-{i['index']}" for s, spec in doc["topology"]["services"].items() if service in spec["calls"]
                   for i in spec["instances"]}
    assert att["rule"] in ("figure", "per-envoy evidence") and att["envoys"]
    assert set(att["envoys"]) <= subscribers, (att, subscribers)
    assert att["figures"] == ["convergence_p99"]
    # each one's config, trimmed to the target service's cluster
    assert set(d["envoys"]) == set(att["envoys"][:dg.MAX_ENVOYS])
    for name, e in d["envoys"].items():
        dump = json.loads(e["config_dump"])
        assert [x["cluster"]["name"] for x in dump["clusters"]] == [service], name
        assert [x["endpoint_config"]["cluster_name"] for x in dump["endpoints"]] == [service]
        assert "left out: bootstrap" in e["config_dump_cut"] and len(e["config_dump"]) < dg.MAX_CONFIG_CHARS
        assert e["clusters"].startswith(f"{service}: ") and "xds_cluster" not in e["clusters"]
        assert service in e["vs_registry"]
    # where to look
    run_dir = Path(d["run"]["run_dir"])
    assert run_dir.parent == state and run_dir.is_dir()
    logs = d["run"]["logs"]
    assert {"controlplane", "consul", *(f"envoy-{n}" for n in d["envoys"])} <= set(logs)
    assert all(Path(v).is_file() and Path(v).is_relative_to(run_dir) for v in logs.values())
    # the re-run: printed, and it selects exactly this check
    assert f"meshbed: re-run DISC-1: {d['rerun']}" in p.stdout
    argv = shlex.split(d["rerun"])
    assert argv[:2] == ["meshbed", "run"] and cp in argv and str(profile) in argv
    q = subprocess.run([sys.executable, "-m", "meshbed.cli", *argv[1:], "--out", str(tmp_path / "rerun"),
                        "--", "--collect-only", "-q"], capture_output=True, text=True, timeout=300)
    collected = [ln.strip() for ln in q.stdout.splitlines() if "::" in ln and not ln.startswith("meshbed")]
    assert collected == [c["nodeid"]], q.stdout[-3000:] + q.stderr[-2000:]
    # the report shows it
    html = (out / "conformance.html").read_text()
    assert "diagnostics at the moment of failure" in html and "re-run" in html and str(run_dir) in html
