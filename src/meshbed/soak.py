"""`meshbed soak`: N up/down cycles with kill -9 at random stages, then a count of what is left behind.

Each cycle runs ``meshbed up --detach`` of a topology on its own state
directory. In a bounded fraction of the cycles (``--kill-fraction``) one
process is killed with SIGKILL at a random stage:

- ``up``: the `meshbed up` process, at a random moment of its start-up;
- ``supervisor-starting``: the detached supervisor, while it brings the mesh up;
- ``supervisor-ready``: the detached supervisor, once the mesh is ready (its components are orphans);
- ``both``: the supervisor, then `meshbed up`, during start-up.

Every cycle ends with ``meshbed down --all``, as a user would after a crash.
After each cycle, and again at the end, the leftovers are counted:

- processes: those recorded in any run.json of the state directory that still
  run (PID and start time match), and any process whose command line, working
  directory or environment mentions the state directory;
- ports: the ports recorded in a run's endpoints that something still listens
  on, owned by one of those processes;
- containers: Docker containers labelled with one of the soak's run ids;
- the state directory's size (bounded by the retention setting ``keep_runs``).

The summary is one JSON object on stdout; the exit code is 1 when anything
was left over, 2 for bad input. Bounded: every child has a deadline, and the
whole soak stops at ``--max-seconds``. Only processes this soak started are
signalled, by PID (start time checked).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .prune import dir_size
from .runtime import procutil
from .runtime.state import STATE_FILE, RunState

STAGES = ("up", "supervisor-starting", "supervisor-ready", "both")
_PORT_RE = re.compile(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0):(\d{2,5})\b")


@dataclass
class SoakOptions:
    cycles: int
    topology: str = "basic"
    runtime: str = "process"
    state_dir: Path | None = None  # none: a fresh temporary directory (removed at the end when clean)
    kill_fraction: float = 0.3
    seed: int | None = None
    ready_timeout: float = 60.0
    max_seconds: float = 3600.0
    keep_runs: int = 20


@dataclass
class Cycle:
    index: int
    stage: str  # "clean" or one of STAGES
    run_id: str | None = None
    up_rc: int | None = None
    down_rc: int | None = None
    seconds: float = 0.0
    killed: list[str] = field(default_factory=list)
    leftovers: dict[str, Any] = field(default_factory=dict)


def _meshbed() -> list[str]:
    return [sys.executable, "-m", "meshbed.cli"]


def _env(opts: SoakOptions) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHBED_") or k in ("MESHBED_CACHE",)}
    env["MESHBED_KEEP_RUNS"] = str(opts.keep_runs)
    return env


# -- counting leftovers --------------------------------------------------------------------------------------

def processes_mentioning(path: Path, exclude: set[int]) -> dict[int, str]:
    """Live processes (not zombies) whose command line, working directory or environment mention ``path``."""
    needle = str(path)
    raw = needle.encode()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
            cwd = os.readlink(f"/proc/{entry}/cwd")
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    environ = fh.read()
            except OSError:
                environ = b""
        except OSError:
            continue
        if raw in cmd or raw in environ or cwd == needle or cwd.startswith(needle + "/"):
            out[int(entry)] = cmd.replace(b"\0", b" ").decode(errors="replace")[:200]
    return out


def _listeners() -> dict[int, int]:
    """Listening TCP ports on this host -> socket inode (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A":  # LISTEN
                out[int(parts[1].rsplit(":", 1)[1], 16)] = int(parts[9])
    return out


def _socket_owners(inodes: set[int]) -> dict[int, int]:
    """socket inode -> pid, for the inodes asked about."""
    owners: dict[int, int] = {}
    if not inodes:
        return owners
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                ino = int(link[8:-1])
                if ino in inodes:
                    owners.setdefault(ino, int(entry))
    return owners


def _containers(run_ids: set[str]) -> int | None:
    """Containers (any state) labelled with one of ``run_ids``; None when no Docker engine answers."""
    if not run_ids:
        return 0
    try:
        from .runtime.docker_naming import LABEL, LABEL_RUN
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={LABEL}", "--format",
                              f'{{{{.Label "{LABEL_RUN}"}}}}'], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return sum(1 for line in out.stdout.splitlines() if line.strip() in run_ids)


def count_leftovers(state_dir: Path, run_ids: set[str], exclude: set[int]) -> dict[str, Any]:
    """What the runs under ``state_dir`` left behind (see the module docstring)."""
    recorded: dict[int, str] = {}
    ports: set[int] = set()
    for rj in state_dir.glob(f"*/{STATE_FILE}"):
        try:
            st = RunState.load(rj.parent)
        except Exception:  # noqa: BLE001 - a run.json that cannot be read is counted, not fatal
            recorded[-1] = f"unreadable {rj}"
            continue
        entries = dict((st.data.get("processes") or {}).items())
        if st.data.get("supervisor"):
            entries["supervisor"] = st.data["supervisor"]
        for name, p in entries.items():
            if procutil.is_ours(int(p["pid"]), p.get("start")):
                recorded[int(p["pid"])] = f"{st.run_id}/{name}"
        ports.update(int(m) for m in _PORT_RE.findall(json.dumps(st.data.get("endpoints") or {})))
    mentioning = processes_mentioning(state_dir, exclude)
    ours = set(recorded) | set(mentioning)
    listening = _listeners()
    wanted = {listening[p]: p for p in ports if p in listening}
    owners = _socket_owners(set(wanted))
    held = sorted(wanted[ino] for ino, pid in owners.items() if pid in ours)
    reused = sorted(wanted[ino] for ino, pid in owners.items() if pid not in ours)
    containers = _containers(run_ids)
    return {
        "processes": len(ours),
        "process_list": sorted({**mentioning, **recorded}.items())[:20],
        "ports": len(held), "port_list": held[:20],
        "recorded_ports_reused_by_others": len(reused),
        "containers": containers,
        "state_dir_bytes": dir_size(state_dir),
        "run_dirs": len(list(state_dir.glob(f"*/{STATE_FILE}"))),
    }


def _failed(left: dict[str, Any]) -> bool:
    return bool(left["processes"] or left["ports"] or left["containers"])


# -- one cycle ------------------------------------------------------------------------------------------------

def _new_run(state_dir: Path, seen: set[str]) -> RunState | None:
    for rj in sorted(state_dir.glob(f"*/{STATE_FILE}")):
        if rj.parent.name not in seen:
            try:
                return RunState.load(rj.parent)
            except ConfigError:
                return None
    return None


def _kill_supervisor(st: RunState | None, up_pid: int) -> bool:
    """SIGKILL the detached supervisor of ``st`` (once it is recorded: not the `up` process's own PID)."""
    sup = (st.data.get("supervisor") or {}) if st else {}
    pid = sup.get("pid")
    if not pid or int(pid) == up_pid:
        return False
    return procutil.signal_if_ours(int(pid), sup.get("start"), signal.SIGKILL)


def _wait_for(cond: Callable[[], bool], deadline: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def run_cycle(i: int, stage: str, opts: SoakOptions, state_dir: Path, rng: random.Random,
              seen: set[str]) -> Cycle:
    c = Cycle(i, stage)
    t0 = time.monotonic()
    env = _env(opts)
    base = ["--state-dir", str(state_dir)]
    up = subprocess.Popen(_meshbed() + ["up", "--detach", "--json", "-f", opts.topology, "--runtime", opts.runtime,
                                        "--ready-timeout", str(opts.ready_timeout)] + base,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    up_start = procutil.start_time(up.pid)
    up_deadline = opts.ready_timeout * 3 + 60
    state: dict[str, RunState | None] = {"st": None}

    def run_state() -> RunState | None:
        state["st"] = _new_run(state_dir, seen)
        return state["st"]

    def supervisor_recorded() -> bool:
        st = run_state()
        return bool(st and (st.data.get("supervisor") or {}).get("pid") not in (None, up.pid))

    def ready() -> bool:
        st = run_state()
        return bool(st and st.data.get("status") in ("ready", "failed", "down")) or up.poll() is not None

    if stage in ("supervisor-starting", "both"):
        if _wait_for(supervisor_recorded, 30):
            time.sleep(rng.uniform(0.0, 2.0))
            if _kill_supervisor(state["st"], up.pid):
                c.killed.append("supervisor")
        if stage == "both" and up.poll() is None:
            time.sleep(rng.uniform(0.0, 0.5))
            if procutil.signal_if_ours(up.pid, up_start, signal.SIGKILL):
                c.killed.append("up")
    elif stage == "up":
        time.sleep(rng.uniform(0.1, 4.0))
        if up.poll() is None and procutil.signal_if_ours(up.pid, up_start, signal.SIGKILL):
            c.killed.append("up")
    elif stage == "supervisor-ready":
        _wait_for(ready, up_deadline)
        run_state()
        if _kill_supervisor(state["st"], up.pid):
            c.killed.append("supervisor")
    try:
        c.up_rc = up.wait(timeout=up_deadline)
    except subprocess.TimeoutExpired:
        procutil.signal_if_ours(up.pid, up_start, signal.SIGKILL)
        c.up_rc = up.wait()
        c.killed.append("up (deadline)")
    st = run_state()
    c.run_id = st.run_id if st else None
    down = subprocess.run(_meshbed() + ["down", "--all"] + base, stdin=subprocess.DEVNULL, capture_output=True,
                          env=env, timeout=300)
    c.down_rc = down.returncode
    c.seconds = round(time.monotonic() - t0, 2)
    return c


# -- the soak -------------------------------------------------------------------------------------------------

def soak(opts: SoakOptions, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the cycles; return the summary (``ok`` False when anything was left over)."""
    if opts.cycles < 1 or opts.cycles > 10_000:
        raise ConfigError(f"-n: must be 1..10000 cycles, got {opts.cycles}")
    if not 0.0 <= opts.kill_fraction <= 1.0:
        raise ConfigError(f"--kill-fraction: must be between 0 and 1, got {opts.kill_fraction}")
    rng = random.Random(opts.seed)
    temporary = opts.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="meshbed-soak-")) if temporary else Path(opts.state_dir)  # type: ignore[arg-type]
    from .runtime.state import make_private_dirs
    make_private_dirs(state_dir)
    kills = round(opts.cycles * opts.kill_fraction)
    plan = ["clean"] * (opts.cycles - kills) + [STAGES[k % len(STAGES)] for k in range(kills)]
    rng.shuffle(plan)
    me = _self_and_ancestors()  # a wrapper (`timeout meshbed soak --state-dir D`) mentions the directory too
    seen: set[str] = {p.name for p in state_dir.iterdir()}
    run_ids: set[str] = set()
    cycles: list[Cycle] = []
    t0 = time.monotonic()
    stopped_early = ""
    for i, stage in enumerate(plan):
        if time.monotonic() - t0 > opts.max_seconds:
            stopped_early = f"--max-seconds {opts.max_seconds:g} reached after {i} cycles"
            break
        try:
            c = run_cycle(i, stage, opts, state_dir, rng, seen)
        except BaseException:  # Ctrl-C, SIGTERM: the cycle's mesh must not outlive the soak
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            subprocess.run(_meshbed() + ["down", "--all", "--state-dir", str(state_dir)], stdin=subprocess.DEVNULL,
                           capture_output=True, env=_env(opts), timeout=300)
            raise
        if c.run_id:
            run_ids.add(c.run_id)
        seen.update(p.name for p in state_dir.iterdir())
        c.leftovers = count_leftovers(state_dir, run_ids, me)
        cycles.append(c)
        progress(f"soak cycle {i + 1}/{len(plan)}: {stage}{' (killed ' + ', '.join(c.killed) + ')' if c.killed else ''}"
                 f", up exit {c.up_rc}, down exit {c.down_rc}, {c.seconds:.1f}s; left: {c.leftovers['processes']} "
                 f"processes, {c.leftovers['ports']} ports, state dir {c.leftovers['state_dir_bytes'] >> 10} KB")
    final = count_leftovers(state_dir, run_ids, me)
    sizes = [c.leftovers["state_dir_bytes"] for c in cycles]
    summary = {
        "cycles": len(cycles), "planned": opts.cycles, "stopped_early": stopped_early,
        "seconds": round(time.monotonic() - t0, 1), "seed": opts.seed, "topology": opts.topology,
        "runtime": opts.runtime, "state_dir": str(state_dir), "keep_runs": opts.keep_runs,
        "kills": {s: sum(1 for c in cycles if c.stage == s) for s in STAGES},
        "kills_delivered": sum(1 for c in cycles if c.killed),
        "up_exit_codes": _tally(c.up_rc for c in cycles), "down_exit_codes": _tally(c.down_rc for c in cycles),
        "cycle_seconds_median": _median([c.seconds for c in cycles]),
        "cycles_with_leftovers": [c.index for c in cycles if _failed(c.leftovers)],
        "leftover_processes": final["processes"], "leftover_ports": final["ports"],
        "leftover_containers": final["containers"],
        "recorded_ports_reused_by_others": final["recorded_ports_reused_by_others"],
        "state_dir_bytes": final["state_dir_bytes"], "state_dir_bytes_max": max(sizes, default=0),
        "run_dirs": final["run_dirs"], "leftover_detail": final["process_list"] + [("port", p) for p in final["port_list"]],
    }
    summary["ok"] = not _failed(final) and not summary["cycles_with_leftovers"]
    if temporary and summary["ok"]:
        import shutil
        shutil.rmtree(state_dir, ignore_errors=True)
    return summary


def _self_and_ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _tally(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else round((s[n // 2 - 1] + s[n // 2]) / 2, 2)
