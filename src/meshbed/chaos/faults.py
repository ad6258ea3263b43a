"""Faults as context managers that always undo themselves, even when the test fails.

Every fault records its window (name, start, end, wall clock) into a
FaultLog, so reports can shade it on the load charts.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, ContextManager, Iterator

from ..errors import ComponentError
from ..runtime.base import Handle
from .toxiproxy import ToxiproxyClient

_ids = itertools.count(1)


@dataclass
class FaultWindow:
    name: str
    target: str
    start: float
    end: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultLog:
    windows: list[FaultWindow] = field(default_factory=list)

    @contextlib.contextmanager
    def window(self, name: str, target: str, **detail: Any) -> Iterator[FaultWindow]:
        w = FaultWindow(name, target, time.time(), detail=detail)
        self.windows.append(w)
        try:
            yield w
        finally:
            w.end = time.time()

    def intervals(self, now: float, name: str | None = None) -> list[tuple[float, float]]:
        """(start, end) of each window (named ``name``, or all); a window still open ends at ``now``."""
        return [(w.start, now if w.end is None else w.end) for w in self.windows if name in (None, w.name)]

    def to_json(self) -> list[dict[str, Any]]:
        return [{"name": w.name, "target": w.target, "start": w.start, "end": w.end, "detail": w.detail}
                for w in self.windows]


NULL_LOG = FaultLog()


@contextlib.contextmanager
def toxic(tp: ToxiproxyClient, proxy: str, type_: str, attributes: dict[str, Any], *, stream: str = "downstream",
          toxicity: float = 1.0, log: FaultLog = NULL_LOG) -> Iterator[str]:
    """Add one toxic to a proxy; removed on exit (retried; a hung delete is issue #558)."""
    name = f"meshbed-{type_}-{next(_ids)}"
    with log.window(type_, proxy, stream=stream, toxicity=toxicity, **attributes):
        tp.add_toxic(proxy, name, type_, attributes, stream=stream, toxicity=toxicity)
        try:
            yield name
        finally:
            _undo(lambda: tp.remove_toxic(proxy, name), f"remove toxic {name} from {proxy}")


def _undo(fn: Any, what: str, tries: int = 3) -> None:
    last: Exception | None = None
    for i in range(tries):
        try:
            fn()
            return
        except ComponentError as exc:
            last = exc
            time.sleep(0.2 * (i + 1))
    raise ComponentError(f"could not undo a fault ({what}) after {tries} tries: {last}",
                         hint="the mesh fixture's reset will retry; check the toxiproxy log")


def latency(tp: ToxiproxyClient, proxy: str, ms: int, jitter_ms: int = 0, **kw: Any):
    return toxic(tp, proxy, "latency", {"latency": ms, "jitter": jitter_ms}, **kw)


def bandwidth(tp: ToxiproxyClient, proxy: str, kb_per_s: int, **kw: Any):
    return toxic(tp, proxy, "bandwidth", {"rate": kb_per_s}, **kw)


def timeout(tp: ToxiproxyClient, proxy: str, ms: int = 0, **kw: Any):
    return toxic(tp, proxy, "timeout", {"timeout": ms}, **kw)


def reset_peer(tp: ToxiproxyClient, proxy: str, timeout_ms: int = 0, **kw: Any):
    return toxic(tp, proxy, "reset_peer", {"timeout": timeout_ms}, **kw)


def slicer(tp: ToxiproxyClient, proxy: str, average_size: int = 64, size_variation: int = 32, delay_us: int = 100, **kw: Any):
    return toxic(tp, proxy, "slicer", {"average_size": average_size, "size_variation": size_variation, "delay": delay_us}, **kw)


def limit_data(tp: ToxiproxyClient, proxy: str, nbytes: int, **kw: Any):
    return toxic(tp, proxy, "limit_data", {"bytes": nbytes}, **kw)


def slow_close(tp: ToxiproxyClient, proxy: str, delay_ms: int, **kw: Any):
    return toxic(tp, proxy, "slow_close", {"delay": delay_ms}, **kw)


@contextlib.contextmanager
def link_down(tp: ToxiproxyClient, proxy: str, log: FaultLog = NULL_LOG) -> Iterator[None]:
    """The link is cut (proxy disabled: existing connections drop, new ones are refused)."""
    with log.window("down", proxy):
        tp.set_enabled(proxy, False)
        try:
            yield
        finally:
            _undo(lambda: tp.set_enabled(proxy, True), f"re-enable proxy {proxy}")


@contextlib.contextmanager
def paused(handle: Handle, log: FaultLog = NULL_LOG) -> Iterator[None]:
    """SIGSTOP (docker pause) for the block; always resumed."""
    with log.window("pause", handle.name):
        handle.pause()
        try:
            yield
        finally:
            handle.resume()


@contextlib.contextmanager
def stopped(handle: Handle, *, kill: bool = False, ready_timeout: float = 60.0,
            log: FaultLog = NULL_LOG) -> Iterator[None]:
    """Stop (or kill -9) a component for the block; restarted and ready again on exit."""
    from ..readiness import wait_ready
    with log.window("kill" if kill else "stop", handle.name):
        if kill:
            handle.kill()
        else:
            handle.stop()
        try:
            yield
        finally:
            handle.restart()
            wait_ready(handle, ready_timeout)


@contextlib.contextmanager
def all_of(*faults: ContextManager[Any]) -> Iterator[list[Any]]:
    """Several faults as one: entered in order, all in force together, every one undone on exit.

    ``with faults.all_of(*(faults.latency(tp, p, 500) for p in proxies)):`` -- when one fails to
    enter, those already entered are undone; when one fails to undo, the others are still undone
    (then its error is raised, any earlier one chained as its context). Built on :class:`contextlib.ExitStack`.
    """
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(f) for f in faults]
