"""What a suite test writes into: figures, evidence, then a computed verdict."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from .catalog import CATALOG
from .model import CheckResult, Figure
from .profile import CheckProfile


class Check:
    """One catalog check being run by one test (the `check` fixture)."""

    def __init__(self, check_id: str, profile: CheckProfile, nodeid: str = "") -> None:
        entry = CATALOG[check_id]
        self.result = CheckResult(check_id, entry.title, entry.group, thresholds=list(profile.thresholds),
                                  started_at=time.time(), nodeid=nodeid)
        self.p = profile.params  # the check's typed params (meshbed.checks.params)
        self.policy_apply_s: list[float] = []
        self.policy_applies: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self.judged = False
        # which Envoys / services the figures and evidence are about (meshbed.diagnostics.attribute)
        self.figure_envoys: dict[str, Sequence[str] | Mapping[str, float | None]] = {}
        self.evidence_envoys: dict[str, list[str]] = {}
        self.services: list[str] = []
        # called when the check is judged fail or error, before judge() raises: the test's `with`
        # blocks and fixtures have undone nothing yet (the plugin captures diagnostics here)
        self.on_failure: Callable[["Check"], None] | None = None

    @property
    def id(self) -> str:
        return self.result.id

    def figure(self, name: str, value: float | None, unit: str, n: int, source: str = "", min_n: int = 1,
               bad_count: bool = False,
               envoys: Sequence[str] | Mapping[str, float | list[float] | None] | None = None) -> Figure:
        """Record a measured figure (replacing one of the same name).

        ``envoys``: the Envoys the figure was measured on, or each one's own value of it (in the
        figure's unit; None: never); a failing figure's diagnostics dump those breaking the threshold.
        """
        names: tuple[str, ...] = ()
        if envoys is not None:
            self.figure_envoys[name] = dict(envoys) if isinstance(envoys, Mapping) else list(envoys)
            names = tuple(sorted(envoys))
        f = Figure(name, None if value is None else float(value), unit, int(n), source, int(min_n), bad_count,
                   names)
        self.result.figures = [x for x in self.result.figures if x.name != name] + [f]
        return f

    def evidence(self, key: str, value: Any, envoys: Sequence[str] | None = None) -> None:
        """A value the report shows as a table or JSON (use :meth:`chart` for something to draw).

        ``envoys``: the Envoys this evidence shows a problem on (diagnostics dump them on a failure).
        """
        self.result.evidence[key] = value
        if envoys:
            self.evidence_envoys[key] = list(envoys)

    def target(self, *services: str) -> None:
        """The services this check is about: a failure's diagnostics trim each Envoy's config to them,
        and fall back to the Envoys that subscribe to them."""
        self.services = list(dict.fromkeys([*self.services, *services]))

    def chart(self, kind: str, key: str, data: Any) -> None:
        """Evidence the report draws as ``kind`` (cdf, spread, spread_map, load, spans, traces, fault_windows)."""
        from ..report.evidence import CHARTS
        if kind not in CHARTS:
            raise ValueError(f"{self.id}: unknown chart kind {kind!r}; known: {', '.join(CHARTS)}")
        # nothing to draw (no fault window, no incomplete trace): a plain value
        self.result.evidence[key] = {"chart": kind, "data": data} if data else data

    def policy_applied(self, per_envoy_s: dict[str, float | None], deadline_s: float, what: dict[str, Any]) -> None:
        """Judge how long a policy took to show on every affected Envoy (never shown: the deadline)."""
        from ..stats import summarize
        vals = [deadline_s if v is None else v for v in per_envoy_s.values()]
        self.policy_apply_s += vals
        self.policy_applies.append({**what, "per_envoy_s": per_envoy_s, "deadline_s": deadline_s})
        s = summarize(self.policy_apply_s)
        src = "policy in Consul KV -> contract shown in each Envoy's /config_dump (meshbed.contract)"
        per: dict[str, list[float]] = {}
        for a in self.policy_applies:
            for n, v in a["per_envoy_s"].items():
                per.setdefault(n, []).append(a["deadline_s"] if v is None else v)
        self.figure("policy_apply_p99", s.p99, "s", s.n, src, envoys=per)
        self.figure("policy_apply_p50", s.p50, "s", s.n, src, envoys=per)
        if what.get("service") not in (None, "mesh"):
            self.target(str(what["service"]))
        self.evidence("policy_applies", self.policy_applies)

    def judge(self) -> None:
        """Compute the verdict; a fail raises AssertionError with every failing figure."""
        self.result.duration_s = time.monotonic() - self._t0
        verdict, reason = self.result.judge()
        self.result.verdict, self.result.reason = verdict, reason
        self.judged = True
        if verdict in ("fail", "error") and self.on_failure is not None:
            self.on_failure(self)
        if verdict == "fail":
            raise AssertionError(f"{self.id} failed: {reason}")
        if verdict == "error":
            raise AssertionError(f"{self.id} could not be judged: {reason}")
