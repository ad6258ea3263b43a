"""Conformance reports: the results JSON (schema meshbed.conformance/v1) and its HTML rendering.

    doc = load_document("reports/conformance.json")   # ConfigError on a missing/foreign/invalid file
    write_html(doc, "reports/conformance.html")        # deterministic for the same document
    problems = validate(doc)                           # [] when the document matches schema.json
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..safeio import MAX_JSON_BYTES, atomic_write, load_json, one_line, show
from .html import key_figures, render_html

SCHEMA_VERSION = "meshbed.conformance/v1"
SCHEMA_PATH = Path(__file__).with_name("schema.json")

__all__ = ["SCHEMA_VERSION", "SCHEMA_PATH", "load_document", "render_html", "write_html", "validate", "schema",
           "key_figures"]


def load_document(path: str | Path) -> dict[str, Any]:
    """A results document, checked against schema.json; one ConfigError line for anything else.

    The file must be a regular file of at most 256 MB, strict JSON (no duplicate
    keys; NaN is allowed, it is how an unmeasured figure is written), carry the
    schema tag, and match the schema: a document with only the tag is refused
    naming the first missing field.
    """
    path = Path(path)
    doc = load_json(path, "results file", MAX_JSON_BYTES, allow_nonfinite=True,
                    missing_hint="`meshbed run` writes reports/conformance.json")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_VERSION:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(one_line(f"{show(path)}: not a meshbed results document "
                                   f"(schema {str(found)[:60]!r}, expected {SCHEMA_VERSION!r})"))
    problems = validate(doc)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ConfigError(one_line(f"{show(path)}: not a valid {SCHEMA_VERSION} document: {problems[0][:200]}{more}"),
                          hint="re-create it with `meshbed run`")
    return doc


def write_html(doc: dict[str, Any], out: str | Path) -> Path:
    """Render and write the page atomically (never a half-written page, never a stray temp file)."""
    return atomic_write(out, render_html(doc), what="HTML report")


def write_json(doc: dict[str, Any], out: str | Path) -> Path:
    return atomic_write(out, json.dumps(doc, indent=1, default=str), what="results JSON")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


# -- a small validator for the subset of JSON Schema 2020-12 that schema.json uses ------------------------------
# ($ref to #/$defs, type, const, enum, required, properties, additionalProperties, items, minimum, pattern)

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_SUPPORTED = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "const", "enum", "required",
              "properties", "additionalProperties", "items", "minimum", "pattern"}


def validate(doc: Any, sch: dict[str, Any] | None = None) -> list[str]:
    """Every place `doc` breaks the schema, as 'path: problem' lines (empty when valid)."""
    root = sch or schema()
    errors: list[str] = []
    _check(doc, root, root, "$", errors)
    return errors


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _check(v: Any, s: dict[str, Any], root: dict[str, Any], where: str, errors: list[str]) -> None:
    unknown = set(s) - _SUPPORTED
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} not supported by meshbed's validator")
    if "$ref" in s:
        _check(v, _resolve(s["$ref"], root), root, where, errors)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            errors.append(f"{where}: expected {' or '.join(types)}, got {type(v).__name__} {json.dumps(v, default=str)[:60]}")
            return
    if "const" in s and v != s["const"]:
        errors.append(f"{where}: must be {s['const']!r}, got {v!r}")
    if "enum" in s and v not in s["enum"]:
        errors.append(f"{where}: {v!r} is not one of {s['enum']}")
    if "minimum" in s and _TYPES["number"](v) and not (isinstance(v, float) and math.isnan(v)) and v < s["minimum"]:
        errors.append(f"{where}: {v} < minimum {s['minimum']}")
    if "pattern" in s and isinstance(v, str) and not re.search(s["pattern"], v):
        errors.append(f"{where}: {v!r} does not match {s['pattern']}")
    if isinstance(v, dict):
        for k in s.get("required", []):
            if k not in v:
                errors.append(f"{where}: missing required {k!r}")
        props = s.get("properties", {})
        for k, x in v.items():
            if k in props:
                _check(x, props[k], root, f"{where}.{k}", errors)
            elif s.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected property {k!r}")
            elif isinstance(s.get("additionalProperties"), dict):
                _check(x, s["additionalProperties"], root, f"{where}.{k}", errors)
    if isinstance(v, list) and isinstance(s.get("items"), dict):
        for i, x in enumerate(v):
            _check(x, s["items"], root, f"{where}[{i}]", errors)
