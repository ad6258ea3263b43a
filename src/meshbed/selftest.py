"""`meshbed selftest`: prove the suite can fail, by running it against planted bugs.

Each mutant of the reference control plane (``meshbed.controlplane.mutants``)
runs, through the same external-control-plane mechanism a user's control
plane would, against the checks that target it (``--full``: the whole
catalog). A mutant is *killed* when a target check says ``fail``; killed as
``error`` only means the suite noticed something without measuring it; a
mutant that *survives* is a blind spot of the suite. The unmodified
reference control plane, run the same way, is the control: it must pass
everything it runs.
"""

from __future__ import annotations

import html
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from .controlplane.mutants import MUTANTS
from .errors import ConfigError
from .safeio import atomic_write

SCHEMA = "meshbed.selftest/v1"
CONTROL = "control"
# the tier CI runs: one mutant per kind of evidence (Consul outage, route policy), and the quick tier as control
CI_MUTANTS = ("empty-on-consul-error", "ignore-timeout")


def template(mutant: str | None) -> str:
    """The command template that runs the reference control plane (with ``mutant`` planted)."""
    planted = f" --mutant {mutant}" if mutant else ""
    return (f"{sys.executable} -m meshbed.controlplane{planted} --xds {{xds_host}}:{{xds_port}} "
            f"--http {{xds_host}}:{{http_port}} --consul {{consul_url}}")


def keyword(check_ids: Sequence[str]) -> str:
    """A pytest -k expression selecting exactly these catalog checks (test_disc1_..., test_lb3_...)."""
    return " or ".join(f"test_{c.lower().replace('-', '')}_" for c in check_ids)


@dataclass
class Variant:
    name: str
    description: str
    targets: tuple[str, ...]
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)  # check -> {verdict, reason}
    exit_code: int | None = None
    duration_s: float = 0.0
    out_dir: str = ""

    @property
    def outcome(self) -> str:
        """control: pass | broken; mutant: killed | killed-as-error | survived | not-run."""
        got = [self.verdicts.get(t, {}).get("verdict") for t in self.targets]
        if self.name == CONTROL:
            return "pass" if self.verdicts and all(v["verdict"] in ("pass", "skipped")
                                                   for v in self.verdicts.values()) else "broken"
        if "fail" in got:
            return "killed"
        if "error" in got:
            return "killed-as-error"
        return "survived" if any(g is not None for g in got) else "not-run"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "targets": list(self.targets),
                "outcome": self.outcome, "verdicts": self.verdicts, "exit_code": self.exit_code,
                "duration_s": round(self.duration_s, 1), "out_dir": self.out_dir}


def _verdicts(results: Path) -> dict[str, dict[str, str]]:
    if not results.is_file():
        return {}
    doc = json.loads(results.read_text())
    return {c["id"]: {"verdict": c["verdict"], "reason": str(c.get("reason", ""))[:300]} for c in doc.get("checks", [])}


def _run_variant(v: Variant, checks: Sequence[str] | None, markers: str | None, base: dict[str, Any],
                 out: Path, stream: TextIO, control_cp: str | None = None) -> None:
    from .run import RunOptions, run
    vdir = out / v.name
    vdir.mkdir(parents=True, exist_ok=True)
    cp = (control_cp or template(None)) if v.name == CONTROL else template(v.name)
    opts = RunOptions(controlplane=cp, out_dir=str(vdir),
                      keyword=keyword(checks) if checks else None, markers=markers,
                      log=str(vdir / "pytest.log"), **base)
    t0 = time.monotonic()
    with open(vdir / "summary.txt", "w") as summary:
        v.exit_code = run(opts, stream=summary)
    v.duration_s = time.monotonic() - t0
    v.out_dir = str(vdir)
    v.verdicts = _verdicts(vdir / "conformance.json")


def run_selftest(mutants: Sequence[str], out: Path, *, full: bool = False, control_markers: str | None = None,
                 control: bool = True, control_cp: str | None = None, base: dict[str, Any] | None = None,
                 stream: TextIO | None = None) -> int:
    """Run the control and every mutant; write selftest.json/.html; 0 when all are killed and the control passes."""
    stream = stream or sys.stdout
    unknown = [m for m in mutants if m not in MUTANTS]
    if unknown:
        raise ConfigError(f"selftest: {unknown[0]!r} is not a mutant; known: {', '.join(MUTANTS)}")
    out.mkdir(parents=True, exist_ok=True)
    base = base or {}
    variants = [Variant(m, MUTANTS[m].description, MUTANTS[m].targets) for m in mutants]
    if control:
        variants.append(Variant(CONTROL, f"{control_cp or 'the reference control plane'}, unmodified", ()))
    for i, v in enumerate(variants, 1):
        checks = None if (v.name == CONTROL or full) else v.targets
        what = (f"-m {control_markers}" if control_markers else "the whole catalog") if checks is None \
            else ", ".join(checks)
        print(f"selftest [{i}/{len(variants)}] {v.name}: {what} ...", file=stream, flush=True)
        _run_variant(v, checks, control_markers if v.name == CONTROL else None, base, out, stream, control_cp)
        print(f"selftest [{i}/{len(variants)}] {v.name}: {v.outcome} in {v.duration_s:.0f} s "
              f"({', '.join(c + ' ' + r['verdict'] for c, r in sorted(v.verdicts.items())) or 'no verdicts'})",
              file=stream, flush=True)
    doc = {"schema": SCHEMA, "created": time.time(), "variants": [v.to_json() for v in variants],
           "summary": summarize(variants)}
    atomic_write(out / "selftest.json", json.dumps(doc, indent=1), what="selftest JSON")
    atomic_write(out / "selftest.html", render_html(doc), what="selftest HTML")
    s = doc["summary"]
    print(f"selftest: control {s['control']}; {s['killed']} of {s['mutants']} mutants killed by fail, "
          f"{s['killed_as_error']} by error, {s['survived']} survived -> {out / 'selftest.html'}", file=stream)
    ok = s["control"] in ("pass", "not-run") and s["killed"] == s["mutants"]
    return 0 if ok else 1


def summarize(variants: Sequence[Variant]) -> dict[str, Any]:
    muts = [v for v in variants if v.name != CONTROL]
    ctl = next((v for v in variants if v.name == CONTROL), None)
    return {"control": ctl.outcome if ctl else "not-run", "mutants": len(muts),
            "killed": sum(v.outcome == "killed" for v in muts),
            "killed_as_error": sum(v.outcome == "killed-as-error" for v in muts),
            "survived": sum(v.outcome == "survived" for v in muts),
            "survivors": [v.name for v in muts if v.outcome == "survived"],
            "not_run": sum(v.outcome == "not-run" for v in muts)}


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.pass,.killed{background:#d9f2d9}.fail{background:#f8d7d7}.error,.killed-as-error{background:#fde8c8}
.survived,.broken{background:#f4a6a6;font-weight:bold}.target{outline:2px solid #333}.skipped{background:#eee}"""


def render_html(doc: dict[str, Any]) -> str:
    """The kill matrix: one row per variant, one column per check that ran; targets outlined."""
    variants = doc["variants"]
    checks = sorted({c for v in variants for c in v["verdicts"]}, key=lambda c: (c.split("-")[0], int(c.split("-")[1])))
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in checks)
    rows = []
    for v in variants:
        cells = []
        for c in checks:
            r = v["verdicts"].get(c)
            if r is None:
                cells.append("<td></td>")
                continue
            cls = r["verdict"] + (" target" if c in v["targets"] else "")
            cells.append(f'<td class="{e(cls)}" title="{e(r["reason"])}">{e(r["verdict"])}</td>')
        rows.append(f'<tr><th>{e(v["name"])}</th><td>{e(v["description"])}</td>'
                    f'<td class="{e(v["outcome"])}">{e(v["outcome"])}</td>{"".join(cells)}</tr>')
    s = doc["summary"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>meshbed selftest</title><style>{_CSS}"
            f"</style></head><body><h1>meshbed selftest: kill matrix</h1>"
            f"<p>control: <b>{e(str(s['control']))}</b>; {s['killed']} of {s['mutants']} mutants killed by a "
            f"<code>fail</code>, {s['killed_as_error']} only by an <code>error</code>, {s['survived']} survived. "
            f"Outlined cells are the checks each mutant targets; hover a cell for the check's reason.</p>"
            f"<table><tr><th>variant</th><th>planted bug</th><th>outcome</th>{head}</tr>{''.join(rows)}</table>"
            f"</body></html>")
