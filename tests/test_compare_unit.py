"""The comparison report, offline: the matrix, the differences, per-control-plane usage."""

from __future__ import annotations

import json
from pathlib import Path

from meshbed.compare import build, render_html, slug, split_names

REAL = Path(__file__).parent / "data" / "conformance-rich.json"


def test_names_split_but_templates_stay_whole():
    assert split_names("builtin,go") == ["builtin", "go"]
    assert split_names("go") == ["go"]
    t = "my-cp --ads {xds_host}:{xds_port},x"
    assert split_names(t) == [t]
    assert split_names("builtin,go:delta," + t) == ["builtin", "go:delta", t]
    assert slug("my-cp --ads {xds_host}") == "my-cp-ads-xds_host"


def test_matrix_marks_differences_and_keeps_figures():
    a = json.loads(REAL.read_text())
    b = json.loads(REAL.read_text())
    b["checks"][0]["verdict"] = "fail" if a["checks"][0]["verdict"] != "fail" else "pass"
    a.setdefault("environment", {})["controlplane_usage"] = {"cpu_s": 12.5, "peak_rss_mb": 80.0}
    doc = build({"builtin": a, "go": b})
    assert [c["name"] for c in doc["controlplanes"]] == ["builtin", "go"]
    first = doc["checks"][0]
    assert first["differs"] and set(first["per_controlplane"]) == {"builtin", "go"}
    assert sum(c["differs"] for c in doc["checks"]) == 1
    page = render_html(doc)
    assert "1 of" in page and "class='differs'" in page and "12.5" in page
