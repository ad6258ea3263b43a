"""PIDs we may signal: only processes we started, identified by PID *and* start time.

A PID alone can be recycled after a crash; the kernel's start time for the
PID (field 22 of /proc/PID/stat) makes the identity exact, so a sweep never
signals a stranger that happens to reuse a number.
"""

from __future__ import annotations

import os
import signal
import time


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode()
    except OSError:
        return None
    # the command name may contain spaces/parens: split after the last ')'
    rest = data[data.rfind(")") + 2 :].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def is_ours(pid: int, started: int | None) -> bool:
    st = start_time(pid)
    if st is None:
        return False
    if _is_zombie(pid):
        return False
    return started is None or st == started


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode()
        return data[data.rfind(")") + 2 :].split()[0] == "Z"
    except OSError:
        return True


def signal_if_ours(pid: int, started: int | None, sig: int) -> bool:
    if not is_ours(pid, started):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def terminate(pid: int, started: int | None, grace: float = 5.0) -> None:
    """SIGCONT (a paused process cannot exit), SIGTERM, wait, then SIGKILL."""
    if not is_ours(pid, started):
        return
    signal_if_ours(pid, started, signal.SIGCONT)
    signal_if_ours(pid, started, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not is_ours(pid, started):
            return
        time.sleep(0.02)
    signal_if_ours(pid, started, signal.SIGKILL)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and is_ours(pid, started):
        time.sleep(0.02)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode()
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def group_members(pgid: int, not_before: int | None) -> list[tuple[int, int]]:
    """(pid, start time) of live processes in process group ``pgid`` started no earlier than ``not_before``.

    Components run in their own session (pgid = the leader's PID), so this
    finds what a wrapper script left behind even after the leader is gone.
    """
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if f is None or f[0] == "Z":
            continue
        try:
            pg, st = int(f[2]), int(f[19])
        except (IndexError, ValueError):
            continue
        if pg == pgid and (not_before is None or st >= not_before):
            out.append((int(entry), st))
    return out


def terminate_group(pgid: int, started: int | None, grace: float = 5.0) -> list[int]:
    """End every process of a component's group (leader and children); returns the PIDs signalled."""
    members = group_members(pgid, started)
    for pid, st in members:
        signal_if_ours(pid, st, signal.SIGCONT)
        signal_if_ours(pid, st, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(is_ours(p, st) for p, st in members):
        time.sleep(0.02)
    for pid, st in members:
        signal_if_ours(pid, st, signal.SIGKILL)
    return [p for p, _ in members]
