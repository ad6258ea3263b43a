"""Consul's HTTP API: the catalog (ground truth for discovery) and KV (policy)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import httpc
from ..errors import ComponentError


@dataclass(frozen=True)
class Instance:
    id: str
    service: str
    address: str  # host:port as registered
    status: str  # passing | warning | critical (worst check)
    meta: dict[str, str]


class ConsulClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _req(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> httpc.Response:
        try:
            r = httpc.request(method, self.base_url + path, body, timeout=self.timeout)
        except httpc.Timeout as exc:
            raise ComponentError(f"consul {method} {path}: no answer from {self.base_url} within {self.timeout:g}s",
                                 hint="is Consul paused (by a test) or overloaded?") from exc
        except OSError as exc:
            raise ComponentError(f"consul {method} {path}: no answer from {self.base_url} ({exc})",
                                 hint="is Consul running?") from exc
        if r.status not in ok:
            raise ComponentError(f"consul {method} {path}: HTTP {r.status}: {r.text.strip()[:200]}")
        return r

    def kv_put(self, key: str, value: Any) -> None:
        body = value if isinstance(value, (str, bytes)) else json.dumps(value)
        self._req("PUT", f"/v1/kv/{key}", body)

    def kv_get_json(self, key: str) -> Any:
        """The JSON value at ``key``; None when there is no such key."""
        r = self._req("GET", f"/v1/kv/{key}?raw", ok=(200, 404))
        return None if r.status == 404 else r.json()

    def kv_delete(self, key: str, recurse: bool = False) -> None:
        self._req("DELETE", f"/v1/kv/{key}" + ("?recurse" if recurse else ""))

    def services(self) -> dict[str, list[str]]:
        return self._req("GET", "/v1/catalog/services").json()

    def instances(self, service: str) -> list[Instance]:
        out = []
        for e in self._req("GET", f"/v1/health/service/{service}").json():
            svc = e["Service"]
            statuses = [c.get("Status", "passing") for c in e.get("Checks", [])]
            worst = "critical" if "critical" in statuses else "warning" if "warning" in statuses else "passing"
            addr = svc.get("Address") or e.get("Node", {}).get("Address", "")
            out.append(Instance(svc["ID"], svc["Service"], f"{addr}:{svc['Port']}", worst, dict(svc.get("Meta") or {})))
        return out

    def register(self, registration: dict[str, Any]) -> None:
        self._req("PUT", "/v1/agent/service/register", registration)

    def deregister(self, service_id: str) -> None:
        self._req("PUT", f"/v1/agent/service/deregister/{service_id}")

    def maintenance(self, service_id: str, enable: bool, reason: str = "meshbed") -> None:
        self._req("PUT", f"/v1/agent/service/maintenance/{service_id}?enable={'true' if enable else 'false'}&reason={reason}")

    def leader(self) -> str:
        return str(self._req("GET", "/v1/status/leader").json())
