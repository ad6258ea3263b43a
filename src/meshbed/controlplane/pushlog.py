"""A bounded record of every response sent and every ACK/NACK received.

Convergence checks read it (via /debug/pushes) to tell when each Envoy got
and accepted a change, without scraping every Envoy's admin API.
"""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class PushEvent:
    ts: float
    node: str
    type: str  # CDS | EDS | LDS | RDS
    version: str
    nonce: str
    event: str  # sent | ack | nack
    error: str = ""
    resources: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["resources"] = list(self.resources)
        return d


class PushLog:
    """Ring buffer of PushEvents; the oldest fall off past ``maxlen``."""

    def __init__(self, maxlen: int = 50_000, clock: Callable[[], float] = time.time) -> None:
        self._events: collections.deque[PushEvent] = collections.deque(maxlen=maxlen)
        self._clock = clock

    def record(
        self,
        node: str,
        type_: str,
        version: str,
        nonce: str,
        event: str,
        error: str = "",
        resources: Iterable[str] = (),
    ) -> PushEvent:
        ev = PushEvent(self._clock(), node, type_, version, nonce, event, error, tuple(resources))
        self._events.append(ev)
        return ev

    def since(self, ts: float = 0.0) -> list[PushEvent]:
        """Events strictly newer than ``ts`` (unix seconds), oldest first."""
        return [e for e in self._events if e.ts > ts]

    def __len__(self) -> int:
        return len(self._events)
