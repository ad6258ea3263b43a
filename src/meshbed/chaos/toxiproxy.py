"""A Toxiproxy API client: a timeout on every call, any number of servers.

toxiproxy-python keeps host/port as class globals and has no timeouts (a
toxic delete can hang under load, upstream issue #558), so meshbed has its
own: one instance per server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import httpc
from ..errors import ComponentError


@dataclass(frozen=True)
class Proxy:
    name: str
    listen: str
    upstream: str
    enabled: bool


class ToxiproxyClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        url = self.base_url + path
        try:
            r = httpc.request(method, url, body, timeout=self.timeout)
        except OSError as exc:
            raise ComponentError(f"toxiproxy {method} {path}: no answer from {self.base_url} ({exc})",
                                 hint="is the toxiproxy server running? see its log in the run directory") from exc
        if r.status not in ok:
            raise ComponentError(f"toxiproxy {method} {path}: HTTP {r.status}: {r.text.strip()[:200]}")
        return r.json() if r.body else None

    def version(self) -> str:
        return str(self._call("GET", "/version"))

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> Proxy:
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled})
        return Proxy(name, listen, upstream, enabled)

    def populate(self, proxies: list[dict[str, Any]]) -> None:
        """Create several proxies in one call (POST /populate: name, listen, upstream, enabled each)."""
        self._call("POST", "/populate", proxies)

    def proxies(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/proxies") or {}

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}", ok=(200, 204, 404))

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, name: str, type_: str, attributes: dict[str, Any],
                  stream: str = "downstream", toxicity: float = 1.0) -> None:
        self._call("POST", f"/proxies/{proxy}/toxics",
                   {"name": name, "type": type_, "stream": stream, "toxicity": toxicity, "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}", ok=(200, 204, 404))

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/proxies/{proxy}/toxics") or []

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")
