"""Port allocation: no fixed ports, so two runs side by side never clash.

Ports come from 20000-32767: below the kernel's ephemeral range (32768+),
so an outgoing connection can never steal a listen port between allocation
and bind. A port is handed out only if nothing listens on it now, and each
allocator remembers what it gave, so one run never gets a port twice.
"""

from __future__ import annotations

import random
import socket
import threading

from .errors import ComponentError

LOW, HIGH = 20000, 32767


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    def __init__(self, low: int = LOW, high: int = HIGH, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._low, self._high = low, high
        self._given: set[int] = set()
        self._lock = threading.Lock()

    def take(self, host: str = "127.0.0.1") -> int:
        with self._lock:
            for _ in range(500):
                port = self._rng.randint(self._low, self._high)
                if port not in self._given and is_free(port, host):
                    self._given.add(port)
                    return port
        raise ComponentError(
            f"no free TCP port found in {self._low}-{self._high} after 500 tries",
            hint="stop leftover meshbed runs (`meshbed down --all`) or other services using that range",
        )

    @property
    def given(self) -> frozenset[int]:
        return frozenset(self._given)
