"""A tiny HTTP/1.1 client with a timeout on every call (stdlib only).

Envoy's admin API refuses HTTP/1.0; http.client speaks 1.1. Every call has a
timeout because every peer here may be paused, faulted or dead on purpose.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode() or "null")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 5.0) -> Response:
    """One request; raises OSError (incl. timeouts) when the peer cannot be reached."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    hdrs = dict(headers or {})
    data: bytes | None
    if body is None:
        data = None
    elif isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
        hdrs.setdefault("content-type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
    finally:
        conn.close()


def get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> Response:
    return request("GET", url, headers=headers, timeout=timeout)


def get_json(url: str, timeout: float = 5.0) -> Any:
    r = get(url, timeout)
    if r.status != 200:
        raise OSError(f"GET {url} -> HTTP {r.status}: {r.text[:200]}")
    return r.json()


def ok(url: str, timeout: float = 2.0) -> bool:
    """Probe helper: True on HTTP 200, False on anything else or no answer."""
    try:
        return get(url, timeout).status == 200
    except OSError:
        return False
