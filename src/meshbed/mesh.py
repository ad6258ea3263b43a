"""Bring a topology up on a runtime, and hand back a running Mesh.

Order: Consul, Jaeger, Toxiproxy (together) -> Toxiproxy links and Consul
policy -> control plane -> apps and their sidecars, the ingress -> wait until
every Envoy sees every instance. Cleanup is registered before each side
effect, so a start that fails half-way still tears down what it began.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import httpc, wait
from .chaos.toxiproxy import ToxiproxyClient
from .components import app as app_c
from .components import consul as consul_c
from .components import controlplane as cp_c
from .components import consul_gate as gate_c
from .components import envoy as envoy_c
from .components import jaeger as jaeger_c
from .components import toxiproxy as toxi_c
from .errors import ComponentError
from .nodemeta import NodeMeta, Route
from .observe import envoy_admin
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
class Wiring:
    """What it takes to start one more component in a running mesh."""

    settings: Settings
    state: RunState
    ports: PortAllocator
    binaries: dict[str, Any]
    toxiproxy: ToxiproxyClient
    cp_xds: str  # internal host:port of the control plane's xDS
    otlp_grpc: str  # internal host:port Envoys send spans to
    otlp_http_url: str  # URL apps send spans to
    consul_url: str  # URL apps register with
    chaos_links: frozenset[str]


@dataclass
class Mesh:
    """A running mesh: every component's handle, and where to reach it."""

    topology: Topology
    run_id: str
    run_dir: Any
    runtime: Runtime
    consul: Handle
    jaeger: Handle
    toxiproxy: Handle
    controlplane: Handle
    wiring: Wiring
    ingress: Handle | None = None
    sidecars: dict[str, Handle] = field(default_factory=dict)
    apps: dict[str, Handle] = field(default_factory=dict)
    instances: dict[str, InstanceSpec] = field(default_factory=dict)
    # toxiproxy proxy names by link kind: {"upstream": {"backend-0": "upstream-backend-0"}, ...}
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    # the Consul-registered address of each instance (a Toxiproxy port when the upstream link is proxied)
    advertised: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # instances started after bring-up (scale-up), removed again by baseline reset
    extra: list[str] = field(default_factory=list)
    # the Envoy between the control plane and Consul that can make Consul answer 503 (with chaos link consul)
    consul_gate: Handle | None = None

    @property
    def envoys(self) -> dict[str, Handle]:
        out = dict(self.sidecars)
        if self.ingress is not None:
            out["ingress"] = self.ingress
        return out

    @property
    def ingress_url(self) -> str:
        assert self.ingress is not None
        return self.ingress.url("outbound")

    @property
    def cp_debug_url(self) -> str | None:
        """The reference control plane's debug API (push log); None for other control planes."""
        if not cp_c.is_builtin(self.wiring.settings.controlplane):
            return None
        return self.controlplane.url("http")

    def consul_client(self) -> ConsulClient:
        return ConsulClient(self.consul.url("http"))

    def toxiproxy_client(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.toxiproxy.url("api"))

    def control(self, instance: str, path: str, body: Any = None) -> None:
        """POST to an instance's own control endpoint (/meshbed/register, /meshbed/health, ...)."""
        r = httpc.request("POST", self.apps[instance].url("http", path), body, timeout=5)
        if r.status != 200:
            raise ComponentError(f"{instance} {path}: HTTP {r.status}: {r.text[:100]}")

    def instances_of(self, service: str) -> list[str]:
        return [i for i, spec in self.instances.items() if spec.service == service]

    def subscribers(self, service: str) -> dict[str, Handle]:
        """The Envoys that route to ``service`` (by node name)."""
        callers = set(self.topology.callers_of(service))
        out = {}
        for n, h in self.envoys.items():
            svc = "ingress" if n == "ingress" else self.instances[n].service
            if svc in callers:
                out[n] = h
        return out

    # -- changing the mesh while it runs ---------------------------------

    def link(self, kind: str, key: str, upstream: str) -> str:
        """Route one link through Toxiproxy when the topology asks; returns the host:port to dial."""
        if kind not in self.wiring.chaos_links:
            return upstream
        name = f"{kind}-{key}"
        port = self.wiring.ports.take()
        self.wiring.toxiproxy.create_proxy(name, f"{self.runtime.listen_host()}:{port}", upstream)
        self.links.setdefault(kind, {})[key] = name
        return f"{self.runtime.internal_host('toxiproxy')}:{port}"

    def start_instance(self, inst: InstanceSpec) -> tuple[Handle, Handle]:
        """Start one app and its sidecar (not waiting for readiness)."""
        w, rt = self.wiring, self.runtime
        svc = self.topology.services[inst.service]
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
            access_log_path=str(self.run_dir / f"envoy-{inst.id}" / "access.log"),
        )
        sidecar = rt.start(envoy_c.spec(w.binaries["envoy"], meta, admin_port=admin, xds=_split(xds),
                                        xds_api=cp_c.split_protocol(w.settings.controlplane)[1],
                                        otlp=_split(w.otlp_grpc), log_level=w.settings.envoy_log_level,
                                        concurrency=w.settings.envoy_concurrency, host=bind))
        self.sidecars[inst.id] = sidecar
        app = rt.start(app_c.spec(inst, app_port, calls=svc.calls, sidecar_outbound=f"{me}:{outbound}",
                                  consul_url=w.consul_url, advertise=advertise, otlp_http_url=w.otlp_http_url,
                                  run_id=self.run_id, host=bind))
        self.apps[inst.id] = app
        self.instances[inst.id] = inst
        self.advertised[inst.id] = advertise
        return app, sidecar

    def add_instance(self, service: str, version: str = "v1", priority: int = 0, zone: str = "zone-a",
                     wait_ready: bool = True) -> str:
        """Scale ``service`` up by one instance (registered in Consul by itself once up)."""
        if service not in self.topology.services:
            raise ComponentError(f"cannot scale unknown service {service!r}")
        taken = {self.instances[i].index for i in self.instances_of(service)}
        index = next(i for i in range(1000) if i not in taken)
        inst = InstanceSpec(service, index, version, priority, zone)
        self.extra.append(inst.id)
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
        api = xds_api or cp_c.split_protocol(self.wiring.settings.controlplane)[1]
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
        handles = [h for h in (self.apps.pop(instance, None), self.sidecars.pop(instance, None)) if h is not None]
        for h in handles:
            h.stop()
        self.runtime.discard(instance, handles)
        self.instances.pop(instance, None)
        self.advertised.pop(instance, None)
        for kind in ("upstream", "control_plane"):
            name = self.links.get(kind, {}).pop(instance, None)
            if name:
                self.wiring.toxiproxy.delete_proxy(name)
        if instance in self.extra:
            self.extra.remove(instance)

    def all_handles(self) -> list[Handle]:
        gate = [self.consul_gate] if self.consul_gate is not None else []
        return [self.consul, self.jaeger, self.toxiproxy, *gate, self.controlplane, *self.envoys.values(),
                *self.apps.values()]

    def endpoints(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "runtime": self.runtime.name,
            "topology": self.topology.name,
            "ingress_url": self.ingress_url if self.ingress else None,
            "envoy_admin": {n: h.url("admin") for n, h in self.envoys.items()},
            "controlplane": {"xds": self.controlplane.address("xds"), "debug_url": self.cp_debug_url,
                             "kind": self.wiring.settings.controlplane},
            "consul_url": self.consul.url("http"),
            "jaeger_query_url": self.jaeger.url("query_http"),
            "jaeger_otlp": {"grpc": self.jaeger.address("otlp_grpc"), "http": self.jaeger.url("otlp_http")},
            "toxiproxy_api": self.toxiproxy.url("api"),
            "instances": {i: {"app_url": h.url("http"), "registered": self.advertised.get(i, "")}
                          for i, h in self.apps.items()},
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
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
        runtime = factory(state.run_dir, state)
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
        wiring = Wiring(settings, state, ports, binaries, ToxiproxyClient(toxi.url("api")), cp_xds="",
                        otlp_grpc="", otlp_http_url="", consul_url=f"http://{ih('consul')}:{consul.spec.ports['http']}",
                        chaos_links=topology.chaos_links)
        mesh = Mesh(topology, state.run_id, state.run_dir, runtime, consul, jaeger, toxi, None, wiring,  # type: ignore[arg-type]
                    timings=timings)
        consul_for_cp = mesh.link("consul", "controlplane", f"{ih('consul')}:{consul.spec.ports['http']}")
        if "consul" in topology.chaos_links:  # the control plane reaches Consul through a gate that can answer 503
            mesh.consul_gate = runtime.start(gate_c.spec(binaries["envoy"], ports, consul_for_cp, bind))
            wait_all([mesh.consul_gate], settings.ready_timeout)
            consul_for_cp = f"{ih('consul-gate')}:{mesh.consul_gate.spec.ports['http']}"
        wiring.otlp_grpc = mesh.link("tracing", "otlp-grpc", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_grpc']}")
        otlp_http = mesh.link("tracing", "otlp-http", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_http']}")
        wiring.otlp_http_url = f"http://{otlp_http}/v1/traces"
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
        mesh.controlplane = cp
        wiring.cp_xds = f"{ih('controlplane')}:{cp.spec.ports['xds']}"
        wait_all([cp], settings.ready_timeout)
        done()

        done = _phase(timings, "services and sidecars", progress)
        to_wait: list[Handle] = []
        for svc in topology.services.values():
            for inst in svc.instances:
                to_wait += mesh.start_instance(inst)
        admin, listener = ports.take(), ports.take()
        xds = mesh.link("control_plane", "ingress", wiring.cp_xds)
        meta = NodeMeta(role="ingress", service="ingress", instance="ingress", listen_address=bind,
                        outbound_port=listener, upstreams=tuple(dict.fromkeys(r.service for r in topology.ingress)),
                        routes=tuple(Route(r.prefix, r.service) for r in topology.ingress),
                        trace_service="ingress",
                        access_log_path=str(state.run_dir / "envoy-ingress" / "access.log"))
        mesh.ingress = runtime.start(envoy_c.spec(binaries["envoy"], meta, admin_port=admin, xds=_split(xds),
                                                  xds_api=cp_c.split_protocol(settings.controlplane)[1],
                                                  otlp=_split(wiring.otlp_grpc), log_level=settings.envoy_log_level,
                                                  concurrency=settings.envoy_concurrency, host=bind))
        to_wait.append(mesh.ingress)
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


def expected_endpoints(mesh: Mesh, service: str) -> set[str]:
    """The registered addresses of every passing instance of ``service``, from Consul."""
    return {i.address for i in mesh.consul_client().instances(service) if i.status == "passing"}


def wait_converged(mesh: Mesh, deadline: float) -> None:
    """Every Envoy lists exactly the healthy instances Consul has for each of its upstreams."""
    def probe() -> object:
        missing = []
        for svc in mesh.topology.services:
            want = expected_endpoints(mesh, svc)
            n = len(mesh.instances_of(svc))
            if len(want) < n:
                missing.append(f"consul has {len(want)}/{n} passing {svc}")
                continue
            for node, h in mesh.subscribers(svc).items():
                got = envoy_admin.healthy_addresses(h.url("admin"), svc)
                if got != want:
                    missing.append(f"{node}:{svc} has {len(got & want)}/{len(want)}")
        if missing:
            raise wait.NotYet("; ".join(missing[:6]))
        return True

    wait.until(probe, deadline, interval=0.1, what="every Envoy to list every registered instance healthy",
               hint="check the controlplane log and `meshbed status`")
