"""Inline SVG charts, drawn in Python: no JavaScript chart library, no network.

Every function returns one ``<svg>`` string; output depends only on its input
(no random ids, no clocks), so a report renders byte-identically from the
same JSON.
"""

from __future__ import annotations

import math
from html import escape
from typing import Iterable, Sequence

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FAULT_FILL = "#D55E00"

Point = tuple[float, float]


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _f(v: float) -> str:
    """Compact, stable number formatting for coordinates."""
    return f"{v:.1f}".rstrip("0").rstrip(".") if math.isfinite(v) else "0"


def fmt(v: float | None, unit: str = "") -> str:
    """A human number: 3 significant digits, thousands kept whole."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    a = abs(v)
    if a >= 1000 or v == int(v):
        s = f"{v:,.0f}" if a >= 1000 else f"{int(v)}"
    elif a >= 1:
        s = f"{v:.3g}" if a < 100 else f"{v:.1f}"
    else:
        s = f"{v:.3g}"
    return f"{s} {unit}".strip() if unit else s


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


class _Frame:
    """A plot area with linear x/y scales and the axes drawn around it."""

    def __init__(self, width: int, height: int, xr: tuple[float, float], yr: tuple[float, float],
                 margin: tuple[int, int, int, int] = (14, 16, 42, 58)) -> None:
        self.w, self.h = width, height
        self.mt, self.mr, self.mb, self.ml = margin
        self.xt = nice_ticks(*xr)
        self.yt = nice_ticks(*yr)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.ml + (v - self.x0) / span * (self.w - self.ml - self.mr)

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.h - self.mb - (v - self.y0) / span * (self.h - self.mt - self.mb)

    def axes(self, x_label: str, y_label: str, y_fmt=None, x_fmt=None) -> list[str]:
        y_fmt = y_fmt or (lambda v: fmt(v))
        x_fmt = x_fmt or (lambda v: fmt(v))
        out = []
        for t in self.yt:
            y = _f(self.y(t))
            out.append(f'<line class="grid" x1="{self.ml}" x2="{self.w - self.mr}" y1="{y}" y2="{y}"/>')
            out.append(f'<text class="tick" x="{self.ml - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">'
                       f'{escape(y_fmt(t))}</text>')
        for t in self.xt:
            x = _f(self.x(t))
            out.append(f'<line class="tickmark" x1="{x}" x2="{x}" y1="{self.h - self.mb}" y2="{self.h - self.mb + 4}"/>')
            out.append(f'<text class="tick" x="{x}" y="{self.h - self.mb + 16}" text-anchor="middle">{escape(x_fmt(t))}</text>')
        out.append(f'<line class="axis" x1="{self.ml}" x2="{self.w - self.mr}" y1="{self.h - self.mb}" y2="{self.h - self.mb}"/>')
        out.append(f'<line class="axis" x1="{self.ml}" x2="{self.ml}" y1="{self.mt}" y2="{self.h - self.mb}"/>')
        out.append(f'<text class="label" x="{_f((self.ml + self.w - self.mr) / 2)}" y="{self.h - 6}" '
                   f'text-anchor="middle">{escape(x_label)}</text>')
        cy = _f((self.mt + self.h - self.mb) / 2)
        out.append(f'<text class="label" x="12" y="{cy}" text-anchor="middle" transform="rotate(-90 12 {cy})">'
                   f'{escape(y_label)}</text>')
        return out


def _svg(width: int, height: int, body: Iterable[str], title: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def _legend(labels: Sequence[tuple[str, str]], x: float, y: float, dashed: Sequence[bool] = ()) -> list[str]:
    out = []
    for i, (label, col) in enumerate(labels):
        yy = y + i * 16
        dash = ' stroke-dasharray="4 3"' if i < len(dashed) and dashed[i] else ""
        out.append(f'<line x1="{_f(x)}" x2="{_f(x + 16)}" y1="{_f(yy)}" y2="{_f(yy)}" stroke="{col}" stroke-width="2.5"{dash}/>')
        out.append(f'<text class="legend" x="{_f(x + 21)}" y="{_f(yy)}" dominant-baseline="middle">{escape(label)}</text>')
    return out


def line_chart(series: Sequence[tuple[str, Sequence[Point]]], *, title: str, x_label: str, y_label: str,
               width: int = 620, height: int = 260, step: bool = False, shades: Sequence[tuple[float, float, str]] = (),
               y_min: float | None = 0.0, y_max: float | None = None, dashed: Sequence[bool] = (),
               y_fmt=None, hline: tuple[float, str] | None = None, vline: tuple[float, str] | None = None,
               x_min: float | None = None, legend_at: str = "tr") -> str:
    """Lines (or step lines) with optional shaded x-windows (fault windows) and a dashed threshold."""
    pts = [p for _, s in series for p in s if p[1] is not None and math.isfinite(p[1])]
    xs = [p[0] for p in pts] + [a for a, _, _ in shades] + [b for _, b, _ in shades]
    xs += ([vline[0]] if vline else []) + ([x_min] if x_min is not None else [])
    ys = [p[1] for p in pts] + ([hline[0]] if hline else [])
    if not pts:
        return _svg(width, 60, [f'<text class="tick" x="10" y="30">{escape(title)}: no data</text>'], title)
    ylo = min(ys) if y_min is None else min(y_min, min(ys))
    yhi = max(ys) if y_max is None else y_max
    fr = _Frame(width, height, (min(xs), max(xs)), (ylo, yhi if yhi > ylo else ylo + 1))
    body = []
    for i, (a, b, label) in enumerate(shades):
        xa, xb = fr.x(max(a, fr.x0)), fr.x(min(b, fr.x1))
        body.append(f'<rect class="fault" x="{_f(xa)}" y="{fr.mt}" width="{_f(max(1.0, xb - xa))}" '
                    f'height="{_f(fr.h - fr.mt - fr.mb)}" fill="{FAULT_FILL}" fill-opacity="0.13">'
                    f'<title>{escape(label)}</title></rect>')
        short = label.split(" → ")[0]
        body.append(f'<text class="fault-label" x="{_f(xa + 3)}" y="{fr.mt + 11 + 12 * (i % 3)}">{escape(short[:24])}</text>')
    body += fr.axes(x_label, y_label, y_fmt=y_fmt)
    if hline is not None:
        y = _f(fr.y(hline[0]))
        body.append(f'<line class="threshold" x1="{fr.ml}" x2="{fr.w - fr.mr}" y1="{y}" y2="{y}"/>'
                    f'<text class="threshold-label" x="{fr.w - fr.mr - 4}" y="{_f(fr.y(hline[0]) - 4)}" '
                    f'text-anchor="end">{escape(hline[1])}</text>')
    if vline is not None:
        x = _f(fr.x(vline[0]))
        body.append(f'<line class="threshold" x1="{x}" x2="{x}" y1="{fr.mt}" y2="{fr.h - fr.mb}"/>'
                    f'<text class="threshold-label" x="{_f(fr.x(vline[0]) - 4)}" y="{fr.h - fr.mb - 6}" '
                    f'text-anchor="end">{escape(vline[1])}</text>')
    for i, (label, s) in enumerate(series):
        seg: list[str] = []
        paths: list[list[str]] = []
        prev: Point | None = None
        for x, y in s:
            if y is None or not math.isfinite(y):  # a gap
                if seg:
                    paths.append(seg)
                seg, prev = [], None
                continue
            if step and prev is not None:
                seg.append(f"{_f(fr.x(x))},{_f(fr.y(prev[1]))}")
            seg.append(f"{_f(fr.x(x))},{_f(fr.y(y))}")
            prev = (x, y)
        if seg:
            paths.append(seg)
        dash = ' stroke-dasharray="5 3"' if i < len(dashed) and dashed[i] else ""
        for p in paths:
            if len(p) == 1:
                cx, cy = p[0].split(",")
                body.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color(i)}"/>')
            else:
                body.append(f'<polyline class="series" fill="none" stroke="{color(i)}" stroke-width="2"{dash} '
                            f'points="{" ".join(p)}"><title>{escape(label)}</title></polyline>')
    if len(series) > 1 or (series and series[0][0]):
        labels = [(lab, color(i)) for i, (lab, _) in enumerate(series) if lab]
        longest = max((len(lab) for lab, _ in labels), default=0)
        if legend_at == "br":
            lx, ly = fr.w - fr.mr - 30 - 6.2 * longest, fr.h - fr.mb - 12 - 16 * (len(labels) - 1)
        else:  # top right: fault labels sit top left
            lx, ly = fr.w - fr.mr - 30 - 6.2 * longest, fr.mt + 10
        box = (f'<rect x="{_f(lx - 6)}" y="{_f(ly - 9)}" width="{_f(36 + 6.2 * longest)}" height="{16 * len(labels) + 2}" '
               f'fill="#fff" fill-opacity="0.85" rx="3"/>')
        body += [box] + _legend(labels, lx, ly, dashed)
    return _svg(width, height, body, title)


def cdf_chart(per_series: dict[str, Sequence[float]], *, title: str, unit: str = "s",
              threshold: float | None = None, threshold_label: str = "", width: int = 620, height: int = 260) -> str:
    """Empirical CDF per series (one step line per Envoy), with the threshold as a vertical line when it fits."""
    series = []
    for name, values in per_series.items():
        vals = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
        if not vals:
            continue
        n = len(vals)
        pts: list[Point] = [(vals[0], 0.0)] + [(v, (i + 1) / n * 100) for i, v in enumerate(vals)]
        series.append((f"{name} (n={n})", pts))
    vline = None
    if threshold is not None and series:
        top = max(p[0] for _, s in series for p in s)
        # a threshold far beyond the data would squash every line against the axis: name it instead
        vline = (threshold, threshold_label) if threshold <= 3 * top else None
    return line_chart(series, title=title, x_label=f"time to converge ({unit})", y_label="% of samples ≤ x",
                      width=width, height=height, step=True, y_min=0, y_max=100, vline=vline, x_min=0,
                      legend_at="br")


def histogram(values: Sequence[float], *, title: str, unit: str = "s", bins: int = 20,
              width: int = 620, height: int = 220) -> str:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return _svg(width, 60, [f'<text class="tick" x="10" y="30">{escape(title)}: no data</text>'], title)
    lo, hi = min(vals), max(vals)
    if hi == lo:
        hi = lo + 1e-9
    w = (hi - lo) / bins
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / w))] += 1
    fr = _Frame(width, height, (lo, hi), (0, max(counts)))
    body = fr.axes(f"value ({unit})", "samples")
    for i, c in enumerate(counts):
        if not c:
            continue
        xa, xb = fr.x(lo + i * w), fr.x(lo + (i + 1) * w)
        body.append(f'<rect x="{_f(xa + 0.5)}" y="{_f(fr.y(c))}" width="{_f(max(1.0, xb - xa - 1))}" '
                    f'height="{_f(fr.y(0) - fr.y(c))}" fill="{color(0)}"><title>{fmt(lo + i * w)}–{fmt(lo + (i + 1) * w)} '
                    f'{escape(unit)}: {c}</title></rect>')
    return _svg(width, height, body, title)


def share_bars(rows: Sequence[tuple[str, float, float | None, int]], *, title: str, width: int = 620) -> str:
    """Horizontal bars of observed share (%) per endpoint, each with its expected share marked.

    rows: (label, observed %, expected % or None, count)
    """
    bar_h, gap, ml, mr, mt = 20, 8, 110, 170, 24
    height = mt + len(rows) * (bar_h + gap) + 34
    hi = max([r[1] for r in rows] + [r[2] or 0 for r in rows] + [1.0])
    ticks = nice_ticks(0, hi * 1.05, 5)
    top = ticks[-1]

    def x(v: float) -> float:
        return ml + v / top * (width - ml - mr)

    body = []
    base = height - 30
    for t in ticks:
        body.append(f'<line class="grid" x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{mt - 6}" y2="{base}"/>'
                    f'<text class="tick" x="{_f(x(t))}" y="{base + 14}" text-anchor="middle">{fmt(t)}%</text>')
    for i, (label, obs, exp, count) in enumerate(rows):
        y = mt + i * (bar_h + gap)
        off = exp is not None and exp > 0 and abs(obs - exp) > max(3.0, 0.25 * exp)
        fill = "#D55E00" if off else color(0)
        body.append(f'<text class="tick" x="{ml - 8}" y="{_f(y + bar_h / 2)}" text-anchor="end" '
                    f'dominant-baseline="middle">{escape(label[:24])}</text>')
        body.append(f'<rect x="{ml}" y="{y}" width="{_f(max(0.5, x(obs) - ml))}" height="{bar_h}" fill="{fill}" rx="2">'
                    f'<title>{escape(label)}: {fmt(obs)}% observed ({count} requests)'
                    f'{"" if exp is None else f", {fmt(exp)}% expected"}</title></rect>')
        if exp is not None:
            body.append(f'<line class="expected" x1="{_f(x(exp))}" x2="{_f(x(exp))}" y1="{y - 3}" y2="{y + bar_h + 3}"/>')
        body.append(f'<text class="legend" x="{_f(width - mr + 8)}" y="{_f(y + bar_h / 2)}" dominant-baseline="middle">'
                    f'{fmt(obs)}%{"" if exp is None else f" (expected {fmt(exp)}%)"} · {count:,}</text>')
    body.append(f'<line class="axis" x1="{ml}" x2="{ml}" y1="{mt - 6}" y2="{base}"/>')
    body.append(f'<line class="expected" x1="{ml}" x2="{ml + 16}" y1="9" y2="9"/>'
                f'<text class="legend" x="{ml + 21}" y="9" dominant-baseline="middle">expected share</text>'
                f'<rect x="{ml + 130}" y="3" width="14" height="12" fill="{color(0)}"/>'
                f'<text class="legend" x="{ml + 149}" y="9" dominant-baseline="middle">observed share (% · requests)</text>')
    return _svg(width, height, body, title)


def hbars(rows: Sequence[tuple[str, float]], *, title: str, unit: str = "s", width: int = 620) -> str:
    """Plain horizontal bars (phase timings)."""
    bar_h, gap, ml, mr, mt = 16, 6, 290, 70, 6
    height = mt + len(rows) * (bar_h + gap) + 26
    hi = max([v for _, v in rows] + [1e-9])
    ticks = nice_ticks(0, hi, 5)
    top = ticks[-1]
    body = []
    base = height - 22

    def x(v: float) -> float:
        return ml + v / top * (width - ml - mr)

    for t in ticks:
        body.append(f'<line class="grid" x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{mt}" y2="{base}"/>'
                    f'<text class="tick" x="{_f(x(t))}" y="{base + 14}" text-anchor="middle">{fmt(t)} {escape(unit)}</text>')
    for i, (label, v) in enumerate(rows):
        y = mt + i * (bar_h + gap)
        body.append(f'<text class="tick" x="{ml - 8}" y="{_f(y + bar_h / 2)}" text-anchor="end" '
                    f'dominant-baseline="middle">{escape(label[:48])}</text>'
                    f'<rect x="{ml}" y="{y}" width="{_f(max(0.5, x(v) - ml))}" height="{bar_h}" fill="{color(4 if "total" in label else 0)}" rx="2">'
                    f'<title>{escape(label)}: {fmt(v, unit)}</title></rect>'
                    f'<text class="legend" x="{_f(x(v) + 6)}" y="{_f(y + bar_h / 2)}" dominant-baseline="middle">'
                    f'{fmt(v, unit)}</text>')
    return _svg(width, height, body, title)
