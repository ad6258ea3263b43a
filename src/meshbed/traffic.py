"""Counted requests through the mesh, each with a UUID x-request-id.

For checks that need an exact number of requests and every answer (LB
spread, trace completeness): a bounded thread pool over :mod:`meshbed.httpc`'s
pooled keep-alive client for the target, each request sent exactly once.
Open-ended load with rates and shapes is Locust's job (load.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from . import httpc


@dataclass
class Answer:
    request_id: str
    status: int  # 0: no HTTP answer (refused, reset, timeout)
    latency_s: float
    instance: str  # x-meshbed-instance of the first hop
    body: bytes
    headers: dict[str, str]
    sent_at: float
    error: str = ""  # "<httpc error type>: <what happened>" when status is 0 (Timeout: ... timed out ...)

    def json(self) -> dict:
        import json
        return json.loads(self.body.decode() or "null")


@dataclass
class Batch:
    answers: list[Answer] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def ok(self) -> int:
        return sum(1 for a in self.answers if 200 <= a.status < 300)

    def by_status(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers:
            out[a.status] = out.get(a.status, 0) + 1
        return out


HeaderFn = Callable[[int], dict[str, str]]


def drive(url: str, n: int, concurrency: int = 4, path: str | Callable[[int], str] = "/",
          headers: HeaderFn | None = None, timeout: float = 10.0, keep_body: bool = True,
          deadline_s: float = 300.0) -> Batch:
    """Send ``n`` GETs to ``url`` (bounded in count and in time) and return every answer."""
    parts = urlsplit(url)
    base = f"{parts.scheme or 'http'}://{parts.netloc}"
    counter = iter(range(n))
    lock = threading.Lock()
    answers: list[Answer] = []
    stop_at = time.monotonic() + deadline_s

    def worker() -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            rid = str(uuid.uuid4())
            hdrs = {"x-request-id": rid}
            if headers:
                hdrs.update(headers(i))
            p = path(i) if callable(path) else path
            t0 = time.monotonic()
            sent = time.time()
            try:
                r = httpc.request("GET", base + p, headers=hdrs, timeout=timeout)
                a = Answer(rid, r.status, time.monotonic() - t0, r.headers.get("x-meshbed-instance", ""),
                           r.body if keep_body else b"", r.headers, sent)
            except OSError as exc:
                a = Answer(rid, 0, time.monotonic() - t0, "", b"", {}, sent, error=f"{type(exc).__name__}: {exc}")
            with lock:
                answers.append(a)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for _ in range(max(1, concurrency)):
            pool.submit(worker)
    answers.sort(key=lambda a: a.sent_at)
    return Batch(answers)
