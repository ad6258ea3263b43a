"""LB figures: spread and its chi-square, source agreement, weights, key affinity, failover, ejections.

Pure functions over what an LB check counted -- per backend instance, the
per-host ``rq_total`` deltas in every subscriber Envoy's ``/clusters`` and the
instances' own request counters, the client answers, outlier-detection stats
-- to the figures the check judges. Figures are judged on the worse of the two
sources. A measured absence is a value: no ejection at all is 0 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..stats import chi_square, rate_pct
from ..traffic import Answer, Batch
from .tracing import downstream_instances

HostCounts = Mapping[str, int]  # {rq_total, rq_error}
PerEnvoy = Mapping[str, Mapping[str, Mapping[str, HostCounts]]]  # envoy -> cluster -> instance -> counts


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    tot = sum(counts.values())
    return {k: (v / tot if tot else float("nan")) for k, v in counts.items()}


def even(instances: Sequence[str]) -> dict[str, float]:
    """Each instance's fair share 1/N."""
    return {i: 1 / len(instances) for i in instances}


def weighted(weights: Mapping[str, int]) -> dict[str, float]:
    """Each version's share of the weights."""
    total = sum(weights.values())
    return {v: w / total for v, w in weights.items()}


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


# -- counting: both sources over one batch -------------------------------------

def envoy_delta(before: PerEnvoy, now: PerEnvoy, instances: Iterable[str]) -> tuple[dict[str, int], dict[str, Any]]:
    """(per-instance rq_total delta summed over subscriber Envoys and clusters, the deltas per envoy/cluster)."""
    tot = {i: 0 for i in instances}
    raw: dict[str, Any] = {}
    for node, per in now.items():
        for cname, hosts in per.items():
            for inst, st in hosts.items():
                was = before.get(node, {}).get(cname, {}).get(inst, {"rq_total": 0, "rq_error": 0})
                d = st["rq_total"] - was["rq_total"]
                raw.setdefault(node, {}).setdefault(cname, {})[inst] = {"rq_total": d,
                                                                        "rq_error": st["rq_error"] - was["rq_error"]}
                if inst in tot:
                    tot[inst] += d
    return tot, raw


@dataclass(frozen=True)
class Counts:
    """Requests per backend instance over one batch, by Envoy and by the instances themselves."""

    envoy: dict[str, int]
    app: dict[str, int]
    raw: dict[str, Any]  # envoy -> cluster -> instance -> {rq_total, rq_error} deltas

    @property
    def served(self) -> int:
        return sum(self.envoy.values())

    @property
    def agree(self) -> bool:
        """Both sources have counted the same total (the batch's requests are all in)."""
        return self.served == sum(self.app.values())

    @property
    def disagreement_pct(self) -> float:
        return disagreement_pct(self.envoy, self.app)

    def by_cluster(self) -> dict[str, int]:
        """Envoy's view per cluster (e.g. backend~v1 / backend~v2), summed over the subscribers."""
        out: dict[str, int] = {}
        for per in self.raw.values():
            for cname, hosts in per.items():
                out[cname] = out.get(cname, 0) + sum(h["rq_total"] for h in hosts.values())
        return out

    def sent_to(self, cluster: str, instance: str, envoys: Iterable[str]) -> dict[str, int]:
        """Per Envoy: the requests it sent to ``instance`` in ``cluster``."""
        return {n: self.raw.get(n, {}).get(cluster, {}).get(instance, {}).get("rq_total", 0) for n in envoys}


def counted(env_before: PerEnvoy, env_now: PerEnvoy, app_before: Mapping[str, int], app_now: Mapping[str, int],
            instances: Sequence[str]) -> Counts:
    """Both sources' deltas between two readings, for ``instances``."""
    env, raw = envoy_delta(env_before, env_now, instances)
    return Counts(env, {i: app_now[i] - app_before[i] for i in instances}, raw)


def outcome(batch: Batch) -> dict[str, Any]:
    """A batch of client answers, short, for evidence."""
    a = batch.answers
    return {"requests": batch.n, "ok": batch.ok, "by_status": {str(k): v for k, v in batch.by_status().items()},
            "errors": sorted({x.error for x in a if x.error})[:5],
            "duration_s": round(max((x.sent_at + x.latency_s for x in a), default=0)
                                - min((x.sent_at for x in a), default=0), 3)}


def success_pct(batch: Batch) -> float:
    """% of client answers that were 2xx."""
    return rate_pct(batch.ok, batch.n)


# -- LB-1 / LB-3: spread --------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    envoy: dict[str, Any]  # spread_stats of Envoy's counts
    instances: dict[str, Any]  # spread_stats of the instances' own
    served: int
    disagreement_pct: float

    @property
    def max_dev_pp(self) -> float:
        return max(self.envoy["max_dev_pp"], self.instances["max_dev_pp"])

    @property
    def chi2_p(self) -> float:
        return min(self.envoy["chi2_p"], self.instances["chi2_p"])


def spread(counts: Counts, expected: Mapping[str, float], group: Mapping[str, str] | None = None) -> Spread:
    """Both sources' spread against ``expected`` shares, per instance or per ``group`` (instance -> version)."""
    env, app = counts.envoy, counts.app
    if group is not None:
        env, app = by_version(env, group, expected), by_version(app, group, expected)
    return Spread(spread_stats(env, expected), spread_stats(app, expected), counts.served, counts.disagreement_pct)


# -- LB-2: the slow endpoint ----------------------------------------------------

def slow_share_ratio(counts: Mapping[str, int], slow: str) -> float:
    """The slow endpoint's share over its fair share 1/N."""
    return shares(counts)[slow] * len(counts)


@dataclass(frozen=True)
class SlowShare:
    envoy: float
    instances: float

    @property
    def worst(self) -> float:
        return max(self.envoy, self.instances)


def slow_share(counts: Counts, slow: str) -> SlowShare:
    return SlowShare(slow_share_ratio(counts.envoy, slow), slow_share_ratio(counts.app, slow))


# -- LB-4: consistent hashing ---------------------------------------------------

def per_key(answers: Iterable[Answer]) -> dict[str, dict[str, int]]:
    """{key: {backend instance: requests}}: the key from the path the answer echoes (/.../<key>), the
    backend instance from its downstream entry; failed answers left out."""
    per: dict[str, dict[str, int]] = {}
    for a in answers:
        if not 200 <= a.status < 300:
            continue
        k = a.json().get("path", "").rsplit("/", 1)[-1]
        b = next(iter(downstream_instances(a)), "")
        if k and b:
            per.setdefault(k, {})
            per[k][b] = per[k].get(b, 0) + 1
    return per


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


@dataclass(frozen=True)
class ConsistentHash:
    """One hash policy: how well keys stick, and how many move when 1 of N endpoints goes."""

    affinity_pct: float
    affinity_n: int
    split_keys: dict[str, dict[str, int]]  # keys served by more than one endpoint
    moved: KeysMoved
    keys_on_removed: int
    keys_per_endpoint: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"affinity_pct": self.affinity_pct, "affinity_n": self.affinity_n, "split_keys": self.split_keys,
                "keys_compared": self.moved.compared, "keys_moved": self.moved.moved,
                "keys_moved_norm": self.moved.norm, "moved_not_from_removed": self.moved.moved_not_from_removed,
                "keys_on_removed_endpoint": self.keys_on_removed, "keys_per_endpoint_before": self.keys_per_endpoint}


def consistent_hash(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]], removed: str,
                    instances: Sequence[str]) -> ConsistentHash:
    """LB-4 from the per-key tallies before and after ``removed`` left (see :func:`per_key`)."""
    pct, n = affinity_pct(before)
    m1 = modal(before)
    return ConsistentHash(pct, n, {k: dict(v) for k, v in before.items() if len(v) > 1},
                          keys_moved(m1, modal(after), removed, len(instances)),
                          sum(1 for k in m1 if m1[k] == removed),
                          {i: sum(1 for k in m1 if m1[k] == i) for i in instances})


def least_affine(results: Mapping[str, ConsistentHash]) -> ConsistentHash:
    return min(results.values(), key=lambda r: r.affinity_pct)


def most_moved(results: Mapping[str, ConsistentHash]) -> ConsistentHash:
    return max(results.values(), key=lambda r: r.moved.norm)


# -- LB-5: priority failover ----------------------------------------------------

@dataclass(frozen=True)
class Failover:
    secondary_envoy_pct: float  # share of the requests the secondaries served, by Envoy's counts
    secondary_app_pct: float  # ... by the instances' own
    error_pct: float  # client answers that were not 2xx
    requests: int
    served: int

    @property
    def secondary_pct(self) -> float:
        return min(self.secondary_envoy_pct, self.secondary_app_pct)


def failover(counts: Counts, secondaries: Sequence[str], batch: Batch) -> Failover:
    return Failover(rate_pct(sum(counts.envoy[i] for i in secondaries), counts.served),
                    rate_pct(sum(counts.app[i] for i in secondaries), sum(counts.app.values())),
                    rate_pct(batch.n - batch.ok, batch.n), batch.n, counts.served)


# -- LB-6: outlier detection ----------------------------------------------------

EJECTIONS = "ejections_enforced_consecutive_5xx"  # the outlier_detection stat of a consecutive-5xx ejection


@dataclass
class Ejections:
    """LB-6, per caller Envoy: did each one that sent to the failing endpoint eject it in time?"""

    pct: float  # % of those Envoys that ejected within the threshold (0 when none did)
    n: int  # Envoys that sent to the failing endpoint
    per_envoy: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_flight_allowance: int = 0


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
    return Ejections(rate_pct(ok, len(senders)) if senders else 0.0, len(senders), per, in_flight_allowance)


def outlier_ejections(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]],
                      failures_seen: Mapping[str, int], threshold: int, max_in_flight: int,
                      ejected_at_end: Mapping[str, list[str]] | None = None) -> Ejections:
    """LB-6 from each caller Envoy's outlier_detection stats before/after and the 5xx it saw from the endpoint.

    The requests already in flight to the endpoint (its own ``max_in_flight`` - 1) cannot be
    recalled by any ejection: they are allowed on top of ``threshold``.
    """
    delta = {n: {k: x - before.get(n, {}).get(k, 0) for k, x in st.items()} for n, st in after.items()}
    ej = ejections({n: after[n].get(EJECTIONS, 0) - before.get(n, {}).get(EJECTIONS, 0) for n in after},
                   failures_seen, threshold, max(0, int(max_in_flight) - 1))
    for n, v in ej.per_envoy.items():
        v.update(outlier_stats_delta=delta.get(n, {}), failed_outlier_check_at_end=(ejected_at_end or {}).get(n, []))
    return ej
