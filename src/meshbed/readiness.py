"""Waiting for components: in parallel, failing fast when one dies."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait as wait_futures
from typing import Iterable

from . import wait
from .errors import ComponentError
from .runtime.base import Handle


class _Aborted(ComponentError):
    """Another component of the same wait failed: stop waiting for this one."""


def wait_ready(handle: Handle, deadline: float, abort: threading.Event | None = None) -> float:
    """Block until the handle's readiness probe holds; returns seconds waited."""
    spec = handle.spec
    probe_fn = spec.ready
    if probe_fn is None:
        return 0.0
    start = time.monotonic()

    def probe() -> object:
        if abort is not None and abort.is_set():
            raise _Aborted(f"stopped waiting for {handle.name}")
        if not handle.alive():
            code = getattr(handle, "exit_code", None)
            lines = [ln.strip() for ln in handle.log_tail(15).splitlines() if ln.strip() and not ln.startswith("--- meshbed:")]
            last = lines[-1][:300] if lines else "(no output)"
            raise ComponentError(
                f"{handle.name} exited during start-up" + (f" (exit code {code})" if code is not None else "")
                + f": {last}",
                hint=f"full log: {handle.log_path}",
            )
        return probe_fn(handle)

    wait.until(probe, deadline, interval=0.05, what=f"{spec.ready_what} [{handle.name}]",
               hint=spec.ready_hint or f"see {handle.log_path}", fatal=(ComponentError,))
    return time.monotonic() - start


def wait_all(handles: Iterable[Handle], deadline: float) -> None:
    """Wait for several components at once; the first failure is raised at once, the other waits stop."""
    hs = list(handles)
    if not hs:
        return
    abort = threading.Event()
    with ThreadPoolExecutor(max_workers=min(16, len(hs))) as pool:
        futures = {pool.submit(wait_ready, h, deadline, abort): h for h in hs}
        done, _ = wait_futures(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None and not isinstance(f.exception(), _Aborted)]
        if failed:
            abort.set()  # the other probes give up within one poll
            raise failed[0].exception()  # type: ignore[misc]
    for f in futures:
        f.result()
