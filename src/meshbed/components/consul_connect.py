"""``--controlplane consul-connect``: a mesh wired the Consul Connect way, judged like any other.

Consul is both the registry and the control plane: its agent serves delta xDS on its gRPC
port. So the Consul agent here runs as a single *server* with a data directory (not ``-dev``),
which keeps the catalog, config entries and the CA across the restarts the suites do: the
mesh's ``consul`` and ``controlplane`` are the same component, and killing, pausing or
restarting "the control plane" takes the registry down with it (the DISC-6/7 evidence names
``controlplane.kind: consul-connect``).

Per instance: the app registers itself with a ``connect.sidecar_service``
(:mod:`meshbed.flavour.connect_wiring`); its Envoy's bootstrap comes from
``consul connect envoy -sidecar-for <id> -bootstrap`` (:mod:`.consul_connect_launch`); the
app calls its upstream on the sidecar's local bind port. The edge is an ingress gateway.
Toxiproxy hops stay where the suites need them: upstream links (in front of each sidecar's
public mTLS listener), control-plane links (each Envoy's gRPC to the agent) and tracing.
There is no separate control plane -> Consul link: Consul's xDS server *is* Consul.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .. import httpc
from ..errors import ComponentError, ConfigError
from ..flavour import connect_wiring as cw
from ..flavour.connect import ConfigEntries, ConnectFlavour, apply_entries
from ..ports import PortAllocator
from ..runtime.base import ComponentSpec, Handle
from ..topology import InstanceSpec

XDS_API = "DELTA_GRPC"  # Consul 1.14 closes a SotW (GRPC) stream with "not implemented"


def _ready(h: Handle) -> object:
    r = httpc.get(h.url("http", "/v1/status/leader"), timeout=2)
    if r.status != 200 or r.json() in ("", None):
        return False
    roots = httpc.get(h.url("http", "/v1/connect/ca/roots"), timeout=2)
    return roots.status == 200 and bool((roots.json() or {}).get("Roots"))


def agent_spec(binary: Path, ports: PortAllocator, run_id: str, host: str = "127.0.0.1") -> ComponentSpec:
    """A one-server Consul with Connect and plaintext gRPC (its xDS server); state kept in ./data."""
    p = {name: ports.take() for name in ("http", "xds", "serf_lan", "serf_wan", "server")}
    bind = '{{ GetInterfaceIP "eth0" }}' if host == "0.0.0.0" else host
    argv = [
        str(binary), "agent", "-server", "-bootstrap-expect", "1", "-data-dir", "data", "-ui=false",
        "-bind", bind, "-client", host, "-node", f"meshbed-{run_id}",
        "-http-port", str(p["http"]), "-dns-port", "-1", "-grpc-port", str(p["xds"]),
        "-serf-lan-port", str(p["serf_lan"]), "-serf-wan-port", str(p["serf_wan"]),
        "-server-port", str(p["server"]), "-hcl", "ports { grpc_tls = -1 }", "-hcl", "connect { enabled = true }",
        "-hcl", "performance { raft_multiplier = 1 }", "-log-level", "warn",
    ]
    return ComponentSpec(
        name="consul", kind="consul", argv=argv, ports=p, host=host, pod="consul", ready=_ready,
        ready_what="Consul to elect a leader and its Connect CA to have a root",
        ready_hint="see the consul log in the run directory", stop_timeout=5.0,
    )


def _envoy_ready(h: Handle) -> object:
    from ..observe import envoy_admin
    if httpc.get(h.url("admin", "/ready"), timeout=2).status != 200:
        return False
    s = envoy_admin.stats(h.url("admin"), r"^(cluster_manager\.cds|listener_manager\.lds)\.update_success$")
    return s.get("cluster_manager.cds.update_success", 0) >= 1 and s.get("listener_manager.lds.update_success", 0) >= 1


def envoy_spec(name: str, pod: str, *, consul: Path, envoy: Path, consul_http: str, xds: str, host: str,
               admin: int, ports: dict[str, int], target: list[str], api_type: str = "", log_level: str = "warning",
               concurrency: int = 1) -> ComponentSpec:
    """One Envoy whose bootstrap comes from Consul (``target``: -sidecar-for / -proxy-id / --gateway args)."""
    argv = [sys.executable, "-m", "meshbed.components.consul_connect_launch", "--consul", str(consul),
            "--envoy", str(envoy), "--http-addr", consul_http, "--grpc-addr", xds,
            "--admin-bind", f"{host}:{admin}", *target]
    if api_type:
        argv += ["--api-type", api_type]
    argv += ["--", "--base-id", str(admin), "--concurrency", str(concurrency), "--log-level", log_level,
             "--drain-time-s", "1", "--drain-strategy", "immediate"]
    return ComponentSpec(
        name=name, kind="envoy", argv=argv, ports={"admin": admin, **ports}, host=host, pod=pod,
        env={"PYTHONUNBUFFERED": "1"}, ready=_envoy_ready,
        ready_what=f"{name} (bootstrap from consul connect envoy) /ready and its first CDS+LDS ACK",
        ready_hint="see the envoy log (bootstrap.json beside it) and the consul log", stop_timeout=3.0,
    )


def _scaler_class(Scaler: type) -> type:
    class ConnectScaler(Scaler):  # type: ignore[misc, valid-type]
        """Starts instances, the ingress gateway and watcher Envoys the Connect way."""

        def _consul_http(self) -> str:
            return self.wiring.consul_url.split("://", 1)[-1]

        def start_instance(self, inst: InstanceSpec, *_: Any) -> tuple[Handle, Handle]:
            from . import app as app_c
            w, rt = self.wiring, self.runtime
            svc = self.mesh.topology.services[inst.service]
            bind, me = rt.listen_host(), rt.internal_host(inst.id)
            app_port, public, admin = w.ports.take(), w.ports.take(), w.ports.take()
            outbound = w.ports.take() if svc.calls else 0
            rt.prepare_pod(inst.id, [p for p in (app_port, public, admin, outbound) if p])
            advertise = self.link("upstream", inst.id, f"{me}:{public}")
            xds = self.link("control_plane", inst.id, w.cp_xds)
            ups = {svc.calls[0]: (bind, outbound)} if svc.calls else {}
            spec = app_c.spec(inst, app_port, calls=svc.calls, sidecar_outbound=f"{me}:{outbound}",
                              consul_url=w.consul_url, advertise=advertise, otlp_http_url=w.otlp_http_url,
                              run_id=self.mesh.run_id, host=bind)
            reg = ConnectFlavour().registration(inst.id, svc.name, advertise, f"{me}:{app_port}", ups,
                                                 (bind, public)) or {}
            spec.argv += ["--connect-json", json.dumps(reg["Connect"])]
            app = rt.start(spec)
            self.mesh.apps[inst.id] = app
            self.mesh.instances[inst.id] = inst
            self.mesh.advertised[inst.id] = advertise
            ports = {"inbound": public, **({"outbound": outbound} if outbound else {})}
            sidecar = rt.start(envoy_spec(f"envoy-{inst.id}", inst.id, consul=w.binaries["consul"],
                                          envoy=w.binaries["envoy"], consul_http=self._consul_http(), xds=xds,
                                          host=bind, admin=admin, ports=ports, target=["--sidecar-for", inst.id],
                                          log_level=w.settings.envoy_log_level,
                                          concurrency=w.settings.envoy_concurrency))
            self.mesh.sidecars[inst.id] = sidecar
            return app, sidecar

        def start_ingress(self, planned: Any = None) -> Handle:
            w, rt, topo = self.wiring, self.runtime, self.mesh.topology
            admin, listener, svc_port = w.ports.take(), w.ports.take(), w.ports.take()
            xds = self.link("control_plane", "ingress", w.cp_xds)
            ce = ConfigEntries(w.consul_url)
            ce.put(cw.ingress_gateway(listener, [(r.prefix, r.service) for r in topo.ingress]))
            httpc.request("PUT", f"{w.consul_url}/v1/agent/service/register",
                          cw.ingress_registration(rt.listen_host(), svc_port), timeout=5)
            self.mesh.ingress = rt.start(envoy_spec(
                "envoy-ingress", "ingress", consul=w.binaries["consul"], envoy=w.binaries["envoy"],
                consul_http=self._consul_http(), xds=xds, host=rt.listen_host(), admin=admin,
                ports={"outbound": listener}, target=["--gateway", "--proxy-id", "ingress"],
                log_level=w.settings.envoy_log_level, concurrency=w.settings.envoy_concurrency))
            return self.mesh.ingress

        def _start_watcher(self, name: str, upstreams: tuple[str, ...], xds_api: str) -> Handle:
            w, rt = self.wiring, self.runtime
            admin, public = w.ports.take(), w.ports.take()
            ups = {u: (rt.listen_host(), w.ports.take()) for u in upstreams}
            rt.prepare_pod(name, [admin, public, *(p for _, p in ups.values())])
            httpc.request("PUT", f"{w.consul_url}/v1/agent/service/register",
                          cw.watcher_proxy(name, rt.listen_host(), public, ups), timeout=5)
            return rt.start(envoy_spec(f"envoy-{name}", name, consul=w.binaries["consul"], envoy=w.binaries["envoy"],
                                       consul_http=self._consul_http(), xds=w.cp_xds, host=rt.listen_host(),
                                       admin=admin, ports={}, target=["--proxy-id", name],
                                       api_type="" if xds_api == XDS_API else xds_api,
                                       log_level=w.settings.envoy_log_level))

        @contextlib.contextmanager
        def watcher_envoys(self, count: int, upstreams: tuple[str, ...], xds_api: str | None = None,
                           start: int = 0, ready_s: float | None = None) -> Iterator[dict[str, Handle]]:
            api = xds_api or self.wiring.xds_api
            names = [f"watch-{api.lower()}-{i}" for i in range(start, start + count)]
            try:
                with super().watcher_envoys(count, upstreams, xds_api, start, ready_s) as ws:
                    yield ws
            finally:
                for n in names:
                    with contextlib.suppress(OSError):
                        httpc.request("PUT", f"{self.wiring.consul_url}/v1/agent/service/deregister/{n}", None,
                                      timeout=5)

    return ConnectScaler


@contextlib.contextmanager
def bring_up_connect(topology: Any, settings: Any, progress: Any, state: Any, build: Any) -> Iterator[Any]:
    """``mesh_build.bring_up`` for ``--controlplane consul-connect``: the same phases, wired the Connect way.

    ``build`` is :mod:`meshbed.mesh_build` itself (its Scaler, Linker, Wiring), handed in so that
    this module does not import it back.
    """
    from ..chaos.toxiproxy import ToxiproxyClient
    from ..mesh import Mesh, wait_converged
    Linker, Wiring, _phase = build.Linker, build.Wiring, build._phase
    from ..observe.consul import ConsulClient
    from ..policy import KV_MESH_KEY, KV_SERVICES_PREFIX
    from ..provision import require
    from ..readiness import wait_all
    from ..runtime.base import runtime_factory
    from ..runtime.state import RunState, sweep_orphans
    from . import jaeger as jaeger_c
    from . import toxiproxy as toxi_c

    t0 = time.monotonic()
    if (getattr(settings, "registry", None) or "consul") != "consul":
        raise ConfigError(f"--controlplane consul-connect needs Consul as the registry, not {settings.registry!r}",
                          hint="leave --registry out (or use --registry consul)")
    cw.check_topology({s.name: s.calls for s in topology.services.values()})
    cw.ingress_gateway(1, [(r.prefix, r.service) for r in topology.ingress])  # validates the edge first
    sweep_orphans(settings.runs_dir)
    binaries = {n: require(n) for n in ("envoy", "consul", "jaeger", "toxiproxy")}
    factory = runtime_factory(settings.runtime)
    factory.preflight()  # type: ignore[attr-defined]
    own_state = state is None
    if state is None:
        state = RunState.create(settings.runs_dir, settings.runtime, topology.source)
    try:
        runtime = factory.open(state.run_dir, state)
    except BaseException:
        if own_state:
            state.set_status("down", "runtime failed to start")
        raise
    ports = PortAllocator()
    bind, ih = runtime.listen_host(), runtime.internal_host
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: state.set_status("down") if own_state else None)
        stack.callback(runtime.close)
        progress(f"run {state.run_id}: {state.run_dir} (consul-connect)")

        done = _phase(timings, "infrastructure (consul with connect, jaeger, toxiproxy)", progress)
        consul = runtime.start(agent_spec(binaries["consul"], ports, state.run_id, bind))
        jaeger = runtime.start(jaeger_c.spec(binaries["jaeger"], ports, bind))
        toxi = runtime.start(toxi_c.spec(binaries["toxiproxy"], ports, bind))
        wait_all([consul, jaeger, toxi], settings.ready_timeout)
        done()

        done = _phase(timings, "links and policy (config entries)", progress)
        linker = Linker(ToxiproxyClient(toxi.url("api")), runtime, ports, topology.chaos_links - {"consul"})
        otlp_grpc = linker.link("tracing", "otlp-grpc", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_grpc']}")
        otlp_http = linker.link("tracing", "otlp-http", f"{ih('jaeger')}:{jaeger.spec.ports['otlp_http']}")
        consul_url = f"http://{ih('consul')}:{consul.spec.ports['http']}"
        cc, ce = ConsulClient(consul.url("http")), ConfigEntries(consul.url("http"))
        o_host, _, o_port = otlp_grpc.rpartition(":")
        ce.put(cw.proxy_defaults(o_host, int(o_port)))
        for svc in topology.services.values():
            ce.put(cw.service_defaults(svc.name))
        for svc in topology.services.values():
            cc.kv_put(KV_SERVICES_PREFIX + svc.name, svc.policy.to_json())
            apply_entries(ce, svc.name, svc.policy, topology.callers_of(svc.name))
        cc.kv_put(KV_MESH_KEY, topology.mesh.to_json())
        done()

        wiring = Wiring(settings, state, ports, binaries, linker, cp_xds=f"{ih('consul')}:{consul.spec.ports['xds']}",
                        otlp_grpc=otlp_grpc, otlp_http_url=f"http://{otlp_http}/v1/traces", consul_url=consul_url)
        mesh = Mesh(topology, state.run_id, state.run_dir, runtime, consul, jaeger, toxi, consul, settings, wiring,
                    _scaler_class(build.Scaler), consul_gate=None, links=linker.links, timings=timings)

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


def describe_controlplane() -> dict[str, str]:
    return {"kind": "consul-connect", "note": "Consul's own xDS server: the controlplane component is the Consul "
                                              "agent, so faulting it takes the registry down too"}


__all__ = ["agent_spec", "envoy_spec", "bring_up_connect", "XDS_API", "ComponentError"]
