"""meshbed's HTTP client on httpx: pooled keep-alive connections, a timeout on every call, typed errors.

Every peer here (Envoy admin, Consul, Jaeger, Toxiproxy, the sample services,
the control plane's debug API) may be paused, faulted or dead on purpose, so:

* **pooled connections per origin** (scheme, host, port): keep-alive
  connections are reused across calls and threads, so a 10 ms admin poll does
  not open a TCP connection each time. Each origin has :data:`SHARDS` pools
  (``httpx.HTTPTransport``, thread-safe); a thread uses the one its thread id
  picks, so threads polling one Envoy seldom wait on one pool's lock. Each
  pool holds up to :data:`LIMITS` connections; there is one set of pools per
  Envoy however many there are, and a pool unused for :data:`IDLE_CLOSE_S` is
  closed (meshes come and go on new ports; their sockets must not pile up);
* **a timeout on every call** (:data:`DEFAULT_TIMEOUT`, per connect, read,
  write and pool wait);
* **typed errors**, all :class:`OSError` so ``except OSError`` callers keep
  working: :class:`Timeout` (no answer in time: a paused or stalled peer) and
  :class:`Refused` (connection refused, or :class:`Reset` mid-exchange:
  nothing serves there, a dead peer), so a poller can record paused and dead
  apart; :class:`StatusError` when a caller needed HTTP 200.

Requests go straight to httpx's transport layer (``HTTPTransport.handle_request``):
meshbed uses none of ``httpx.Client``'s cookies, auth or redirects, and skipping
them costs half the client CPU of a poll (``scripts/bench_admin_poll.py``).
Envoy's admin API refuses HTTP/1.0; httpx speaks HTTP/1.1.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx

DEFAULT_TIMEOUT = 5.0
SHARDS = 8  # pools per origin
LIMITS = httpx.Limits(max_connections=128, max_keepalive_connections=32, keepalive_expiry=5.0)  # per pool
IDLE_CLOSE_S = 30.0  # a pool unused this long is closed
SWEEP_EVERY_S = 10.0  # how often pools are checked for idleness


class HttpError(OSError):
    """No usable HTTP answer for ``method url``."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class Timeout(HttpError, TimeoutError):
    """The peer did not answer within the timeout (paused, stalled, overloaded).

    ``phase`` is where it stalled: connect, read, write, or pool (every pooled
    connection to that origin busy).
    """

    def __init__(self, message: str, *, method: str = "", url: str = "", phase: str = "") -> None:
        super().__init__(message, method=method, url=url)
        self.phase = phase


class Refused(HttpError, ConnectionError):
    """Nothing serves there: the connection was refused (a dead or not yet started peer)."""


class Reset(Refused):
    """The peer closed or reset the connection before it answered (died mid-request, or a reset fault)."""


class StatusError(HttpError):
    """An answer, but not the status the caller needed."""

    def __init__(self, message: str, *, method: str = "", url: str = "", status: int = 0) -> None:
        super().__init__(message, method=method, url=url)
        self.status = status


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode() or "null")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


# -- the pools ------------------------------------------------------------------

class _Pool:
    __slots__ = ("transport", "busy", "last_used")

    def __init__(self, transport: httpx.HTTPTransport) -> None:
        self.transport = transport
        self.busy = 0
        self.last_used = time.monotonic()


_lock = threading.Lock()
_pools: dict[tuple[str, str, int, int], _Pool] = {}
_owner_pid = os.getpid()
_last_sweep = time.monotonic()
_tls: ssl.SSLContext | None = None


def _new_transport() -> httpx.HTTPTransport:
    global _tls
    if _tls is None:  # one context for every pool: building one loads the CA bundle (~15 ms)
        _tls = ssl.create_default_context()
    # trust_env=False: no proxy from the environment, every peer is local
    return httpx.HTTPTransport(verify=_tls, trust_env=False, limits=LIMITS)


def _key(url: httpx.URL) -> tuple[str, str, int, int]:
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80),
            threading.get_native_id() % SHARDS)


def _acquire(url: httpx.URL) -> _Pool:
    global _owner_pid, _last_sweep
    stale: list[_Pool] = []
    with _lock:
        if os.getpid() != _owner_pid:  # a forked child must not share its parent's sockets
            _pools.clear()
            _owner_pid = os.getpid()
        now = time.monotonic()
        if now - _last_sweep >= SWEEP_EVERY_S:
            _last_sweep = now
            for k, p in list(_pools.items()):
                if p.busy == 0 and now - p.last_used >= IDLE_CLOSE_S:
                    stale.append(_pools.pop(k))
        key = _key(url)
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = _Pool(_new_transport())
        pool.busy += 1
        pool.last_used = now
    for p in stale:
        p.transport.close()
    return pool


def _release(pool: _Pool) -> None:
    with _lock:
        pool.busy -= 1
        pool.last_used = time.monotonic()


def pool_count() -> int:
    """Open pools (up to :data:`SHARDS` per origin used lately)."""
    with _lock:
        return len(_pools)


def close_all() -> None:
    """Close every pool (tests; a long-lived process that wants its sockets back)."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for p in pools:
        p.transport.close()


@lru_cache(maxsize=64)
def _timeouts(timeout: float) -> dict[str, float]:
    return httpx.Timeout(timeout).as_dict()  # type: ignore[return-value]


# -- errors ---------------------------------------------------------------------

def _os_error(exc: BaseException) -> OSError | None:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def _typed(exc: Exception, method: str, url: str, timeout: float) -> HttpError:
    what = f"{method} {url}"
    if isinstance(exc, httpx.TimeoutException):
        phase = {httpx.ConnectTimeout: "connect", httpx.ReadTimeout: "read", httpx.WriteTimeout: "write",
                 httpx.PoolTimeout: "pool"}.get(type(exc), "")
        return Timeout(f"{what}: timed out after {timeout:g}s ({phase or 'no answer'})",
                       method=method, url=url, phase=phase)
    cause = _os_error(exc)
    detail = f"{type(cause).__name__}: {cause}" if cause is not None else (str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return Refused(f"{what}: cannot connect ({detail})", method=method, url=url)
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return Reset(f"{what}: connection closed before an answer ({detail})", method=method, url=url)
    return HttpError(f"{what}: {type(exc).__name__}: {detail}", method=method, url=url)


# -- requests -------------------------------------------------------------------

def _encode(body: Any, headers: dict[str, str]) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if not any(k.lower() == "content-type" for k in headers):
        headers["content-type"] = "application/json"
    return json.dumps(body).encode()


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> Response:
    """One request on a pooled connection to the origin, sent once (never retried: a
    counted request, or one to a peer that resets, must reach it exactly once).

    Raises :class:`Timeout`, :class:`Refused` / :class:`Reset` or :class:`HttpError`
    (all OSError) when there is no answer.
    """
    method = method.upper()
    hdrs = dict(headers or {})
    data = _encode(body, hdrs)
    try:
        req = httpx.Request(method, url, headers=hdrs, content=data, extensions={"timeout": _timeouts(timeout)})
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
        raise HttpError(f"{method} {url}: bad URL ({exc})", method=method, url=url) from exc
    pool = _acquire(req.url)
    try:
        r = pool.transport.handle_request(req)
        try:
            body_bytes = r.read()
        finally:
            r.close()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _typed(exc, method, url, timeout) from exc
    finally:
        _release(pool)
    return Response(r.status_code, dict(r.headers.items()), body_bytes)


def get(url: str, timeout: float = DEFAULT_TIMEOUT, headers: dict[str, str] | None = None) -> Response:
    return request("GET", url, headers=headers, timeout=timeout)


def get_json(url: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """GET, HTTP 200 required (else :class:`StatusError`), the body as JSON (ValueError if it is not)."""
    r = get(url, timeout)
    if r.status != 200:
        raise StatusError(f"GET {url} -> HTTP {r.status}: {r.text[:200]}", method="GET", url=url, status=r.status)
    return r.json()


def ok(url: str, timeout: float = 2.0) -> bool:
    """Probe helper: True on HTTP 200, False on anything else or no answer."""
    try:
        return get(url, timeout).status == 200
    except OSError:
        return False
