"""NACK-1's figures: pure functions from what the check read (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..stats import summarize


@dataclass(frozen=True)
class Recovery:
    nack_seen: int  # Envoys that rejected the bad config (their update_rejected counters rose)
    recovery_p99: float | None  # s from the valid policy's write until every Envoy showed it (never: the deadline)
    never: list[str]  # Envoys that never showed the valid policy
    restarted: list[str]  # Envoys whose uptime went backwards (a restart is not a recovery)
    n: int


def recovery(rejected: Mapping[str, int], shown_s: Mapping[str, float | None], deadline_s: float,
             uptime_before: Mapping[str, int], uptime_after: Mapping[str, int]) -> Recovery:
    vals = [deadline_s if v is None else v for v in shown_s.values()]
    return Recovery(nack_seen=sum(1 for v in rejected.values() if v > 0),
                    recovery_p99=summarize(vals).p99 if vals else None,
                    never=sorted(n for n, v in shown_s.items() if v is None),
                    restarted=sorted(n for n, u in uptime_after.items() if u < uptime_before.get(n, 0)),
                    n=len(vals))


def ok_pct(statuses: list[int]) -> tuple[float | None, int]:
    """Share of answers that were 200, in %, and how many there were."""
    if not statuses:
        return None, 0
    return 100.0 * sum(1 for s in statuses if s == 200) / len(statuses), len(statuses)
