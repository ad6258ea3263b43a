"""Incremental (delta) ADS: per-resource versions, only changes sent, removals named.

Like :class:`~meshbed.controlplane.ads.AdsStream`, :class:`DeltaStream` is
synchronous and free of gRPC: requests in, responses out. Per type it keeps
what the client subscribed to (wildcard for CDS/LDS when it names nothing or
``*``), the version of every resource the client holds, and the one response
awaiting an ACK. A change sends only the resources whose content hash
differs, plus ``removed_resources`` for names the client holds that are gone.
A NACKed response is not resent until the snapshot changes again; on
reconnect ``initial_resource_versions`` tells what the client already has,
so nothing unchanged is sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from envoy.service.discovery.v3 import discovery_pb2

from ..nodemeta import NodeMeta
from .ads import AdsProtocolError, SnapshotSource, parse_node_meta
from .pushlog import PushLog
from .snapshot import CDS, EDS, LDS, RDS, SHORT, TYPE_ORDER, WILDCARD_TYPES

log = logging.getLogger("meshbed.controlplane.delta")

_nonces = itertools.count(1)
# a changed cluster (listener) makes Envoy re-warm its endpoints (routes): send those again
_DEPENDENT = {CDS: EDS, LDS: RDS}


def resource_version(msg: Any) -> str:
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).hexdigest()[:12]


@dataclass
class DeltaTypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # what the client has: name -> version
    inflight: str | None = None  # nonce awaiting an ACK
    inflight_held: dict[str, str] = field(default_factory=dict)  # held, once that nonce is ACKed
    nacked: dict[str, str] | None = None  # the wanted state that was rejected
    resend: set[str] = field(default_factory=set)  # names owed again (dependents of a change)
    acks: int = 0
    nacks: int = 0
    last_error: str = ""

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream:
    """One delta ADS stream; returns the DeltaDiscoveryResponses to send, does no I/O."""

    def __init__(self, stream_id: int, source: SnapshotSource, pushlog: PushLog, peer: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.stream_id = stream_id
        self.peer = peer
        self.node_id = ""
        self.meta: NodeMeta | None = None
        self.connected_at = clock()
        self.types: dict[str, DeltaTypeState] = {}
        self._source = source
        self._pushlog = pushlog
        self.outbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse | None] = asyncio.Queue()

    def handle_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        if self.meta is None:
            if not req.HasField("node") or not req.node.id:
                raise AdsProtocolError("first DeltaDiscoveryRequest on the stream carries no node")
            self.meta = parse_node_meta(req.node)
            self.node_id = req.node.id
            log.info("delta stream %d: node %s (%s %s) connected", self.stream_id, self.node_id,
                     self.meta.role, self.meta.service)
        t = req.type_url
        if t not in SHORT:
            return []
        ts = self.types.get(t)
        if ts is None:
            ts = self.types[t] = DeltaTypeState()
            subs = set(req.resource_names_subscribe)
            ts.wildcard = t in WILDCARD_TYPES and (not subs or "*" in subs)
            ts.held = dict(req.initial_resource_versions)  # a reconnect: what the client still has
        ts.names |= {n for n in req.resource_names_subscribe if n != "*"}
        ts.names -= set(req.resource_names_unsubscribe)
        if "*" in req.resource_names_unsubscribe:
            ts.wildcard = False
        for n in req.resource_names_unsubscribe:
            ts.held.pop(n, None)  # the client dropped it: a later subscribe must get it again
        if req.response_nonce and req.response_nonce == ts.inflight:
            if req.HasField("error_detail"):
                ts.nacks += 1
                ts.last_error = req.error_detail.message or f"code {req.error_detail.code}"
                ts.nacked = self._wanted(t, ts)
                self._pushlog.record(self.node_id, SHORT[t], "", req.response_nonce, "nack", error=ts.last_error)
                log.warning("NACK %s %s nonce=%s: %s", self.node_id, SHORT[t], req.response_nonce,
                            " ".join(ts.last_error.split())[:2000])
            else:
                ts.acks += 1
                ts.held = dict(ts.inflight_held)
                self._pushlog.record(self.node_id, SHORT[t], "", req.response_nonce, "ack")
            ts.inflight = None
        for n in req.resource_names_subscribe:  # a (re)subscribed name is owed even if unchanged
            if n != "*" and n in ts.held and not req.initial_resource_versions:
                ts.resend.add(n)
        return self._collect()

    def push(self) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        return self._collect()

    def _wanted(self, t: str, ts: DeltaTypeState) -> dict[str, str]:
        snap = self._source(self.meta) if self.meta else None
        items = snap.get(t) if snap else {}
        return {n: resource_version(m) for n, m in items.items() if ts.wants(n)}

    def _collect(self) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        if self.meta is None:
            return []
        snap = self._source(self.meta)
        if snap is None:
            return []  # not synced with Consul yet
        out = []
        for t in TYPE_ORDER:
            ts = self.types.get(t)
            if ts is None or ts.inflight is not None:
                continue  # one response in flight per type: the next goes after its ACK/NACK
            items = snap.get(t)
            wanted = {n: resource_version(m) for n, m in items.items() if ts.wants(n)}
            if wanted == ts.nacked:
                continue  # never resend what was rejected
            changed = sorted(n for n, v in wanted.items() if ts.held.get(n) != v or n in ts.resend)
            removed = sorted(n for n in ts.held if n not in wanted)
            if not changed and not removed and ts.held:
                continue
            if not changed and not removed and not ts.held and ts.acks + ts.nacks > 0:
                continue
            resp = discovery_pb2.DeltaDiscoveryResponse(type_url=t, nonce=str(next(_nonces)),
                                                        system_version_info=snap.version(t))
            for n in changed:
                r = resp.resources.add(name=n, version=wanted[n])
                r.resource.Pack(items[n])
            resp.removed_resources.extend(removed)
            ts.inflight = resp.nonce
            ts.inflight_held = {**{n: v for n, v in ts.held.items() if n not in removed}, **{n: wanted[n] for n in changed}}
            ts.resend.clear()
            ts.nacked = None
            self._pushlog.record(self.node_id, SHORT[t], snap.version(t), resp.nonce, "sent", resources=changed)
            log.info("sent %s %s delta nonce=%s changed=%d removed=%d", self.node_id, SHORT[t], resp.nonce,
                     len(changed), len(removed))
            out.append(resp)
            dep = self.types.get(_DEPENDENT.get(t, ""))
            if dep is not None and t == CDS:
                dep.resend |= {n for n in changed if n in dep.held}
            elif dep is not None and t == LDS:
                dep.resend |= set(dep.held)
        return out

    def deliver(self, responses: list[Any]) -> None:
        for r in responses:
            self.outbox.put_nowait(r)

    def describe(self) -> dict[str, Any]:
        return {"node": self.node_id, "stream": self.stream_id, "peer": self.peer, "protocol": "delta",
                "role": self.meta.role if self.meta else None,
                "service": self.meta.service if self.meta else None,
                "instance": self.meta.instance if self.meta else None, "connected_at": self.connected_at,
                "types": {SHORT[t]: {"wildcard": s.wildcard, "names": sorted(s.names), "held": len(s.held),
                                     "acks": s.acks, "nacks": s.nacks, "last_error": s.last_error}
                          for t, s in self.types.items()}}
