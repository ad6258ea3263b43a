from pathlib import Path

import pytest

from meshbed import topology
from meshbed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_basic_example_loads():
    t = topology.load(ROOT / "examples" / "basic.yaml")
    assert [i.id for i in t.instances()] == ["frontend-0", "frontend-1", "backend-0", "backend-1", "backend-2"]
    assert t.callers_of("backend") == ["frontend"]
    assert t.callers_of("frontend") == ["ingress"]
    assert t.ingress[0].service == "frontend"
    assert t.services["backend"].policy.lb_policy == "ROUND_ROBIN"


@pytest.mark.parametrize("doc, field", [
    ({"services": {"a": {"replicas": "two"}}}, "services.a.replicas"),
    ({"services": {"a": {"replicas": 0}}}, "services.a.replicas"),
    ({"services": {"a": {"calls": ["b"]}}}, "services.a.calls[0]"),
    ({"services": {"a": {"calls": ["a"]}}}, "services.a.calls[0]"),
    ({"services": {"a": {"calls": ["b"]}, "b": {"calls": ["a"]}}}, "calls"),
    ({"services": {"a": {"policy": {"lb_policy": "FASTEST"}}}}, "services.a.policy.lb_policy"),
    ({"services": {"a": {"policy": {"weights": {"v9": 10}}}}}, "services.a.policy.weights"),
    ({"services": {"A!": {}}}, "services.A!"),
    ({"services": {"a": {"colour": 1}}}, "services.a.colour"),
    ({"services": {}}, "services"),
    ({"services": {"a": {}}, "ingress": {"routes": [{"prefix": "x", "service": "a"}]}}, "ingress.routes[0].prefix"),
    ({"services": {"a": {}}, "ingress": {"routes": [{"service": "zz"}]}}, "ingress.routes[0].service"),
    ({"services": {"a": {}}, "chaos": {"links": ["wormhole"]}}, "chaos.links[0]"),
    ({"services": {"a": {}}, "mesh": {"sampling_percent": 120}}, "sampling_percent"),
    ({"services": {"a": {"replicas": 2, "instances": [{}]}}}, "services.a.instances"),
    (None, "(top)"),
])
def test_bad_documents_name_the_field(doc, field):
    with pytest.raises(ConfigError) as ei:
        topology.parse(doc, "t.yaml")
    msg = str(ei.value)
    assert msg.startswith("t.yaml: ")
    assert field in msg
    assert "\n" not in msg


def test_weights_and_versions():
    t = topology.parse({"services": {"b": {"replicas": 3, "instances": [{"version": "v1"}, {"version": "v1"}, {"version": "v2"}],
                                           "policy": {"weights": {"v1": 90, "v2": 10}}}}})
    assert [i.version for i in t.services["b"].instances] == ["v1", "v1", "v2"]
    assert t.services["b"].policy.weights == {"v1": 90, "v2": 10}


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        topology.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [a\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        topology.load(bad)


@pytest.mark.parametrize("routes, bad", [
    (["/", "/c"], 1),  # '/' swallows every /c request
    (["/api", "/api/v2"], 1),  # a plain string prefix: /api takes /api/v2 too
    (["/c", "/a", "/", "/a/b"], 3),
    (["/a", "/ab"], 1),  # Envoy's prefix match is not per path segment
])
def test_a_route_an_earlier_prefix_swallows_is_an_error(routes, bad):
    doc = {"services": {"a": {}, "b": {}},
           "ingress": {"routes": [{"prefix": r, "service": "a" if i % 2 else "b"} for i, r in enumerate(routes)]}}
    with pytest.raises(ConfigError) as ei:
        topology.parse(doc, "t.yaml")
    msg = str(ei.value)
    assert f"ingress.routes[{bad}].prefix" in msg and "can never match" in msg and "longer prefix first" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("routes", [["/c", "/"], ["/api/v2", "/api", "/"], ["/a", "/b"], ["/ab", "/a"]])
def test_longer_prefixes_first_are_fine(routes):
    doc = {"services": {"a": {}}, "ingress": {"routes": [{"prefix": r, "service": "a"} for r in routes]}}
    assert [r.prefix for r in topology.parse(doc).ingress] == routes


def test_chain_example_loads():
    t = topology.load(ROOT / "examples" / "chain.yaml")
    assert list(t.services) == ["web", "api", "store"]
    assert t.callers_of("store") == ["api"] and t.callers_of("web") == ["ingress"]
    store = t.services["store"].instances
    assert {i.version for i in store} == {"v1", "v2"} and {i.priority for i in store} == {0, 1}
