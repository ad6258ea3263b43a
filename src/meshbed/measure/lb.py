"""Load-balancer figures: spread and its chi-square, source agreement, key affinity, ejections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..stats import chi_square, rate_pct


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    tot = sum(counts.values())
    return {k: (v / tot if tot else float("nan")) for k, v in counts.items()}


def spread_stats(counts: Mapping[str, int], expected: Mapping[str, float]) -> dict[str, Any]:
    """Observed shares vs expected shares: the largest deviation (pp) and the chi-square p-value."""
    keys = sorted(expected)
    sh = shares({k: counts.get(k, 0) for k in keys})
    stat, p = chi_square([counts.get(k, 0) for k in keys], [expected[k] for k in keys])
    return {"counts": {k: counts.get(k, 0) for k in keys}, "shares": {k: round(sh[k], 5) for k in keys},
            "expected": {k: round(expected[k], 5) for k in keys},
            "max_dev_pp": max(abs(sh[k] - expected[k]) * 100 for k in keys), "chi2": stat, "chi2_p": p}


def disagreement_pct(env: Mapping[str, int], app: Mapping[str, int]) -> float:
    """Largest per-endpoint share difference between Envoy's counters and the instances' own, in pp."""
    se, sa = shares(env), shares(app)
    return max(abs(se[k] - sa.get(k, 0.0)) * 100 for k in env) if env else float("nan")


def by_version(counts: Mapping[str, int], version: Mapping[str, str], versions: Any) -> dict[str, int]:
    out = {v: 0 for v in versions}
    for i, n in counts.items():
        out[version[i]] = out.get(version[i], 0) + n
    return out


def slow_share_ratio(counts: Mapping[str, int], slow: str) -> float:
    """The slow endpoint's share over its fair share 1/N."""
    return shares(counts)[slow] * len(counts)


def modal(per_key: Mapping[str, Mapping[str, int]]) -> dict[str, str]:
    """Each key's most frequent endpoint (ties: the lexically larger name, deterministically)."""
    return {k: max(c, key=lambda i: (c[i], i)) for k, c in per_key.items()}


def affinity_pct(per_key: Mapping[str, Mapping[str, int]]) -> tuple[float, int]:
    """% of requests that went to their key's modal endpoint, and the request count."""
    hits = sum(sum(v.values()) for v in per_key.values())
    return rate_pct(sum(max(v.values()) for v in per_key.values() if v), hits), hits


@dataclass
class KeysMoved:
    compared: int
    moved: int
    norm: float  # moved fraction x N: 1.0 is the ideal for removing 1 of N endpoints
    moved_not_from_removed: int


def keys_moved(before: Mapping[str, str], after: Mapping[str, str], removed: str, n_endpoints: int) -> KeysMoved:
    common = sorted(set(before) & set(after))
    moved = [k for k in common if before[k] != after[k]]
    frac = len(moved) / len(common) if common else float("nan")
    return KeysMoved(len(common), len(moved), frac * n_endpoints, len([k for k in moved if before[k] != removed]))


@dataclass
class Ejections:
    """LB-6, per caller Envoy: did each one that sent to the failing endpoint eject it in time?"""

    pct: float  # % of those Envoys that ejected within the threshold (0 when none did)
    n: int  # Envoys that sent to the failing endpoint
    per_envoy: dict[str, dict[str, Any]] = field(default_factory=dict)


def ejections(delta_ejections: Mapping[str, int], failures_seen: Mapping[str, int], threshold: int,
              in_flight_allowance: int) -> Ejections:
    """An Envoy ejects in time when it ejected at least once and saw at most
    ``threshold + in_flight_allowance`` 5xx answers per ejection from the failing endpoint."""
    per: dict[str, dict[str, Any]] = {}
    senders = [n for n, f in failures_seen.items() if f > 0]
    ok = 0
    for n in senders:
        ej, fails = delta_ejections.get(n, 0), failures_seen[n]
        good = ej >= 1 and fails <= ej * (threshold + in_flight_allowance)
        ok += good
        per[n] = {"ejections": ej, "5xx_from_bad_endpoint": fails,
                  "5xx_per_ejection": (fails / ej) if ej else None, "in_time": good}
    return Ejections(rate_pct(ok, len(senders)) if senders else 0.0, len(senders), per)
