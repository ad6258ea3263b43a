"""Consul blocking-query watchers that keep the control plane's MeshState.

One watcher for the service list, one per service for its health, one for
KV ``meshbed/``. A failed call never changes state (an outage must not look
like an empty catalog); the watcher backs off, retries, and resyncs from
index 0 when Consul answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable
from urllib.parse import quote

import aiohttp

from .catalog import MeshState, parse_health_entries, parse_kv_entries

log = logging.getLogger("meshbed.controlplane.consul")

KV_PREFIX = "meshbed/"
BACKOFF_MIN = 0.2
BACKOFF_MAX = 1.0
FIRST_SYNC_RETRY_S = 0.02


class ConsulError(Exception):
    """Consul answered with an unexpected status."""


def next_index(old: int, new: int) -> int:
    """Blocking-query index rules: a missing, zero or backwards index restarts from 0."""
    if new <= 0 or new < old:
        return 0
    return new


class ConsulWatcher:
    """Watches Consul and calls ``on_change`` after every real change to ``state``."""

    def __init__(self, base_url: str, on_change: Callable[[], None], wait_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.wait_s = wait_s
        self.state = MeshState()
        self.synced = asyncio.Event()
        self.stats: dict[str, Any] = {"errors": 0, "last_error": "", "last_error_at": 0.0, "last_ok_at": 0.0,
                                      "synced_at": 0.0, "changes": 0, "up": False}
        self._on_change = on_change
        self.answer_at = 0.0  # unix time the latest Consul answer arrived (the push rounds' breakdown)
        self._session: aiohttp.ClientSession | None = None
        self._health_tasks: dict[str, asyncio.Task[None]] = {}
        self._health_seen: set[str] = set()
        self._services_seen = False
        self._kv_seen = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled."""
        # one long-poll connection per watched service: no pool limit, or
        # watchers past the 100th would queue behind 30 s blocking queries
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            self._tasks = [
                asyncio.create_task(self._watch("services", "/v1/catalog/services", {}, self._on_services)),
                asyncio.create_task(self._watch("kv", f"/v1/kv/{KV_PREFIX}", {"recurse": ""}, self._on_kv)),
            ]
            await asyncio.gather(*self._tasks)
        finally:
            for t in [*self._tasks, *self._health_tasks.values()]:
                t.cancel()
            await asyncio.gather(*self._tasks, *self._health_tasks.values(), return_exceptions=True)
            await self._session.close()

    # -- the generic blocking-query loop ------------------------------------
    async def _get(self, path: str, params: dict[str, str], index: int) -> tuple[int, int, Any]:
        assert self._session is not None
        q = dict(params)
        if index > 0:
            q["index"] = str(index)
            q["wait"] = f"{int(self.wait_s)}s"
        timeout = aiohttp.ClientTimeout(total=self.wait_s + 5.0)
        async with self._session.get(self.base_url + path, params=q, timeout=timeout) as r:
            new_index = int(r.headers.get("X-Consul-Index", "0") or 0)
            if r.status == 404:
                return 404, new_index, None
            if r.status != 200:
                raise ConsulError(f"HTTP {r.status}: {(await r.text())[:200]}")
            return 200, new_index, await r.json(content_type=None)

    async def _watch(self, name: str, path: str, params: dict[str, str],
                     handle: Callable[[int, Any], None]) -> None:
        index = 0
        backoff = BACKOFF_MIN
        failing = False
        while True:
            try:
                status, new, body = await self._get(path, params, index)
                self.answer_at = time.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep state, retry
                self._note_error(name, exc, first=not failing)
                failing = True
                index = 0  # resync from scratch once Consul is back
                # before the first sync Consul is still starting (the CP starts alongside it): retry soon
                await asyncio.sleep(backoff if self.synced.is_set() else FIRST_SYNC_RETRY_S)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_MIN
            if failing:
                log.info("consul: %s answered again; resynced from index 0", name)
                failing = False
            self.stats["up"] = True
            self.stats["last_ok_at"] = time.time()
            try:
                handle(status, body)
            except Exception:  # noqa: BLE001 - a surprising body must not kill the watcher
                log.exception("consul: %s: cannot handle answer", name)
            prev, index = index, next_index(index, new)
            if index == 0 and prev == 0:
                await asyncio.sleep(0.05)  # no usable index: don't spin

    def _note_error(self, name: str, exc: BaseException, first: bool) -> None:
        if not self.synced.is_set():  # the control plane starts alongside Consul: not an outage yet
            if first:
                log.info("consul: %s not answering yet (%s); retrying", name, type(exc).__name__)
            return
        self.stats["errors"] += 1
        self.stats["last_error"] = f"{name}: {type(exc).__name__}: {exc}"
        self.stats["last_error_at"] = time.time()
        self.stats["up"] = False
        if first:
            log.warning("consul: %s failed, keeping last known state, retrying: %s", name,
                        f"{type(exc).__name__}: {exc}"[:300])

    # -- handlers (state updates) -----------------------------------------
    def _changed(self) -> None:
        self.stats["changes"] += 1
        if self.synced.is_set():
            self._on_change()

    def _on_services(self, status: int, body: Any) -> None:
        names = set(body or {}) if status == 200 else set()
        for svc in names - set(self._health_tasks):
            path = f"/v1/health/service/{quote(svc, safe='')}"
            self._health_tasks[svc] = asyncio.create_task(
                self._watch(f"health/{svc}", path, {}, lambda st, b, s=svc: self._on_health(s, st, b))
            )
        removed = set(self._health_tasks) - names
        for svc in removed:
            self._health_tasks.pop(svc).cancel()
            self._health_seen.discard(svc)
            if self.state.services.pop(svc, None) is not None:
                log.info("consul: service %s gone from the catalog", svc)
                self._changed()
        self._services_seen = True
        self._check_synced()

    def _on_health(self, svc: str, status: int, body: Any) -> None:
        if svc not in self._health_tasks:
            return  # removed meanwhile
        insts = parse_health_entries(svc, body or []) if status == 200 else ()
        if self.state.services.get(svc) != insts:
            self.state.services[svc] = insts
            log.info("consul: %s now %d instance(s), %d healthy", svc, len(insts),
                     sum(1 for i in insts if i.health == "HEALTHY"))
            self._changed()
        self._health_seen.add(svc)
        self._check_synced()

    def _on_kv(self, status: int, body: Any) -> None:
        policies, mesh = parse_kv_entries(body if status == 200 else None, self.state.policies, self.state.mesh)
        if policies != self.state.policies or mesh != self.state.mesh:
            self.state.policies, self.state.mesh = policies, mesh
            log.info("consul: policy now for %s; mesh %s", sorted(policies) or "no service", mesh)
            self._changed()
        self._kv_seen = True
        self._check_synced()

    def _check_synced(self) -> None:
        if self.synced.is_set():
            return
        if self._services_seen and self._kv_seen and set(self._health_tasks) <= self._health_seen:
            self.stats["synced_at"] = time.time()
            self.synced.set()
            log.info("consul: first sync done: %d service(s)", len(self.state.services))
            self._on_change()

    def describe(self) -> dict[str, Any]:
        return {"url": self.base_url, "synced": self.synced.is_set(), **self.stats,
                "watched_services": sorted(self._health_tasks)}
