"""Statistics the verdicts rest on: percentiles with their sample counts, chi-square."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    def to_json(self) -> dict[str, float]:
        return {"n": self.n, "p50": self.p50, "p95": self.p95, "p99": self.p99, "max": self.max, "mean": self.mean}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the measured values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(1, math.ceil(q / 100.0 * len(s)))
    return s[min(k, len(s)) - 1]


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    return Summary(len(values), percentile(values, 50), percentile(values, 95), percentile(values, 99),
                   max(values), sum(values) / len(values))


def _gammainc_upper_regularized(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), by series (x < a+1) or continued fraction."""
    if x <= 0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - lg))
    # Lentz's continued fraction
    b = x + 1 - a
    c = 1e300
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - lg) * h)


def chi2_sf(stat: float, df: int) -> float:
    """Survival function of the chi-square distribution (the test's p-value)."""
    if df <= 0:
        raise ValueError("df must be >= 1")
    return _gammainc_upper_regularized(df / 2.0, stat / 2.0)


def chi_square(observed: Sequence[int], expected_shares: Sequence[float]) -> tuple[float, float]:
    """Goodness of fit of counts to expected shares: (statistic, p-value)."""
    if len(observed) != len(expected_shares) or len(observed) < 2:
        raise ValueError("need >= 2 categories, observed and expected of equal length")
    total = sum(observed)
    if total == 0:
        return math.nan, math.nan
    norm = sum(expected_shares)
    stat = 0.0
    for o, e in zip(observed, expected_shares):
        exp = total * e / norm
        if exp <= 0:
            raise ValueError("expected shares must be > 0")
        stat += (o - exp) ** 2 / exp
    return stat, chi2_sf(stat, len(observed) - 1)


def rate_pct(part: int, whole: int) -> float:
    return math.nan if whole == 0 else 100.0 * part / whole
