"""Evidence renderers: a suite states the chart, the report draws what it is told.

Evidence recorded with ``check.chart(kind, key, data)`` is stored as
``{"chart": kind, "data": data}`` and drawn by that kind's renderer; the
shape predicates below only *validate* that the data fits the stated chart.
A stated chart that is unknown or whose data does not fit is an error
(``EvidenceError`` with ``strict=True``, as the tests render; a visible error
box in a user's report). Evidence without a chart is a value: a key/value
table, a table, or compact JSON. Chart kinds:

* ``cdf``: a dict with ``per_envoy``: name -> list of seconds    -> CDF per Envoy (+ histogram)
* ``spread``: a list of dicts with endpoint/instance + count    -> share bars with the expected share
* ``spread_map``: counts + expected/shares maps                 -> the same bars
* ``load``: ``history`` rows with t/ts + rps + failures          -> load charts, fault windows shaded
* ``spans``: a list of span dicts (span_id, parent_id, service) -> a span tree
* ``traces``: a list of traces (dicts holding such span lists)  -> one complete trace as a tree, every incomplete one listed
* ``fault_windows``: (name, target, start, end) rows            -> a table (and shading on load charts)
"""

from __future__ import annotations

import json
import math
import time
from html import escape
from typing import Any, Iterable

from . import svg

MAX_JSON_CHARS = 4000
MAX_TABLE_ROWS = 200
MAX_SPANS = 300


# -- shape predicates ---------------------------------------------------------

def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_cdf(v: Any) -> bool:
    pe = v.get("per_envoy") if isinstance(v, dict) else None
    return (isinstance(pe, dict) and bool(pe)
            and all(isinstance(x, list) and all(_num(s) or s is None for s in x) for x in pe.values()))


def _endpoint_key(row: dict[str, Any]) -> str | None:
    return next((k for k in ("endpoint", "instance", "host", "address") if k in row), None)


def is_spread(v: Any) -> bool:
    return (isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)
            and all(_endpoint_key(r) and _num(r.get("count")) for r in v))


def is_spread_map(v: Any) -> bool:
    """{"counts": {endpoint: n}, "expected": {endpoint: share}, "shares": {...}, ...} (spread_stats-like)."""
    if not isinstance(v, dict):
        return False
    counts = v.get("counts")
    return (isinstance(counts, dict) and len(counts) >= 1 and all(_num(x) for x in counts.values())
            and any(isinstance(v.get(k), dict) for k in ("expected", "expected_share", "shares")))


def spread_rows(v: dict[str, Any]) -> list[dict[str, Any]]:
    exp = v.get("expected_share") if isinstance(v.get("expected_share"), dict) else v.get("expected")
    shares = v.get("shares") if isinstance(v.get("shares"), dict) else {}
    rows = []
    for k, n in v["counts"].items():
        row: dict[str, Any] = {"endpoint": k, "count": n}
        if isinstance(exp, dict) and _num(exp.get(k)):
            row["expected_share"] = exp[k]
        if _num(shares.get(k)):
            row["share"] = shares[k]
        rows.append(row)
    return rows


def _is_history_rows(v: Any) -> bool:
    return (isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)
            and all(("t" in r or "ts" in r) and "rps" in r and "failures" in r for r in v))


def is_load(v: Any) -> bool:
    return _is_history_rows(v) or (isinstance(v, dict) and _is_history_rows(v.get("history")))


def _is_span(r: Any) -> bool:
    return isinstance(r, dict) and "span_id" in r and "service" in r and "name" in r and ("parent_id" in r or "parent" in r)


def is_spans(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_is_span(r) for r in v)


def _trace_spans(t: Any) -> list[dict[str, Any]] | None:
    if not isinstance(t, dict):
        return None
    for val in t.values():
        if is_spans(val):
            return val
    return None


def is_traces(v: Any) -> bool:
    """Per-trace reports: dicts holding a span list, or trace_id + a complete flag."""
    return (isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)
            and (any(_trace_spans(t) is not None for t in v)
                 or all("trace_id" in t and isinstance(t.get("complete"), bool) for t in v)))


def is_fault_windows(v: Any) -> bool:
    return (isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)
            and all({"name", "start", "end"} <= set(r) for r in v))


def _flat(d: dict[str, Any]) -> bool:
    return all(v is None or isinstance(v, (str, int, float, bool)) for v in d.values())


def _shallow(d: dict[str, Any]) -> bool:
    """Scalars, or values whose JSON fits on a short line: fine for a key/value table."""
    return all(not isinstance(x, (dict, list)) or len(json.dumps(x, default=str)) <= 120 for x in d.values())


def is_table(v: Any) -> bool:
    return (isinstance(v, list) and bool(v) and all(isinstance(r, dict) and _flat(r) for r in v)
            and len({k for r in v for k in r}) <= 14)




def is_charted(v: Any) -> bool:
    return isinstance(v, dict) and "chart" in v and set(v) <= {"chart", "data"}


def has_shape(v: Any, depth: int = 0) -> bool:
    """Does ``v`` hold a stated chart (at any depth up to 3)?"""
    if is_charted(v):
        return True
    if depth < 3 and isinstance(v, dict):
        return any(has_shape(x, depth + 1) for x in v.values())
    return False


def find_key(v: Any, key: str, depth: int = 0) -> Any:
    """The first value under `key` anywhere in nested dicts (breadth first-ish, depth-limited)."""
    if isinstance(v, dict):
        if key in v:
            return v[key]
        if depth < 4:
            for x in v.values():
                found = find_key(x, key, depth + 1)
                if found is not None:
                    return found
    return None


# -- rendering ---------------------------------------------------------------

class Context:
    """What renderers of one check share: its thresholds and its fault windows."""

    def __init__(self, check: dict[str, Any], strict: bool = False) -> None:
        self.check = check
        self.strict = strict
        ev = check.get("evidence") or {}
        fw = find_key(ev, "fault_windows")
        fw = fw.get("data") if is_charted(fw) else fw
        self.fault_windows: list[dict[str, Any]] = fw if is_fault_windows(fw) else []
        self.thresholds = check.get("thresholds") or []

    def seconds_threshold(self) -> tuple[float, str] | None:
        for t in self.thresholds:
            if str(t.get("unit", "")).strip() == "s" and _num(t.get("value")):
                return float(t["value"]), f"{t.get('figure')} {t.get('text') or ''}".strip()
        return None


def _compact(v: Any, indent: int = 0, width: int = 100) -> str:
    """JSON, one line where it fits, lists of scalars kept on one (wrapped) line."""
    one = json.dumps(v, default=str)
    if len(one) + indent <= width or not isinstance(v, (dict, list)):
        return one
    pad = " " * (indent + 1)
    if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
        return one  # wraps in the <pre>; one value per line would be worse
    if isinstance(v, list):
        return "[\n" + ",\n".join(pad + _compact(x, indent + 1, width) for x in v) + "\n" + " " * indent + "]"
    return ("{\n" + ",\n".join(f"{pad}{json.dumps(str(k))}: {_compact(x, indent + 1, width)}" for k, x in v.items())
            + "\n" + " " * indent + "}")


def json_pre(v: Any, limit: int = MAX_JSON_CHARS) -> str:
    text = _compact(v)
    if len(text) > limit:
        text = text[:limit] + f"\n… truncated ({len(text) - limit:,} more characters)"
    return f'<pre class="json">{escape(text)}</pre>'


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return escape(svg.fmt(v))
    if isinstance(v, (dict, list)):
        s = json.dumps(v, default=str)
        return f'<code>{escape(s[:160] + ("…" if len(s) > 160 else ""))}</code>'
    return escape("" if v is None else str(v))


def kv_table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in d.items())
    return f'<table class="kv">{rows}</table>'


def rows_table(rows: list[dict[str, Any]], limit: int = MAX_TABLE_ROWS) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows[:limit])
    more = f'<p class="muted">… {len(rows) - limit} more rows</p>' if len(rows) > limit else ""
    return f'<div class="scroll"><table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}'


def render_cdf(name: str, v: dict[str, Any], ctx: Context) -> str:
    per = {k: [float(x) for x in vals if _num(x)] for k, vals in v["per_envoy"].items()}
    th = ctx.seconds_threshold()
    out = [svg.cdf_chart(per, title=f"{name}: convergence CDF per Envoy", threshold=th[0] if th else None,
                         threshold_label=th[1] if th else "")]
    every = [x for vals in per.values() for x in vals]
    if len(every) >= 8:
        out.append(svg.histogram(every, title=f"{name}: histogram (all Envoys)", bins=min(30, max(8, len(every) // 3))))
    if th and every and th[0] > 3 * max(every):
        out.append(f'<p class="muted">threshold {escape(th[1])} is off the chart: the slowest sample was '
                   f'{escape(svg.fmt(max(every), "s"))}</p>')
    rest = {k: x for k, x in v.items() if k != "per_envoy"}
    stats = [(k, x) for k, x in rest.items() if isinstance(x, dict) and _flat(x)]
    table = ("<table class='data'><thead><tr><th>per Envoy</th><th>n</th><th>p50</th><th>p99</th><th>max</th></tr></thead><tbody>"
             + "".join(f"<tr><td>{escape(k)}</td><td>{len(vals)}</td><td>{_pct(vals, 50)}</td><td>{_pct(vals, 99)}</td>"
                       f"<td>{svg.fmt(max(vals), 's') if vals else 'n/a'}</td></tr>" for k, vals in per.items())
             + "</tbody></table>")
    side = table + "".join(f"<h5>{escape(k)}</h5>{kv_table(x)}" for k, x in stats)
    others = {k: x for k, x in rest.items() if (k, x) not in stats}
    side += "".join(render_value(k, x, ctx, 1) for k, x in others.items())
    return f'<div class="ev-grid"><div class="charts">{"".join(out)}</div><div class="side">{side}</div></div>'


def _pct(vals: list[float], q: float) -> str:
    if not vals:
        return "n/a"
    s = sorted(vals)
    return svg.fmt(s[min(len(s), max(1, math.ceil(q / 100 * len(s)))) - 1], "s")


def _as_percent(values: list[float | None]) -> list[float | None]:
    """Expected or observed shares as percentages, whether given as fractions, percents or counts."""
    nums = [v for v in values if v is not None]
    if not nums:
        return values
    total = sum(nums)
    if all(v <= 1.0 for v in nums) and 0.8 <= total <= 1.2:
        return [None if v is None else v * 100 for v in values]
    if 80 <= total <= 120:
        return values
    return [None if v is None or total <= 0 else v / total * 100 for v in values]


def render_spread(name: str, rows: list[dict[str, Any]], ctx: Context) -> str:
    total = sum(float(r["count"]) for r in rows) or 1.0
    share_key = next((k for k in ("share_pct", "share") if all(_num(r.get(k)) for r in rows)), None)
    observed = _as_percent([float(r[share_key]) for r in rows]) if share_key else [float(r["count"]) / total * 100 for r in rows]
    exp_key = next((k for k in ("expected_share_pct", "expected_share", "expected_pct", "expected")
                    if any(_num(r.get(k)) for r in rows)), None)
    expected = _as_percent([float(r[exp_key]) if _num(r.get(exp_key)) else None for r in rows]) if exp_key else [None] * len(rows)
    bars = [(str(r[_endpoint_key(r)]), float(o or 0), e, int(r["count"])) for r, o, e in zip(rows, observed, expected)]
    chart = svg.share_bars(bars, title=f"{name}: share of requests per endpoint")
    return f'<div class="ev-grid"><div class="charts">{chart}</div><div class="side">{rows_table(rows)}</div></div>'


def render_spread_map(name: str, v: dict[str, Any], ctx: Context) -> str:
    rows = spread_rows(v)
    chart = render_spread(name, rows, ctx)
    rest = {k: x for k, x in v.items() if k not in ("counts", "expected", "expected_share", "shares")}
    flat = {k: x for k, x in rest.items() if not isinstance(x, (dict, list))}
    extra = (kv_table(flat) if flat else "") + "".join(
        render_value(k, x, ctx, 1) for k, x in rest.items() if isinstance(x, (dict, list)))
    return chart.replace('<div class="side">', f'<div class="side">{extra}', 1)


def render_load(name: str, v: Any, ctx: Context) -> str:
    rows = v if isinstance(v, list) else v["history"]
    has_ts = all(_num(r.get("ts")) for r in rows)
    t0 = float(rows[0]["ts"]) if has_ts else 0.0
    xs = [float(r["ts"]) - t0 if has_ts else float(r.get("t", i)) for i, r in enumerate(rows)]
    shades = []
    if has_ts:
        last = t0 + (xs[-1] if xs else 0)
        shades = [(a - t0, b - t0, label) for a, b, label in merge_windows(ctx.fault_windows, last)]

    def val(r: dict[str, Any], k: str) -> float | None:
        x = r.get(k)
        return float(x) if _num(x) else None

    err = []
    for x, r in zip(xs, rows):
        rps, fl = val(r, "rps"), val(r, "failures")
        err.append((x, None if not rps else 100.0 * (fl or 0) / rps))
    charts = [
        svg.line_chart([("error rate %", err)], title=f"{name}: error rate over time", x_label="seconds since load start",
                       y_label="failed requests (%)", shades=shades, width=400, height=230, y_max=None),
        svg.line_chart([(k.replace("_ms", ""), [(x, val(r, k)) for x, r in zip(xs, rows)])
                        for k in ("p50_ms", "p95_ms", "p99_ms") if any(k in r for r in rows)],
                       title=f"{name}: latency over time", x_label="seconds since load start", y_label="latency (ms)",
                       shades=shades, width=400, height=230),
        svg.line_chart([("requests/s", [(x, val(r, "rps")) for x, r in zip(xs, rows)]),
                        ("failures/s", [(x, val(r, "failures")) for x, r in zip(xs, rows)])],
                       title=f"{name}: throughput", x_label="seconds since load start", y_label="per second",
                       shades=shades, width=400, height=230, dashed=(False, True)),
    ]
    note = ""
    if ctx.fault_windows and not has_ts:
        note = '<p class="muted">fault windows not shaded: the history rows carry no wall-clock "ts"</p>'
    elif shades:
        note = '<p class="muted">shaded: fault windows (hover for the fault and its target)</p>'
    rest = {} if isinstance(v, list) else {k: x for k, x in v.items() if k != "history"}
    extra = ""
    if rest:
        flat = {k: x for k, x in rest.items() if not isinstance(x, (dict, list))}
        extra = (kv_table(flat) if flat else "") + "".join(
            render_value(k, x, ctx, 1) for k, x in rest.items() if isinstance(x, (dict, list)))
    return f'<div class="load-charts">{"".join(charts)}</div>{note}{extra}'


def _span_tree(spans: list[dict[str, Any]]) -> str:
    spans = spans[:MAX_SPANS]
    ids = {s.get("span_id") for s in spans}
    kids: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in spans:
        parent = s.get("parent_id", s.get("parent")) or ""
        if parent and parent in ids:
            kids.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    starts = [s["start_ns"] for s in spans if _num(s.get("start_ns")) and s["start_ns"]]
    t0 = min(starts) if starts else None

    def node(s: dict[str, Any], seen: frozenset[str]) -> str:
        parent = s.get("parent_id", s.get("parent")) or ""
        dur = ""
        if _num(s.get("start_ns")) and _num(s.get("end_ns")) and s["end_ns"] >= s["start_ns"] > 0:
            dur = f'<span class="dur">{svg.fmt((s["end_ns"] - s["start_ns"]) / 1e6, "ms")}'
            if t0 is not None:
                dur += f' @ +{svg.fmt((s["start_ns"] - t0) / 1e6, "ms")}'
            dur += "</span>"
        flags = ""
        if s.get("error"):
            flags += '<span class="badge fail">error</span>'
        if parent and parent not in ids:
            flags += f'<span class="badge error" title="parent {escape(str(parent))} not in the trace">orphan</span>'
        kind = {2: "server", 3: "client", 1: "internal", 4: "producer", 5: "consumer"}.get(s.get("kind"), "")
        label = (f'<span class="svc">{escape(str(s.get("service")))}</span> {escape(str(s.get("name")))}'
                 f'{f" <span class=muted>{kind}</span>" if kind else ""} {dur}{flags}')
        sid = str(s.get("span_id"))
        children = [] if sid in seen else kids.get(sid, [])
        inner = "".join(node(c, seen | {sid}) for c in children)
        return f"<li>{label}{f'<ul>{inner}</ul>' if inner else ''}</li>"

    return f'<ul class="spantree">{"".join(node(r, frozenset()) for r in roots)}</ul>'


def render_spans(name: str, spans: list[dict[str, Any]], ctx: Context) -> str:
    trace = spans[0].get("trace_id", "")
    return (f'<p class="muted">trace <code>{escape(str(trace))}</code>: {len(spans)} spans</p>' + _span_tree(spans))


def _complete(t: dict[str, Any]) -> bool | None:
    for k in ("complete", "is_complete", "ok"):
        if isinstance(t.get(k), bool):
            return t[k]
    missing = t.get("missing") or t.get("missing_spans") or t.get("problems")
    if isinstance(missing, (list, dict, str)):
        return not missing
    return None


def render_traces(name: str, traces: list[dict[str, Any]], ctx: Context) -> str:
    with_spans = [t for t in traces if _trace_spans(t) is not None]
    complete = [t for t in with_spans if _complete(t) is not False]
    incomplete = [t for t in traces if _complete(t) is False]
    out = [f'<p>{len(traces)} traces listed: <b>{len(traces) - len(incomplete)}</b> complete, '
           f'<b class="{"fail-text" if incomplete else ""}">{len(incomplete)}</b> incomplete</p>']
    if complete:
        t = complete[0]
        spans = _trace_spans(t) or []
        out.append(f'<h5>a complete trace: <code>{escape(str(t.get("trace_id", spans[0].get("trace_id", ""))))}</code> '
                   f'({len(spans)} spans)</h5>' + _span_tree(spans))
    if incomplete:
        rows = [{k: x for k, x in t.items() if not is_spans(x)} for t in incomplete]
        out.append("<h5>every incomplete trace</h5>" + rows_table(rows, limit=10_000))
        for t in incomplete[:20]:
            spans = _trace_spans(t)
            if spans:
                out.append(f'<details><summary>spans of <code>{escape(str(t.get("trace_id", "")))}</code></summary>'
                           f'{_span_tree(spans)}</details>')
    return "".join(out)


def merge_windows(windows: list[dict[str, Any]], open_end: float, slack: float = 0.5) -> list[tuple[float, float, str]]:
    """Overlapping fault windows (one per proxy, say) as one shaded interval each, labelled once."""
    spans = sorted((float(w["start"]), float(w["end"]) if _num(w.get("end")) else open_end, w)
                   for w in windows if _num(w.get("start")))
    merged: list[list[Any]] = []
    for a, b, w in spans:
        if merged and a <= merged[-1][1] + slack:
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2].append(w)
        else:
            merged.append([a, b, [w]])
    out = []
    for a, b, ws in merged:
        names = list(dict.fromkeys(str(w.get("name", "fault")) for w in ws))
        targets = list(dict.fromkeys(str(w.get("target", "")) for w in ws if w.get("target")))
        label = "+".join(names) + (f" → {targets[0]}" if len(targets) == 1 else f" → {len(targets)} targets" if targets else "")
        out.append((a, b, label))
    return out


def render_fault_windows(name: str, rows: list[dict[str, Any]], ctx: Context) -> str:
    base = min((float(r["start"]) for r in rows if _num(r.get("start"))), default=0.0)
    out = []
    for r in rows:
        start, end = r.get("start"), r.get("end")
        out.append({"fault": r.get("name"), "target": r.get("target", ""),
                    "start (+s)": round(float(start) - base, 2) if _num(start) else None,
                    "duration (s)": round(float(end) - float(start), 2) if _num(end) and _num(start) else "unfinished",
                    "detail": r.get("detail") or ""})
    if len(out) <= 12:
        return rows_table(out)
    merged = merge_windows(rows, max(float(r["end"]) for r in rows if _num(r.get("end"))) if any(_num(r.get("end")) for r in rows) else base)
    summary = [{"faults": label, "start (+s)": round(a - base, 2), "duration (s)": round(b - a, 2)} for a, b, label in merged]
    return (rows_table(summary) + f'<details><summary>all {len(out)} fault windows</summary>{rows_table(out)}</details>')


CHARTS = {"cdf": (is_cdf, render_cdf), "spread": (is_spread, render_spread),
          "spread_map": (is_spread_map, render_spread_map), "load": (is_load, render_load),
          "traces": (is_traces, render_traces), "spans": (is_spans, render_spans),
          "fault_windows": (is_fault_windows, render_fault_windows)}


class EvidenceError(ValueError):
    """A stated chart the report cannot draw: an unknown kind, or data of another shape."""


def chart_problem(v: Any) -> str | None:
    """Why a stated chart cannot be drawn (None when it can)."""
    kind = v.get("chart")
    if kind not in CHARTS:
        return f"unknown chart kind {kind!r}; known: {', '.join(CHARTS)}"
    if not CHARTS[kind][0](v.get("data")):
        return f"data does not fit a {kind} chart"
    return None


def render_value(name: str, v: Any, ctx: Context, depth: int = 0) -> str:
    head = f'<h4 class="ev-name">{escape(name)}</h4>' if depth == 0 else f'<h5>{escape(name)}</h5>'
    if is_charted(v):
        why = chart_problem(v)
        if why is not None:
            if ctx.strict:
                raise EvidenceError(f"{ctx.check.get('id')}: evidence {name!r}: {why}")
            return f'<div class="evidence">{head}<p class="bad">cannot draw: {escape(why)}</p>{json_pre(v)}</div>'
        return f'<div class="evidence">{head}{CHARTS[v["chart"]][1](name, v["data"], ctx)}</div>'
    if isinstance(v, dict) and depth < 3 and has_shape(v):
        flat = {k: x for k, x in v.items() if not isinstance(x, (dict, list))}
        inner = (kv_table(flat) if flat else "") + "".join(
            render_value(k, x, ctx, depth + 1) for k, x in v.items() if isinstance(x, (dict, list)))
        return f'<div class="evidence">{head}{inner}</div>'
    if isinstance(v, dict) and v and _shallow(v) and len(v) <= 30:
        return f'<div class="evidence">{head}{kv_table(v)}</div>'
    if is_table(v):
        return f'<div class="evidence">{head}{rows_table(v)}</div>'
    if not isinstance(v, (dict, list)):
        return f'<div class="evidence">{head}<p>{_cell(v)}</p></div>'
    size = len(json.dumps(v, default=str))
    if size > 1500:  # bulky raw data: available, but folded away
        return (f'<div class="evidence"><details class="raw"><summary>{escape(name)} '
                f'<span class="muted">(raw data, {size / 1024:,.1f} KB of JSON)</span></summary>{json_pre(v)}</details></div>')
    return f'<div class="evidence">{head}{json_pre(v)}</div>'


def render_evidence(check: dict[str, Any], strict: bool = False) -> str:
    ev = check.get("evidence") or {}
    if not ev:
        return '<p class="muted">no evidence attached</p>'
    ctx = Context(check, strict)
    # charts first, then small tables and values, then fault windows, then bulky raw data (folded)
    def rank(kv: tuple[str, Any]) -> int:
        v = kv[1]
        if is_charted(v) and v.get("chart") == "fault_windows":
            return 2
        if has_shape(v):
            return 0
        return 3 if isinstance(v, (dict, list)) and len(json.dumps(v, default=str)) > 1500 else 1
    items: Iterable[tuple[str, Any]] = sorted(ev.items(), key=rank)
    return "".join(render_value(k, v, ctx) for k, v in items)


# -- diagnostics of a failed check (meshbed.diagnostics) ------------------------

MAX_LOG_CHARS = 20_000
_MOMENTS = {"judge": "when the check was judged, before the test's own cleanup",
            "call": "when the test raised, before its fixtures' teardown",
            "teardown": "at the check fixture's teardown, after the test's own cleanup"}


def _pre(v: Any, limit: int = MAX_LOG_CHARS, cls: str = "log") -> str:
    if isinstance(v, list):
        v = "\n".join(str(x) for x in v)
    elif not isinstance(v, str):
        v = json.dumps(v, indent=1, default=str)
    if len(v) > limit:
        v = v[:limit] + "\n… truncated"
    return f'<pre class="{cls}">{escape(v)}</pre>'


def _json_text(text: Any) -> str:
    """A stored JSON text, shown compact (one line where it fits); anything else as it is."""
    if isinstance(text, str):
        try:
            return json_pre(json.loads(text), limit=MAX_LOG_CHARS)
        except ValueError:
            return _pre(text)
    return json_pre(text, limit=MAX_LOG_CHARS)


def _fold(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>{body}</details>"


def _links(traces: list[dict[str, Any]], jaeger: dict[str, Any]) -> str:
    rows = []
    for t in traces:
        tid = str(t.get("trace_id") or "")
        links = ""
        if tid and jaeger.get("trace_url"):
            links = (f' <a href="{escape(str(jaeger["trace_url"]).replace("{trace_id}", tid))}">trace</a>'
                     f' <a href="{escape(str(jaeger.get("api_url", "")).replace("{trace_id}", tid))}">json</a>')
        rows.append(f'<li>request <code>{escape(str(t.get("request_id") or "-"))}</code> trace '
                    f'<code>{escape(tid or "-")}</code>{links}'
                    + (f' <span class="muted">{escape(str(t.get("why")))}</span>' if t.get("why") else "")
                    + f' <span class="muted">({escape(str(t.get("evidence", "")))})</span></li>')
    q = escape(str(jaeger.get("query_url") or ""))
    note = (f'<p class="muted">Jaeger: <a href="{q}">{q}</a> ({escape(str(jaeger.get("note", "")))})</p>'
            if q else "")
    return f'<ul class="traceids">{"".join(rows)}</ul>{note}'


def render_diagnostics(d: dict[str, Any]) -> str:
    """A failed check's diagnostics, compact: the facts in one table, Envoy state and logs folded."""
    if not d:
        return ""
    facts: list[tuple[str, str]] = []
    if d.get("rerun"):
        facts.append(("re-run", f'<code class="cmd">{escape(str(d["rerun"]))}</code>'))
    att = d.get("attribution") or {}
    if att:
        envoys = ", ".join(f"<b>{escape(str(n))}</b>" for n in att.get("envoys") or []) or "none"
        facts.append(("Envoys", f'{envoys} <span class="muted">(rule: {escape(str(att.get("rule", "")))}: '
                                f'{escape(str(att.get("why", "")))})</span>'))
        if att.get("services"):
            facts.append(("services", escape(", ".join(map(str, att["services"])))))
    cap = d.get("captured") or {}
    if cap:
        when = _MOMENTS.get(str(cap.get("moment")), str(cap.get("moment")))
        at = cap.get("at")
        stamp = ""
        if _num(at):
            stamp = time.strftime("%H:%M:%S UTC, ", time.gmtime(float(at)))
        facts.append(("captured", escape(stamp + when) + (f' <span class="muted">{escape(str(cap["note"]))}</span>'
                                                          if cap.get("note") else "")))
    run = d.get("run") or {}
    if run.get("run_dir"):
        facts.append(("run dir", f'<code>{escape(str(run["run_dir"]))}</code>'))
    if run.get("logs"):
        facts.append(("logs", "<br>".join(f'{escape(str(k))}: <code>{escape(str(v))}</code>'
                                          for k, v in run["logs"].items())))
    vs = [f"<b>{escape(str(n))}</b> {escape(str(svc))}: {escape(str(line))}"
          for n, e in (d.get("envoys") or {}).items() for svc, line in ((e or {}).get("vs_registry") or {}).items()]
    if vs:
        facts.append(("endpoints vs registry", "<br>".join(vs)))
    fr = d.get("failed_requests") or {}
    if fr.get("requests"):
        facts.append((f'failed requests ({len(fr["requests"])})', _links(fr["requests"], fr.get("jaeger") or {})))
    parts = []
    if d.get("error"):
        parts.append(f'<p class="fail-text">{escape(str(d["error"]))}</p>')
    if facts:
        parts.append('<table class="kv diag">' + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>"
                                                         for k, v in facts) + "</table>")
    for name, entry in (d.get("envoys") or {}).items():
        entry = entry or {}
        if entry.get("error"):
            parts.append(f'<p class="fail-text">Envoy <b>{escape(str(name))}</b>: {escape(str(entry["error"]))}</p>')
        for key in [k for k in entry if k not in ("error", "vs_registry") and not k.endswith("_cut")]:
            cut = entry.get(f"{key}_cut")
            note = f' <span class="muted">({escape(str(cut))})</span>' if cut else ""
            body = _json_text(entry[key]) if key == "config_dump" and cut else _pre(entry[key])
            parts.append(_fold(f"Envoy <b>{escape(str(name))}</b>: {escape(str(key))}{note}", body))
    if d.get("envoys_not_dumped"):
        parts.append(f'<p class="muted">{escape(str(d["envoys_not_dumped"]))}</p>')
    for name, tail in (d.get("logs") or {}).items():
        parts.append(_fold(f"log tail: <b>{escape(str(name))}</b>", _pre(tail)))
    shown = {"rerun", "attribution", "captured", "run", "failed_requests", "error", "envoys", "envoys_not_dumped",
             "logs"}
    for k, v in d.items():
        if k not in shown:
            parts.append(_fold(escape(str(k)), _pre(v)))
    return f'<div class="diagnostics"><h4>diagnostics at the moment of failure</h4>{"".join(parts)}</div>'
