"""Eureka's REST API as the mesh's registry, behind the ConsulClient interface the shared steps use.

With ``registry: eureka`` the instances live in Eureka but the policy KV stays in
Consul, so :class:`EurekaRegistryClient` is a :class:`ConsulClient` (KV) whose
catalog calls go to Eureka. Statuses are reported in Consul's words, so checks
written against Consul read the same: UP is ``passing``, anything else
(DOWN, OUT_OF_SERVICE, STARTING, UNKNOWN) is ``critical``. Maintenance mode is
Eureka's OUT_OF_SERVICE status override.
"""

from __future__ import annotations

from typing import Any

from .. import httpc
from ..errors import ComponentError
from .consul import ConsulClient, Instance

JSON = {"Accept": "application/json"}


def consul_status(eureka_status: str) -> str:
    """UP -> passing; every other Eureka status -> critical."""
    return "passing" if eureka_status == "UP" else "critical"


def _list(v: Any) -> list[Any]:
    return [] if v is None else list(v) if isinstance(v, list) else [v]


class EurekaRegistryClient(ConsulClient):
    """KV from Consul (inherited); services, instances, (de)registration and maintenance from Eureka."""

    def __init__(self, consul_url: str, eureka_url: str, timeout: float = 5.0) -> None:
        super().__init__(consul_url, timeout)
        self.eureka_url = eureka_url.rstrip("/")

    def _eureka(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 204)) -> httpc.Response:
        url = self.eureka_url + path
        try:
            r = httpc.request(method, url, body, timeout=self.timeout, headers=JSON)
        except (httpc.Timeout, OSError) as exc:
            raise ComponentError(f"eureka {method} {path}: no answer from {self.eureka_url} ({exc})",
                                 hint="is the Eureka server running (or paused by a test)?") from exc
        if r.status not in ok:
            raise ComponentError(f"eureka {method} {path}: HTTP {r.status}: {r.text.strip()[:200]}")
        return r

    def _apps(self) -> list[dict[str, Any]]:
        body = self._eureka("GET", "/apps").json()
        return [a for a in _list(((body or {}).get("applications") or {}).get("application")) if isinstance(a, dict)]

    def _app_of(self, service_id: str) -> str:
        for app in self._apps():
            if any(i.get("instanceId") == service_id for i in _list(app.get("instance"))):
                return str(app.get("name"))
        raise ComponentError(f"eureka: no instance {service_id!r} registered")

    def services(self) -> dict[str, list[str]]:
        return {str(a.get("name", "")).lower(): ["meshbed"] for a in self._apps()}

    def instances(self, service: str) -> list[Instance]:
        r = self._eureka("GET", f"/apps/{service.upper()}", ok=(200, 404))
        if r.status == 404:
            return []
        app = (r.json() or {}).get("application") or {}
        out = []
        for i in _list(app.get("instance")):
            port = i.get("port") or {}
            port = port.get("$") if isinstance(port, dict) else port
            out.append(Instance(str(i.get("instanceId")), service, f"{i.get('ipAddr')}:{port}",
                                consul_status(str(i.get("status"))), dict(i.get("metadata") or {})))
        return out

    def register(self, registration: dict[str, Any]) -> None:
        """A Consul-style registration (ID, Name, Address, Port, Meta) written to Eureka, UP."""
        name, iid = str(registration["Name"]), str(registration.get("ID") or registration["Name"])
        addr, port = str(registration.get("Address") or "127.0.0.1"), int(registration["Port"])
        body = {"instance": {
            "instanceId": iid, "hostName": addr, "app": name.upper(), "ipAddr": addr, "vipAddress": name,
            "status": "UP", "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
            "metadata": {str(k): str(v) for k, v in (registration.get("Meta") or {}).items()},
        }}
        self._eureka("POST", f"/apps/{name.upper()}", body)

    def deregister(self, service_id: str) -> None:
        self._eureka("DELETE", f"/apps/{self._app_of(service_id)}/{service_id}", ok=(200, 404))

    def maintenance(self, service_id: str, enable: bool, reason: str = "meshbed") -> None:
        """OUT_OF_SERVICE while enabled; disabling removes the override (the instance's own status again)."""
        path = f"/apps/{self._app_of(service_id)}/{service_id}/status"
        if enable:
            self._eureka("PUT", path + "?value=OUT_OF_SERVICE")
        else:
            self._eureka("DELETE", path + "?value=UP", ok=(200, 404))
