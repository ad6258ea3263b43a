"""What a suite test writes into: figures, evidence, then a computed verdict."""

from __future__ import annotations

import time
from typing import Any

from .catalog import CATALOG
from .model import CheckResult, Figure
from .profile import CheckProfile


class Check:
    """One catalog check being run by one test (the `check` fixture)."""

    def __init__(self, check_id: str, profile: CheckProfile, nodeid: str = "") -> None:
        entry = CATALOG[check_id]
        self.result = CheckResult(check_id, entry.title, entry.group, thresholds=list(profile.thresholds),
                                  started_at=time.time(), nodeid=nodeid)
        self.params = dict(profile.params)
        self.read_params: set[str] = set()
        self._t0 = time.monotonic()
        self.judged = False

    @property
    def id(self) -> str:
        return self.result.id

    def param(self, name: str, default: Any = None) -> Any:
        self.read_params.add(name)
        return self.params.get(name, default)

    def unused_params(self) -> list[str]:
        """Profile params this check never read: most likely a typo in the profile."""
        return sorted(set(self.params) - self.read_params)

    def figure(self, name: str, value: float | None, unit: str, n: int, source: str = "", min_n: int = 1) -> Figure:
        """Record a measured figure (replacing one of the same name)."""
        f = Figure(name, None if value is None else float(value), unit, int(n), source, int(min_n))
        self.result.figures = [x for x in self.result.figures if x.name != name] + [f]
        return f

    def evidence(self, key: str, value: Any) -> None:
        self.result.evidence[key] = value

    def judge(self) -> None:
        """Compute the verdict; a fail raises AssertionError with every failing figure."""
        self.result.duration_s = time.monotonic() - self._t0
        verdict, reason = self.result.judge()
        self.result.verdict, self.result.reason = verdict, reason
        self.judged = True
        if verdict == "fail":
            raise AssertionError(f"{self.id} failed: {reason}")
        if verdict == "error":
            raise AssertionError(f"{self.id} could not be judged: {reason}")
