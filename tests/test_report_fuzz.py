"""`meshbed report` on schema-valid but odd documents: always a page (or one line), never a crash.

The schema leaves parts free-form (topology, profile, evidence, run) and lets
figures be null; a document can have no checks, unknown check ids, NaN and
huge numbers, unicode and markup in every string. A seeded fuzzer mutates a
real results document within the schema and renders each valid mutant.
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest

from meshbed import cli
from meshbed.report import render_html, validate
from meshbed.run import summary_table

ROOT = Path(__file__).resolve().parents[1]
SEED_DOC = ROOT / "tests" / "data" / "conformance-disc1.json"
ODD = [None, [], {}, "", "x", 0, -1, 1e308, -1e308, math.nan, math.inf, True, [None], {"a": None}, [1, "a", None],
       "ünïcødé ✓ <script>alert(1)</script> \u202e", [[1, 2], [3]], {"": 1}, [{}], [[None, None]], 10 ** 30]


class Mutator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def free(self, v, depth: int = 0):
        """A random change inside a free-form value: any type anywhere."""
        rng = self.rng
        if depth > 6 or rng.random() < 0.25:
            return copy.deepcopy(rng.choice(ODD))
        if isinstance(v, dict):
            return {k: (self.free(x, depth + 1) if rng.random() < 0.5 else x) for k, x in v.items()
                    if rng.random() > 0.15}
        if isinstance(v, list):
            return [] if rng.random() < 0.2 else [self.free(x, depth + 1) if rng.random() < 0.4 else x for x in v]
        return v

    def check(self, c: dict) -> dict:
        rng, c = self.rng, copy.deepcopy(c)
        for op in rng.sample(range(10), rng.randint(1, 5)):
            if op == 0:
                c["evidence"] = self.free(c.get("evidence", {}))
            elif op == 1:
                c["figures"] = []
            elif op == 2:
                for f in c["figures"]:
                    f["value"] = rng.choice([None, math.nan, math.inf, -math.inf, 0, -5, 1e308, 1e-300])
                    f["unit"] = rng.choice(["", "ü", "%", "weird unit", "ms", "s"])
                    for k in ("source", "min_n", "bad_count", "envoys"):
                        if rng.random() < 0.5:
                            f.pop(k, None)
            elif op == 3:
                c["thresholds"] = []
            elif op == 4:
                for t in c["thresholds"]:
                    t["value"] = rng.choice([math.nan, math.inf, 0, -1e308])
                    t["figure"] = rng.choice(["nope", "", "ü"])
            elif op == 5:
                c["title"] = rng.choice(["", "ü<b>x</b>&amp;", "\n\n", "x" * 5000])
                c["reason"] = rng.choice(["", "line1\nline2", "<script>", "ü" * 3000])
            elif op == 6:
                c["diagnostics"] = {} if rng.random() < 0.5 else self.free(c.get("diagnostics") or {})
            elif op == 7:
                c["id"] = rng.choice(["ZZ-1", "DISC-99", "A-0"])
            elif op == 8:
                c["verdict"] = rng.choice(["pass", "fail", "error", "skipped"])
                c["group"] = rng.choice(["discovery", "lb", "tracing", "resilience"])
            elif op == 9:
                c["duration_s"] = rng.choice([0, 1e308])
                c["started_at"] = rng.choice([0, -1e10, 1e308, math.nan])
        return c

    def document(self, doc: dict) -> dict:
        rng, d = self.rng, copy.deepcopy(doc)
        for op in rng.sample(range(9), rng.randint(1, 4)):
            if op == 0:
                d["checks"] = []
            elif op == 1:
                d["checks"] = [self.check(c) for c in d["checks"]] * rng.choice([1, 2])
            elif op == 2:
                d["topology"] = self.free(d["topology"])
            elif op == 3:
                d["profile"] = self.free(d["profile"]) if rng.random() < 0.5 else {}
            elif op == 4:
                d["phases"] = rng.choice([{}, {"ü": 0.0, "x" * 300: 1e308}])
            elif op == 5:
                d["environment"] = {"machine": {"platform": "ü", "python": "", "cpus": 0}}
            elif op == 6:
                if rng.random() < 0.5:
                    d.pop("run", None)
                else:
                    d["run"] = self.free(d.get("run", {}))
            elif op == 7:
                d["summary"] = {"pass": 0, "fail": 0, "error": 0, "skipped": 0, "total": 0,
                                "verdict": rng.choice(["pass", "fail", "none"]), "not_run": rng.choice([[], ["ZZ-9", "ü"]])}
            elif op == 8:
                d["duration_s"] = rng.choice([0, 1e308])
                d["started_at"] = rng.choice([0, math.nan, -1e9])
        return d


def test_fuzzed_documents_always_render():
    seed_doc = json.loads(SEED_DOC.read_text())
    m = Mutator(14)
    rendered = 0
    for _ in range(250):
        doc = m.document(seed_doc)
        if validate(doc):
            continue  # only schema-valid documents reach the renderer (load_document refuses the others)
        page = render_html(doc)
        assert page.rstrip().endswith("</html>")
        summary_table(doc)
        rendered += 1
    assert rendered >= 150


def test_the_seed_document_renders_every_part():
    page = render_html(json.loads(SEED_DOC.read_text()))
    assert 'class="unreadable"' not in page


ODD_DOCS = {
    "no-checks": lambda d: d.update(checks=[], summary={**d["summary"], "total": 0, "verdict": "none"}),
    "null-figures": lambda d: [f.update(value=None) for c in d["checks"] for f in c["figures"]],
    "unicode": lambda d: [c.update(title="検査 ✓ <b>", reason="ü\n\u202e") for c in d["checks"]],
    "numbers-where-mappings-are": lambda d: d.update(topology={"services": 3, "ingress": 1.5},
                                                     profile={"checks": {"DISC-1": 7}}),
    "no-optional-fields": lambda d: [d.pop(k, None) for k in ("run",)] + [c.update(evidence={}, diagnostics={})
                                                                        for c in d["checks"]],
}


@pytest.mark.parametrize("name", sorted(ODD_DOCS))
def test_meshbed_report_on_odd_documents_writes_a_page(tmp_path, capsys, name):
    doc = json.loads(SEED_DOC.read_text())
    ODD_DOCS[name](doc)
    assert validate(doc) == []
    src = tmp_path / "odd.json"
    src.write_text(json.dumps(doc))
    assert cli.main(["report", str(src)]) == 0
    assert (tmp_path / "odd.html").read_text().rstrip().endswith("</html>")
    assert "meshbed report:" in capsys.readouterr().out
