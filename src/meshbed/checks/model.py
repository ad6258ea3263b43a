"""A check's result: measured figures, thresholds, a verdict and the evidence.

A verdict is computed, never asserted by hand: every threshold names a
figure; a figure without a value, or with fewer samples than the check
needs, can never pass.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import ConfigError

Verdict = Literal["pass", "fail", "error", "skipped"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "error", "skipped")

_THRESHOLD_RE = re.compile(r"^\s*(<=|>=|<|>|==)\s*(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e-?[0-9]+)?)\s*([A-Za-z%][^\n]*)?$")

# a figure in one unit judged against a threshold in another: factor figure -> threshold
_CONVERT = {("s", "ms"): 1000.0, ("ms", "s"): 0.001, ("ms", "us"): 1000.0, ("us", "ms"): 0.001,
            ("s", "us"): 1e6, ("us", "s"): 1e-6}


def convert(value: float, unit: str, to: str) -> float | None:
    """``value`` in ``unit`` expressed in ``to``; None when the units are not comparable."""
    if unit == to or not unit or not to:
        return value
    factor = _CONVERT.get((unit, to))
    return None if factor is None else value * factor


@dataclass(frozen=True)
class Threshold:
    figure: str
    op: str  # <=, >=, <, >, ==
    value: float
    unit: str = ""

    @classmethod
    def parse(cls, figure: str, text: Any, where: str = "") -> "Threshold":
        """'<= 2.0 s' -> Threshold(figure, '<=', 2.0, 's')."""
        m = _THRESHOLD_RE.match(str(text))
        if not m:
            raise ConfigError(f"{where}{figure}: {text!r} is not a threshold like '<= 2.0 s' or '>= 99.9 %'")
        return cls(figure, m.group(1), float(m.group(2)), (m.group(3) or "").strip())

    def holds(self, v: float) -> bool:
        return {"<=": v <= self.value, ">=": v >= self.value, "<": v < self.value,
                ">": v > self.value, "==": math.isclose(v, self.value)}[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}{(' ' + self.unit) if self.unit else ''}"


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    n: int  # samples behind the figure
    source: str = ""  # where it was measured (envoy admin, consul, jaeger, instance counters, locust)
    min_n: int = 1  # fewer samples than this: the figure cannot pass
    # a count of bad events (late requests, partial pushes, NACKs): under-sampled, it can still fail
    bad_count: bool = False
    envoys: tuple[str, ...] = ()  # the Envoys it was measured on, when the test said (diagnostics)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.value, float) and not math.isfinite(self.value):
            d["value"] = None
        if self.envoys:
            d["envoys"] = list(self.envoys)
        else:
            del d["envoys"]
        return d


def _fmt(f: Figure) -> str:
    return f"{f.value:.4g}{(' ' + f.unit) if f.unit else ''}"


def judge_one(f: Figure | None, t: Threshold) -> tuple[Literal["pass", "fail", "error"], str]:
    """One threshold against its figure: (pass | fail | error, why)."""
    if f is None or f.value is None or (isinstance(f.value, float) and math.isnan(f.value)):
        return "error", f"no measured figure for {t.figure!r}"
    if not math.isfinite(float(f.value)):
        return "error", f"{t.figure}: measured value is not finite ({f.value})"
    v = convert(float(f.value), f.unit, t.unit)
    if v is None:
        return "error", f"{t.figure}: measured in {f.unit!r} but the threshold is in {t.unit!r}"
    holds = t.holds(v)
    if f.n < f.min_n:
        if not holds and f.bad_count and t.op in ("<=", "<"):
            return "fail", f"{t.figure} = {_fmt(f)}, needs {t} (already over it with {f.n} of {f.min_n} samples)"
        return "error", f"{t.figure}: only {f.n} samples, the check needs {f.min_n}"
    if not holds:
        return "fail", f"{t.figure} = {_fmt(f)}, needs {t}"
    return "pass", ""


@dataclass
class CheckResult:
    id: str
    title: str
    group: str
    verdict: Verdict = "error"
    reason: str = ""
    figures: list[Figure] = field(default_factory=list)
    thresholds: list[Threshold] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    duration_s: float = 0.0
    nodeid: str = ""

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)

    def judge(self) -> tuple[Verdict, str]:
        """Judge every threshold; a failing figure makes ``fail`` even when another could not be measured.

        ``fail``: some figure that can be trusted breaks its threshold (named first). A figure
        with fewer samples than the check needs can be trusted only when it counts bad events
        (``Figure.bad_count``) and already breaks a ``<=``/``<`` bound: more samples could only
        add bad events. ``error``: nothing fails, but some figure is missing or under-sampled,
        i.e. meshbed could not measure. ``pass``: every threshold's figure was measured with
        enough samples and holds.
        """
        if not self.thresholds:
            return "error", "the profile gives this check no threshold"
        failures: list[str] = []
        unmeasured: list[str] = []
        for t in self.thresholds:
            state, why = judge_one(self.figure(t.figure), t)
            if state == "fail":
                failures.append(why)
            elif state == "error":
                unmeasured.append(why)
        if failures:
            tail = f" (also not measured: {'; '.join(unmeasured)})" if unmeasured else ""
            return "fail", "; ".join(failures) + tail
        if unmeasured:
            return "error", "; ".join(unmeasured)
        return "pass", ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "group": self.group, "verdict": self.verdict, "reason": self.reason,
            "figures": [f.to_json() for f in self.figures],
            "thresholds": [{"figure": t.figure, "op": t.op, "value": t.value, "unit": t.unit, "text": str(t)}
                           for t in self.thresholds],
            "evidence": self.evidence, "diagnostics": self.diagnostics,
            "started_at": self.started_at, "duration_s": round(self.duration_s, 3), "nodeid": self.nodeid,
        }
