"""Mutable per-instance state: counters, health flag and the fault plan.

All of it lives on the event loop thread, so plain ints need no locking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FAIL_MODES = ("none", "5xx", "reset")


@dataclass
class Stats:
    """Counts of served app requests; control endpoints are not counted."""

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    in_flight: int = 0
    max_in_flight: int = 0

    def begin(self, path: str) -> None:
        """Count a request as it arrives, so in_flight reflects real concurrency."""
        self.requests += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def end(self, status: int | str) -> None:
        """Record the outcome; an aborted connection is counted as "reset"."""
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero the counters; in-flight requests keep their slot so the gauge stays right."""
        self.requests = 0
        self.by_path = {}
        self.by_status = {}
        self.started_at = time.time()
        self.max_in_flight = self.in_flight

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": dict(self.by_status),
            "started_at": self.started_at,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


@dataclass
class FaultPlan:
    """Fail a fixed share of requests, spread evenly rather than at random.

    Deterministic so a test can predict exactly how many requests fail and
    which ones: request n fails when floor(n*ratio) > floor((n-1)*ratio).
    """

    mode: str = "none"
    ratio: float = 0.0
    seen: int = 0

    def set(self, mode: str, ratio: float) -> None:
        if mode not in FAIL_MODES:
            raise ValueError(f"mode must be one of {FAIL_MODES}, got {mode!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in 0..1, got {ratio!r}")
        self.mode, self.ratio, self.seen = mode, ratio, 0

    def next(self) -> str:
        """The fault for the next request: "none", "5xx" or "reset"."""
        if self.mode == "none" or self.ratio <= 0.0:
            return "none"
        self.seen += 1
        n = self.seen
        if int(n * self.ratio + 1e-9) > int((n - 1) * self.ratio + 1e-9):
            return self.mode
        return "none"

    def snapshot(self) -> dict[str, object]:
        return {"mode": self.mode, "ratio": self.ratio, "seen": self.seen}
