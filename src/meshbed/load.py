"""Locust load as a subprocess, parsed into Python.

``import locust`` monkey-patches gevent into the process it is imported in,
which breaks grpcio and ssl: Locust never runs inside pytest, only as a child
process, and its results come back through files: the locustfile records
every request through Locust's ``events.request`` hook into a CSV with a
header row (``loadtests/locustfile.py``), read here by column name.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import wait
from .errors import ComponentError, ConfigError
from .stats import summarize

SHAPES = ("steady", "ramp", "spike")
# the request log's columns (loadtests/locustfile.py writes them, by name, in its header row)
COLUMNS = ("ts", "request_id", "status", "latency_ms", "instances", "error")
REQUIRED_COLUMNS = ("ts", "request_id", "status", "latency_ms", "instances")


def locustfile() -> Path:
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "loadtests" / "locustfile.py", here.parent / "_templates" / "loadtests" / "locustfile.py"):
        if cand.is_file():
            return cand
    raise ComponentError("loadtests/locustfile.py not found", hint="run from a meshbed checkout")


@dataclass
class Request:
    ts: float
    request_id: str
    status: int
    latency_ms: float
    instances: tuple[str, ...]
    error: str = ""  # why Locust counted it failed ('' when it did not)


@dataclass
class LoadResult:
    requests: list[Request]
    duration_s: float
    locust_totals: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.requests)

    @property
    def failures(self) -> int:
        return sum(1 for r in self.requests if r.status != 200)

    @property
    def error_rate_pct(self) -> float:
        return math.nan if not self.requests else 100.0 * self.failures / self.n

    @property
    def rps(self) -> float:
        return self.n / self.duration_s if self.duration_s > 0 else math.nan

    def between(self, t0: float, t1: float) -> list[Request]:
        return [r for r in self.requests if t0 <= r.ts < t1]

    def history(self) -> list[dict[str, float]]:
        """Per-second rows: t (s from start), rps, failures, p50/p95 latency (ms)."""
        if not self.requests:
            return []
        start = self.requests[0].ts
        buckets: dict[int, list[Request]] = {}
        for r in self.requests:
            buckets.setdefault(int(r.ts - start), []).append(r)
        rows = []
        for sec in range(0, max(buckets) + 1):
            rs = buckets.get(sec, [])
            lat = summarize([r.latency_ms for r in rs])
            rows.append({"t": sec, "ts": start + sec, "rps": len(rs), "failures": sum(1 for r in rs if r.status != 200),
                         "p50_ms": None if not rs else round(lat.p50, 2), "p95_ms": None if not rs else round(lat.p95, 2)})
        return rows

    def summary(self) -> dict[str, Any]:
        lat = summarize([r.latency_ms for r in self.requests])
        return {"requests": self.n, "failures": self.failures, "error_rate_pct": self.error_rate_pct,
                "rps": round(self.rps, 2), "latency_ms": lat.to_json(), "duration_s": round(self.duration_s, 2),
                "locust_totals": self.locust_totals}


class LoadRun:
    """A bounded Locust run in the background: ``with LoadRun(url, ...) as run: ...; run.result()``."""

    def __init__(self, host_url: str, workdir: Path, *, users: int = 10, user_rps: float = 4.0,
                 duration_s: float = 30.0, shape: str = "steady", path: str = "/") -> None:
        if shape not in SHAPES:
            raise ConfigError(f"load shape {shape!r} is not one of {', '.join(SHAPES)}")
        if users < 1 or user_rps <= 0 or duration_s <= 0:
            raise ConfigError("load needs users >= 1, user_rps > 0 and duration_s > 0")
        self.host_url, self.workdir = host_url, workdir
        self.users, self.user_rps, self.duration_s, self.shape, self.path = users, user_rps, duration_s, shape, path
        self.proc: subprocess.Popen[bytes] | None = None
        self._t0 = 0.0
        self._result: LoadResult | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.request_log = workdir / "requests.csv"
        self.json_file = workdir / "locust.json"
        self.log_file = workdir / "locust.log"

    @property
    def started_at(self) -> float:
        """Wall-clock time (time.time()) Locust was started; 0.0 before start()."""
        return self._t0

    def __enter__(self) -> "LoadRun":
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.finish()  # the test failed: do not wait out the load
        else:
            self.stop()

    def start(self) -> None:
        self.request_log.unlink(missing_ok=True)
        env = dict(os.environ, MESHBED_SHAPE=self.shape, MESHBED_USERS=str(self.users),
                   MESHBED_USER_RPS=str(self.user_rps), MESHBED_DURATION_S=str(self.duration_s),
                   MESHBED_PATH=self.path, MESHBED_REQUEST_LOG=str(self.request_log))
        argv = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless", "--host", self.host_url,
                "--only-summary", "--loglevel", "WARNING", "--json-file", str(self.json_file.with_suffix("")),
                "--stop-timeout", "5"]
        log = open(self.log_file, "ab")
        self._t0 = time.time()
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()

    def wait_started(self, timeout: float = 15.0) -> None:
        """Until the first request is logged (Locust takes ~1 s to boot)."""
        def first_request() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                tail = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()][-1:] \
                    if self.log_file.exists() else []
                raise ComponentError(f"locust exited (code {self.proc.returncode}) before sending a request"
                                     + (f": {tail[0][:200]}" if tail else ""), hint=f"see {self.log_file}")
            return has_request(self.request_log)

        wait.until(first_request, deadline=timeout, interval=0.05, what="locust's first request",
                   hint=f"see {self.log_file}", fatal=(ComponentError,))

    def finish(self) -> None:
        """End the run early (a check has measured what it needs); the request log stays complete."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.stop(timeout=15)

    def stop(self, timeout: float | None = None) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=self.duration_s + 20 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def result(self) -> LoadResult:
        self.stop()
        if self._result is None:
            self._result = LoadResult(parse_request_log(self.request_log), time.time() - self._t0,
                                      _totals(self.json_file))
            if self._result.n == 0:
                raise ComponentError("locust sent no request", hint=f"see {self.log_file}")
            self._result.duration_s = self._result.requests[-1].ts - self._result.requests[0].ts or self.duration_s
        return self._result


def has_request(path: Path) -> bool:
    """The request log has a row after its header."""
    try:
        with open(path, newline="") as fh:
            fh.readline()
            return bool(fh.readline().strip())
    except FileNotFoundError:
        return False


def parse_request_log(path: Path) -> list[Request]:
    """The request log's rows, by column name, sorted by send time.

    A row that does not parse (the last one, cut when Locust was stopped) is
    skipped; a header without the columns meshbed needs is an error.
    """
    out: list[Request] = []
    if not path.exists():
        return out
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if reader.fieldnames and missing:
            raise ComponentError(f"{path}: the request log has no column {', '.join(missing)} "
                                 f"(header: {','.join(reader.fieldnames)[:200]})",
                                 hint="loadtests/locustfile.py and meshbed.load disagree on the columns")
        for row in reader:
            try:
                out.append(Request(float(row["ts"]), row["request_id"], int(row["status"]), float(row["latency_ms"]),
                                   tuple(x for x in (row["instances"] or "").split("|") if x),
                                   row.get("error") or ""))
            except (TypeError, ValueError):
                continue
    out.sort(key=lambda r: r.ts)
    return out


def _totals(json_file: Path) -> dict[str, Any]:
    """Locust's own totals (``--json-file X`` writes X.json), kept beside ours as a cross-check."""
    try:
        data = json.loads(json_file.read_text())
    except (OSError, ValueError):
        return {}
    rows = data if isinstance(data, list) else data.get("stats", [])
    return {"num_requests": sum(int(r.get("num_requests", 0)) for r in rows),
            "num_failures": sum(int(r.get("num_failures", 0)) for r in rows)}
