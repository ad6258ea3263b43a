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
    return {
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
