"""PIDs we may signal: only processes we started, identified by PID *and* start time.

A PID alone can be recycled after a crash; the kernel's start time for the
PID (field 22 of /proc/PID/stat) makes the identity exact, so a sweep never
signals a stranger that happens to reuse a number.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) from /proc/PID/stat; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode()
    except OSError:
        return None
    # the command name may contain spaces/parens: split after the last ')'
    f = data[data.rfind(")") + 2 :].split()
    try:
        return f[0], int(f[2]), int(f[19])
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[2]


def is_ours(pid: int, started: int | None) -> bool:
    """Alive (not a zombie) and, when ``started`` is given, the very process we recorded."""
    st = _stat(pid)
    return st is not None and st[0] != "Z" and (started is None or st[2] == started)


def signal_if_ours(pid: int, started: int | None, sig: int) -> bool:
    if not is_ours(pid, started):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _end(members: list[tuple[int, int | None]], grace: float) -> None:
    """SIGCONT (a paused process cannot exit) and SIGTERM, wait up to ``grace``, then SIGKILL."""
    for pid, st in members:
        signal_if_ours(pid, st, signal.SIGCONT)
        signal_if_ours(pid, st, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(is_ours(p, st) for p, st in members):
        time.sleep(0.02)
    for pid, st in members:
        signal_if_ours(pid, st, signal.SIGKILL)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and any(is_ours(p, st) for p, st in members):
        time.sleep(0.02)


def terminate(pid: int, started: int | None, grace: float = 5.0) -> None:
    """End one recorded process."""
    if is_ours(pid, started):
        _end([(pid, started)], grace)


def group_members(pgid: int, not_before: int | None) -> list[tuple[int, int | None]]:
    """(pid, start time) of live processes in process group ``pgid`` started no earlier than ``not_before``.

    Components run in their own session (pgid = the leader's PID), so this
    finds what a wrapper script left behind even after the leader is gone.
    """
    out: list[tuple[int, int | None]] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z" and st[1] == pgid and (not_before is None or st[2] >= not_before):
                out.append((int(entry), st[2]))
    return out


def terminate_group(pgid: int, started: int | None, grace: float = 5.0) -> list[int]:
    """End every process of a component's group (leader and children); returns the PIDs signalled."""
    members = group_members(pgid, started)
    _end(members, grace)
    return [p for p, _ in members]


def _status_kb(status: str, key: str) -> int:
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith(key + ":")), 0)


def usage(pid: int) -> tuple[float, float] | None:
    """(CPU seconds user+system, peak RSS in MB) of a live process; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    return cpu, _status_kb(status, "VmHWM") / 1024.0


def rss_mb(pid: int) -> float | None:
    """Resident memory now, in MB; None when the process is gone."""
    try:
        return _status_kb(Path(f"/proc/{pid}/status").read_text(), "VmRSS") / 1024.0
    except OSError:
        return None


def rss_split_mb(pid: int) -> dict[str, float] | None:
    """Resident memory now, in MB, split into private (RssAnon) and file-backed (RssFile: the binary's pages,
    shared by every process of the same binary) and total (VmRSS); None when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return {k: _status_kb(status, key) / 1024.0 for k, key in (("rss", "VmRSS"), ("anon", "RssAnon"),
                                                               ("file", "RssFile"))}
