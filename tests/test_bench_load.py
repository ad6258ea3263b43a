"""`meshbed bench load-overhead`'s result as the report's environment entry (pure logic; the bench itself
runs a mesh and is run by hand: docs/load.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshbed.bench_load import RESULT_NAME, environment_entry, write


def _doc(**kw: object) -> dict[str, object]:
    doc = {"benchmark": "load-overhead", "unit": "%", "median_overhead_pct": 2.5, "overhead_pct_min": -1.0,
           "overhead_pct_max": 6.0, "median_rps_bare": 250.0,
           "median_rps_polled": 243.8, "pairs": [{}, {}, {}], "goal_pct": 5.0, "measured_at": "2026-12-02T17:00:00Z",
           "command": "meshbed bench load-overhead -n 3 --window 20 --users 10"}
    doc.update(kw)
    return doc


def test_entry_from_a_bench_result(tmp_path: Path) -> None:
    out = write(_doc(), tmp_path / RESULT_NAME)
    e = environment_entry(out)
    assert e == {"polling_overhead_pct": 2.5, "pairs": 3, "overhead_pct_range": [-1.0, 6.0], "rps_bare": 250.0, "rps_polled": 243.8, "goal_pct": 5.0,
                 "measured_at": "2026-12-02T17:00:00Z", "command": "meshbed bench load-overhead -n 3 --window 20 --users 10"}


@pytest.mark.parametrize("content", ["", "{", json.dumps([1]), json.dumps(_doc(benchmark="startup")),
                                     json.dumps(_doc(median_overhead_pct="2.5"))])
def test_no_entry_from_anything_else(tmp_path: Path, content: str) -> None:
    (tmp_path / RESULT_NAME).write_text(content)
    assert environment_entry(tmp_path / RESULT_NAME) is None
    assert environment_entry(tmp_path / "missing.json") is None


def test_environment_load_fits_the_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "src" / "meshbed" / "report" / "schema.json").read_text())
    env_schema = {**schema["$defs"]["environment"], "$defs": schema["$defs"]}
    base = {"machine": {"platform": "linux", "python": "3.11", "cpus": 2}}
    write(_doc(), tmp_path / RESULT_NAME)
    for load in ({"workers": 2, "locust": "master + 2 workers", **(environment_entry(tmp_path / RESULT_NAME) or {})},
                 {"workers": 0, "locust": "one process", "polling_overhead_pct": None,
                  "hint": "not measured: meshbed bench load-overhead"}):
        jsonschema.validate({**base, "load": load}, env_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "load": {"workers": -1}}, env_schema)


def test_plugin_puts_it_in_the_environment(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from meshbed.plugin import _describe_load
    from meshbed.settings import Settings
    collector = SimpleNamespace(environment={})
    _describe_load(collector, Settings(load_workers=2), tmp_path)
    assert collector.environment["load"] == {"workers": 2, "locust": "master + 2 workers",
                                             "polling_overhead_pct": None,
                                             "hint": "not measured: meshbed bench load-overhead"}
    write(_doc(), tmp_path / RESULT_NAME)  # a bench result beside the results JSON
    _describe_load(collector, Settings(), tmp_path)
    assert collector.environment["load"]["workers"] == 0 and collector.environment["load"]["polling_overhead_pct"] == 2.5
