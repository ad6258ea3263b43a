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
