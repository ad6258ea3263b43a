"""Run directories: each run's configs, logs and a state file that outlives it.

The state file records every process the run started (PID + start time), so
`meshbed down` and the next `meshbed up` can sweep a run whose supervisor
was killed outright. That includes the Locust processes of a check's load
(``locust:...``, ``locust-master:...``, ``locust-worker-N:...``, recorded by
:mod:`meshbed.load` while they run): they live in sessions of their own, so
killing pytest does not end them.

Private by default: the runs directory and every run directory are created
0700 (configs and logs name ports and admin endpoints), run.json is written
0600. A run.json is checked field by field when loaded: a corrupt one is one
ConfigError line, never a crash of `status` or `down`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..safeio import atomic_write, load_json, one_line, show
from . import procutil

STATE_FILE = "run.json"
STATE_MAX_BYTES = 16 << 20
DIR_MODE = 0o700
FILE_MODE = 0o600
PID_MAX = 1 << 22  # the kernel's ceiling for pid_max
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STATE_HINT = "set --state-dir (or MESHBED_STATE_DIR) to a writable directory"


def make_private_dirs(path: Path, what: str = "state directory") -> Path:
    """Create ``path`` and any missing parents with mode 0700; one ConfigError line when it cannot be."""
    missing = []
    p = path
    try:
        while not p.exists():
            if p.is_symlink():
                raise ConfigError(f"{show(path)}: cannot create the {what}: {show(p)} is a dangling symlink",
                                  hint=_STATE_HINT)
            missing.append(p)
            p = p.parent
        if not p.is_dir():
            raise ConfigError(f"{show(path)}: cannot create the {what}: {show(p)} is a file, not a directory",
                              hint=_STATE_HINT)
        for d in reversed(missing):
            d.mkdir(mode=DIR_MODE)
            os.chmod(d, DIR_MODE)  # the umask may have taken bits away; never added any
    except FileExistsError:  # created by someone else meanwhile: fine when it is a directory
        if not path.is_dir():
            raise ConfigError(f"{show(path)}: cannot create the {what}: it exists and is not a directory",
                              hint=_STATE_HINT) from None
    except OSError as exc:
        raise ConfigError(f"{show(path)}: cannot create the {what}: {exc.strerror or exc}", hint=_STATE_HINT) from None
    return path


def _pid_entry(v: Any, where: str) -> str | None:
    if not isinstance(v, dict):
        return f"{where}: expected a mapping with pid and start, got {type(v).__name__}"
    pid = v.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid < PID_MAX:
        return f"{where}.pid: expected a process id (1..{PID_MAX - 1}), got {one_line(repr(pid))[:40]}"
    start = v.get("start")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
        return f"{where}.start: expected a start time (a non-negative integer) or null, got {one_line(repr(start))[:40]}"
    return None


def state_problem(data: Any) -> str | None:
    """What is wrong with a run.json document (None when it can be used)."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    rid = data.get("run_id")
    if not isinstance(rid, str) or not RUN_ID_RE.match(rid):
        return f"run_id: expected a run id, got {one_line(repr(rid))[:40]}"
    for key, types, name in (("status", str, "a string"), ("runtime", str, "a string"), ("topology", str, "a string"),
                             ("error", str, "a string"), ("detached", bool, "true or false"),
                             ("created_at", (int, float), "a number"), ("processes", dict, "a mapping"),
                             ("containers", list, "a list"), ("networks", list, "a list"),
                             ("endpoints", dict, "a mapping")):
        if key in data and not isinstance(data[key], types):
            return f"{key}: expected {name}, got {type(data[key]).__name__}"
    if data.get("supervisor") is not None:
        bad = _pid_entry(data["supervisor"], "supervisor")
        if bad:
            return bad
    for name, p in (data.get("processes") or {}).items():
        bad = _pid_entry(p, f"processes.{one_line(str(name))[:40]}")
        if bad:
            return bad
    for key in ("containers", "networks"):
        # the docker runtime records each as {name, id, ...} (docker.py, docker_network.py)
        if not all(isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("name"), str))
                   for x in data.get(key) or []):
            return f"{key}: expected a list of names"
    return None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class RunState:
    """The run.json of one run, written atomically on every change."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.data = data
        self._lock = threading.Lock()

    @classmethod
    def create(cls, runs_dir: Path, runtime: str, topology: str, run_id: str | None = None,
               detached: bool = False) -> "RunState":
        run_id = run_id or new_run_id()
        run_dir = runs_dir / run_id
        make_private_dirs(runs_dir, "state directory")
        try:
            run_dir.mkdir(mode=DIR_MODE)
            os.chmod(run_dir, DIR_MODE)
        except OSError as exc:
            raise ConfigError(f"{show(run_dir)}: cannot create the run directory: {exc.strerror or exc}",
                              hint=_STATE_HINT) from None
        me = os.getpid()
        st = cls(run_dir, {
            "run_id": run_id, "runtime": runtime, "topology": topology, "status": "starting", "detached": detached,
            "created_at": time.time(), "supervisor": {"pid": me, "start": procutil.start_time(me)},
            "processes": {}, "containers": [], "networks": [], "endpoints": {}, "error": "",
        })
        st.save()
        return st

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        """The run's state; one ConfigError line when run.json is missing, unreadable or malformed."""
        path = run_dir / STATE_FILE
        data = load_json(path, "run state", STATE_MAX_BYTES, max_depth=32)
        bad = state_problem(data)
        if bad:
            raise ConfigError(f"{show(path)}: corrupt run state: {bad}",
                              hint="check for leftover processes of that run, then remove its directory")
        return cls(run_dir, data)

    @property
    def run_id(self) -> str:
        return str(self.data["run_id"])

    def save(self) -> None:
        with self._lock:
            atomic_write(self.run_dir / STATE_FILE, json.dumps(self.data, indent=2, default=str),
                         what="run state", mode=FILE_MODE)

    def update(self, fn: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            fn(self.data)
        self.save()

    def record_process(self, name: str, pid: int | None) -> None:
        def f(d: dict[str, Any]) -> None:
            if pid is None:
                d["processes"].pop(name, None)
            else:
                d["processes"][name] = {"pid": pid, "start": procutil.start_time(pid)}
        self.update(f)

    def set_status(self, status: str, error: str = "") -> None:
        def f(d: dict[str, Any]) -> None:
            d["status"] = status
            if error:
                d["error"] = error
        self.update(f)

    def supervisor_alive(self) -> bool:
        sup = self.data.get("supervisor") or {}
        return bool(sup.get("pid")) and procutil.is_ours(int(sup["pid"]), sup.get("start"))

    def live_processes(self) -> dict[str, int]:
        out = {}
        for name, p in (self.data.get("processes") or {}).items():
            if procutil.is_ours(int(p["pid"]), p.get("start")):
                out[name] = int(p["pid"])
        return out


def list_runs(runs_dir: Path, problems: list[str] | None = None) -> list[RunState]:
    """Every run with a usable run.json; a corrupt one is skipped, and its one-line reason added to ``problems``."""
    try:
        if not runs_dir.is_dir():
            return []
        entries = sorted(runs_dir.iterdir())
    except OSError as exc:
        if problems is not None:
            problems.append(f"{show(runs_dir)}: cannot list the state directory: {exc.strerror or exc}")
        return []
    out = []
    for d in entries:
        try:
            if not (d / STATE_FILE).is_file():
                continue
            out.append(RunState.load(d))
        except ConfigError as exc:
            if problems is not None:
                problems.append(str(exc))
        except OSError as exc:
            if problems is not None:
                problems.append(f"{show(d)}: {exc.strerror or exc}")
    return out


def sweep_processes(state: RunState, grace: float = 3.0) -> list[str]:
    """End every recorded process of a run that is still ours; return their names."""
    killed = []
    for name, p in list((state.data.get("processes") or {}).items()):
        pid, started = int(p["pid"]), p.get("start")
        # the whole process group: a component started through a wrapper leaves children
        if procutil.terminate_group(pid, started, grace):
            killed.append(name)
    return killed


_SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "tcsh", "csh", "busybox", "tmux", "screen"}


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def stray_processes(state: RunState) -> list[tuple[int, int | None]]:
    """Processes the run started but never recorded: (pid, start time) of each.

    A stop that lands between a component's fork and the line that records its
    PID (a SIGTERM during start-up) leaves a process no run.json names. Every
    component runs in a session of its own with its working directory inside the
    run directory (0700: only its owner's processes can be there). A stray is
    such a session leader -- started after the run was created, not a shell (a
    terminal someone opened there to read logs), not this process or one of its
    ancestors (`meshbed down` run from there) -- and every process of its session.
    """
    run_dir = os.path.realpath(state.run_dir)
    created = state.data.get("created_at")
    btime = _boot_time()
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    not_before = None
    if isinstance(created, (int, float)) and btime is not None:
        not_before = int((float(created) - btime - 2.0) * hz)  # 2 s of slack for clock rounding
    mine = _ancestors()
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    sessions: dict[int, list[tuple[int, int]]] = {}
    leaders = set()
    for pid in entries:
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                f = fh.read().rsplit(b")", 1)[-1].split()
            status, sid, started = f[0], int(f[3]), int(f[19])
        except (OSError, ValueError, IndexError):
            continue
        if status == b"Z" or (not_before is not None and started < not_before):
            continue
        sessions.setdefault(sid, []).append((pid, started))
        if sid != pid:
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            continue
        if (cwd == run_dir or cwd.startswith(run_dir + "/")) and exe not in _SHELLS:
            leaders.add(pid)
    return [(pid, started) for sid in sorted(leaders) for pid, started in sessions.get(sid, [])]


def sweep_strays(state: RunState, grace: float = 3.0) -> list[str]:
    """End the run's unrecorded processes (see stray_processes); their descriptions for the caller to say."""
    strays = stray_processes(state)
    if not strays:
        return []
    names = []
    for pid, started in strays:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        names.append(f"unrecorded {comm} (pid {pid})")
    procutil._end(strays, grace)
    return names


# Sweepers for other resources (docker containers, networks) register here,
# so sweeping needs no knowledge of which runtimes exist.
EXTRA_SWEEPERS: list[Callable[[RunState], list[str]]] = []


def sweep_run(state: RunState) -> list[str]:
    swept = sweep_processes(state)
    swept += sweep_strays(state)
    for sweeper in EXTRA_SWEEPERS:
        swept += sweeper(state)
    state.set_status("down")
    return swept


def sweep_orphans(runs_dir: Path) -> dict[str, list[str]]:
    """Sweep runs whose supervisor is gone but that never reached 'down'."""
    out = {}
    for st in list_runs(runs_dir):
        if st.data.get("status") != "down" and not st.supervisor_alive():
            out[st.run_id] = sweep_run(st)
    return out
