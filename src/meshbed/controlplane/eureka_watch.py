"""Eureka as the control plane's service catalog (``registry: eureka``), policy still from Consul KV.

Eureka has no blocking queries: a client polls. This watcher fetches
``/eureka/apps`` once, then polls ``/eureka/apps/delta`` every ``poll_s``
(default 0.2 s; a stock Eureka client waits 30 s), applies the delta
(ADDED/MODIFIED/DELETED) to its copy and compares the copy's reconcile hash
(``DOWN_1_UP_3_``) with the server's ``apps__hashcode``; on a mismatch it
fetches everything again, as Eureka's own client does. The result is the
same :class:`~meshbed.controlplane.catalog.MeshState` the Consul watcher
builds, so snapshots, pushes and the debug API do not know which registry
fed them. Policy (``meshbed/`` KV) is still watched in Consul: Eureka has no
key/value store, and keeping policy where it was keeps the contract unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Mapping

import aiohttp

from .catalog import HEALTHY, UNHEALTHY, Instance
from .consul_watch import BACKOFF_MAX, BACKOFF_MIN, KV_PREFIX, ConsulWatcher

log = logging.getLogger("meshbed.controlplane.eureka")

POLL_S = 0.2
JSON = {"Accept": "application/json"}

Raw = dict[str, tuple[Instance, str]]  # instance id -> (instance, Eureka status)


class EurekaError(Exception):
    """Eureka answered with an unexpected status or body."""


def _as_list(v: Any) -> list[Any]:
    """Eureka's JSON gives a list, or a single object where there is one element."""
    if v is None:
        return []
    return list(v) if isinstance(v, list) else [v]


def _int(v: Any) -> int:
    if isinstance(v, Mapping):
        v = v.get("$")
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def status_health(status: str) -> str:
    """UP is HEALTHY; DOWN, OUT_OF_SERVICE, STARTING and UNKNOWN are UNHEALTHY (listed, not routed to)."""
    return HEALTHY if status == "UP" else UNHEALTHY


def parse_instance(d: Mapping[str, Any]) -> tuple[Instance, str] | None:
    """One Eureka instance record -> (Instance, status); None when it has no address or port."""
    meta = d.get("metadata") or {}
    iid = str(d.get("instanceId") or "")
    service = str(d.get("vipAddress") or d.get("app") or "").lower()
    address = str(d.get("ipAddr") or d.get("hostName") or "")
    port = _int(d.get("port"))
    if not iid or not service or not address or port <= 0:
        log.warning("eureka: skipping instance %r of %r without id, address or port", iid, service)
        return None
    status = str(d.get("status") or "UNKNOWN")
    try:
        priority = int(meta.get("priority", 0))
    except (TypeError, ValueError):
        priority = 0
    inst = Instance(id=iid, service=service, address=address, port=port, instance=str(meta.get("instance") or iid),
                    version=str(meta.get("version") or ""), zone=str(meta.get("zone") or ""), priority=priority,
                    health=status_health(status))
    return inst, status


def _records(body: Any) -> Iterable[Mapping[str, Any]]:
    apps = (body or {}).get("applications") or {}
    for app in _as_list(apps.get("application")):
        yield from (i for i in _as_list((app or {}).get("instance")) if isinstance(i, Mapping))


def parse_apps(body: Any) -> tuple[Raw, str]:
    """A full ``/eureka/apps`` answer -> (every instance by id, the server's reconcile hash)."""
    raw: Raw = {}
    for rec in _records(body):
        parsed = parse_instance(rec)
        if parsed is not None:
            raw[parsed[0].id] = parsed
    return raw, str(((body or {}).get("applications") or {}).get("apps__hashcode") or "")


def apply_delta(raw: Raw, body: Any) -> tuple[Raw, str]:
    """Apply a ``/eureka/apps/delta`` answer (idempotent: the same delta twice gives the same copy)."""
    out = dict(raw)
    for rec in _records(body):
        action = str(rec.get("actionType") or "")
        if action == "DELETED":
            out.pop(str(rec.get("instanceId") or ""), None)
            continue
        parsed = parse_instance(rec)
        if parsed is not None:
            out[parsed[0].id] = parsed
    return out, str(((body or {}).get("applications") or {}).get("apps__hashcode") or "")


def reconcile_hash(raw: Raw) -> str:
    """Eureka's hash of a registry: each status and its count, statuses sorted (``DOWN_1_UP_3_``)."""
    counts: dict[str, int] = {}
    for _, status in raw.values():
        counts[status] = counts.get(status, 0) + 1
    return "".join(f"{s}_{n}_" for s, n in sorted(counts.items()))


def services_of(raw: Raw) -> dict[str, tuple[Instance, ...]]:
    """The catalog view: per service, instances sorted as the Consul watcher sorts them."""
    by: dict[str, list[Instance]] = {}
    for inst, _ in raw.values():
        by.setdefault(inst.service, []).append(inst)
    return {s: tuple(sorted(v, key=lambda i: (i.zone, i.priority, i.instance, i.id))) for s, v in by.items()}


class EurekaWatcher(ConsulWatcher):
    """Services from Eureka (delta polling), policy from Consul KV; same state and callbacks as ConsulWatcher."""

    def __init__(self, eureka_url: str, consul_url: str, on_change: Callable[[], None], wait_s: float = 30.0,
                 poll_s: float = POLL_S) -> None:
        super().__init__(consul_url, on_change, wait_s=wait_s)
        self.eureka_url = eureka_url.rstrip("/")
        self.poll_s = poll_s
        self.raw: Raw = {}
        self.stats.update({"full_fetches": 0, "delta_fetches": 0, "hash_mismatches": 0})

    async def run(self) -> None:
        """Run until cancelled: the KV blocking query and the Eureka poll loop."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            self._tasks = [
                asyncio.create_task(self._watch("kv", f"/v1/kv/{KV_PREFIX}", {"recurse": ""}, self._on_kv)),
                asyncio.create_task(self._poll()),
            ]
            await asyncio.gather(*self._tasks)
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._session.close()

    async def _fetch(self, path: str) -> Any:
        assert self._session is not None
        async with self._session.get(self.eureka_url + path, headers=JSON,
                                     timeout=aiohttp.ClientTimeout(total=5.0)) as r:
            if r.status != 200:
                raise EurekaError(f"HTTP {r.status} from {path}: {(await r.text())[:200]}")
            return await r.json(content_type=None)

    async def _poll(self) -> None:
        full = True
        backoff = BACKOFF_MIN
        failing = False
        while True:
            try:
                if full:
                    raw, _ = parse_apps(await self._fetch("/apps"))
                    self.stats["full_fetches"] += 1
                else:
                    raw, server_hash = apply_delta(self.raw, await self._fetch("/apps/delta"))
                    self.stats["delta_fetches"] += 1
                    if reconcile_hash(raw) != server_hash:
                        self.stats["hash_mismatches"] += 1
                        log.info("eureka: delta hash %r != server's %r: full fetch", reconcile_hash(raw), server_hash)
                        raw, _ = parse_apps(await self._fetch("/apps"))
                        self.stats["full_fetches"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep state, retry with a full fetch
                self._note_error("eureka", exc, first=not failing)
                failing, full = True, True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if failing:
                log.info("eureka: answered again; resynced with a full fetch")
            failing, full, backoff = False, False, BACKOFF_MIN
            self.stats["up"] = True
            self.stats["last_ok_at"] = time.time()
            self._on_registry(raw)
            await asyncio.sleep(self.poll_s)

    def _on_registry(self, raw: Raw) -> None:
        self.raw = raw
        services = services_of(raw)
        if services != self.state.services:
            for svc in sorted(set(services) | set(self.state.services)):
                if services.get(svc) != self.state.services.get(svc):
                    insts = services.get(svc, ())
                    log.info("eureka: %s now %d instance(s), %d healthy", svc, len(insts),
                             sum(1 for i in insts if i.health == HEALTHY))
            self.state.services = services
            self._changed()
        self._services_seen = True
        self._check_synced()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"registry": "eureka", "eureka_url": self.eureka_url, "poll_s": self.poll_s,
                  "watched_services": sorted(self.state.services)})
        return d
