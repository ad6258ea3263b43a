"""The conformance report: one self-contained HTML page rendered from the results JSON.

Inline CSS, inline SVG charts and a few lines of inline JavaScript (sorting and
filtering the checks table); nothing is fetched. The output is a pure function
of the document: the same JSON renders the same bytes.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from . import svg
from .evidence import json_pre, kv_table, render_diagnostics, render_evidence, rows_table

VERDICT_LABEL = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "SKIPPED", "none": "NO VERDICT"}


def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _badge(verdict: str) -> str:
    return f'<span class="badge {_e(verdict)}">{_e(VERDICT_LABEL.get(verdict, verdict).lower())}</span>'


def _figure_of(check: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((f for f in check.get("figures") or [] if f.get("name") == name), None)


def _holds(op: str, v: float, t: float) -> bool:
    return {"<=": v <= t, ">=": v >= t, "<": v < t, ">": v > t, "==": math.isclose(v, t)}.get(op, False)


def key_figures(check: dict[str, Any]) -> list[dict[str, Any]]:
    """Each threshold with its measured figure: name, value text, threshold text, holds (True/False/None)."""
    out = []
    for t in check.get("thresholds") or []:
        f = _figure_of(check, t.get("figure", ""))
        value = f.get("value") if f else None
        ok = None
        if isinstance(value, (int, float)) and isinstance(t.get("value"), (int, float)) and math.isfinite(value):
            ok = _holds(t.get("op", ""), float(value), float(t["value"]))
        out.append({"name": t.get("figure", ""), "value": value,
                    "text": svg.fmt(value, (f or {}).get("unit", "")) if f else "not measured",
                    "n": (f or {}).get("n"), "threshold": t.get("text") or f"{t.get('op')} {t.get('value')} {t.get('unit', '')}",
                    "holds": ok})
    if not out:
        for f in (check.get("figures") or [])[:1]:
            out.append({"name": f.get("name"), "value": f.get("value"), "text": svg.fmt(f.get("value"), f.get("unit", "")),
                        "n": f.get("n"), "threshold": "—", "holds": None})
    return out


def _banner(doc: dict[str, Any]) -> str:
    s = doc.get("summary") or {}
    verdict = s.get("verdict", "none")
    ran = s.get("pass", 0) + s.get("fail", 0) + s.get("error", 0)
    if verdict == "pass":
        headline = f"All {ran} check{'' if ran == 1 else 's'} that ran passed"
    elif verdict == "none":
        headline = "No check ran"
    else:
        bad = s.get("fail", 0) + s.get("error", 0)
        headline = f"{bad} of {ran} checks did not pass"
    notes = []
    if s.get("skipped"):
        notes.append(f"{s['skipped']} skipped — not failures, but not verified either (reasons below)")
    if s.get("not_run"):
        notes.append(f"{len(s['not_run'])} catalog checks not selected in this run")
    counts = "".join(f'<div class="count {k}"><b>{s.get(k, 0)}</b><span>{k}</span></div>'
                     for k in ("pass", "fail", "error", "skipped"))
    counts += f'<div class="count notrun"><b>{len(s.get("not_run") or [])}</b><span>not run</span></div>'
    env = doc.get("environment") or {}
    topo = doc.get("topology") or {}
    prof = doc.get("profile") or {}
    meta = [("generated", doc.get("generated_at")), ("duration", svg.fmt(doc.get("duration_s"), "s")),
            ("runtime", env.get("runtime")), ("topology", topo.get("name")), ("profile", prof.get("name")),
            ("meshbed", doc.get("meshbed_version"))]
    meta_html = " · ".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in meta if v not in (None, ""))
    return (f'<section class="banner {_e(verdict)}" id="verdict"><div class="verdict-word">{_e(VERDICT_LABEL.get(verdict, verdict))}</div>'
            f'<div class="verdict-text"><h1>{_e(headline)}</h1>'
            f'{"".join(f"<p>{_e(n)}</p>" for n in notes)}<p class="meta">{meta_html}</p></div>'
            f'<div class="counts">{counts}</div></section>')


def _checks_table(checks: list[dict[str, Any]]) -> str:
    rows = []
    for c in checks:
        kf = key_figures(c)
        fig = "<br>".join(f'<span class="fig {"" if k["holds"] is None else ("ok" if k["holds"] else "bad")}">'
                          f'{_e(k["name"])} = <b>{_e(k["text"])}</b></span>' for k in kf) or '<span class="muted">—</span>'
        thr = "<br>".join(_e(k["threshold"]) for k in kf) or "—"
        first = kf[0]["value"] if kf and isinstance(kf[0]["value"], (int, float)) else ""
        order = {"fail": 0, "error": 1, "skipped": 2, "pass": 3}.get(c.get("verdict", ""), 4)
        reason = f'<div class="reason">{_e(c.get("reason"))}</div>' if c.get("reason") else ""
        search = " ".join(str(x) for x in (c.get("id"), c.get("title"), c.get("group"), c.get("verdict"), c.get("reason")))
        rows.append(
            f'<tr data-verdict="{_e(c.get("verdict"))}" data-group="{_e(c.get("group"))}" data-text="{_e(search.lower())}">'
            f'<td data-sort="{_e(_id_key(c.get("id", "")))}"><a href="#check-{_e(c.get("id"))}">{_e(c.get("id"))}</a></td>'
            f'<td>{_e(c.get("group"))}</td><td>{_e(c.get("title"))}{reason}</td>'
            f'<td data-sort="{_e(first)}">{fig}</td><td>{thr}</td>'
            f'<td data-sort="{_e(c.get("duration_s"))}" class="num">{_e(svg.fmt(c.get("duration_s"), "s"))}</td>'
            f'<td data-sort="{order}">{_badge(c.get("verdict", ""))}</td></tr>')
    groups = sorted({str(c.get("group")) for c in checks})
    verdicts = [v for v in ("pass", "fail", "error", "skipped") if any(c.get("verdict") == v for c in checks)]
    controls = (
        '<div class="filters"><label>verdict <select id="f-verdict"><option value="">all</option>'
        + "".join(f'<option value="{v}">{v}</option>' for v in verdicts)
        + '</select></label><label>group <select id="f-group"><option value="">all</option>'
        + "".join(f'<option value="{_e(g)}">{_e(g)}</option>' for g in groups)
        + '</select></label><label>search <input id="f-text" type="search" placeholder="id, title, reason…"></label>'
        + f'<span id="f-count" class="muted">{len(checks)} of {len(checks)} checks</span></div>')
    head = "".join(f'<th data-col="{i}" data-type="{t}" tabindex="0">{h}<span class="arrow"></span></th>'
                   for i, (h, t) in enumerate([("id", "text"), ("group", "text"), ("check", "text"), ("figure", "num"),
                                               ("threshold", "text"), ("time", "num"), ("verdict", "num")]))
    return (f'<section id="checks"><h2>Checks</h2>{controls}<table id="checks-table" class="data checks">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p id="f-empty" class="muted" hidden>no check matches the filters</p></section>')


def _id_key(cid: str) -> str:
    """DISC-2 < DISC-10 when sorting: zero-pad the number."""
    prefix, _, num = cid.rpartition("-")
    return f"{prefix}-{int(num):04d}" if num.isdigit() else cid


def _figures_table(c: dict[str, Any]) -> str:
    ths = {t.get("figure"): t for t in c.get("thresholds") or []}
    rows = []
    for f in c.get("figures") or []:
        t = ths.get(f.get("name"))
        ok = ""
        if t and isinstance(f.get("value"), (int, float)):
            held = _holds(t.get("op", ""), float(f["value"]), float(t.get("value", 0)))
            ok = '<span class="ok-text">✔ holds</span>' if held else '<span class="fail-text">✘ misses</span>'
        low_n = f.get("n", 0) < f.get("min_n", 1)
        needs = f" (needs {f.get('min_n')})" if f.get("min_n", 1) > 1 else ""
        rows.append(f'<tr><td>{_e(f.get("name"))}</td><td class="num"><b>{_e(svg.fmt(f.get("value"), f.get("unit", "")))}</b></td>'
                    f'<td>{_e(t.get("text")) if t else "—"} {ok}</td>'
                    f'<td class="num {"fail-text" if low_n else ""}">{_e(f.get("n"))}{needs}</td>'
                    f'<td>{_e(f.get("source"))}</td></tr>')
    for name, t in ths.items():
        if not _figure_of(c, name or ""):
            rows.append(f'<tr><td>{_e(name)}</td><td class="fail-text">not measured</td><td>{_e(t.get("text"))}</td><td></td><td></td></tr>')
    if not rows:
        return '<p class="muted">no figures</p>'
    return ('<table class="data figures"><thead><tr><th>figure</th><th>value</th><th>threshold</th><th>samples</th>'
            f'<th>measured at</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _diagnostics(c: dict[str, Any]) -> str:
    return render_diagnostics(c.get("diagnostics") or {})


def _check_section(c: dict[str, Any]) -> str:
    v = c.get("verdict", "")
    reason = (f'<p class="reason-box {_e(v)}"><b>{_e("why " + v if v != "skipped" else "skipped because")}:</b> {_e(c.get("reason"))}</p>'
              if c.get("reason") else "")
    evidence = render_evidence(c) if v != "skipped" or c.get("evidence") else ""
    meta = f'<span class="muted">{_e(c.get("group"))} · {_e(svg.fmt(c.get("duration_s"), "s"))} · <code>{_e(c.get("nodeid"))}</code></span>'
    return (f'<article class="check {_e(v)}" id="check-{_e(c.get("id"))}"><header><h3>{_e(c.get("id"))} '
            f'<span class="title">{_e(c.get("title"))}</span></h3>{_badge(v)}</header>{meta}{reason}'
            f'{_figures_table(c) if c.get("figures") or c.get("thresholds") else ""}{evidence}{_diagnostics(c)}</article>')


def _environment(doc: dict[str, Any]) -> str:
    env = doc.get("environment") or {}
    comps = env.get("components") or {}
    rows = [{"component": n, "version": (c or {}).get("version"), "source": (c or {}).get("source"),
             "path": (c or {}).get("path")} for n, c in comps.items()]
    m = env.get("machine") or {}
    rows.append({"component": "python", "version": m.get("python"), "source": "interpreter", "path": ""})
    machine = {"runtime": env.get("runtime"), **m}
    extra = {k: v for k, v in env.items() if k not in ("components", "machine", "runtime", "load")}
    load = env.get("load") if isinstance(env.get("load"), dict) else {}
    return (f'<section id="environment"><h2>Environment</h2><div class="two"><div><h4>components</h4>{rows_table(rows)}</div>'
            f'<div><h4>machine</h4>{kv_table(machine)}{kv_table(extra) if extra else ""}'
            f'{"<h4>load (Locust)</h4>" + kv_table(load) if load else ""}</div></div></section>')


def _topology(doc: dict[str, Any]) -> str:
    t = doc.get("topology") or {}
    if not t:
        return '<section id="topology"><h2>Topology</h2><p class="muted">not recorded (the mesh never came up)</p></section>'
    rows = []
    for name, s in (t.get("services") or {}).items():
        pol = (s or {}).get("policy") or {}
        extras = ", ".join(f"{k}={json.dumps(v)}" for k, v in pol.items() if k != "lb_policy" and v not in (None, "", {}, []))
        zones = sorted({str(i.get("zone")) for i in (s or {}).get("instances") or [] if i.get("zone")})
        versions = sorted({str(i.get("version")) for i in (s or {}).get("instances") or [] if i.get("version")})
        rows.append({"service": name, "replicas": (s or {}).get("replicas"), "calls": ", ".join((s or {}).get("calls") or []) or "—",
                     "lb policy": pol.get("lb_policy"), "policy": extras, "versions": ", ".join(versions), "zones": ", ".join(zones)})
    ingress = ", ".join(f'{r.get("prefix")} → {r.get("service")}' for r in t.get("ingress") or [])
    info = {"name": t.get("name"), "source": t.get("source"), "ingress": ingress or "—",
            "chaos links": ", ".join(t.get("chaos_links") or []) or "—",
            **{f"mesh.{k}": v for k, v in (t.get("mesh") or {}).items()}}
    return (f'<section id="topology"><h2>Topology</h2>{kv_table(info)}{rows_table(rows)}'
            f'<details><summary>topology as recorded (JSON)</summary>{json_pre(t, 20_000)}</details></section>')


def _profile(doc: dict[str, Any], ran: set[str]) -> str:
    p = doc.get("profile") or {}
    if not p:
        return '<section id="profile"><h2>Profile</h2><p class="muted">not recorded</p></section>'
    rows = []
    for cid, body in (p.get("checks") or {}).items():
        body = body or {}
        rows.append({"check": cid, "in this run": "yes" if cid in ran else "",
                     "thresholds": "; ".join(f"{k} {v}" for k, v in (body.get("thresholds") or {}).items()),
                     "params": ", ".join(f"{k}={json.dumps(v)}" for k, v in (body.get("params") or {}).items())})
    return (f'<section id="profile"><h2>Profile</h2>{kv_table({"name": p.get("name"), "source": p.get("source")})}'
            f'{rows_table(rows, limit=1000)}</section>')


def _phases(doc: dict[str, Any]) -> str:
    ph = {k: v for k, v in (doc.get("phases") or {}).items() if isinstance(v, (int, float))}
    if not ph:
        return '<section id="timings"><h2>Phase timings</h2><p class="muted">not recorded</p></section>'
    chart = svg.hbars(list(ph.items()), title="phase timings", width=760)
    return f'<section id="timings"><h2>Phase timings</h2>{chart}</section>'


def _guard(fn: Any, *args: Any, what: str, raw: Any = None) -> str:
    """One part of the page; a schema-valid document with an odd free-form part (topology, profile, evidence:
    a number where a mapping is usual) costs that part -- shown as its JSON -- never the whole page."""
    try:
        return str(fn(*args))
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, OverflowError, ZeroDivisionError) as exc:
        try:
            shown = json_pre(raw, 20_000) if raw is not None else ""
        except Exception:  # noqa: BLE001 - the JSON of an odd part is a courtesy, not the page
            shown = ""
        return (f'<section class="unreadable"><h4>{_e(what)}</h4><p class="muted">could not be drawn from this '
                f'document ({_e(type(exc).__name__)}: {_e(str(exc)[:200])}); as recorded:</p>'
                f'{shown}</section>')


def render_html(doc: dict[str, Any]) -> str:
    checks = doc.get("checks") or []
    s = doc.get("summary") or {}
    verdict = s.get("verdict", "none")
    not_run = s.get("not_run") or []
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (("checks", "Checks"), ("evidence", "Evidence"),
                                                          ("environment", "Environment"), ("topology", "Topology"),
                                                          ("profile", "Profile"), ("timings", "Timings")))
    ordered = sorted(checks, key=lambda c: {"fail": 0, "error": 1}.get(c.get("verdict", ""), 2))
    details = "".join(_guard(_check_section, c, what=f"check {c.get('id')}", raw=c) for c in ordered) \
        or '<p class="muted">no check ran</p>'
    not_run_html = (f'<p class="muted">not run in this session: {_e(", ".join(not_run))}</p>' if not_run else "")
    title = f"meshbed conformance: {VERDICT_LABEL.get(verdict, verdict)}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="meshbed {_e(doc.get("meshbed_version"))}">'
        f'<meta name="meshbed-schema" content="{_e(doc.get("schema"))}">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><div class="brand">meshbed <span>conformance report</span></div><nav>{nav}</nav></header>'
        f'<main>{_guard(_banner, doc, what="summary", raw=s)}{_guard(_checks_table, checks, what="checks")}'
        f'{not_run_html}<section id="evidence"><h2>Evidence</h2>{details}</section>'
        f'{_guard(_environment, doc, what="environment", raw=doc.get("environment"))}'
        f'{_guard(_topology, doc, what="topology", raw=doc.get("topology"))}'
        f'{_guard(_profile, doc, {c.get("id") for c in checks}, what="profile", raw=doc.get("profile"))}'
        f'{_guard(_phases, doc, what="phases", raw=doc.get("phases"))}'
        f'</main>'
        f'<footer>schema <code>{_e(doc.get("schema"))}</code> · meshbed {_e(doc.get("meshbed_version"))} · '
        f'generated {_e(doc.get("generated_at"))} · the machine-readable twin of this page is conformance.json</footer>'
        f"<script>{JS}</script></body></html>\n"
    )


CSS = """
:root{--fg:#1f2933;--muted:#66788a;--line:#e3e8ee;--bg:#f5f7fa;--card:#fff;--pass:#1a7f37;--fail:#cf222e;--error:#bc4c00;
--skipped:#6e7781;--accent:#0b5cad;font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font-size:14px;line-height:1.45}
header.top{position:sticky;top:0;z-index:5;display:flex;align-items:center;gap:28px;padding:10px 32px;background:#14212e;color:#fff}
.brand{font-weight:700;font-size:16px;letter-spacing:.2px}.brand span{font-weight:400;color:#a9b8c7}
nav a{color:#d5e0ea;text-decoration:none;margin-right:18px;font-size:13px}nav a:hover{color:#fff}
main{max-width:1340px;margin:0 auto;padding:22px 32px 40px}
h2{font-size:19px;margin:34px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{margin:0;font-size:16px}h4{margin:16px 0 8px;font-size:14px}h5{margin:12px 0 6px;font-size:13px;color:#3e4c59}
.muted{color:var(--muted)}code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.banner{display:flex;align-items:center;gap:26px;padding:22px 26px;border-radius:10px;color:#fff;box-shadow:0 2px 8px rgba(0,0,0,.12)}
.banner.pass{background:linear-gradient(135deg,#1a7f37,#2da44e)}.banner.fail{background:linear-gradient(135deg,#a40e26,#cf222e)}
.banner.none,.banner.skipped{background:linear-gradient(135deg,#57606a,#6e7781)}.banner.error{background:linear-gradient(135deg,#953800,#bc4c00)}
.verdict-word{font-size:40px;font-weight:800;letter-spacing:1px;min-width:150px}
.verdict-text{flex:1}.verdict-text h1{margin:0 0 4px;font-size:21px}.verdict-text p{margin:2px 0;opacity:.95}
.banner .meta{font-size:12.5px;opacity:.9}.banner .meta span{margin-right:2px}
.counts{display:flex;gap:10px}.count{background:rgba(255,255,255,.16);border-radius:8px;padding:8px 12px;text-align:center;min-width:64px}
.count b{display:block;font-size:22px}.count span{font-size:11px;text-transform:uppercase;letter-spacing:.6px}
.filters{display:flex;gap:18px;align-items:center;margin:6px 0 10px;flex-wrap:wrap}
.filters select,.filters input{margin-left:6px;padding:5px 8px;border:1px solid #c9d2db;border-radius:6px;font:inherit;background:#fff}
.filters input{width:240px}
table{border-collapse:collapse}table.data{width:100%;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
table.data th,table.data td{padding:7px 10px;text-align:left;border-bottom:1px solid var(--line);vertical-align:top}
table.data thead th{background:#eef2f6;font-size:12px;text-transform:uppercase;letter-spacing:.4px;color:#46566a;white-space:nowrap}
table.checks thead th{cursor:pointer;user-select:none}table.checks thead th:hover{background:#e2e8ef}
th .arrow::after{content:"";margin-left:4px}th.asc .arrow::after{content:"▲"}th.desc .arrow::after{content:"▼"}
table.checks tbody tr:hover{background:#f8fafc}table.data td.num{text-align:right;white-space:nowrap}
table.checks td a{font-weight:600;color:var(--accent);text-decoration:none}
.reason{color:var(--muted);font-size:12.5px;margin-top:3px}
.fig.ok b{color:var(--pass)}.fig.bad b{color:var(--fail)}
table.kv{background:var(--card);border:1px solid var(--line);margin:6px 0 10px;min-width:320px}
table.kv th{text-align:left;padding:5px 10px;font-weight:600;color:#46566a;background:#f6f8fa;border-bottom:1px solid var(--line);white-space:nowrap}
table.kv td{padding:5px 10px;border-bottom:1px solid var(--line)}
.badge{display:inline-block;padding:2px 9px;border-radius:999px;font-size:11.5px;font-weight:700;text-transform:uppercase;color:#fff;letter-spacing:.4px}
.badge.pass{background:var(--pass)}.badge.fail{background:var(--fail)}.badge.error{background:var(--error)}.badge.skipped{background:var(--skipped)}
.ok-text{color:var(--pass);font-weight:600}.fail-text{color:var(--fail);font-weight:600}
article.check{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--skipped);border-radius:8px;padding:16px 20px;margin:0 0 18px}
article.check.pass{border-left-color:var(--pass)}article.check.fail{border-left-color:var(--fail)}article.check.error{border-left-color:var(--error)}
article.check header{display:flex;justify-content:space-between;align-items:center;margin-bottom:2px}
article.check h3 .title{font-weight:400;color:#3e4c59;margin-left:6px}
.reason-box{padding:8px 12px;border-radius:6px;background:#fff5f5;border:1px solid #f3c2c6}
.reason-box.skipped{background:#f6f8fa;border-color:var(--line)}.reason-box.error{background:#fff8f0;border-color:#f1cfae}
table.figures{margin:10px 0}
.evidence{margin-top:12px}.ev-name{border-top:1px dashed var(--line);padding-top:10px}
.ev-grid{display:grid;grid-template-columns:minmax(0,640px) minmax(0,1fr);gap:20px;align-items:start}
.charts svg{display:block;margin-bottom:8px}.load-charts{display:flex;flex-wrap:wrap;gap:10px}
svg.chart{background:#fff;border:1px solid var(--line);border-radius:6px;max-width:100%;height:auto;font-family:inherit}
svg .grid{stroke:#edf0f3}svg .axis{stroke:#8895a2}svg .tickmark{stroke:#8895a2}svg .tick{font-size:10.5px;fill:#5b6b7b}
svg .label{font-size:11px;fill:#3e4c59}svg .legend{font-size:11px;fill:#3e4c59}
svg .threshold{stroke:#cf222e;stroke-dasharray:6 4;stroke-width:1.5}svg .threshold-label{font-size:10.5px;fill:#cf222e}
svg .expected{stroke:#111;stroke-width:2.5}svg .fault-label{font-size:10px;fill:#a4400b}
pre{background:#0f1720;color:#dbe5ee;padding:10px 12px;border-radius:6px;overflow:auto;max-height:420px;font-size:12px}
pre.json{background:#f6f8fa;color:#24292f;border:1px solid var(--line)}
details{margin:6px 0}details.raw summary{font-weight:600;font-size:13px}details summary{cursor:pointer;color:#2d3e50}.diagnostics{margin-top:14px;padding-top:6px;border-top:1px dashed var(--line)}.diag th{white-space:nowrap;vertical-align:top}code.cmd{user-select:all;word-break:break-all}ul.traceids{margin:0;padding-left:18px}
ul.spantree,ul.spantree ul{list-style:none;margin:0;padding-left:20px;border-left:1px solid #d5dde5}ul.spantree{padding-left:6px;border:0}
ul.spantree li{padding:2px 0}.svc{display:inline-block;background:#e7f0fa;color:#0b5cad;border-radius:4px;padding:0 6px;font-weight:600;font-size:12px}
.dur{color:var(--muted);font-size:12px;margin-left:6px}ul.spantree .badge{margin-left:6px}
.two{display:grid;grid-template-columns:3fr 2fr;gap:20px}.scroll{overflow-x:auto}
footer{max-width:1340px;margin:0 auto;padding:16px 32px 30px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
@media (max-width:900px){.ev-grid,.two{grid-template-columns:1fr}.banner{flex-wrap:wrap}}
@media print{header.top{position:static}details{display:block}}
"""

JS = """
(function(){
  var table=document.getElementById('checks-table'); if(!table) return;
  var tbody=table.tBodies[0], heads=table.tHead.rows[0].cells;
  var fv=document.getElementById('f-verdict'), fg=document.getElementById('f-group'), ft=document.getElementById('f-text');
  var count=document.getElementById('f-count'), empty=document.getElementById('f-empty');
  function key(row,i,type){var c=row.cells[i];var v=c.getAttribute('data-sort');if(v===null)v=c.textContent.trim();
    if(type==='num'){var n=parseFloat(v);return isNaN(n)?Infinity:n;}return v.toLowerCase();}
  function sortBy(i){var th=heads[i],asc=!th.classList.contains('asc'),type=th.getAttribute('data-type');
    for(var j=0;j<heads.length;j++)heads[j].classList.remove('asc','desc');th.classList.add(asc?'asc':'desc');
    var rows=Array.prototype.slice.call(tbody.rows);
    rows.sort(function(a,b){var x=key(a,i,type),y=key(b,i,type);return (x<y?-1:x>y?1:0)*(asc?1:-1);});
    rows.forEach(function(r){tbody.appendChild(r);});}
  for(var i=0;i<heads.length;i++){(function(i){heads[i].addEventListener('click',function(){sortBy(i);});
    heads[i].addEventListener('keydown',function(e){if(e.key==='Enter')sortBy(i);});})(i);}
  function filter(){var v=fv.value,g=fg.value,t=ft.value.trim().toLowerCase(),shown=0;
    Array.prototype.forEach.call(tbody.rows,function(r){var ok=(!v||r.getAttribute('data-verdict')===v)&&
      (!g||r.getAttribute('data-group')===g)&&(!t||r.getAttribute('data-text').indexOf(t)>=0);
      r.hidden=!ok;if(ok)shown++;});
    count.textContent=shown+' of '+tbody.rows.length+' checks';empty.hidden=shown>0;}
  fv.addEventListener('change',filter);fg.addEventListener('change',filter);ft.addEventListener('input',filter);
})();
"""
