"""Churn: registrations, deregistrations and health flips at a set rate, bounded in time.

Events go through each instance's own control endpoints (the instance
deregisters/re-registers itself, or fails its health check), so what Consul
sees is exactly what a real service would cause. Every churned instance is
restored on exit.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..mesh import Mesh


@dataclass
class ChurnEvent:
    ts: float
    action: str  # deregister | register | unhealthy | healthy
    instance: str


@dataclass
class Churn:
    mesh: "Mesh"
    instances: list[str]
    rate_per_s: float
    duration_s: float
    seed: int = 1
    # never take any one service below this many registered, healthy instances
    keep_at_least: int = 1
    events: list[ChurnEvent] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    unhealthy: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.duration_s <= 0 or self.rate_per_s * self.duration_s > 10_000:
            raise ConfigError("churn needs rate > 0, duration > 0 and at most 10 000 events")

    def _act(self, action: str, inst: str) -> None:
        if action == "deregister":
            self.mesh.control(inst, "/meshbed/deregister")
            self.down.add(inst)
        elif action == "register":
            self.mesh.control(inst, "/meshbed/register")
            self.down.discard(inst)
        elif action == "unhealthy":
            self.mesh.control(inst, "/meshbed/health", {"healthy": False})
            self.unhealthy.add(inst)
        elif action == "healthy":
            self.mesh.control(inst, "/meshbed/health", {"healthy": True})
            self.unhealthy.discard(inst)
        self.events.append(ChurnEvent(time.time(), action, inst))

    def run(self, include_health: bool = False) -> list[ChurnEvent]:
        """Fire events at the rate for the duration; returns the event log."""
        rng = random.Random(self.seed)
        interval = 1.0 / self.rate_per_s
        start = time.monotonic()
        n = int(self.rate_per_s * self.duration_s)
        for i in range(n):
            target = start + i * interval
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            up = [x for x in self.instances if x not in self.down and x not in self.unhealthy]
            choices: list[tuple[str, str]] = [("register", x) for x in self.down]
            if include_health:
                choices += [("healthy", x) for x in self.unhealthy]
            for x in up:
                service = self.mesh.instances[x].service
                if sum(1 for y in up if self.mesh.instances[y].service == service) > self.keep_at_least:
                    choices.append(("deregister", x))
                    if include_health:
                        choices.append(("unhealthy", x))
            if choices:
                self._act(*rng.choice(choices))
        return self.events

    def restore(self) -> None:
        for inst in sorted(self.down):
            self._act("register", inst)
        for inst in sorted(self.unhealthy):
            self._act("healthy", inst)

    def __enter__(self) -> "Churn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
