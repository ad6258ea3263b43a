"""The one wait primitive: poll until a probe holds, with a deadline.

Modelled on Istio's retry-with-Converge: a probe must succeed ``converge``
times in a row before the wait returns, so a flapping state is not taken for
a settled one. Every failure says what was awaited, for how long, what the
probe saw last, and a hint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")


@dataclass
class Waited(Generic[T]):
    """What a successful wait returns: the probe's value and when it first held."""

    value: T
    first_ok_at: float
    elapsed: float
    polls: int


class NotYet(Exception):
    """Raised by a probe to say 'not yet', with what it saw."""


def until(
    probe: Callable[[], T],
    deadline: float,
    interval: float = 0.05,
    converge: int = 1,
    *,
    what: str = "condition",
    hint: str = "",
    fatal: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Waited[T]:
    """Call ``probe`` until it returns a truthy value ``converge`` times in a row.

    ``deadline`` is a duration in seconds. A probe says 'not yet' by returning
    a falsy value or raising :class:`NotYet` (or any ``Exception``, whose text
    is kept as what was seen last); exceptions of a ``fatal`` type end the
    wait at once (e.g. the awaited process died). ``first_ok_at`` is the clock reading of the
    first success of the final streak: convergence times are measured to it.
    """
    if deadline <= 0:
        raise ValueError("deadline must be > 0 seconds")
    if converge < 1:
        raise ValueError("converge must be >= 1")
    start = clock()
    streak = 0
    first_ok = 0.0
    polls = 0
    last_seen: object = "nothing (probe never ran)"
    while True:
        polls += 1
        now = clock()
        try:
            value = probe()
            ok = bool(value)
            last_seen = value
        except fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - a probe may fail any way while waiting
            ok = False
            value = None  # type: ignore[assignment]
            last_seen = f"{type(exc).__name__}: {exc}"
        if ok:
            if streak == 0:
                first_ok = now
            streak += 1
            if streak >= converge:
                return Waited(value, first_ok, clock() - start, polls)
        else:
            streak = 0
        elapsed = clock() - start
        if elapsed >= deadline:
            seen = repr(last_seen)
            if len(seen) > 300:
                seen = seen[:300] + "..."
            raise WaitTimeout(
                f"timed out after {elapsed:.2f}s waiting for {what}"
                f" ({polls} polls, needed {converge} in a row); last saw: {seen}",
                hint=hint,
            )
        sleep(min(interval, max(0.0, deadline - elapsed)))
