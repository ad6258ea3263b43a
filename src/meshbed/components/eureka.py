"""A Eureka server (``registry: eureka``): meshbed's own build, started with its class-data-sharing archive.

Consul still runs beside it for the policy KV (``meshbed/``): Eureka holds
*where* instances are and their status, Consul KV *how* to route to them.
"""

from __future__ import annotations

from .. import httpc
from ..ports import PortAllocator
from ..provision.eureka import EurekaServer
from ..runtime.base import ComponentSpec, Handle

PATH = "/eureka"  # the REST API's base path on meshbed's server


WARMUP_APP = "MESHBED-WARMUP"
_WARMUP = {"instance": {
    "instanceId": "warmup", "hostName": "127.0.0.1", "app": WARMUP_APP, "ipAddr": "127.0.0.1", "status": "UP",
    "vipAddress": "meshbed-warmup", "port": {"$": 9, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
    "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
    "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90}}}


def _ready(h: Handle) -> object:
    """The REST API answers, and a register + renew + cancel went through once.

    The server starts with lazy initialisation: the first write on each path is the slow one (seconds on a
    loaded machine), and it is paid here, within the start-up deadline, not by the instances' first
    registrations (whose retries have a shorter deadline of their own).
    """
    js = {"Accept": "application/json"}
    if httpc.get(h.url("http", f"{PATH}/apps"), timeout=10, headers=js).status != 200:
        return False
    base = h.url("http", f"{PATH}/apps/{WARMUP_APP}")
    if httpc.request("POST", base, _WARMUP, headers=js, timeout=30).status not in (200, 204):
        return False
    httpc.request("PUT", f"{base}/warmup", headers=js, timeout=30)
    httpc.get(h.url("http", f"{PATH}/apps/delta"), timeout=30, headers=js)
    return httpc.request("DELETE", f"{base}/warmup", headers=js, timeout=30).status in (200, 404)


def spec(server: EurekaServer, ports: PortAllocator, host: str = "127.0.0.1") -> ComponentSpec:
    """Serve Eureka on a port of the run's; the REST API is at ``http://host:port/eureka``."""
    p = {"http": ports.take()}
    return ComponentSpec(
        name="eureka", kind="eureka", argv=server.command(p["http"], host), ports=p, host=host, pod="eureka",
        ready=_ready, ready_what="the Eureka server's REST API (GET /eureka/apps)",
        ready_hint="see the eureka log in the run directory; `meshbed doctor` shows which server is used",
        stop_timeout=3.0,
    )


def base_url(h: Handle) -> str:
    """The REST API base URL the sample services and the control plane use."""
    return h.url("http", PATH)
