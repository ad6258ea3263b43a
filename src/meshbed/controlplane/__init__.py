"""meshbed's reference xDS control plane.

A separate process (``python -m meshbed.controlplane``) that watches Consul
with blocking queries and serves state-of-the-world ADS to every Envoy of a
meshbed mesh. Each Envoy says what it is in its node metadata (see
:mod:`meshbed.nodemeta`); Consul says where services are and, under KV
``meshbed/``, how traffic to them is shaped (see :mod:`meshbed.policy`).

Modules, one job each:

* :mod:`.catalog` - pure parsing of Consul JSON into instances and policies;
* :mod:`.consul_watch` - blocking-query watchers that keep a :class:`MeshState`;
* :mod:`.resources` - pure functions: node + state -> Envoy protos;
* :mod:`.snapshot` - a node's versioned resource set;
* :mod:`.ads` - the ADS stream state machine and gRPC servicer;
* :mod:`.pushlog` - ring buffer of sent/ack/nack events;
* :mod:`.debug_http` - the aiohttp debug API;
* :mod:`.server` - wiring, push loop and signals; ``__main__`` is the CLI.
"""
