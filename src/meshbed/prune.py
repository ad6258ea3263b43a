"""Removing finished run directories, so the state directory does not grow without bound.

Each run leaves a directory (configs, logs, run.json) under the state
directory: ~200 KB per `up`/`down`, 11-12 MB per quick `meshbed run`.
`meshbed prune` removes finished ones (``--keep N`` newest kept,
``--older-than AGE``); `meshbed up` and `meshbed run` apply the retention
setting ``keep_runs`` (``MESHBED_KEEP_RUNS``, default 20) before they start.

Never touched: a run that is not finished (its owner is alive, or a process
it recorded still runs: `meshbed down` ends those first), a directory whose
run.json cannot be read (it is reported instead), anything that is not a run
directory (a name that is not a run id, no run.json, a symlink).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .runtime.state import RUN_ID_RE, STATE_FILE, RunState
from .safeio import one_line, show

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
MAX_AGE_S = 10 * 365 * 86400.0


def parse_age(text: str) -> float:
    """'30m', '12h', '7d', '2w' or plain seconds; ConfigError (one line) otherwise."""
    m = _AGE_RE.match(text or "")
    if not m:
        raise ConfigError(f"--older-than: {text!r} is not an age", hint="e.g. 90m, 12h, 7d or 2w")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds > MAX_AGE_S:
        raise ConfigError(f"--older-than: {text!r} is more than ten years", hint="e.g. 90m, 12h, 7d or 2w")
    return seconds


@dataclass
class RunDir:
    path: Path
    finished_at: float  # when run.json was last written (a finished run's last write is its 'down')
    size: int
    live: str = ""  # why it must stay ("" when it is finished)


@dataclass
class PruneResult:
    removed: list[RunDir] = field(default_factory=list)
    kept: list[RunDir] = field(default_factory=list)
    live: list[RunDir] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removed)


def dir_size(path: Path) -> int:
    """Bytes under ``path`` (files as allocated on disk would overstate sparse logs: apparent sizes)."""
    total = 0
    for root, dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _why_live(st: RunState) -> str:
    """Why a run still counts as live ('' when it is finished and its directory may go)."""
    if st.supervisor_alive() and st.data.get("status") != "down":
        return f"its owner (pid {st.data['supervisor']['pid']}) is alive"
    alive = st.live_processes()
    if alive:
        return f"{len(alive)} of its processes still run (`meshbed down --run {st.run_id}` ends them)"
    if st.data.get("status") != "down" and st.data.get("containers"):
        return "it is not down and recorded containers (`meshbed down --run " + st.run_id + "` removes them)"
    return ""


def scan(runs_dir: Path, problems: list[str]) -> list[RunDir]:
    """Every run directory under ``runs_dir``, newest first; unreadable ones go to ``problems``."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise ConfigError(f"{show(runs_dir)}: the state directory is a file, not a directory",
                          hint="set --state-dir (or MESHBED_STATE_DIR) to the directory that holds the runs")
    try:
        entries = list(runs_dir.iterdir()) if runs_dir.is_dir() else []
    except OSError as exc:
        raise ConfigError(f"{show(runs_dir)}: cannot list the state directory: {exc.strerror or exc}") from None
    out = []
    for d in entries:
        if not RUN_ID_RE.match(d.name) or d.is_symlink() or not d.is_dir():
            continue
        state_file = d / STATE_FILE
        try:
            if not state_file.is_file():
                continue  # not a run directory, or one being created this instant
            st = RunState.load(d)
            finished = state_file.stat().st_mtime
        except ConfigError as exc:
            problems.append(one_line(str(exc)))
            continue
        except OSError as exc:
            problems.append(f"{show(d)}: {exc.strerror or exc}")
            continue
        out.append(RunDir(d, finished, dir_size(d), _why_live(st)))
    out.sort(key=lambda r: (r.finished_at, r.path.name), reverse=True)
    return out


def prune(runs_dir: Path, keep: int | None = None, older_than: float | None = None, dry_run: bool = False,
          now: float | None = None) -> PruneResult:
    """Remove finished run directories: all but the ``keep`` newest, and/or those older than ``older_than`` s.

    With both given, a run goes when it is beyond the newest ``keep`` *and* older than the age.
    """
    if keep is None and older_than is None:
        raise ConfigError("prune needs --keep N or --older-than AGE (or both)",
                          hint="e.g. `meshbed prune --keep 5` or `meshbed prune --older-than 7d`")
    if keep is not None and keep < 0:
        raise ConfigError(f"--keep: must be >= 0, got {keep}")
    now = time.time() if now is None else now
    res = PruneResult()
    finished = []
    for r in scan(runs_dir, res.problems):
        (res.live if r.live else finished).append(r)
    for i, r in enumerate(finished):  # newest first
        beyond_keep = keep is None or i >= keep
        too_old = older_than is None or now - r.finished_at > older_than
        if not (beyond_keep and too_old):
            res.kept.append(r)
            continue
        if not dry_run:
            try:
                shutil.rmtree(r.path)
            except OSError as exc:
                res.problems.append(f"{show(r.path)}: cannot remove: {exc.strerror or exc}")
                continue
        res.removed.append(r)
    return res


def apply_retention(runs_dir: Path, keep_runs: int) -> PruneResult | None:
    """The automatic pruning of `up` and `run`: keep the newest ``keep_runs`` finished runs (0: keep all).

    Never an error: a state directory that cannot be pruned is the next command's problem, not this one's.
    """
    if keep_runs <= 0 or not runs_dir.is_dir():
        return None
    try:
        return prune(runs_dir, keep=keep_runs)
    except (ConfigError, OSError):
        return None


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
