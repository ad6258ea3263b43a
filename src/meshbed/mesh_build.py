"""Bring a topology up on a runtime, and change it while it runs.

Order: Consul, Jaeger, Toxiproxy (together) -> Toxiproxy links and Consul
policy (the Consul gate) -> control plane -> the :class:`~meshbed.mesh.Mesh`
handle -> apps and their sidecars, the ingress -> wait until every Envoy sees
every instance. Cleanup is registered before each side effect, so a start that
fails half-way still tears down what it began. The handle is built once the
control plane runs, so its wiring is complete from the start.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .chaos.toxiproxy import ToxiproxyClient
from .components import app as app_c
from .components import consul as consul_c
from .components import consul_gate as gate_c
from .components import controlplane as cp_c
from .components import envoy as envoy_c
from .components import jaeger as jaeger_c
from .components import toxiproxy as toxi_c
from .errors import ComponentError
from .mesh import Mesh, wait_converged
from .nodemeta import NodeMeta, Route
from .observe.consul import ConsulClient
from .policy import KV_MESH_KEY, KV_SERVICES_PREFIX
from .ports import PortAllocator
from .provision import require
from .readiness import wait_all
from .runtime.base import Handle, Runtime, runtime_factory
from .runtime.state import RunState, sweep_orphans
from .settings import Settings
from .topology import InstanceSpec, Topology

Progress = Callable[[str], None]


@dataclass
class Linker:
    """Routes a link through Toxiproxy when the topology asks for it (``links``: kind -> key -> proxy)."""

    toxiproxy: ToxiproxyClient
    runtime: Runtime
    ports: PortAllocator
    chaos_links: frozenset[str]
    links: dict[str, dict[str, str]] = field(default_factory=dict)

    def link(self, kind: str, key: str, upstream: str) -> str:
        """The host:port to dial for ``upstream``: a Toxiproxy hop when links of ``kind`` are faultable."""
        if kind not in self.chaos_links:
            return upstream
        name = f"{kind}-{key}"
        port = self.ports.take()
        self.toxiproxy.create_proxy(name, f"{self.runtime.listen_host()}:{port}", upstream)
        self.links.setdefault(kind, {})[key] = name
        return f"{self.runtime.internal_host('toxiproxy')}:{port}"

    def unlink(self, kind: str, key: str) -> None:
        name = self.links.get(kind, {}).pop(key, None)
        if name:
            self.toxiproxy.delete_proxy(name)


@dataclass(frozen=True)
class Wiring:
    """What it takes to start one more component in a running mesh (complete once the control plane runs)."""

    settings: Settings
    state: RunState
    ports: PortAllocator
    binaries: dict[str, Any]
    linker: Linker
    cp_xds: str  # internal host:port of the control plane's xDS
    otlp_grpc: str  # internal host:port Envoys send spans to
    otlp_http_url: str  # URL apps send spans to
    consul_url: str  # URL apps register with

    @property
    def xds_api(self) -> str:
        return cp_c.split_protocol(self.settings.controlplane)[1]


class Scaler:
    """Starts and stops components of a running mesh; the mesh handle records what runs."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.wiring: Wiring = mesh.wiring
        self.runtime = mesh.runtime

    def link(self, kind: str, key: str, upstream: str) -> str:
        return self.wiring.linker.link(kind, key, upstream)

    def start_instance(self, inst: InstanceSpec) -> tuple[Handle, Handle]:
        """Start one app and its sidecar (not waiting for readiness)."""
        w, rt = self.wiring, self.runtime
        svc = self.mesh.topology.services[inst.service]
        bind, me = rt.listen_host(), rt.internal_host(inst.id)
        app_port, inbound, admin = w.ports.take(), w.ports.take(), w.ports.take()
        outbound = w.ports.take() if svc.calls else 0
        rt.prepare_pod(inst.id, [p for p in (app_port, inbound, admin, outbound) if p])
        advertise = self.link("upstream", inst.id, f"{me}:{inbound}")
        xds = self.link("control_plane", inst.id, w.cp_xds)
        meta = NodeMeta(
            role="sidecar", service=svc.name, instance=inst.id, listen_address=bind,
            inbound_port=inbound, app_address=f"{me}:{app_port}", outbound_port=outbound,
            upstreams=svc.calls, trace_service=f"{svc.name}-sidecar",
            access_log_path=str(self.mesh.run_dir / f"envoy-{inst.id}" / "access.log"),
        )
        sidecar = rt.start(envoy_c.spec(w.binaries["envoy"], meta, admin_port=admin, xds=_split(xds),
                                        xds_api=w.xds_api,
                                        otlp=_split(w.otlp_grpc), log_level=w.settings.envoy_log_level,
                                        concurrency=w.settings.envoy_concurrency, host=bind))
        self.mesh.sidecars[inst.id] = sidecar
        app = rt.start(app_c.spec(inst, app_port, calls=svc.calls, sidecar_outbound=f"{me}:{outbound}",
                                  consul_url=w.consul_url, advertise=advertise, otlp_http_url=w.otlp_http_url,
                                  run_id=self.mesh.run_id, host=bind))
        self.mesh.apps[inst.id] = app
        self.mesh.instances[inst.id] = inst
        self.mesh.advertised[inst.id] = advertise
        return app, sidecar

    def add_instance(self, service: str, version: str = "v1", priority: int = 0, zone: str = "zone-a",
                     wait_ready: bool = True) -> str:
        """Scale ``service`` up by one instance (registered in Consul by itself once up)."""
        if service not in self.mesh.topology.services:
            raise ComponentError(f"cannot scale unknown service {service!r}")
        taken = {self.mesh.instances[i].index for i in self.mesh.instances_of(service)}
        index = next(i for i in range(1000) if i not in taken)
        inst = InstanceSpec(service, index, version, priority, zone)
        self.mesh.extra.append(inst.id)
        app, sidecar = self.start_instance(inst)
        if wait_ready:
            wait_all([app, sidecar], self.wiring.settings.ready_timeout)
        return inst.id

    def _start_watcher(self, name: str, upstreams: tuple[str, ...], xds_api: str) -> Handle:
        w, rt = self.wiring, self.runtime
        admin, outbound = w.ports.take(), w.ports.take()
        rt.prepare_pod(name, [admin, outbound])
        meta = NodeMeta(role="sidecar", service=f"{name}-svc", instance=name, listen_address=rt.listen_host(),
                        outbound_port=outbound, upstreams=upstreams, trace_service=f"{name}-sidecar")
        return rt.start(envoy_c.spec(w.binaries["envoy"], meta, admin_port=admin, xds=_split(w.cp_xds),
                                     xds_api=xds_api, otlp=_split(w.otlp_grpc), log_level=w.settings.envoy_log_level,
                                     concurrency=1, host=rt.listen_host()))

    @contextlib.contextmanager
    def watcher_envoys(self, count: int, upstreams: tuple[str, ...], xds_api: str | None = None, start: int = 0,
                       ready_s: float | None = None) -> Iterator[dict[str, Handle]]:
        """``count`` Envoy-only nodes subscribed like sidecars calling ``upstreams``; stopped on exit.

        They have no app and serve no traffic: they exist to be measured (bench scale) or compared
        with the mesh's own sidecars (DISC-8, on the other xDS protocol).
        """
        api = xds_api or self.wiring.xds_api
        started: dict[str, Handle] = {}
        try:
            for i in range(start, start + count):
                name = f"watch-{api.lower()}-{i}"
                started[name] = self._start_watcher(name, upstreams, api)
            wait_all(started.values(), self.wiring.settings.ready_timeout if ready_s is None else ready_s)
            yield started
        finally:
            for name, h in started.items():
                h.stop()
                self.runtime.discard(name, [h])

    @contextlib.contextmanager
    def watcher_envoy(self, upstreams: tuple[str, ...], xds_api: str, ready_s: float | None = None) -> Iterator[Handle]:
        """One watcher Envoy (see :meth:`watcher_envoys`)."""
        with self.watcher_envoys(1, upstreams, xds_api, ready_s=ready_s) as ws:
            yield next(iter(ws.values()))

    def remove_instance(self, instance: str) -> None:
        """Stop an instance's app (it deregisters itself) and its sidecar, and forget them.

        Tolerates a half-started instance (a failed scale-up), so cleanup never trips on it.
        """
        handles = [h for h in (self.mesh.apps.pop(instance, None), self.mesh.sidecars.pop(instance, None)) if h is not None]
        for h in handles:
            h.stop()
        self.runtime.discard(instance, handles)
        self.mesh.instances.pop(instance, None)
        self.mesh.advertised.pop(instance, None)
        for kind in ("upstream", "control_plane"):
            self.wiring.linker.unlink(kind, instance)
        if instance in self.mesh.extra:
            self.mesh.extra.remove(instance)

    def start_ingress(self) -> Handle:
        """The edge Envoy, routing the topology's ingress prefixes (not waiting for readiness)."""
        w, rt, topo = self.wiring, self.runtime, self.mesh.topology
        admin, listener = w.ports.take(), w.ports.take()
        xds = self.link("control_plane", "ingress", w.cp_xds)
        meta = NodeMeta(role="ingress", service="ingress", instance="ingress", listen_address=rt.listen_host(),
                        outbound_port=listener, upstreams=tuple(dict.fromkeys(r.service for r in topo.ingress)),
                        routes=tuple(Route(r.prefix, r.service) for r in topo.ingress),
                        trace_service="ingress", access_log_path=str(self.mesh.run_dir / "envoy-ingress" / "access.log"))
        self.mesh.ingress = rt.start(envoy_c.spec(w.binaries["envoy"], meta, admin_port=admin, xds=_split(xds),
                                                  xds_api=w.xds_api, otlp=_split(w.otlp_grpc),
                                                  log_level=w.settings.envoy_log_level,
                                                  concurrency=w.settings.envoy_concurrency, host=rt.listen_host()))
        return self.mesh.ingress


def describe(mesh: Mesh) -> dict[str, Any]:
    """The mesh's endpoints as JSON (what `meshbed up --detach --json` prints)."""
    return {
        "run_id": mesh.run_id,
        "run_dir": str(mesh.run_dir),
        "runtime": mesh.runtime.name,
        "topology": mesh.topology.name,
        "ingress_url": mesh.ingress_url if mesh.ingress else None,
        "envoy_admin": {n: h.url("admin") for n, h in mesh.envoys.items()},
        "controlplane": {"xds": mesh.controlplane.address("xds"), "debug_url": mesh.cp_debug_url,
                         "kind": mesh.settings.controlplane},
        "consul_url": mesh.consul.url("http"),
        "jaeger_query_url": mesh.jaeger.url("query_http"),
        "jaeger_otlp": {"grpc": mesh.jaeger.address("otlp_grpc"), "http": mesh.jaeger.url("otlp_http")},
        "toxiproxy_api": mesh.toxiproxy.url("api"),
        "instances": {i: {"app_url": h.url("http"), "registered": mesh.advertised.get(i, "")}
                      for i, h in mesh.apps.items()},
        "timings_s": {k: round(v, 3) for k, v in mesh.timings.items()},
    }


def _phase(timings: dict[str, float], name: str, progress: Progress) -> Callable[[], None]:
    start = time.monotonic()

    def done() -> None:
        timings[name] = time.monotonic() - start
        progress(f"{name}: {timings[name]:.2f}s")

    return done


@contextlib.contextmanager
def bring_up(topology: Topology, settings: Settings, progress: Progress = lambda s: None,
             state: RunState | None = None) -> Iterator[Mesh]:
    """Start every component of ``topology``; stop them all on exit, however it happens."""
    t0 = time.monotonic()
    sweep_orphans(settings.runs_dir)
    # everything that can fail without side effects comes first, so a bad
    # setup leaves no run directory behind claiming to be "starting"
    binaries = {n: require(n) for n in ("envoy", "consul", "jaeger", "toxiproxy")}
    factory = runtime_factory(settings.runtime)
    factory.preflight()  # type: ignore[attr-defined]  # e.g. no Docker engine: one line, nothing started
    cp_template = cp_c.template_for(settings.controlplane)  # a named one is provisioned here, before anything starts
    if cp_template is not None:
        cp_c.external_spec(cp_template, PortAllocator(), "http://127.0.0.1:1")  # validates the template
    own_state = state is None
    if state is None:
        state = RunState.create(settings.runs_dir, settings.runtime, topology.source)
    try:
        runtime = factory.open(state.run_dir, state)  # constructs, then sets up (engine, images, network)
    except BaseException:
        if own_state:
            state.set_status("down", "runtime failed to start")
        raise
    ports = PortAllocator()
    bind = runtime.listen_host()
    ih = runtime.internal_host
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: state.set_status("down") if own_state else None)
        stack.callback(runtime.close)
        progress(f"run {state.run_id}: {state.run_dir}")

        done = _phase(timings, "infrastructure (consul, jaeger, toxiproxy)", progress)
        consul = runtime.start(consul_c.spec(binaries["consul"], ports, state.run_id, bind))
        jaeger = runtime.start(jaeger_c.spec(binaries["jaeger"], ports, bind))
        toxi = runtime.start(toxi_c.spec(binaries["toxiproxy"], ports, bind))
        wait_all([consul, jaeger, toxi], settings.ready_timeout)
        done()

        done = _phase(timings, "links and policy", progress)
        linker = Linker(ToxiproxyClient(toxi.url("api")), runtime, ports, topology.chaos_links)
        consul_for_cp = linker.link("consul", "controlplane", f"{ih('consul')}:{consul.spec.ports['http']}")
        gate: Handle | None = None
        if "consul" in topology.chaos_links:  # the control plane reaches Consul through a gate that can answer 503
            gate = runtime.start(gate_c.spec(binaries["envoy"], ports, consul_for_cp, bind))
            wait_all([gate], settings.ready_timeout)
            consul_for_cp = f"{ih('consul-gate')}:{gate.spec.ports['http']}"
        otlp_grpc = linker.link("tracing", "otlp-grpc", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_grpc']}")
        otlp_http = linker.link("tracing", "otlp-http", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_http']}")
        cc = ConsulClient(consul.url("http"))
        for svc in topology.services.values():
            cc.kv_put(KV_SERVICES_PREFIX + svc.name, svc.policy.to_json())
        cc.kv_put(KV_MESH_KEY, topology.mesh.to_json())
        done()

        done = _phase(timings, "control plane", progress)
        if cp_template is None:
            cp_spec = cp_c.spec(ports, f"http://{consul_for_cp}", bind)
        else:
            cp_spec = cp_c.external_spec(cp_template, ports, f"http://{consul_for_cp}", bind)
        cp = runtime.start(cp_spec)
        wait_all([cp], settings.ready_timeout)
        wiring = Wiring(settings, state, ports, binaries, linker, cp_xds=f"{ih('controlplane')}:{cp.spec.ports['xds']}",
                        otlp_grpc=otlp_grpc, otlp_http_url=f"http://{otlp_http}/v1/traces",
                        consul_url=f"http://{ih('consul')}:{consul.spec.ports['http']}")
        mesh = Mesh(topology, state.run_id, state.run_dir, runtime, consul, jaeger, toxi, cp, settings, wiring, Scaler,
                    consul_gate=gate, links=linker.links, timings=timings)
        done()

        done = _phase(timings, "services and sidecars", progress)
        scale = mesh.scale
        to_wait: list[Handle] = []
        for svc in topology.services.values():
            for inst in svc.instances:
                to_wait += scale.start_instance(inst)
        to_wait.append(scale.start_ingress())
        wait_all(to_wait, settings.ready_timeout)
        done()

        done = _phase(timings, "discovery convergence", progress)
        wait_converged(mesh, settings.ready_timeout)
        done()
        timings["total"] = time.monotonic() - t0
        progress(f"mesh ready in {timings['total']:.2f}s")
        yield mesh


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)
