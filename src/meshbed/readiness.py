"""Waiting for components: in parallel, failing fast when one dies."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

from . import wait
from .errors import ComponentError
from .runtime.base import Handle


def wait_ready(handle: Handle, deadline: float) -> float:
    """Block until the handle's readiness probe holds; returns seconds waited."""
    spec = handle.spec
    probe_fn = spec.ready
    if probe_fn is None:
        return 0.0
    start = time.monotonic()

    def probe() -> object:
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


def wait_all(handles: Iterable[Handle], deadline: float, on_ready: Callable[[Handle, float], None] = lambda h, t: None) -> None:
    """Wait for several components at once; the first failure is raised."""
    hs = list(handles)
    if not hs:
        return
    with ThreadPoolExecutor(max_workers=min(16, len(hs))) as pool:
        futures = {pool.submit(wait_ready, h, deadline): h for h in hs}
        for f, h in futures.items():
            on_ready(h, f.result())
