"""Bring a topology up on a runtime, and change it while it runs.

Order, overlapping every wait that can overlap: Consul, Jaeger, Toxiproxy, the
Consul gate and the control plane start together (the runtime's own warm-up,
the process runtime's sample fork server, began when it opened); links are
planned with their ports at once. When Consul and Toxiproxy answer: policy
into KV, then every planned link in one Toxiproxy call (the control plane
reaches Consul only through its link, so its first sync sees the policy),
then the apps (they register themselves). Once the control plane's xDS port
listens: the sidecars and the ingress; then wait for everything, and until
every Envoy sees every instance. Cleanup is registered before each side
effect, so a start that fails half-way still tears down what it began.
"""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .chaos.toxiproxy import ToxiproxyClient
from .components import app as app_c
from .components import consul as consul_c
from .components import consul_gate as gate_c
from .components import controlplane as cp_c
from .components import envoy as envoy_c
from .components import eureka as eureka_c
from .components import mesh_options
from .components import jaeger as jaeger_c
from .components import toxiproxy as toxi_c
from . import wait
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
    # while deferring (start-up, before Toxiproxy answers), links are only planned: flush() creates them
    defer: bool = False
    pending: list[dict[str, Any]] = field(default_factory=list)

    def link(self, kind: str, key: str, upstream: str) -> str:
        """The host:port to dial for ``upstream``: a Toxiproxy hop when links of ``kind`` are faultable."""
        if kind not in self.chaos_links:
            return upstream
        name = f"{kind}-{key}"
        port = self.ports.take()
        listen = f"{self.runtime.listen_host()}:{port}"
        if self.defer:
            self.pending.append({"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        else:
            self.toxiproxy.create_proxy(name, listen, upstream)
        self.links.setdefault(kind, {})[key] = name
        return f"{self.runtime.internal_host('toxiproxy')}:{port}"

    def flush(self) -> None:
        """Create every planned link in one Toxiproxy call; later links are created one by one."""
        self.defer = False
        if self.pending:
            self.toxiproxy.populate(self.pending)
            self.pending = []

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
    app_env: dict[str, str] = field(default_factory=dict)  # registry eureka / tracing b3 (components.mesh_options)
    zipkin: tuple[str, int] | None = None  # tracing b3: Jaeger's Zipkin receiver, Envoys report there

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

    def plan_instance(self, inst: InstanceSpec) -> "PlannedInstance":
        """Ports and links of one instance (links are only planned while the linker defers)."""
        w, rt = self.wiring, self.runtime
        svc = self.mesh.topology.services[inst.service]
        app_port, inbound, admin = w.ports.take(), w.ports.take(), w.ports.take()
        outbound = w.ports.take() if svc.calls else 0
        rt.prepare_pod(inst.id, [p for p in (app_port, inbound, admin, outbound) if p])
        me = rt.internal_host(inst.id)
        advertise = self.link("upstream", inst.id, f"{me}:{inbound}")
        xds = self.link("control_plane", inst.id, w.cp_xds)
        return PlannedInstance(inst, app_port, inbound, admin, outbound, advertise, xds)

    def start_sidecar(self, p: "PlannedInstance") -> Handle:
        """The instance's Envoy (start it once the control plane's xDS port listens, or Envoy backs off)."""
        w, rt, inst = self.wiring, self.runtime, p.inst
        svc = self.mesh.topology.services[inst.service]
        bind, me = rt.listen_host(), rt.internal_host(inst.id)
        meta = NodeMeta(
            role="sidecar", service=svc.name, instance=inst.id, listen_address=bind,
            inbound_port=p.inbound, app_address=f"{me}:{p.app_port}", outbound_port=p.outbound,
            upstreams=svc.calls, trace_service=f"{svc.name}-sidecar",
            access_log_path=str(self.mesh.run_dir / f"envoy-{inst.id}" / "access.log"),
        )
        sidecar = rt.start(envoy_c.spec(w.binaries["envoy"], meta, admin_port=p.admin, xds=_split(p.xds),
                                        xds_api=w.xds_api,
                                        otlp=_split(w.otlp_grpc), log_level=w.settings.envoy_log_level,
                                        concurrency=w.settings.envoy_concurrency, host=bind,
                                        max_heap_mb=w.settings.envoy_max_heap_mb, zipkin=w.zipkin))
        self.mesh.sidecars[inst.id] = sidecar
        self.mesh.instances[inst.id] = inst
        return sidecar

    def start_app(self, p: "PlannedInstance") -> Handle:
        """The instance's app (it registers itself in Consul once it listens)."""
        w, rt, inst = self.wiring, self.runtime, p.inst
        svc = self.mesh.topology.services[inst.service]
        bind, me = rt.listen_host(), rt.internal_host(inst.id)
        app = rt.start(app_c.spec(inst, p.app_port, calls=svc.calls, sidecar_outbound=f"{me}:{p.outbound}",
                                  consul_url=w.consul_url, advertise=p.advertise, otlp_http_url=w.otlp_http_url,
                                  run_id=self.mesh.run_id, host=bind,
                                  env={**w.app_env, **mesh_options.service_env(svc)}))
        self.mesh.apps[inst.id] = app
        self.mesh.instances[inst.id] = inst
        self.mesh.advertised[inst.id] = p.advertise
        return app

    def start_instance(self, inst: InstanceSpec) -> tuple[Handle, Handle]:
        """Start one app and its sidecar (not waiting for readiness)."""
        p = self.plan_instance(inst)
        sidecar = self.start_sidecar(p)
        return self.start_app(p), sidecar

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
                                     concurrency=1, host=rt.listen_host(), max_heap_mb=w.settings.envoy_max_heap_mb))

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

    def plan_ingress(self) -> tuple[int, int, str]:
        """The edge Envoy's admin port, listener port and xDS address (a planned link while deferring)."""
        w = self.wiring
        admin, listener = w.ports.take(), w.ports.take()
        return admin, listener, self.link("control_plane", "ingress", w.cp_xds)

    def start_ingress(self, planned: tuple[int, int, str] | None = None) -> Handle:
        """The edge Envoy, routing the topology's ingress prefixes (not waiting for readiness)."""
        w, rt, topo = self.wiring, self.runtime, self.mesh.topology
        admin, listener, xds = planned or self.plan_ingress()
        meta = NodeMeta(role="ingress", service="ingress", instance="ingress", listen_address=rt.listen_host(),
                        outbound_port=listener, upstreams=tuple(dict.fromkeys(r.service for r in topo.ingress)),
                        routes=tuple(Route(r.prefix, r.service) for r in topo.ingress),
                        trace_service="ingress", access_log_path=str(self.mesh.run_dir / "envoy-ingress" / "access.log"))
        self.mesh.ingress = rt.start(envoy_c.spec(w.binaries["envoy"], meta, admin_port=admin, xds=_split(xds),
                                                  xds_api=w.xds_api, otlp=_split(w.otlp_grpc),
                                                  log_level=w.settings.envoy_log_level,
                                                  concurrency=w.settings.envoy_concurrency, host=rt.listen_host(),
                                                  max_heap_mb=w.settings.envoy_max_heap_mb, zipkin=w.zipkin))
        return self.mesh.ingress


@dataclass(frozen=True)
class PlannedInstance:
    """One instance's ports and (planned) links, before anything of it starts."""

    inst: InstanceSpec
    app_port: int
    inbound: int
    admin: int
    outbound: int
    advertise: str  # what it registers in Consul (its inbound, or a Toxiproxy hop to it)
    xds: str  # where its sidecar dials the control plane


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
    if cp_c.is_connect(settings.controlplane):  # Consul's own mesh: wired by components.consul_connect
        import sys

        from .components.consul_connect import bring_up_connect
        with bring_up_connect(topology, settings, progress, state, sys.modules[__name__]) as mesh:
            yield mesh
        return
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
    opts = mesh_options.choose(settings, topology, progress)  # registry and trace format; Eureka built on first use
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

        # Everything that can overlap does: the infrastructure, the control plane and the runtime's own
        # warm-up (the process runtime's sample fork server) start together; links are planned with
        # their ports now and created in one Toxiproxy call once it answers.
        done = _phase(timings, "infrastructure (consul, jaeger, toxiproxy)", progress)
        consul = runtime.start(consul_c.spec(binaries["consul"], ports, state.run_id, bind))
        jaeger = runtime.start(jaeger_c.spec(binaries["jaeger"], ports, bind, zipkin=opts.b3))
        eureka = runtime.start(eureka_c.spec(opts.eureka, ports, bind)) if opts.eureka and not opts.eureka.url else None
        eureka_url = opts.eureka.url if opts.eureka and opts.eureka.url else \
            f"http://{ih('eureka')}:{eureka.spec.ports['http']}{eureka_c.PATH}" if eureka else ""
        toxi = runtime.start(toxi_c.spec(binaries["toxiproxy"], ports, bind))
        linker = Linker(ToxiproxyClient(toxi.url("api")), runtime, ports, topology.chaos_links, defer=True)
        consul_for_cp = linker.link("consul", "controlplane", f"{ih('consul')}:{consul.spec.ports['http']}")
        gate: Handle | None = None
        if "consul" in topology.chaos_links:  # the control plane reaches Consul through a gate that can answer 503
            gate = runtime.start(gate_c.spec(binaries["envoy"], ports, consul_for_cp, bind))
            consul_for_cp = f"{ih('consul-gate')}:{gate.spec.ports['http']}"
        otlp_grpc = linker.link("tracing", "otlp-grpc", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_grpc']}")
        otlp_http = linker.link("tracing", "otlp-http", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_http']}")
        if cp_template is None:
            cp_spec = cp_c.spec(ports, f"http://{consul_for_cp}", bind, eureka_url=eureka_url)
        else:
            cp_spec = cp_c.external_spec(cp_template, ports, f"http://{consul_for_cp}", bind)
        # behind a Toxiproxy link the control plane cannot reach Consul before the link exists, which is
        # after the policy is in KV: its first sync sees the policy, so it may start now
        cp_early = "consul" in topology.chaos_links
        cp = runtime.start(cp_spec) if cp_early else None
        wait_all([consul, toxi, *([eureka] if eureka else [])], settings.ready_timeout)
        done()

        done = _phase(timings, "links and policy", progress)
        cc = ConsulClient(consul.url("http"))
        for svc in topology.services.values():
            cc.kv_put(KV_SERVICES_PREFIX + svc.name, svc.policy.to_json())
        cc.kv_put(KV_MESH_KEY, topology.mesh.to_json())
        if cp is None:
            cp = runtime.start(cp_spec)
        wiring = Wiring(settings, state, ports, binaries, linker, cp_xds=f"{ih('controlplane')}:{cp.spec.ports['xds']}",
                        otlp_grpc=otlp_grpc, otlp_http_url=f"http://{otlp_http}/v1/traces",
                        consul_url=f"http://{ih('consul')}:{consul.spec.ports['http']}",
                        app_env=opts.app_env(eureka_url),
                        zipkin=_split(linker.link("tracing", "zipkin", f"{ih('jaeger')}:{jaeger.spec.ports['zipkin']}"))
                        if opts.b3 else None)  # tracing b3: Envoys' Zipkin spans, on the faultable tracing link
        mesh = Mesh(topology, state.run_id, state.run_dir, runtime, consul, jaeger, toxi, cp, settings, wiring, Scaler,
                    consul_gate=gate, links=linker.links, timings=timings, eureka=eureka,
                    eureka_url=eureka.url("http", eureka_c.PATH) if eureka else eureka_url)
        scale = mesh.scale
        planned = [scale.plan_instance(inst) for svc in topology.services.values() for inst in svc.instances]
        ingress_plan = scale.plan_ingress()
        linker.flush()
        done()

        to_wait: list[Handle] = [h for h in (jaeger, gate, cp) if h is not None]
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the apps (they register in Consul by themselves) wait for the fork server's imports; the
            # sidecars for the control plane's xDS port: on the process runtime both waits overlap
            done = _phase(timings, "apps", progress)
            apps = pool.submit(lambda: [scale.start_app(p) for p in planned]) if runtime.name == "process" else None
            if apps is None:
                to_wait += [scale.start_app(p) for p in planned]
                done()

            done_cp = _phase(timings, "control plane", progress)
            _wait_xds(runtime, cp, settings.ready_timeout)
            done_cp()

            done_sc = _phase(timings, "services and sidecars", progress)
            to_wait += [scale.start_sidecar(p) for p in planned]
            to_wait.append(scale.start_ingress(ingress_plan))
            if apps is not None:
                to_wait += apps.result()
                done()
        wait_all(to_wait, settings.ready_timeout)
        done_sc()

        done = _phase(timings, "discovery convergence", progress)
        wait_converged(mesh, settings.ready_timeout)
        done()
        timings["total"] = time.monotonic() - t0
        progress(f"mesh ready in {timings['total']:.2f}s")
        yield mesh


def _wait_xds(runtime: Runtime, cp: Handle, deadline: float) -> None:
    """Until the control plane's xDS port takes connections (an Envoy dialling earlier backs off ~0.5 s).

    Through Docker's port forwarding a connect succeeds before the container listens, so there the
    wait is for the control plane's own readiness instead.
    """
    if runtime.name != "process":
        wait_all([cp], deadline)
        return

    def listening() -> bool:
        if not cp.alive():
            raise ComponentError(f"the control plane exited during start-up; see {cp.log_path}")
        try:
            with socket.create_connection(("127.0.0.1", cp.spec.ports["xds"]), timeout=1):
                return True
        except OSError as exc:
            raise wait.NotYet(f"xDS port {cp.spec.ports['xds']}: {exc}") from None

    wait.until(listening, deadline, interval=0.01, what="the control plane's xDS port to listen",
               hint=f"see {cp.log_path}", fatal=(ComponentError,))


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)
