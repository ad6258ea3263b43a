"""Consul agent registration, kept alive across Consul dev-agent restarts.

A restarted ``consul agent -dev`` forgets every service, so a background task
re-registers whenever the agent no longer knows this instance.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import aiohttp

from .config import SampleConfig

log = logging.getLogger(__name__)

MAINTAIN_INTERVAL = 2.0


class RegistrationError(Exception):
    """Consul refused or could not be reached for registration."""


def service_definition(config: SampleConfig) -> dict[str, Any]:
    """The agent service-register body; pure so it can be unit-tested."""
    adv = config.advertised
    meta = {"instance": config.instance, "version": config.version, "meshbed_run": config.run_id}
    meta.update(config.meta)
    body: dict[str, Any] = {
        "ID": config.instance,
        "Name": config.service,
        "Address": adv.host,
        "Port": adv.port,
        "Tags": ["meshbed"],
        "Meta": meta,
        "Check": {
            "CheckID": f"{config.instance}-http",
            "Name": "http",
            "HTTP": f"http://{config.check_address}/healthz",
            "Interval": "1s",
            "Timeout": "1s",
            "Status": "passing",
        },
    }
    if config.connect:  # Consul Connect: the sidecar registers (and deregisters) with its service
        body["Connect"] = config.connect
    return body


class ConsulRegistrar:
    """Registers one instance and keeps it registered until told otherwise."""

    def __init__(self, config: SampleConfig) -> None:
        assert config.consul, "ConsulRegistrar needs --consul"
        self.config = config
        self.base = config.consul
        self.enabled = False
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._outage = False

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        return self._session

    async def register(self) -> None:
        """One registration attempt; RegistrationError says why it failed."""
        url = f"{self.base}/v1/agent/service/register"
        try:
            async with self._sess().put(url, json=service_definition(self.config)) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RegistrationError(f"HTTP {resp.status} from {url}: {text.strip()[:200]}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise RegistrationError(f"cannot reach Consul at {self.base}: {exc or type(exc).__name__}") from exc
        self.enabled = True

    async def deregister(self) -> None:
        """Remove the instance and stop re-registering; errors are ignored."""
        self.enabled = False
        url = f"{self.base}/v1/agent/service/deregister/{self.config.instance}"
        try:
            async with self._sess().put(url) as resp:
                await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("deregister %s failed: %s", self.config.instance, exc)

    async def start(self) -> None:
        """Register, retrying until register_timeout; then keep it registered."""
        deadline = time.monotonic() + self.config.register_timeout
        while True:
            try:
                await self.register()
                break
            except RegistrationError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)
        self._task = asyncio.create_task(self._maintain(), name="consul-maintain")

    async def _maintain(self) -> None:
        url = f"{self.base}/v1/agent/service/{self.config.instance}"
        while True:
            await asyncio.sleep(MAINTAIN_INTERVAL)
            if not self.enabled:
                continue
            try:
                async with self._sess().get(url) as resp:
                    await resp.read()
                    status = resp.status
                if status == 404 and self.enabled:
                    await self.register()
                    print(f"meshbed.sample {self.config.instance}: re-registered in Consul",
                          file=sys.stderr, flush=True)
                if self._outage:
                    print(f"meshbed.sample {self.config.instance}: Consul is back", file=sys.stderr, flush=True)
                self._outage = False
            except (RegistrationError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if not self._outage:
                    print(f"meshbed.sample {self.config.instance}: Consul unreachable ({exc}); will keep trying",
                          file=sys.stderr, flush=True)
                self._outage = True

    async def close(self) -> None:
        """Stop the loop, deregister, release the session."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.deregister()
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- Eureka (registry: eureka) ---------------------------------------------------

EUREKA_ENV = "MESHBED_SAMPLE_EUREKA"  # Eureka REST base URL (http://host:port/eureka): register there, not in Consul
EUREKA_RENEW_S = 1.0  # heartbeat and health-probe interval (Consul's HTTP check runs every 1 s too)
EUREKA_LEASE_S = 3  # leaseInfo.durationInSecs: an instance that stops renewing expires after about twice this
EUREKA_TIMEOUT_S = 5.0  # per request
EUREKA_REGISTER_MIN_S = 30.0  # the initial registration retries at least this long (see EurekaRegistrar.start)


def eureka_app(service: str) -> str:
    """Eureka keeps application names upper-case; the control plane lower-cases them back."""
    return service.upper()


def eureka_instance(config: SampleConfig, status: str = "UP") -> dict[str, Any]:
    """The register body (JSON, as Eureka's REST API takes it); pure so it can be unit-tested."""
    adv = config.advertised
    meta = {"instance": config.instance, "version": config.version, "meshbed_run": config.run_id}
    meta.update(config.meta)
    return {"instance": {
        "instanceId": config.instance,
        "hostName": adv.host,
        "app": eureka_app(config.service),
        "ipAddr": adv.host,
        "vipAddress": config.service,
        "secureVipAddress": config.service,
        "status": status,
        "port": {"$": adv.port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "healthCheckUrl": f"http://{config.check_address}/healthz",
        "statusPageUrl": f"http://{config.check_address}/meshbed/info",
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": int(EUREKA_RENEW_S), "durationInSecs": EUREKA_LEASE_S},
        "metadata": meta,
    }}


class EurekaRegistrar:
    """Registers one instance in Eureka, renews its lease every second and mirrors its health as UP/DOWN.

    Same interface as :class:`ConsulRegistrar`. Health: the registrar probes the
    app's own /healthz (as Consul's check does) and sets the status override to
    DOWN, or removes it (back to UP). A renew answered 404 (a restarted server,
    or an expired lease) registers again.
    """

    def __init__(self, config: SampleConfig, base_url: str) -> None:
        self.config = config
        self.base = base_url.rstrip("/")
        self.app_url = f"{self.base}/apps/{eureka_app(config.service)}"
        self.url = f"{self.app_url}/{config.instance}"
        self.enabled = False
        self.status = "UP"
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._outage = False

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            # a JVM registry on a loaded machine answers a first write in seconds: more room than Consul's 2 s
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=EUREKA_TIMEOUT_S),
                                                  headers={"Accept": "application/json"})
        return self._session

    async def _healthy(self) -> bool:
        try:
            async with self._sess().get(f"http://{self.config.check_address}/healthz",
                                        timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    async def register(self) -> None:
        """One registration attempt (with the app's current health); RegistrationError says why it failed."""
        self.status = "UP" if await self._healthy() else "DOWN"
        try:
            async with self._sess().post(self.app_url, json=eureka_instance(self.config, self.status)) as resp:
                text = await resp.text()
                if resp.status not in (200, 204):
                    raise RegistrationError(f"HTTP {resp.status} from {self.app_url}: {text.strip()[:200]}")
            if self.status == "UP":  # a DOWN override left by an earlier life of this instance id must go
                async with self._sess().delete(f"{self.url}/status", params={"value": "UP"}) as resp:
                    await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise RegistrationError(f"cannot reach Eureka at {self.base}: {exc or type(exc).__name__}") from exc
        self.enabled = True

    async def deregister(self) -> None:
        """Cancel the lease and stop renewing; errors are ignored."""
        self.enabled = False
        try:
            async with self._sess().delete(self.url) as resp:
                await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("eureka cancel %s failed: %s", self.config.instance, exc)

    async def set_status(self, status: str) -> None:
        """UP removes the override; DOWN or OUT_OF_SERVICE sets it (Eureka's status-override API)."""
        if status == "UP":
            req = self._sess().delete(f"{self.url}/status", params={"value": "UP"})
        else:
            req = self._sess().put(f"{self.url}/status", params={"value": status})
        async with req as resp:
            await resp.read()
            if resp.status == 404:
                raise RegistrationError(f"{self.url}: not registered")
        self.status = status

    async def start(self) -> None:
        """Register, retrying until register_timeout (at least 30 s); then renew and mirror health."""
        deadline = time.monotonic() + max(self.config.register_timeout, EUREKA_REGISTER_MIN_S)
        while True:
            try:
                await self.register()
                break
            except RegistrationError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)
        self._task = asyncio.create_task(self._maintain(), name="eureka-maintain")

    async def _tick(self) -> None:
        async with self._sess().put(self.url) as resp:
            await resp.read()
            renewed = resp.status
        if renewed == 404 and self.enabled:
            await self.register()
            print(f"meshbed.sample {self.config.instance}: re-registered in Eureka", file=sys.stderr, flush=True)
            return
        want = "UP" if await self._healthy() else "DOWN"
        if want != self.status and self.enabled:
            await self.set_status(want)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(EUREKA_RENEW_S)
            if not self.enabled:
                continue
            try:
                await self._tick()
                if self._outage:
                    print(f"meshbed.sample {self.config.instance}: Eureka is back", file=sys.stderr, flush=True)
                self._outage = False
            except (RegistrationError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if not self._outage:
                    print(f"meshbed.sample {self.config.instance}: Eureka unreachable ({exc}); will keep trying",
                          file=sys.stderr, flush=True)
                self._outage = True

    async def close(self) -> None:
        """Stop the loop, cancel the lease, release the session."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.deregister()
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_registrar(config: SampleConfig, env: dict[str, str] | None = None) -> ConsulRegistrar | EurekaRegistrar | None:
    """Eureka when $MESHBED_SAMPLE_EUREKA names a server, else Consul when --consul is given, else none."""
    import os
    eureka = (os.environ if env is None else env).get(EUREKA_ENV, "").strip()
    if eureka:
        return EurekaRegistrar(config, eureka)
    return ConsulRegistrar(config) if config.consul else None
