"""The topology format, kept in step three ways: meshbed.topology (what the loader accepts), the JSON
Schema shipped beside it (what editors validate with) and docs/topology.md (what people read).

- every field the loader accepts is in the schema, and the schema has no field the loader refuses;
- docs/topology.md's field reference is the table rendered from the schema (regenerate it with
  ``MESHBED_UPDATE_DOCS=1 .venv/bin/pytest tests/test_topology_schema.py``);
- the example topologies validate against the schema, and field-level bad inputs do not.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from meshbed import policy, topology
from meshbed.errors import ConfigError
from meshbed.safeio import load_yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "topology.md"
BEGIN, END = "<!-- fields: generated from src/meshbed/topology.schema.json -->", "<!-- fields: end -->"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"].removeprefix("#/$defs/")
        node = {**schema["$defs"][ref], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        seen: list[str] = []
        for v in node["enum"]:
            if str(v).upper() not in [s.upper() for s in seen]:
                seen.append(str(v))
        return "one of " + ", ".join(f"`{v}`" for v in seen)
    t = node.get("type", "")
    t = "/".join(x for x in t if x != "null") if isinstance(t, list) else t
    if "minimum" in node and "maximum" in node:
        return f"{t} {node['minimum']}..{node['maximum']}"
    return f"{t} >= {node['minimum']}" if "minimum" in node else t


def fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, node) for every field of the schema, depth first: ``services.<name>.instances[].zone``."""
    def walk(prefix: str, node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        node = _resolve(schema, node)
        for name, child in node.get("properties", {}).items():
            child = _resolve(schema, child)
            path = f"{prefix}{name}"
            yield path, child
            if child.get("type") == "array" and "items" in child:
                items = _resolve(schema, child["items"])
                if "properties" in items:
                    yield from walk(f"{path}[].", items)
            elif isinstance(child.get("additionalProperties"), dict) and "properties" in _resolve(
                    schema, child["additionalProperties"]):
                yield from walk(f"{path}.<name>.", child["additionalProperties"])
            elif "properties" in child:
                yield from walk(f"{path}.", child)
    yield from walk("", schema)


def render(schema: dict[str, Any]) -> str:
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for path, node in fields(schema):
        desc = str(node.get("description", "")).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(node)} | {desc} |")
    return "\n".join(rows)


def _names(schema: dict[str, Any], prefix: str) -> set[str]:
    """The field names directly under ``prefix`` ('' for the top level)."""
    out = set()
    for path, _ in fields(schema):
        rest = path[len(prefix):] if path.startswith(prefix) else None
        if rest and not re.search(r"[.\[]", rest):
            out.add(rest)
    return out


def _dc_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return topology.schema()


def test_the_schema_has_every_field_the_loader_accepts(schema) -> None:
    s = "services.<name>."
    pol = s + "policy."
    assert _names(schema, "") == topology.TOP_FIELDS
    assert _names(schema, s) == topology.SERVICE_FIELDS
    assert _names(schema, s + "instances[].") == topology.INSTANCE_FIELDS
    assert _names(schema, s + "instances[].") == _dc_fields(topology.InstanceSpec) - {"service", "index"}
    assert _names(schema, "ingress.") == topology.INGRESS_FIELDS
    assert _names(schema, "ingress.routes[].") == topology.ROUTE_FIELDS == _dc_fields(topology.IngressRoute)
    assert _names(schema, "chaos.") == topology.CHAOS_FIELDS
    assert _names(schema, "mesh.") == topology.MESH_FIELDS == _dc_fields(policy.MeshPolicy)
    assert _names(schema, pol) == _dc_fields(policy.ServicePolicy)
    assert _names(schema, pol + "retries.") == _dc_fields(policy.Retries)
    assert _names(schema, pol + "outlier_detection.") == _dc_fields(policy.OutlierDetection)
    assert _names(schema, pol + "circuit_breaker.") == _dc_fields(policy.CircuitBreaker)
    props = schema["properties"]
    assert props["chaos"]["properties"]["links"]["items"]["enum"] == list(topology.LINKS)
    lb = schema["$defs"]["policy"]["properties"]["lb_policy"]["enum"]
    assert {v.upper() for v in lb} == set(policy.LB_POLICIES)


def test_every_schema_field_has_a_description(schema) -> None:
    assert [p for p, node in fields(schema) if not node.get("description")] == []


def test_docs_field_reference_is_rendered_from_the_schema(schema) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"{DOC} lacks the generated field reference markers"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = f"{head}{BEGIN}\n{render(schema)}\n{END}{tail}"
    if want != text and os.environ.get("MESHBED_UPDATE_DOCS"):
        DOC.write_text(want, encoding="utf-8")
        text = want
    assert text == want, ("docs/topology.md's field reference is not the schema's; regenerate it: "
                          "MESHBED_UPDATE_DOCS=1 .venv/bin/pytest tests/test_topology_schema.py")


def test_the_examples_validate_against_the_schema(schema) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert {p.stem for p in examples} >= {"basic", "chain"}
    for p in examples:
        jsonschema.validate(load_yaml(p, "topology file", 1 << 20), schema)
        topology.load(p)  # and the loader agrees


@pytest.mark.parametrize("doc", [
    {"services": {"a": {"replicas": 0}}},
    {"services": {"a": {"replicas": "2"}}},
    {"services": {"a": {"bogus": 1}}},
    {"services": {"A": {}}},
    {"services": {"ingress": {}}},
    {"services": {}},
    {"services": {"a": {"instances": [{"priority": 9}]}}},
    {"services": {"a": {"policy": {"lb_policy": "FASTEST"}}}},
    {"services": {"a": {"policy": {"retries": {"num_retries": -1}}}}},
    {"services": {"a": {}}, "ingress": {"routes": [{"prefix": "x", "service": "a"}]}},
    {"services": {"a": {}}, "chaos": {"links": ["disk"]}},
    {"services": {"a": {}}, "mesh": {"sampling_percent": 120}},
])
def test_field_level_bad_inputs_fail_both_the_schema_and_the_loader(schema, doc) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    with pytest.raises(ConfigError):
        topology.parse(doc)


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_the_docs_examples_mean_what_the_page_says(schema, tmp_path) -> None:
    """The full example loads and validates; the shadowed-route example fails with the error quoted."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml
    text = DOC.read_text(encoding="utf-8")
    full = _yaml_blocks(text)[0]
    doc = yaml.safe_load(full)
    jsonschema.validate(doc, schema)
    topo = topology.parse(doc, "chain.yaml")
    assert [r.prefix for r in topo.ingress] == ["/store", "/"]
    bad = dict(doc, ingress={"routes": [{"prefix": "/", "service": "web"}, {"prefix": "/c", "service": "store"}]})
    with pytest.raises(ConfigError) as err:
        topology.parse(bad, "chain.yaml")
    assert f"    {err.value}\n" in text


def test_the_schema_is_packaged_beside_the_loader() -> None:
    assert topology.SCHEMA_PATH.parent == Path(topology.__file__).resolve().parent
    assert topology.SCHEMA_PATH.name == "topology.schema.json"
