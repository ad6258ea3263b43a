"""Collect check results across a pytest session into one JSON document."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from .. import __version__
from .catalog import CATALOG
from .model import CheckResult

SCHEMA = "meshbed.conformance/v1"


class ResultsCollector:
    def __init__(self) -> None:
        self.results: dict[str, CheckResult] = {}
        self.environment: dict[str, Any] = {}
        self.topology: dict[str, Any] = {}
        self.profile: dict[str, Any] = {}
        self.phases: dict[str, float] = {}
        self.started = time.time()

    def add(self, r: CheckResult) -> None:
        self.results[r.id] = r

    def summary(self) -> dict[str, Any]:
        counts = {v: 0 for v in ("pass", "fail", "error", "skipped")}
        for r in self.results.values():
            counts[r.verdict] += 1
        ran = [r for r in self.results.values() if r.verdict != "skipped"]
        verdict = "pass" if ran and all(r.verdict == "pass" for r in ran) else ("fail" if ran else "none")
        return {**counts, "total": len(self.results), "verdict": verdict,
                "not_run": [c for c in CATALOG if c not in self.results]}

    def document(self) -> dict[str, Any]:
        order = list(CATALOG)
        checks = sorted(self.results.values(), key=lambda r: order.index(r.id) if r.id in order else 999)
        return {
            "schema": SCHEMA,
            "meshbed_version": __version__,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "started_at": self.started,
            "duration_s": round(time.time() - self.started, 3),
            "summary": self.summary(),
            "environment": {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                                        "cpus": _cpus()}, **self.environment},
            "topology": self.topology,
            "profile": self.profile,
            "phases": self.phases,
            "checks": [r.to_json() for r in checks],
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.document(), indent=1, default=_default))
        tmp.replace(path)
        return path


def _cpus() -> int:
    import os
    return os.cpu_count() or 0


def _default(o: Any) -> Any:
    if hasattr(o, "to_json"):
        return o.to_json()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
