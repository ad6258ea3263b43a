"""State-of-the-world ADS: the per-stream ACK/NACK state machine, and the gRPC servicer for both protocols.

:class:`AdsStream` is synchronous and free of gRPC so the xDS semantics
(first request always answered, ACK vs NACK vs stale nonce, no resend of a
NACKed version, CDS->EDS->LDS->RDS order) are unit-testable with fake
requests. :class:`AdsServicer` only moves messages between gRPC and it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Protocol

import grpc
from google.protobuf.json_format import MessageToDict

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ..errors import ConfigError
from ..nodemeta import META_KEY, NodeMeta
from .pushlog import PushLog
from .snapshot import CDS, EDS, LDS, RDS, SHORT, TYPE_ORDER, WILDCARD_TYPES, Snapshot

log = logging.getLogger("meshbed.controlplane.ads")

_nonces = itertools.count(1)

# a response of the key type makes the dependent type owe a fresh response,
# because Envoy re-subscribes (and warms) a changed cluster's endpoints and a
# changed listener's routes and may wait for them even if unchanged
_DEPENDENT = {CDS: EDS, LDS: RDS}

SubKey = tuple[str, bool, frozenset[str]]


class AdsProtocolError(Exception):
    """The client broke the protocol (e.g. no node on the first request)."""


@dataclass
class TypeState:
    """What one stream subscribed to, was sent and acknowledged, for one type URL."""

    wildcard: bool = False
    names: frozenset[str] = frozenset()
    pending: bool = True  # a response is owed regardless of version
    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_key: SubKey | None = None
    sent_resources: tuple[str, ...] = ()
    acked_version: str | None = None
    nacked_key: SubKey | None = None
    last_error: str = ""
    acks: int = 0
    nacks: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "wildcard": self.wildcard,
            "names": sorted(self.names),
            "sent_version": self.sent_version,
            "sent_nonce": self.sent_nonce,
            "acked_version": self.acked_version,
            "nacked_version": self.nacked_key[0] if self.nacked_key else None,
            "last_error": self.last_error,
            "acks": self.acks,
            "nacks": self.nacks,
            "resources": list(self.sent_resources),
        }


SnapshotSource = Callable[[NodeMeta], "Snapshot | None"]


def parse_node_meta(node: Any) -> NodeMeta:
    """Read ``node.metadata.meshbed`` into a NodeMeta (ConfigError if missing or bad)."""
    md = MessageToDict(node.metadata)
    if META_KEY not in md:
        raise ConfigError(f"node {node.id!r} has no metadata.{META_KEY}")
    return NodeMeta.from_struct(md[META_KEY])


class AdsStream:
    """One ADS stream's xDS state; returns the responses to send, does no I/O."""

    def __init__(
        self,
        stream_id: int,
        source: SnapshotSource,
        pushlog: PushLog,
        peer: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stream_id = stream_id
        self.peer = peer
        self.node_id = ""
        self.meta: NodeMeta | None = None
        self.connected_at = clock()
        self.types: dict[str, TypeState] = {}
        self._source = source
        self._pushlog = pushlog
        self.outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()

    # -- inputs -----------------------------------------------------------
    def handle_request(self, req: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        """Apply one DiscoveryRequest; return responses owed now (possibly none)."""
        if self.meta is None:
            # set_node_on_first_message_only: only the first request has the node
            if not req.HasField("node") or not req.node.id:
                raise AdsProtocolError("first DiscoveryRequest on the stream carries no node")
            self.meta = parse_node_meta(req.node)
            self.node_id = req.node.id
            log.info("stream %d: node %s (%s %s) connected from %s", self.stream_id, self.node_id,
                     self.meta.role, self.meta.service, self.peer)
        t = req.type_url
        if t not in SHORT:
            log.warning("node %s: ignoring request for unsupported type %r", self.node_id, t)
            return []
        ts = self.types.get(t)
        first = ts is None
        if ts is None:
            ts = self.types[t] = TypeState()
        names = [n for n in req.resource_names]
        ts.wildcard = t in WILDCARD_TYPES and (not names or "*" in names)
        ts.names = frozenset(n for n in names if n != "*")

        if first or not req.response_nonce:
            ts.pending = True  # a (re)connecting Envoy always gets fresh state
        elif req.response_nonce != ts.sent_nonce:
            return []  # stale: an answer to an older response; only the subscription counts
        elif req.HasField("error_detail"):
            self._on_nack(t, ts, req.error_detail.message or f"code {req.error_detail.code}")
        elif req.version_info == ts.sent_version:
            ts.acked_version = req.version_info
            ts.acks += 1
            self._pushlog.record(self.node_id, SHORT[t], req.version_info, req.response_nonce, "ack",
                                 resources=ts.sent_resources)
            log.info("ack  %s %s version=%s nonce=%s", self.node_id, SHORT[t], req.version_info,
                     req.response_nonce)
        else:
            self._on_nack(t, ts, f"version_info {req.version_info!r} != sent {ts.sent_version!r} "
                                 "without error_detail")
        return self._collect()

    def push(self) -> list[discovery_pb2.DiscoveryResponse]:
        """Responses owed after a mesh change (only types whose content differs)."""
        return self._collect()

    def _on_nack(self, t: str, ts: TypeState, error: str) -> None:
        ts.nacked_key = ts.sent_key
        ts.last_error = error
        ts.nacks += 1
        self._pushlog.record(self.node_id, SHORT[t], ts.sent_version or "", ts.sent_nonce or "", "nack",
                             error=error, resources=ts.sent_resources)
        log.warning("NACK %s %s version=%s nonce=%s: %s", self.node_id, SHORT[t], ts.sent_version,
                    ts.sent_nonce, " ".join(error.split())[:2000])  # one line per event

    # -- outputs ----------------------------------------------------------
    def _collect(self) -> list[discovery_pb2.DiscoveryResponse]:
        if self.meta is None:
            return []
        snap = self._source(self.meta)
        if snap is None:
            return []  # not synced with Consul yet: owe, don't send partial state
        out: list[discovery_pb2.DiscoveryResponse] = []
        for t in TYPE_ORDER:
            ts = self.types.get(t)
            if ts is None:
                continue
            key: SubKey = (snap.version(t), ts.wildcard, ts.names)
            if key == ts.nacked_key:
                ts.pending = False  # never resend what was rejected; wait for a change
                continue
            if not ts.pending and key == ts.sent_key:
                continue
            out.append(self._respond(t, ts, snap, key))
            dep = self.types.get(_DEPENDENT.get(t, ""))
            if dep is not None:
                dep.pending = True
        return out

    def _respond(self, t: str, ts: TypeState, snap: Snapshot, key: SubKey) -> discovery_pb2.DiscoveryResponse:
        items = snap.get(t)
        if ts.wildcard:
            names = sorted(items)
        else:  # only what was asked for, and only what we know
            names = [n for n in sorted(ts.names) if n in items]
        resp = discovery_pb2.DiscoveryResponse(version_info=key[0], type_url=t, nonce=str(next(_nonces)))
        for n in names:
            resp.resources.add().Pack(items[n])
        ts.pending = False
        ts.sent_version, ts.sent_nonce, ts.sent_key = resp.version_info, resp.nonce, key
        ts.sent_resources = tuple(names)
        self._pushlog.record(self.node_id, SHORT[t], resp.version_info, resp.nonce, "sent", resources=names)
        log.info("sent %s %s version=%s nonce=%s resources=%d", self.node_id, SHORT[t], resp.version_info,
                 resp.nonce, len(names))
        return resp

    # -- async glue -------------------------------------------------------
    def deliver(self, responses: list[discovery_pb2.DiscoveryResponse]) -> None:
        for r in responses:
            self.outbox.put_nowait(r)

    def describe(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "stream": self.stream_id,
            "peer": self.peer,
            "role": self.meta.role if self.meta else None,
            "service": self.meta.service if self.meta else None,
            "instance": self.meta.instance if self.meta else None,
            "connected_at": self.connected_at,
            "types": {SHORT[t]: self.types[t].describe() for t in TYPE_ORDER if t in self.types},
        }


class StreamRegistry(Protocol):
    """What the servicer needs from the control plane."""

    def open_stream(self, peer: str) -> AdsStream: ...

    def open_delta_stream(self, peer: str) -> Any: ...

    def close_stream(self, stream: Any) -> None: ...


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """gRPC glue: feed requests to an AdsStream, write what it owes."""

    def __init__(self, registry: StreamRegistry) -> None:
        self._registry = registry

    async def StreamAggregatedResources(  # noqa: N802 - gRPC name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for resp in self._serve(self._registry.open_stream(context.peer()), request_iterator, context):
            yield resp

    async def DeltaAggregatedResources(  # noqa: N802 - gRPC name
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for resp in self._serve(self._registry.open_delta_stream(context.peer()), request_iterator, context):
            yield resp

    async def _serve(self, stream: Any, request_iterator: AsyncIterator[Any],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Feed requests to a stream (SotW or delta) and yield what it owes, until either side ends."""
        failure: list[BaseException] = []

        async def read() -> None:
            try:
                async for req in request_iterator:
                    stream.deliver(stream.handle_request(req))
            except (AdsProtocolError, ConfigError) as exc:
                failure.append(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the client went away
                log.debug("stream %d read ended: %r", stream.stream_id, exc)
            finally:
                stream.outbox.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                resp = await stream.outbox.get()
                if resp is None:
                    break
                yield resp
            if failure:
                log.error("stream %d (%s): %s", stream.stream_id, stream.node_id or context.peer(), failure[0])
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(failure[0]))
        finally:
            reader.cancel()
            self._registry.close_stream(stream)
            log.info("stream %d: node %s disconnected", stream.stream_id, stream.node_id)
