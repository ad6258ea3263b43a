"""`meshbed run --controlplane a,b,...`: the same catalog once per control plane, one comparison report.

Each control plane gets its own ordinary run (its own mesh, report and JSON
under ``<out>/<name>/``); the comparison reads those JSONs and writes
``comparison.json`` (schema ``meshbed.comparison/v1``) and ``comparison.html``:
a check x control plane matrix of verdicts with each one's headline figure,
rows where the verdicts differ highlighted, and per control plane its
version, CPU seconds and peak RSS over the run.
"""

from __future__ import annotations

import html
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO

from .safeio import atomic_write

SCHEMA = "meshbed.comparison/v1"


def split_names(value: str) -> list[str]:
    """``builtin,go`` -> two control planes; from the first command template on (spaces or braces), the rest is one."""
    out: list[str] = []
    parts = value.split(",")
    for i, part in enumerate(parts):
        if "{" in part or " " in part.strip():
            out.append(",".join(parts[i:]).strip())
            break
        if part.strip():
            out.append(part.strip())
    return out


def slug(name: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_.-]+", "-", name))[:40].strip("-") or "cp"


def _figures(check: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: {"value": f.get("value"), "unit": f.get("unit", ""), "n": f.get("n")}
            for f in check.get("figures") or []}


def build(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparison document from each control plane's results document."""
    order: list[str] = []
    titles: dict[str, str] = {}
    for doc in docs.values():
        for c in doc.get("checks") or []:
            if c["id"] not in titles:
                order.append(c["id"])
                titles[c["id"]] = c.get("title", "")
    checks = []
    for cid in order:
        per = {}
        for name, doc in docs.items():
            c = next((x for x in doc.get("checks") or [] if x["id"] == cid), None)
            per[name] = None if c is None else {"verdict": c["verdict"], "reason": c.get("reason", ""),
                                                "figures": _figures(c)}
        verdicts = {v["verdict"] for v in per.values() if v is not None}
        checks.append({"id": cid, "title": titles[cid], "per_controlplane": per, "differs": len(verdicts) > 1})
    cps = []
    for name, doc in docs.items():
        env = doc.get("environment") or {}
        comp = (env.get("components") or {}).get("controlplane") or {}
        cps.append({"name": name, "version": comp.get("version"), "summary": doc.get("summary", {}),
                    "usage": env.get("controlplane_usage"), "duration_s": doc.get("duration_s")})
    return {"schema": SCHEMA, "generated_at": time.time(), "controlplanes": cps, "checks": checks,
            "headlines": headlines(docs)}


# the figures a comparison leads with: convergence, spread, trace completeness, NACK recovery
HEADLINES = (("DISC-1", "convergence_p50"), ("DISC-1", "convergence_p99"), ("DISC-2", "convergence_p99"),
             ("LB-1", "max_share_dev"), ("TRACE-1", "completeness"), ("DISC-9", "recovery_p99"))


def headlines(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per headline figure, each control plane's value and verdict (None where the check did not measure it)."""
    out = []
    for cid, fig in HEADLINES:
        per: dict[str, Any] = {}
        for name, doc in docs.items():
            c = next((x for x in doc.get("checks") or [] if x["id"] == cid), None)
            f = _figures(c).get(fig) if c else None
            per[name] = None if c is None else {"value": None if f is None else f["value"],
                                                 "unit": "" if f is None else f["unit"], "verdict": c["verdict"]}
        out.append({"check": cid, "figure": fig, "per_controlplane": per})
    return out


def _fmt(f: dict[str, Any] | None) -> str:
    if not f or f.get("value") is None:
        return "n/a"
    v = float(f["value"])
    return f"{v:.3g}{(' ' + f['unit']) if f.get('unit') else ''}"


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.num{text-align:right}
.pass{background:#d9f2d9}.fail{background:#f8d7d7}.error{background:#fde8c8}.skipped{background:#eee}
tr.differs th{background:#fff3b0}.fig{color:#555;font-size:12px}"""


def render_html(doc: dict[str, Any]) -> str:
    e = html.escape
    names = [c["name"] for c in doc["controlplanes"]]
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    cp_rows = "".join(
        f"<tr><th>{e(c['name'])}</th><td>{e(str(c.get('version') or ''))}</td>"
        f"<td class='num'>{c['summary'].get('pass', 0)}/{sum(c['summary'].get(k, 0) for k in ('pass', 'fail', 'error', 'skipped'))}</td>"
        f"<td class='num'>{e(str((c.get('usage') or {}).get('cpu_s', 'n/a')))}</td>"
        f"<td class='num'>{e(str((c.get('usage') or {}).get('peak_rss_mb', 'n/a')))}</td>"
        f"<td class='num'>{e(str(c.get('duration_s', '')))}</td></tr>" for c in doc["controlplanes"])
    rows = []
    for c in doc["checks"]:
        cells = []
        figs = sorted({f for v in c["per_controlplane"].values() if v for f in v["figures"]})[:3]
        for n in names:
            v = c["per_controlplane"].get(n)
            if v is None:
                cells.append("<td>not run</td>")
                continue
            shown = "<br>".join(f"{e(f)} {e(_fmt(v['figures'].get(f)))}" for f in figs)
            cells.append(f"<td class='{e(v['verdict'])}' title='{e(v['reason'])}'>{e(v['verdict'])}"
                         f"<div class='fig'>{shown}</div></td>")
        rows.append(f"<tr class='{'differs' if c['differs'] else ''}'><th>{e(c['id'])}</th><td>{e(c['title'])}</td>"
                    f"{''.join(cells)}</tr>")
    heads = "".join(
        f"<tr><th>{e(h['check'])} {e(h['figure'])}</th>"
        + "".join(f"<td class='{e((h['per_controlplane'].get(n) or {}).get('verdict', ''))}'>"
                  f"{e(_fmt(h['per_controlplane'].get(n)))}</td>" for n in names) + "</tr>"
        for h in doc.get("headlines") or [])
    differ = sum(1 for c in doc["checks"] if c["differs"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>meshbed comparison</title><style>{_CSS}"
            f"</style></head><body><h1>meshbed: control planes side by side</h1>"
            f"<table><tr><th>control plane</th><th>version</th><th>passed</th><th>CPU s</th><th>peak RSS MB</th>"
            f"<th>run s</th></tr>{cp_rows}</table>"
            f"<h2>headline figures</h2><table id='headlines'><tr><th>figure</th>{head}</tr>{heads}</table>"
            f"<p>{differ} of {len(doc['checks'])} checks differ in verdict (highlighted). Hover a verdict for its reason.</p>"
            f"<table id='matrix'><tr><th>check</th><th>title</th>{head}</tr>{''.join(rows)}</table></body></html>")


def compare(names: Sequence[str], opts: Any, stream: TextIO | None = None) -> int:
    """Run the catalog once per control plane (``opts``: RunOptions), then write the comparison."""
    import dataclasses

    from .run import run
    stream = stream or sys.stdout
    out = Path(opts.out_dir or "reports")
    docs: dict[str, dict[str, Any]] = {}
    codes = []
    for i, name in enumerate(names, 1):
        sub = out / slug(name)
        print(f"meshbed compare [{i}/{len(names)}] {name} -> {sub}", file=stream, flush=True)
        codes.append(run(dataclasses.replace(opts, controlplane=name, out_dir=str(sub)), stream))
        if codes[-1] == 130:  # interrupted: no more control planes, no half comparison
            print("meshbed compare: interrupted", file=stream, flush=True)
            return 130
        results = sub / "conformance.json"
        if results.is_file():
            docs[name] = json.loads(results.read_text())
    doc = build(docs)
    atomic_write(out / "comparison.json", json.dumps(doc, indent=1), what="comparison JSON")
    atomic_write(out / "comparison.html", render_html(doc), what="comparison HTML")
    print(f"meshbed compare: {out / 'comparison.html'}", file=stream, flush=True)
    return max(codes) if codes else 1


def from_dirs(runs: Sequence[tuple[str, Path]], out: Path) -> dict[str, Any]:
    """The comparison of runs already made (``name -> report directory``), written to ``out``."""
    docs = {}
    for name, d in runs:
        f = Path(d) / "conformance.json"
        if not f.is_file():
            from .errors import ConfigError
            raise ConfigError(f"compare: {f} does not exist", hint="give the --out directory of a finished meshbed run")
        docs[name] = json.loads(f.read_text())
    doc = build(docs)
    atomic_write(out / "comparison.json", json.dumps(doc, indent=1), what="comparison JSON")
    atomic_write(out / "comparison.html", render_html(doc), what="comparison HTML")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meshbed.compare --out DIR name=REPORT_DIR ...``: compare runs already made."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m meshbed.compare", description=main.__doc__)
    ap.add_argument("--out", default="reports", help="where comparison.json/.html go")
    ap.add_argument("runs", nargs="+", metavar="NAME=DIR", help="a control plane's name and its run's report directory")
    a = ap.parse_args(argv)
    pairs = []
    for r in a.runs:
        name, sep, d = r.partition("=")
        if not sep:
            ap.error(f"expected NAME=DIR, got {r!r}")
        pairs.append((name, Path(d)))
    doc = from_dirs(pairs, Path(a.out))
    for h in doc["headlines"]:
        print(f"{h['check']:8} {h['figure']:18} " + "  ".join(
            f"{n}: {_fmt(v)} ({(v or {}).get('verdict', 'not run')})" for n, v in h["per_controlplane"].items()))
    print(f"meshbed compare: {Path(a.out) / 'comparison.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
