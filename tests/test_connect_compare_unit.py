"""The comparison's headline figures, and a comparison built from runs already made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshbed import compare
from meshbed.errors import ConfigError


def _doc(cid: str, verdict: str, fig: str, value: float | None) -> dict:
    return {"summary": {"pass": 1}, "checks": [{"id": cid, "title": "t", "verdict": verdict, "reason": "",
                                                "figures": [{"name": fig, "value": value, "unit": "s", "n": 3}]}]}


def test_headlines_name_each_control_planes_value(tmp_path: Path) -> None:
    for name, v in (("builtin", 0.4), ("consul-connect", 3.8)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "conformance.json").write_text(json.dumps(_doc("DISC-9", "pass", "recovery_p99", v)))
    doc = compare.from_dirs([("builtin", tmp_path / "builtin"), ("consul-connect", tmp_path / "consul-connect")],
                            tmp_path / "out")
    (h,) = [h for h in doc["headlines"] if h["check"] == "DISC-9"]
    assert h["per_controlplane"]["consul-connect"] == {"value": 3.8, "unit": "s", "verdict": "pass"}
    assert all(x["per_controlplane"]["builtin"] is None for x in doc["headlines"] if x["check"] == "TRACE-1")
    html = (tmp_path / "out" / "comparison.html").read_text()
    assert "headline figures" in html and "3.8 s" in html


def test_a_missing_run_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        compare.from_dirs([("go", tmp_path / "nope")], tmp_path)
