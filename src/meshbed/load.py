"""Locust load as a subprocess, parsed into Python.

``import locust`` monkey-patches gevent into the process it is imported in,
which breaks grpcio and ssl: Locust never runs inside pytest, only as a child
process, and its results come back through files: the locustfile records
every request through Locust's ``events.request`` hook into a CSV with a
header row (``loadtests/locustfile.py``), read here by column name.

A run is one Locust process, or Locust's own distributed mode (a master and N
workers, ``workers=N``; ``--load-workers`` / ``load_workers``): then each
worker writes its own request log, and Locust's totals are the master's
aggregate. Every Locust process is recorded in the mesh's run state while it
runs, so a run killed outright leaves nothing that `meshbed down` cannot find.
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
from typing import TYPE_CHECKING, Any

from . import wait
from .errors import ComponentError, ConfigError
from .ports import PortAllocator
from .settings import MAX_LOAD_WORKERS
from .stats import summarize

if TYPE_CHECKING:
    from .runtime.state import RunState

SHAPES = ("steady", "ramp", "spike")
# the request log's columns (loadtests/locustfile.py writes them, by name, in its header row)
COLUMNS = ("ts", "request_id", "status", "latency_ms", "instances", "error")
REQUIRED_COLUMNS = ("ts", "request_id", "status", "latency_ms", "instances")
# the locustfile's own environment variables: a run passes its settings as arguments instead
LOCUSTFILE_ENV = ("MESHBED_SHAPE", "MESHBED_USER_RPS", "MESHBED_PATH", "MESHBED_REQUEST_LOG")
MAX_WORKERS = MAX_LOAD_WORKERS


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
    # Locust's own stats: with workers, the master's aggregate of every worker's reports
    locust_totals: dict[str, Any] = field(default_factory=dict)
    workers: int = 0  # 0: one Locust process

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
                "locust_totals": self.locust_totals,
                "locust": f"master + {self.workers} workers (totals: the master's aggregate)" if self.workers
                else "one process"}


class LoadRun:
    """A bounded Locust run in the background: ``with LoadRun(url, ...) as run: ...; run.result()``.

    ``workers`` 0: one Locust process; N >= 1: Locust's own distributed mode, a
    master (``--master``, bound to loopback) and N ``--worker`` processes here.
    Either way the run's users, spawn rate and duration go in as Locust's own
    ``-u/-r/-t``; a named ``shape`` other than steady as ``--meshbed-shape``.
    Every process is recorded in ``state`` (the mesh's run.json) while it runs,
    so `meshbed down` and the next `meshbed up` sweep it if this process dies.
    """

    def __init__(self, host_url: str, workdir: Path, *, users: int = 10, user_rps: float = 4.0,
                 duration_s: float = 30.0, shape: str = "steady", path: str = "/", workers: int = 0,
                 state: "RunState | None" = None) -> None:
        if shape not in SHAPES:
            raise ConfigError(f"load shape {shape!r} is not one of {', '.join(SHAPES)}")
        if not all(math.isfinite(x) for x in (user_rps, duration_s)) or users < 1 or user_rps < 0 \
                or duration_s <= 0:
            raise ConfigError("load needs users >= 1, user_rps >= 0 (0: unpaced) and duration_s > 0")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= MAX_WORKERS:
            raise ConfigError(f"load workers must be an integer in 0..{MAX_WORKERS} (0: one Locust process), "
                              f"got {workers!r}")
        self.host_url, self.workdir = host_url, workdir
        self.users, self.user_rps, self.duration_s, self.shape, self.path = users, user_rps, duration_s, shape, path
        self.workers, self.state = workers, state
        self.proc: subprocess.Popen[bytes] | None = None  # the master, or the only process
        self.worker_procs: list[subprocess.Popen[bytes]] = []
        self._names: list[str] = []  # the names the processes have in the run state
        self._t0 = 0.0
        self._result: LoadResult | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.request_log = workdir / "requests.csv"  # the single process's; workers write requests-wN.csv
        self.json_file = workdir / "locust.json"  # Locust's own stats (the master's aggregate when distributed)
        self.log_file = workdir / "locust.log"

    @property
    def started_at(self) -> float:
        """Wall-clock time (time.time()) Locust was started; 0.0 before start()."""
        return self._t0

    @property
    def request_logs(self) -> list[Path]:
        """Every request log of the run: one per process that sends requests."""
        if not self.workers:
            return [self.request_log]
        return [self.workdir / f"requests-w{i + 1}.csv" for i in range(self.workers)]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return ([self.proc] if self.proc is not None else []) + self.worker_procs

    def __enter__(self) -> "LoadRun":
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.finish()  # the test failed: do not wait out the load
        else:
            self.stop()

    def argv(self) -> list[str]:
        """The Locust command line of the run (of the master, when distributed): Locust's own options."""
        argv = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless", "--host", self.host_url,
                "-u", str(self.users), "-r", str(self.users * (3 if self.shape == "spike" else 1)),
                "-t", f"{math.ceil(self.duration_s)}s",
                "--only-summary", "--loglevel", "WARNING", "--json-file", str(self.json_file.with_suffix("")),
                "--stop-timeout", "5", "--meshbed-user-rps", repr(float(self.user_rps)), "--meshbed-path", self.path]
        if self.shape != "steady":  # steady is Locust's own -u/-r/-t; the others are named shapes over them
            argv += ["--meshbed-shape", self.shape]
        return argv

    def start(self) -> None:
        for f in self.request_logs:
            f.unlink(missing_ok=True)
        # the run's settings go in as arguments; a MESHBED_SHAPE etc. in our own environment must not leak in
        env = {k: v for k, v in os.environ.items() if k not in LOCUSTFILE_ENV}
        argv = self.argv()
        log = open(self.log_file, "ab")
        try:
            self._t0 = time.time()
            if not self.workers:
                self.proc = self._spawn("locust", argv, dict(env, MESHBED_REQUEST_LOG=str(self.request_log)), log)
                return
            port = PortAllocator().take()
            master = argv + ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                             "--expect-workers", str(self.workers), "--expect-workers-max-wait", "30"]
            self.proc = self._spawn("locust-master", master, env, log)
            for i, req_log in enumerate(self.request_logs):
                worker = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--worker", "--master-host",
                          "127.0.0.1", "--master-port", str(port), "--loglevel", "WARNING"]
                self.worker_procs.append(self._spawn(f"locust-worker-{i + 1}", worker,
                                                     dict(env, MESHBED_REQUEST_LOG=str(req_log)), log))
        except BaseException:
            self._kill_all()
            raise
        finally:
            log.close()

    def _spawn(self, role: str, argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
        """One Locust process in its own session, recorded in the run state before anything else happens."""
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        name = f"{role}:{self.workdir.name}:{proc.pid}"
        self._names.append(name)
        if self.state is not None:
            try:
                self.state.record_process(name, proc.pid)
            except BaseException:  # not recorded: nothing could sweep it later, so it ends now
                proc.kill()
                proc.wait(timeout=5)
                raise
        return proc

    def wait_started(self, timeout: float = 30.0) -> None:
        """Until the first request is logged (Locust takes ~1 s to boot, its workers ~1 s more; on a
        saturated machine (load average 40 on 2 cores) over 15 s, hence the deadline)."""
        def first_request() -> bool:
            for p in self.processes:
                if p.poll() is not None:
                    tail = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()][-1:] \
                        if self.log_file.exists() else []
                    raise ComponentError(f"locust exited (code {p.returncode}) before sending a request"
                                         + (f": {tail[0][:200]}" if tail else ""), hint=f"see {self.log_file}")
            return any(has_request(f) for f in self.request_logs)

        wait.until(first_request, deadline=timeout + (10.0 if self.workers else 0.0), interval=0.05,
                   what="locust's first request", hint=f"see {self.log_file}", fatal=(ComponentError,))

    def finish(self) -> None:
        """End the run early (a check has measured what it needs); the request log stays complete."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # a master tells its workers to stop and quit
        self.stop(timeout=15)

    def stop(self, timeout: float | None = None) -> None:
        if self.proc is None:
            return
        bound = self.duration_s + 20 + (30 if self.workers else 0) if timeout is None else timeout
        for p in self.processes:  # the master (or the only process) first: it ends its workers
            _end(p, bound)
            bound = min(bound, 10.0)
        self._forget()

    def _kill_all(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        self._forget()

    def _forget(self) -> None:
        """The processes have ended: out of the run state."""
        if self.state is not None:
            for name in self._names:
                self.state.record_process(name, None)
        self._names.clear()

    def result(self) -> LoadResult:
        self.stop()
        if self._result is None:
            requests = sorted((r for f in self.request_logs for r in parse_request_log(f)), key=lambda r: r.ts)
            self._result = LoadResult(requests, time.time() - self._t0, _totals(self.json_file),
                                      workers=self.workers)
            if self._result.n == 0:
                raise ComponentError("locust sent no request", hint=f"see {self.log_file}")
            self._result.duration_s = self._result.requests[-1].ts - self._result.requests[0].ts or self.duration_s
        return self._result


def _end(p: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a Locust process; SIGINT when it overruns, SIGKILL when it ignores that."""
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def for_mesh(mesh: Any, workdir: Path, **kw: Any) -> LoadRun:
    """A LoadRun against ``mesh``'s ingress: its workers from the mesh's settings (``load_workers``),
    its processes recorded in the mesh's run state (when the runtime keeps one)."""
    kw.setdefault("workers", int(getattr(mesh.settings, "load_workers", 0) or 0))
    return LoadRun(mesh.ingress_url, workdir, state=getattr(mesh.runtime, "state", None), **kw)


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
    """Locust's own totals (``--json-file X`` writes X.json; with workers, the master's aggregate),
    kept beside ours as a cross-check: requests, failures, and the rate over Locust's own span."""
    try:
        data = json.loads(json_file.read_text())
    except (OSError, ValueError):
        return {}
    rows = [r for r in (data if isinstance(data, list) else data.get("stats", [])) if isinstance(r, dict)]
    out: dict[str, Any] = {"num_requests": sum(int(r.get("num_requests", 0)) for r in rows),
                           "num_failures": sum(int(r.get("num_failures", 0)) for r in rows)}
    starts = [float(r["start_time"]) for r in rows if isinstance(r.get("start_time"), (int, float))]
    ends = [float(r["last_request_timestamp"]) for r in rows
            if isinstance(r.get("last_request_timestamp"), (int, float))]
    if starts and ends and max(ends) > min(starts):
        out["rps"] = round(out["num_requests"] / (max(ends) - min(starts)), 2)
    total_ms = sum(float(r.get("total_response_time", 0) or 0) for r in rows)
    if out["num_requests"]:
        out["avg_latency_ms"] = round(total_ms / out["num_requests"], 2)
    return out
