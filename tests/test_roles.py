"""meshbed.roles: checks find their targets from the topology, and a topology that cannot host a
check skips it with the reason at collection time, before any mesh comes up."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshbed import roles, topology
from meshbed.roles import Edge, Unfit, Upstream

ROOT = Path(__file__).resolve().parents[1]


def _t(doc: dict) -> topology.Topology:
    return topology.parse(doc, "t.yaml")


@pytest.fixture(scope="module")
def basic() -> topology.Topology:
    return topology.load(ROOT / "examples" / "basic.yaml")


@pytest.fixture(scope="module")
def chain() -> topology.Topology:
    return topology.load(ROOT / "examples" / "chain.yaml")


NEEDS = [Upstream(), Upstream(min_instances=2), Upstream(min_instances=3, from_edge=True),
         Upstream(min_instances=2, caller_min_instances=2), Upstream(min_instances=2, links=("upstream",)),
         Upstream(all_serving=False, prefer="versions"), Upstream(all_serving=False, prefer="priorities")]


@pytest.mark.parametrize("need", NEEDS, ids=repr)
def test_on_basic_every_upstream_need_is_backend_called_by_frontend(basic, need):
    t = need.resolve(basic)
    assert (t.service, t.callers, t.edge, t.caller, t.chain) == (
        "backend", ("frontend",), "frontend", "frontend", ("frontend", "backend"))


def test_on_basic_the_edge_is_frontend(basic):
    t = Edge(links=("upstream", "tracing")).resolve(basic)
    assert (t.service, t.caller, t.chain) == ("frontend", "ingress", ("frontend",))


def test_on_chain_upstreams_are_found_by_role(chain):
    assert Upstream(min_instances=3, from_edge=True).resolve(chain).chain == ("web", "api")
    assert Upstream(min_instances=2, caller_min_instances=2).resolve(chain).caller == "web"
    # the version split and the priorities are store's, in the file
    assert Upstream(all_serving=False, prefer="versions").resolve(chain).chain == ("web", "api", "store")
    lb5 = Upstream(all_serving=False, prefer="priorities").resolve(chain)
    assert (lb5.service, lb5.caller) == ("store", "api")
    assert roles.primaries(chain, "store") == (["store-0", "store-1"], ["store-2"])
    # store's priority-1 instance takes no traffic at baseline: not for checks that need all serving
    with pytest.raises(Unfit, match="at one priority"):
        Upstream(min_instances=3, caller_min_instances=3).resolve(chain)


def test_reachable_is_breadth_first_in_call_order():
    t = _t({"services": {"e": {"calls": ["b", "a"]}, "a": {"calls": ["c"]}, "b": {"calls": ["c"]}, "c": {},
                         "island": {}},
            "ingress": {"routes": [{"prefix": "/", "service": "e"}]}})
    assert roles.reachable(t, "e") == [("e",), ("e", "b"), ("e", "a"), ("e", "b", "c")]
    assert Upstream().resolve(t).service == "b"
    assert Upstream(from_edge=True).resolve(t).service == "b"  # the edge's *first* call
    assert roles.unmet([Upstream(min_instances=2)], t).startswith("topology 't' cannot host this check: needs ")


@pytest.mark.parametrize("doc, need, why", [
    ({"services": {"solo": {"replicas": 3}}}, Upstream(), "has none"),
    ({"services": {"a": {"calls": ["b"]}, "b": {}}}, Upstream(min_instances=2), ">= 2 instances"),
    ({"services": {"a": {"calls": ["b"]}, "b": {"replicas": 2}}}, Upstream(min_instances=2, caller_min_instances=2),
     "whose caller has >= 2"),
    ({"services": {"a": {"calls": ["b"]}, "b": {"replicas": 2}}, "chaos": {"links": ["tracing"]}},
     Upstream(links=("upstream",)), "chaos.links upstream"),
    ({"services": {"a": {}}, "chaos": {"links": []}}, Edge(links=("tracing",)), "chaos.links tracing"),
    ({"services": {"a": {"calls": ["b"]}, "b": {}}, "ingress": {"routes": [{"prefix": "/api", "service": "a"}]}},
     Edge(), "routes no service for '/'"),
    ({"services": {"a": {"calls": ["x", "b"]}, "x": {}, "b": {"replicas": 3}}}, Upstream(min_instances=3, from_edge=True),
     "first service the edge service calls"),
])
def test_a_topology_that_cannot_host_a_need_says_why(doc, need, why):
    with pytest.raises(Unfit, match=why.replace("(", r"\(")):
        need.resolve(_t(doc))


def test_prefer_is_checked():
    with pytest.raises(ValueError, match="prefer"):
        Upstream(prefer="zones")


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:locust", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


USER_TESTS = """
import pytest
from meshbed.roles import Upstream

@pytest.mark.needs_topology(Upstream(min_instances=2))
def test_needs_an_upstream(target):
    assert target.service == "b"

def test_needs_nothing():
    pass
"""


def test_collection_skips_what_the_topology_cannot_host(tmp_path):
    """The skip is decided before any fixture: no mesh comes up for a skipped check."""
    (tmp_path / "test_mine.py").write_text(textwrap.dedent(USER_TESTS))
    (tmp_path / "solo.yaml").write_text("services:\n  solo: {replicas: 2}\n")
    r = _pytest(tmp_path, "-rs", "--meshbed-topology", "solo.yaml", "--meshbed-state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout
    assert "topology 'solo' cannot host this check: needs an upstream" in r.stdout
    assert not (tmp_path / "state").exists()  # no mesh was started


def test_the_builtin_suites_skip_every_check_a_topology_cannot_host(tmp_path):
    """A topology with no route for / cannot host any built-in check: every one is reported skipped, with
    the reason, in the results, and no mesh comes up."""
    (tmp_path / "no-root.yaml").write_text(textwrap.dedent("""
        services:
          a: {calls: [b]}
          b: {replicas: 3}
        ingress:
          routes: [{prefix: /api, service: a}]
    """))
    results = tmp_path / "results.json"
    r = _pytest(tmp_path, str(ROOT / "suites"), "--rootdir", str(ROOT), "-q",
                "--meshbed-topology", str(tmp_path / "no-root.yaml"), "--meshbed-state-dir", str(tmp_path / "state"),
                "--meshbed-results", str(results))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(results.read_text())
    checks = doc["checks"] if isinstance(doc["checks"], list) else list(doc["checks"].values())
    assert len(checks) >= 24 and {c["verdict"] for c in checks} == {"skipped"}
    assert all("routes no service for '/'" in c["reason"] for c in checks)
    assert not (tmp_path / "state").exists()


def _suite_files() -> list[Path]:
    return sorted((ROOT / "suites").glob("test_*.py"))


def test_every_builtin_check_declares_its_needs_and_names_no_example_service():
    """A built-in check takes its services from `target`, never from the example topologies' names."""
    import ast
    names = {s for f in ("basic", "chain") for s in topology.load(ROOT / "examples" / f"{f}.yaml").services}
    undeclared, named = [], []
    for f in _suite_files():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        named += [f"{f.name}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names]
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            marks = {ast.unparse(d) for d in fn.decorator_list}
            if any(m.startswith("pytest.mark.check(") for m in marks) and not any(
                    m.startswith(("needs(", "pytest.mark.needs_topology(")) for m in marks):
                undeclared.append(f"{f.name}::{fn.name}")
    assert undeclared == [], "add @pytest.mark.needs_topology(...) (meshbed.roles) to these checks"
    assert named == [], "take the service from the `target` fixture (meshbed.roles), not by name"
