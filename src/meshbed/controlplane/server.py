"""Wiring: Consul watcher -> coalescing push loop -> ADS streams (SotW and delta), plus the debug API.

Everything runs in one asyncio loop, so stream state needs no locks.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import signal
import time
from typing import Any

import grpc

from envoy.service.discovery.v3 import ads_pb2_grpc

from ..nodemeta import NodeMeta
from . import debug_http
from .ads import AdsServicer, AdsStream
from .delta import DeltaStream
from .catalog import MeshState
from .consul_watch import ConsulWatcher
from .pushlog import PushLog
from .snapshot import Snapshot, build_snapshot

log = logging.getLogger("meshbed.controlplane")

DEBOUNCE_S = 0.0
ROUNDS_KEPT = 10_000  # push rounds kept for /debug/rounds (bench convergence --breakdown)
SHUTDOWN_GRACE_S = 1.0


def split_host_port(s: str) -> tuple[str, int]:
    """``127.0.0.1:18000`` -> (``127.0.0.1``, 18000)."""
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {s!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class ControlPlane:
    """Holds the mesh state, the connected streams and their snapshots."""

    def __init__(self, consul_url: str, *, consul_wait_s: float = 30.0, debounce_s: float = DEBOUNCE_S,
                 pushlog_size: int = 50_000, eureka_url: str | None = None) -> None:
        self.pushlog = PushLog(pushlog_size)
        self.watcher = ConsulWatcher(consul_url, self.notify, wait_s=consul_wait_s)
        if eureka_url:  # registry: eureka -- services from Eureka, policy still from Consul KV
            from .eureka_watch import EurekaWatcher
            self.watcher = EurekaWatcher(eureka_url, consul_url, self.notify, wait_s=consul_wait_s)
        self.streams: dict[int, AdsStream] = {}
        self.known_nodes: dict[str, NodeMeta] = {}
        self.debounce_s = debounce_s
        self.generation = 0
        # where each push round's milliseconds went: Consul answer -> notify -> build -> queued
        self.rounds: collections.deque[dict[str, Any]] = collections.deque(maxlen=ROUNDS_KEPT)
        self._trigger: dict[str, float] | None = None  # the first change since the last push
        self._ids = itertools.count(1)
        self._cache: dict[NodeMeta, Snapshot] = {}
        self._memo: dict[tuple[str, Any], Any] = {}  # per-type resources shared by nodes with equal needs
        self._dirty = asyncio.Event()

    @property
    def state(self) -> MeshState:
        return self.watcher.state

    @property
    def synced(self) -> bool:
        return self.watcher.synced.is_set()

    # -- snapshots --------------------------------------------------------
    def snapshot_for(self, meta: NodeMeta) -> Snapshot | None:
        """The node's snapshot for the current state; None until Consul is synced."""
        if not self.synced:
            return None
        snap = self._cache.get(meta)
        if snap is None:
            snap = self._cache[meta] = build_snapshot(meta, self.state, self._memo)
        return snap

    def snapshot_for_node(self, node_id: str) -> Snapshot | None:
        """Snapshot of a connected node, else of the last one seen with that id."""
        live = [s for s in self.streams.values() if s.node_id == node_id and s.meta is not None]
        meta = max(live, key=lambda s: s.stream_id).meta if live else self.known_nodes.get(node_id)
        return self.snapshot_for(meta) if meta is not None else None

    # -- streams (StreamRegistry) -----------------------------------------
    def open_stream(self, peer: str) -> AdsStream:
        s = AdsStream(next(self._ids), self.snapshot_for, self.pushlog, peer)
        self.streams[s.stream_id] = s
        return s

    def open_delta_stream(self, peer: str) -> DeltaStream:
        s = DeltaStream(next(self._ids), self.snapshot_for, self.pushlog, peer)
        self.streams[s.stream_id] = s  # type: ignore[assignment]  # same interface as AdsStream
        return s

    def close_stream(self, stream: AdsStream) -> None:
        self.streams.pop(stream.stream_id, None)
        if stream.meta is not None:
            self.known_nodes[stream.node_id] = stream.meta

    def describe_nodes(self) -> list[dict[str, Any]]:
        return [s.describe() for s in sorted(self.streams.values(), key=lambda s: (s.node_id, s.stream_id))]

    # -- change propagation -----------------------------------------------
    def notify(self) -> None:
        """Called by the watcher after each state change: invalidate, push soon."""
        self._cache.clear()
        self._memo.clear()
        if self._trigger is None:
            answer = getattr(self.watcher, "answer_at", 0.0)
            self._trigger = {"consul_answer_at": answer, "notified_at": time.time()}
        self._dirty.set()

    def push_all(self) -> None:
        """Send every stream what changed for it (CDS, EDS, LDS, RDS order per stream)."""
        self.generation += 1
        self._cache.clear()
        self._memo.clear()
        start = time.time()
        trigger, self._trigger = self._trigger or {}, None
        sent = 0
        for s in list(self.streams.values()):
            try:
                out = s.push()
                sent += len(out)
                s.deliver(out)
            except Exception:  # noqa: BLE001 - one bad node must not stop the others
                log.exception("push to stream %d (%s) failed", s.stream_id, s.node_id)
        self.rounds.append({"generation": self.generation, **trigger, "push_start": start, "push_end": time.time(),
                            "streams": len(self.streams), "responses": sent})

    async def push_loop(self) -> None:
        """Push at once; whatever changes while a push is being built and written goes in the next one.

        No fixed debounce: an isolated change costs no wait. ``debounce_s`` (default 0) can
        still add one for experiments.
        """
        while True:
            await self._dirty.wait()
            # let callbacks that are already runnable (a burst of watcher answers) land first
            await asyncio.sleep(self.debounce_s)
            self._dirty.clear()
            self.push_all()
            await asyncio.sleep(0)  # let the streams write before the next round

    # -- process ----------------------------------------------------------
    async def serve(self, xds: str, http: str, stop: asyncio.Event) -> None:
        """Serve ADS and the debug API until ``stop`` is set."""
        xhost, xport = split_host_port(xds)
        hhost, hport = split_host_port(http)
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),  # a second CP on the same port must fail, not share it
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AdsServicer(self), server)
        try:
            bound = server.add_insecure_port(f"{xhost}:{xport}")
        except RuntimeError as exc:  # newer grpcio raises instead of returning 0
            raise OSError(f"cannot bind xDS address {xds}: {exc}") from exc
        if bound == 0:
            raise OSError(f"cannot bind xDS address {xds}")
        runner = None
        tasks: list[asyncio.Task[None]] = []
        await server.start()
        try:
            try:
                runner = await debug_http.start(self, hhost, hport)
            except OSError as exc:
                raise OSError(f"cannot bind debug HTTP address {http}: {exc}") from exc
            tasks = [asyncio.create_task(self.watcher.run()), asyncio.create_task(self.push_loop())]
            log.info("meshbed CP: xDS on %s, debug HTTP on %s, Consul %s", xds, http, self.watcher.base_url)
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            log.info("meshbed CP: shutting down")
            for s in list(self.streams.values()):
                s.outbox.put_nowait(None)  # end streams now rather than after the grace
            await server.stop(SHUTDOWN_GRACE_S)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()


async def main_async(xds: str, http: str, consul: str, consul_wait_s: float = 30.0, eureka: str | None = None) -> None:
    """Run a control plane until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await ControlPlane(consul, consul_wait_s=consul_wait_s, eureka_url=eureka).serve(xds, http, stop)
    log.info("meshbed CP: stopped after %.1fs", time.monotonic() - started)
